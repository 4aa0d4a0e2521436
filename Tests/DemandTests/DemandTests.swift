import Bounds
import Demand
import DockerEngine
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

enum DemandEnvironment {
    struct Missing: Error, CustomStringConvertible {
        var name: String
        var description: String {
            "\(name) is not set: run the tests through scripts/test (or `eval \"$(scripts/test-env up)\"` first); they need a real prometheus"
        }
    }
    static func require(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else { throw Missing(name: name) }
        return v
    }
}

final class ManualTime: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Duration = .zero
    var now: Duration { lock.withLock { value } }
    func advance(by d: Duration) { lock.withLock { value += d } }
}

/// A source whose answers a test scripts.
final class ScriptedSource: DemandSource, @unchecked Sendable {
    let name = "scripted"
    private let lock = NSLock()
    private var next: Result<Double, DemandError> = .success(1)
    func answer(_ r: Result<Double, DemandError>) { lock.withLock { next = r } }
    func sample() async throws -> Double { try lock.withLock { next }.get() }
}

@Suite struct DemandTrackerTests {
    @Test func aFailingSourceKeepsItsLastValueForTheStalenessWindowThenReadsUnknown() {
        var t = DemandTracker(staleness: .seconds(30))
        #expect(t.reading(at: .zero) == .unknown)
        #expect(t.record(.success(12), at: .seconds(1)) == .healthy)
        let fail = DemandError.unreachable(source: "s", reason: "refused")
        if case .stale = t.record(.failure(fail), at: .seconds(2)) {} else { Issue.record("expected stale") }
        #expect(t.reading(at: .seconds(20)) == .known(12))
        #expect(t.record(.failure(fail), at: .seconds(20)) == nil, "no new state, nothing to log")
        #expect(t.reading(at: .seconds(32)) == .unknown)
        if case .unknown = t.record(.failure(fail), at: .seconds(40)) {} else { Issue.record("expected unknown") }
        #expect(t.record(.failure(fail), at: .seconds(41)) == nil)
        #expect(t.record(.success(3), at: .seconds(42)) == .healthy)
        #expect(t.reading(at: .seconds(42)) == .known(3))
    }

    @Test func theWindowRunsOutBetweenPolls() {
        var t = DemandTracker(staleness: .seconds(5))
        _ = t.record(.success(1), at: .zero)
        _ = t.record(.failure(.notSet(source: "s")), at: .seconds(1))
        #expect(t.advance(to: .seconds(4)) == nil)
        if case .unknown = t.advance(to: .seconds(6)) {} else { Issue.record("expected unknown after the window") }
    }

    @Test func theRandomWalkIsSeededBoundedAndStepsAtMostItsStep() {
        let seed: UInt64 = 42
        var a = RandomWalk(seed: seed, start: 50, step: 5, bounds: 0...60)
        var b = RandomWalk(seed: seed, start: 50, step: 5, bounds: 0...60)
        var previous = 50.0
        for _ in 0..<1000 {
            let v = a.next()
            #expect(v == b.next(), "seed \(seed)")
            #expect((0...60).contains(v), "seed \(seed)")
            #expect(abs(v - previous) <= 5, "seed \(seed)")
            previous = v
        }
    }

    @Test func staticDemandReadsWhatWasSet() async throws {
        let s = StaticDemand()
        await #expect(throws: DemandError.self) { _ = try await s.sample() }
        s.set(17)
        #expect(try await s.sample() == 17)
    }

    @Test func jsonPointersFollowRFC6901() throws {
        let doc: [String: Any] = ["a": ["b/c": [1, 2, ["d": 7.5]]], "s": "3"]
        #expect(try HTTPJSONDemand.resolve(pointer: "/a/b~1c/2/d", in: doc, source: "t") == 7.5)
        #expect(try HTTPJSONDemand.resolve(pointer: "/s", in: doc, source: "t") == 3)
        #expect(throws: DemandError.self) { try HTTPJSONDemand.resolve(pointer: "/a/x", in: doc, source: "t") }
    }
}

@Suite struct DemandPollerTests {
    /// A poller on a scripted source and a manual clock (10 s staleness), after one good reading of 5.
    func pollerHoldingFive() async -> (ManualTime, ScriptedSource, DemandPoller) {
        let time = ManualTime()
        let source = ScriptedSource()
        let poller = DemandPoller(
            source: source, interval: .seconds(1), timeout: .seconds(1), staleness: .seconds(10),
            now: { time.now }, sleep: { _ in try await Task.sleep(for: .seconds(3600)) })
        source.answer(.success(5))
        #expect(await poller.pollOnce() == .known(5))
        return (time, source, poller)
    }

    @Test func thePollerLogsOnlyChangesOfStateAndHoldsTheLastValue() async {
        let (time, source, poller) = await pollerHoldingFive()
        source.answer(.failure(.unreachable(source: "scripted", reason: "down")))
        for _ in 0..<5 {
            time.advance(by: .seconds(1))
            #expect(await poller.pollOnce() == .known(5))
        }
        time.advance(by: .seconds(10))
        #expect(await poller.pollOnce() == .unknown)
        let kinds = await poller.transitions.map { h -> String in
            switch h {
            case .healthy: "healthy"
            case .stale: "stale"
            case .unknown: "unknown"
            }
        }
        #expect(kinds == ["healthy", "stale", "unknown"])
    }

    /// docs/limits.md: a reading outside [0, 1e12] (a counter where a rate was meant) is no
    /// reading; the last good value is held while it is fresh, then the source reads unknown.
    @Test(arguments: [1e19, -1, Double.nan, Double.infinity])
    func aReadingOutOfRangeIsRefusedAndTheLastGoodValueHeld(value: Double) async {
        let (time, source, poller) = await pollerHoldingFive()
        source.answer(.success(value))
        time.advance(by: .seconds(1))
        #expect(await poller.pollOnce() == .known(5))
        time.advance(by: .seconds(11))
        #expect(await poller.pollOnce() == .unknown)
        if case .unknown(let e) = await poller.health { #expect(e.contains("outside 0 to")) } else { Issue.record("expected unknown") }
        source.answer(.success(Limits.maxDemand))
        #expect(await poller.pollOnce() == .known(Limits.maxDemand))
    }

    @Test func aSourceThatHangsIsCutOffByTheTimeout() async {
        struct Hanging: DemandSource {
            let name = "hanging"
            func sample() async throws -> Double {
                try await Task.sleep(for: .seconds(3600))
                return 0
            }
        }
        // The injected sleep returns at once: the timeout fires before the source answers.
        let poller = DemandPoller(
            source: Hanging(), interval: .seconds(1), timeout: .seconds(2), staleness: .seconds(10), now: { .zero }, sleep: { _ in })
        #expect(await poller.pollOnce() == .unknown)
        if case .unknown(let e) = await poller.health { #expect(e.contains("did not answer")) } else { Issue.record("expected unknown") }
    }
}

/// Against the real prometheus that scripts/test-env starts, scraping its small exporter.
@Suite(.serialized) struct DemandIntegrationTests {
    @Test func aPrometheusInstantQueryYieldsTheExportedNumber() async throws {
        let url = try DemandEnvironment.require("MICROSCALE_TEST_PROMETHEUS_URL")
        let source = PrometheusDemand(baseURL: url, query: "max(microscale_test_queue_depth)")
        let value = try await source.sample()
        #expect(value >= 0)
        let exported = try DemandEnvironment.require("MICROSCALE_TEST_EXPORTER_VALUE_FILE")
        let expected = Double(try String(contentsOfFile: exported, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(value == expected)
    }

    @Test func aQueryYieldingSeveralSeriesIsRefusedWithAClearError() async throws {
        let url = try DemandEnvironment.require("MICROSCALE_TEST_PROMETHEUS_URL")
        let source = PrometheusDemand(baseURL: url, query: "up or vector(1)")
        let e = await #expect(throws: DemandError.self) { _ = try await source.sample() }
        #expect(e?.description.contains("exactly one") == true)
    }

    @Test func aBadPromQLQueryIsReportedWithPrometheusMessage() async throws {
        let url = try DemandEnvironment.require("MICROSCALE_TEST_PROMETHEUS_URL")
        let source = PrometheusDemand(baseURL: url, query: "sum(")
        await #expect(throws: DemandError.self) { _ = try await source.sample() }
    }

    @Test func anUnreachablePrometheusGoesStaleThenUnknown() async throws {
        let time = ManualTime()
        let url = try DemandEnvironment.require("MICROSCALE_TEST_PROMETHEUS_URL")
        let good = PrometheusDemand(baseURL: url, query: "max(microscale_test_queue_depth)")
        let poller = DemandPoller(source: good, interval: .seconds(1), timeout: .seconds(5), staleness: .seconds(30), now: { time.now })
        guard case .known(let v) = await poller.pollOnce() else {
            Issue.record("no value from prometheus")
            return
        }
        // Nothing listens on port 1.
        let bad = DemandPoller(
            source: PrometheusDemand(baseURL: "http://127.0.0.1:1", query: "up"), interval: .seconds(1), timeout: .seconds(5),
            staleness: .seconds(30), now: { time.now })
        #expect(await bad.pollOnce() == .unknown)
        if case .unknown(let e) = await bad.health { #expect(e.contains("unreachable")) } else { Issue.record("expected unknown") }
        #expect(v >= 0)
    }

    @Test func anHTTPSourceReadsANumberAtAJSONPointerAndSurvivesTheServerGoingAway() async throws {
        let server = try LocalJSONServer(body: #"{"queue":{"depth":[3, 41.5]}}"#)
        let time = ManualTime()
        let source = HTTPJSONDemand(url: "http://127.0.0.1:\(server.port)/stats", pointer: "/queue/depth/1")
        let poller = DemandPoller(source: source, interval: .seconds(1), timeout: .seconds(5), staleness: .seconds(30), now: { time.now })
        #expect(await poller.pollOnce() == .known(41.5))
        server.stop()
        time.advance(by: .seconds(10))
        #expect(await poller.pollOnce() == .known(41.5), "stale but within the window")
        time.advance(by: .seconds(25))
        #expect(await poller.pollOnce() == .unknown)
    }
}

/// A tiny HTTP server on a free loopback port (SwiftNIO), answering every GET with one JSON body.
final class LocalJSONServer: @unchecked Sendable {
    let port: Int
    private let channel: any Channel

    init(body: String) throws {
        let bytes = Array(body.utf8)
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Responder(body: bytes))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
        port = channel.localAddress?.port ?? 0
    }

    func stop() { try? channel.close().wait() }

    private final class Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let body: [UInt8]
        init(body: [UInt8]) { self.body = body }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Content-Length", value: String(body.count))
            head.headers.add(name: "Content-Type", value: "application/json")
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
