import Consensus
import Foundation
import Logging
import Synchronization
import Testing

@testable import Agent

/// The composition root hands one clock to every shell (docs/ARCHITECTURE.md, "Time in the
/// shells"): an agent composed with a clock of its own reasons with that clock, not the host's.
@Suite(.serialized) struct InjectedClockTests {
    /// A wall clock ten years ahead of the host's: a time no host clock gives today.
    static let offset: Int64 = 10 * 365 * 86_400_000

    @Test func theLeadersDecisionsAndTheDashboardsHistoryCarryTheInjectedWallClock() async throws {
        let reads = Atomic<Int>(0)
        let clock = AgentClock(
            monotonic: {
                reads.add(1, ordering: .relaxed)
                return ContinuousClock.now - InjectedClockTests.epoch
            },
            wallMilliseconds: { Int64(Date().timeIntervalSince1970 * 1000) + InjectedClockTests.offset })
        var s = loopbackAgentSettings("node-a", dir: AgentRuntimeTests.dir, port: AgentRuntimeTests.freePort())
        s.set("server", "true", origin: "test")
        s.set("bootstrap-expect", "1", origin: "test")
        s.set("capacity-cpu", "4", origin: "test")
        s.set("capacity-memory", "8GiB", origin: "test")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let a = try AgentRuntime(configuration: try s.resolve(), logger: logger, clock: clock)
        try await a.start()
        let before = Int64(Date().timeIntervalSince1970 * 1000) + Self.offset
        do {
            #expect(try await pollUntil(20) { await a.cluster(method: "GET", path: "/v1/leader", body: []).status == 200 })
            let readsWithALeader = reads.load(ordering: .relaxed)
            let file = "services: { web: { image: x, cpu: 0.5, memory: 16MiB, min: 1, max: 2 } }"
            #expect(try await callRetryingUnavailable(a, "PUT", "/v1/services", file, for: 10).status == 200)
            #expect(try await callRetryingUnavailable(a, "PUT", "/v1/demand/web", #"{"value": 1}"#, for: 10).status == 200)
            var planned: [Consensus.Decision] = []
            #expect(
                try await pollUntil(20) {
                    let r = await a.cluster(method: "GET", path: "/v1/decisions", body: [])
                    planned =
                        (try? JSONDecoder().decode([Consensus.Decision].self, from: Data(r.body)))?.filter { $0.summary.contains("planned") } ?? []
                    return !planned.isEmpty
                })
            // The leader stamped its plan with the agent's clock: ten years from now.
            #expect(planned.allSatisfy { $0.timestampMilliseconds >= before }, "\(planned.map(\.timestampMilliseconds)) < \(before)")
            _ = await a.history()
            #expect(try await pollUntil(10) { await !a.history().isEmpty })
            #expect(await a.history().allSatisfy { $0.time >= before })
            // Raft's Ready loop and the decision loop read the monotonic side: it was read before
            // there was a leader, and again for the write, the demand and the plan after. (A count
            // of reads would be a count of ticks, which is a measure of elapsed time.)
            #expect(readsWithALeader > 0)
            #expect(reads.load(ordering: .relaxed) > readsWithALeader)
        } catch {
            await a.shutdown()
            throw error
        }
        await a.shutdown()
    }

    static let epoch = ContinuousClock.now
}
