import Consensus
import Foundation
import Testing

@testable import Agent

/// docs/limits.md against a live three-server cluster: each value that once crashed every server
/// (the leader trapped, the next leader replayed the committed value and trapped too) is refused
/// with a 400 naming the field and the limit, nothing is committed, and the cluster stays up.
@Suite(.serialized) struct PoisonValueTests {
    static let poisons: [(path: String, method: String, body: String, mentions: String)] = [
        ("/v1/demand/api", "PUT", #"{"value": 1e30}"#, "0 to 1e12"),
        ("/v1/demand/api", "PUT", #"{"value": -1}"#, "0 to 1e12"),
        (
            "/v1/services", "PUT", "services: { api: { image: a, cpu: 9223372036854775807m, memory: 1MiB, max: 1 } }",
            "services.api.cpu: must be 0.001 (1m) to 1024 cores"
        ),
        (
            "/v1/services", "PUT", "services: { api: { image: a, cpu: 1, memory: 1MiB, max: 1, demand: { source: random, step: -1 } } }",
            "services.api.demand.step: must be a number from 0 to 1e12"
        ),
        (
            "/v1/services", "PUT", "services: { api: { image: a, cpu: 1, memory: 1MiB, max: 1, demand: { source: static, per_container: 1e-300 } } }",
            "services.api.demand.per_container"
        ),
        (
            "/v1/services", "PUT", "services: { api: { image: a, cpu: 1, memory: 1MiB, max: 9223372036854775807 } }",
            "services.api.max: must be at most 1000000"
        ),
    ]

    @Test func everyPoisonValueIsRefusedWithItsLimitAndTheClusterStaysUp() async throws {
        let t = ClusterAPITests()
        let (s1, p1) = try t.agent("s1", server: true, join: nil)
        try await s1.start()
        var servers = [s1]
        for n in ["s2", "s3"] {
            let (s, _) = try t.agent(n, server: true, join: p1)
            try await s.start()
            servers.append(s)
        }
        let all = servers
        defer { Task { for a in all { await a.shutdown() } } }
        #expect(try await t.eventually(30) { await t.leader(s1) != nil })
        let file = "services: { api: { image: mini:latest, cpu: 0.5, memory: 64MiB, max: 4, demand: { source: static, per_container: 1 } } }"
        #expect(try await t.call(s1, "PUT", "/v1/services", file).status == 200)
        #expect(try await t.call(s1, "PUT", "/v1/demand/api", #"{"value": 3}"#).status == 200)

        for p in Self.poisons {
            let r = try await t.call(servers[1], p.method, p.path, p.body)
            let message = String(decoding: r.body, as: UTF8.self)
            #expect(r.status == 400, "\(p.body): \(r.status) \(message)")
            #expect(message.contains(p.mentions), "\(p.body): \(message)")
        }
        // Nothing of it was committed, and every server still applies entries with a leader.
        #expect(try await t.call(s1, "PUT", "/v1/demand/api", #"{"value": 4}"#).status == 200)
        #expect(
            try await t.eventually(15) {
                var ok = 0
                for s in servers {
                    guard let r = s.raft, await r.status() != nil else { continue }
                    let state = await r.state
                    if state.demand == ["api": 4] && state.services.keys.sorted() == ["api"] && state.services["api"]?.cpu == 0.5 { ok += 1 }
                }
                return ok == 3
            })
        #expect(await t.leader(servers[2]) != nil)
    }
}
