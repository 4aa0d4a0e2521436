import Consensus
import Foundation
import Testing

@testable import Agent

/// Server membership at runtime (docs/consensus.md, "Server membership"): servers join as
/// learners and become voters, dead ones are removed, a leaving leader hands off first.
@Suite(.serialized) struct ServerMembershipTests {
    /// Short times so the test is short; the defaults are 5 s and 30 s.
    static let fast: [(String, String)] = [("server-stabilization-time", "2s"), ("dead-server-cleanup", "3s")]

    func peers(_ a: AgentRuntime) async throws -> [RaftPeer] {
        try decodeBody(try await callRetryingUnavailable(a, "GET", "/v1/operator/raft/peers", for: 10), [RaftPeer].self)
    }

    func voters(_ a: AgentRuntime) async -> Set<String> {
        guard let p = try? await peers(a) else { return [] }
        return Set(p.filter(\.voter).map(\.name))
    }

    /// The Must-show of issue 19 item 1.
    @Test func twoServersAddedToThreeBecomeVotersAndADeadOneIsRemovedSoWritesSurviveASecondFailure() async throws {
        var cluster = try ServerCluster(label: "server-membership", names: ["s1", "s2", "s3", "s4", "s5"])
        for n in ["s1", "s2", "s3"] { try await cluster.start(n, settings: Self.fast) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        let s1 = cluster.agents["s1"]!
        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, max: 4 } }"
        #expect(try await callRetryingUnavailable(s1, "PUT", "/v1/services", file, for: 10).status == 200)
        #expect(try await voters(s1) == ["s1", "s2", "s3"])

        // One started with the same flags as the first three (it asks, finds a cluster, joins), one
        // with no --bootstrap-expect at all.
        try await cluster.start("s4", bootstrapExpect: 3, settings: Self.fast)
        try await cluster.start("s5", bootstrapExpect: nil, settings: Self.fast)
        let grown = try await pollUntil(10) { await voters(s1) == ["s1", "s2", "s3", "s4", "s5"] }
        let seen = await voters(s1)
        #expect(grown, "voters: \(seen.sorted())")
        // They hold the replicated state (a snapshot from the leader carried it, and the voters).
        for n in ["s4", "s5"] {
            #expect(try await pollUntil(5) { await cluster.agents[n]!.raft!.state.services["web"] != nil })
            #expect(await cluster.agents[n]!.raft!.status()?.voters == ["s1", "s2", "s3", "s4", "s5"])
        }
        #expect(try await callRetryingUnavailable(s1, "PUT", "/v1/demand/web", #"{"value": 1}"#, for: 10).status == 200)

        // A server dies for good (not the leader, so the test does not wait out an election).
        let leader = try #require(await cluster.agreedLeader())
        let victims = ["s2", "s3", "s4", "s5"].filter { $0 != leader }
        await cluster.stop(victims[0])
        let survivor = cluster.agents[leader]!
        let removed = try await pollUntil(30) { await voters(survivor) == Set(["s1", "s2", "s3", "s4", "s5"]).subtracting([victims[0]]) }
        let after = await voters(survivor)
        #expect(removed, "voters: \(after.sorted())")

        // Four voters: a second failure leaves three, a quorum, and writes commit.
        await cluster.stop(victims[1])
        for v in 2...4 {
            let r = try await callRetryingUnavailable(survivor, "PUT", "/v1/demand/web", #"{"value": \#(v)}"#, for: 15)
            #expect(r.status == 200, "\(String(decoding: r.body, as: UTF8.self))")
        }
        for a in cluster.running {
            #expect(try await pollUntil(5) { await a.raft!.state.demand["web"] == 4 })
        }
    }

    @Test func aLeaderThatLeavesHandsOffWithoutAFailedWrite() async throws {
        var cluster = try ServerCluster(label: "server-leave", names: ["s1", "s2", "s3"])
        for n in ["s1", "s2", "s3"] { try await cluster.start(n, settings: Self.fast) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        let leader = try #require(await cluster.agreedLeader())
        let writer = try #require(cluster.running.first { $0.configuration.name != leader })
        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, max: 4 } }"
        #expect(try await callRetryingUnavailable(writer, "PUT", "/v1/services", file, for: 10).status == 200)

        // Writes one after another through a follower, none retried, while the leader leaves.
        let writes = Task { () -> (ok: Int, failed: [String]) in
            var ok = 0
            var failed: [String] = []
            for v in 1...400 {
                let r = await writer.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": \#(v)}"#.utf8))
                if r.status == 200 { ok += 1 } else { failed.append("\(v): \(r.status) \(String(decoding: r.body, as: UTF8.self))") }
                if Task.isCancelled { break }
            }
            return (ok, failed)
        }
        try await Task.sleep(for: .milliseconds(300))
        let left = await cluster.agents[leader]!.leave()
        #expect(left.status == 200)
        let result = await writes.value
        #expect(result.failed.isEmpty, "\(result.failed.prefix(5))")
        #expect(result.ok > 0)
        print("writes during the leave: \(result.ok) committed, \(result.failed.count) failed; leader \(leader) left")

        let remaining = cluster.running.filter { $0.configuration.name != leader }
        let now = try #require(await remaining[0].raft?.status()?.leader)
        #expect(now != leader)
        #expect(try await voters(remaining[0]) == Set(["s1", "s2", "s3"]).subtracting([leader]))
        let demand = try decodeBody(try await callRetryingUnavailable(remaining[1], "GET", "/v1/demand", for: 10), [String: Double].self)
        #expect(demand["web"] == 400)
    }

    @Test func forceLeaveOfAFailedServerRemovesItAtOnceAndIsRefusedForALiveOne() async throws {
        var cluster = try ServerCluster(label: "force-leave", names: ["s1", "s2", "s3", "s4"])
        // No automatic cleanup: only the force-leave can remove the dead server.
        let settings = [("server-stabilization-time", "1s"), ("dead-server-cleanup", "off")]
        for n in ["s1", "s2", "s3"] { try await cluster.start(n, settings: settings) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        try await cluster.start("s4", bootstrapExpect: nil, settings: settings)
        let s1 = cluster.agents["s1"]!
        #expect(try await pollUntil(10) { await voters(s1) == ["s1", "s2", "s3", "s4"] })

        let alive = await s1.forceLeave("s2")
        #expect(alive.status == 409, "\(String(decoding: alive.body, as: UTF8.self))")
        #expect(await s1.forceLeave("nobody").status == 404)

        await cluster.stop("s4")
        // Declared dead by gossip first (a few probe rounds); then forced out.
        #expect(try await pollUntil(20) { await s1.members().first { $0.name == "s4" }?.status == .dead })
        let forced = await s1.forceLeave("s4")
        #expect(forced.status == 200, "\(String(decoding: forced.body, as: UTF8.self))")
        let leader = try #require(await cluster.agreedLeader())
        #expect(try await pollUntil(10) { await voters(cluster.agents[leader]!) == ["s1", "s2", "s3"] })
        for a in cluster.running {
            #expect(try await pollUntil(5) { await a.members().first { $0.name == "s4" }?.status == .left })
        }
    }
}
