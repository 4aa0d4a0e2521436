import Testing

@testable import Harness

/// `microscale-bench spike`'s reading of the load generator's record (docs/demo.md): when requests
/// are answered within 100 ms again after the step, and the latency and failures across it.
struct SpikeAnalysisTests {
    typealias R = SpikeBenchmark.Request

    /// Ten requests a second from `from` to `to`, each with the latency `latency(t)`.
    static func requests(_ from: Double, _ to: Double, status: Int = 200, latency: (Double) -> Double) -> [R] {
        stride(from: from, to: to, by: 0.1).map { R(sent: $0, latencyMs: latency($0), status: status) }
    }

    @Test func recoveryIsTheStartOfTheFirstRunOfGoodWindowsAfterTheStep() {
        // Fast before the step (not counted), slow for 3 s after it, fast from then on.
        let rs = Self.requests(0, 20) { $0 < 10 ? 20 : $0 < 13 ? 800 : 30 }
        let a = SpikeBenchmark.analyze(rs, step: 10, length: 10)
        #expect(a.recoverySeconds == 3)
        #expect(a.requests == 100)
        #expect(a.failed == 0)
        #expect(a.p50Ms == 30)
        #expect(a.p99Ms == 800)
    }

    @Test func oneQuickWindowInsideASlowStretchIsNotRecovery() {
        let rs = Self.requests(10, 20) { t in (t >= 11 && t < 11.5) ? 10 : t < 14 ? 500 : 10 }
        #expect(SpikeBenchmark.analyze(rs, step: 10, length: 10).recoverySeconds == 4)
    }

    @Test func aFailedRequestMakesItsWindowBadAndIsCountedButNotInTheLatencies() {
        var rs = Self.requests(10, 20) { _ in 10 }
        rs.append(R(sent: 10.2, latencyMs: 10_000, status: 503))
        rs.append(R(sent: 10.3, latencyMs: 2_000, status: -1))
        let a = SpikeBenchmark.analyze(rs, step: 10, length: 10)
        #expect(a.failed == 2)
        #expect(a.recoverySeconds == 0.5)
        #expect(a.maxMs == 10)
    }

    @Test func neverFastAgainIsNoRecovery() {
        let a = SpikeBenchmark.analyze(Self.requests(10, 20) { _ in 150 }, step: 10, length: 10)
        #expect(a.recoverySeconds == nil)
    }

    @Test func theRecordParsesSkippingCutLines() {
        let rs = SpikeBenchmark.parseRequests("0.0100,12.50,200\n1.5,2000.00,-1\n2.0,nan\ngarbage\n3.0,4.0,503")
        #expect(
            rs == [R(sent: 0.01, latencyMs: 12.5, status: 200), R(sent: 1.5, latencyMs: 2000, status: -1), R(sent: 3, latencyMs: 4, status: 503)])
    }
}
