import Consensus
import Foundation
import Testing

@testable import Agent

/// Issue 15, item 6: state of any size moves. A server that was away while the others wrote 10 MiB
/// of state and 10,000 entries (the log compacted several times meanwhile) comes back and catches
/// up from a snapshot sent in chunks; before, a snapshot over the 1 MiB frame limit never left the
/// leader and such a server waited forever.
@Suite(.serialized) struct SnapshotCatchUpTests {
    /// One service of ~240 KB (60 arguments of 4,000 bytes): 45 of them are over 10 MiB of state.
    func bigService(_ i: Int) -> String {
        let arg = String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: 4000)
        let command = Array(repeating: "\"\(arg)\"", count: 60).joined(separator: ", ")
        return "services: { big-\(i): { image: mini:latest, cpu: 1m, memory: 1MiB, max: 0, command: [\(command)] } }"
    }

    @Test func aFollowerTenThousandEntriesBehindCatchesUpFromATenMebibyteSnapshot() async throws {
        let t = ClusterAPITests()
        let (s1, p1) = try t.agent("s1", server: true, join: nil)
        try await s1.start()
        let (s2, _) = try t.agent("s2", server: true, join: p1)
        try await s2.start()
        let dir3 = "\(ClusterAPITests.dir)/data-s3-catch-up-\(UUID().uuidString)"
        let (s3, _) = try t.agent("s3", server: true, join: p1, dataDir: dir3)
        try await s3.start()
        let running = Running([s1, s2])
        defer { Task { for a in running.all { await a.shutdown() } } }
        #expect(
            try await t.eventually(30) {
                let leader = await t.leader(s1)
                let voters = await s3.raft?.status()?.voters.count
                return leader != nil && voters == 3
            })
        await s3.shutdown()

        for i in 0..<45 {
            let r = try await t.call(s1, "PUT", "/v1/services", bigService(i))
            try #require(r.status == 200, "\(String(decoding: r.body.prefix(300), as: UTF8.self))")
        }
        #expect(try await t.call(s1, "PUT", "/v1/services", "services: { web: { image: mini:latest, cpu: 1m, memory: 1MiB, max: 1 } }").status == 200)
        // 10,000 entries, 32 in flight at a time (the leader batches them into few fsyncs).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<32 {
                group.addTask {
                    for v in stride(from: lane, to: 10_000, by: 32) {
                        let r = try await t.call(s1, "PUT", "/v1/demand/web", #"{"value": \#(v)}"#)
                        if r.status != 200 { throw ClusterAPITests.UnexpectedResponse(description: "HTTP \(r.status)") }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try t.json(await t.call(s1, "PUT", "/v1/demand/web", #"{"value": 10000}"#), DemandView.self).value == 10_000)
        let s1Leads = await s1.raft?.isLeader == true
        let leaderState = try #require(await (s1Leads ? s1 : s2).raft?.state)
        #expect(try leaderState.snapshot().count > 10 << 20)

        let (back, _) = try t.agent("s3", server: true, join: p1, dataDir: dir3)
        running.add(back)
        try await back.start()
        #expect(
            try await t.eventually(60) {
                guard let r = back.raft else { return false }
                let state = await r.state
                return state.services.count == 46 && state.demand["web"] == 10_000
            })
        let status = try #require(await back.raft?.status())
        #expect(status.snapshotIndex > 0, "caught up from a snapshot")
        #expect(await back.raft?.state.services == leaderState.services)
    }
}

/// The agents a test started, for its cleanup.
final class Running: @unchecked Sendable {
    private let lock = NSLock()
    private var agents: [AgentRuntime]
    init(_ agents: [AgentRuntime]) { self.agents = agents }
    func add(_ a: AgentRuntime) { lock.withLock { agents.append(a) } }
    var all: [AgentRuntime] { lock.withLock { agents } }
}
