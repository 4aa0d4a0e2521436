import Consensus
import Foundation
import Logging
import SecureTransport
import Testing

@testable import Agent

/// Three server agents and a client in this process: real TLS on loopback, real SQLite logs, the
/// cluster API as the HTTP routes call it.
@Suite(.serialized) struct ClusterAPITests {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-cluster-api-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        for n in ["s1", "s2", "s3", "c1"] {
            try! CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: n, server: n.hasPrefix("s"), in: "\(d)/certs")
        }
        return d
    }()

    struct Cluster {
        var servers: [AgentRuntime]
        var client: AgentRuntime
        var all: [AgentRuntime] { servers + [client] }
    }

    /// The API token every agent of these clusters is configured with: a client agent relays its
    /// operator's writes only with it (docs/ARCHITECTURE.md, "Trust").
    static let token = "t0ken-for-tests"

    func agent(
        _ name: String, server: Bool, join: Int?, dataDir: String? = nil,
        token: String? = ClusterAPITests.token
    ) throws -> (AgentRuntime, Int) {
        let port = AgentRuntimeTests.freePort()
        var s = loopbackAgentSettings(name, dir: Self.dir, port: port, dataDir: dataDir)
        if server {
            s.set("server", "true", origin: "test")
            s.set("bootstrap-expect", "3", origin: "test")
        }
        if let join { s.append("join", "127.0.0.1:\(join)", origin: "test") }
        if let token { s.set("api-token", token, origin: "test") }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return (try AgentRuntime(configuration: try s.resolve(), logger: logger), port)
    }

    func cluster(token: String? = ClusterAPITests.token) async throws -> Cluster {
        let (s1, p1) = try agent("s1", server: true, join: nil, token: token)
        try await s1.start()
        var servers = [s1]
        for n in ["s2", "s3"] {
            let (s, _) = try agent(n, server: true, join: p1, token: token)
            try await s.start()
            servers.append(s)
        }
        let (c, _) = try agent("c1", server: false, join: p1, token: token)
        try await c.start()
        return Cluster(servers: servers, client: c)
    }

    func eventually(_ seconds: Double = 15, _ condition: () async -> Bool) async throws -> Bool {
        try await pollUntil(seconds, condition)
    }

    struct UnexpectedResponse: Error, CustomStringConvertible {
        var description: String
    }

    func json<T: Decodable>(_ r: APIResponse, _ type: T.Type) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(r.body)) } catch {
            throw UnexpectedResponse(description: "HTTP \(r.status): \(String(decoding: r.body, as: UTF8.self))")
        }
    }

    /// A request as a client makes it: 503 says no leader can answer right now (an election, as on
    /// a loaded machine) and to retry shortly; every write here is idempotent. Any other answer is
    /// returned as it is.
    func call(_ a: AgentRuntime, _ method: String, _ path: String, _ body: String = "") async throws -> APIResponse {
        try await callRetryingUnavailable(a, method, path, body, for: 10)
    }

    func leader(_ a: AgentRuntime) async -> String? {
        let r = await a.cluster(method: "GET", path: "/v1/leader", body: [])
        return r.status == 200 ? (try? json(r, LeaderView.self).name) : nil
    }

    @Test func everyAgentNamesTheSameLeaderAndWritesThroughAnyOfThemAreCommitted() async throws {
        let c = try await cluster()
        defer { Task { for a in c.all { await a.shutdown() } } }
        #expect(
            try await eventually {
                var names: Set<String?> = []
                for a in c.all { names.insert(await leader(a)) }
                return names.count == 1 && names.first! != nil
            })
        let leaderName = try #require(await leader(c.client))
        let follower = try #require(c.servers.first { $0.configuration.name != leaderName })

        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, min: 1, max: 4 } }"
        let applied = try await call(c.client, "PUT", "/v1/services", file)
        #expect(applied.status == 200, "\(String(decoding: applied.body, as: UTF8.self))")
        let demand = try await call(follower, "PUT", "/v1/demand/web", #"{"value": 12.5}"#)
        #expect(demand.status == 200, "\(String(decoding: demand.body, as: UTF8.self))")
        let drained = try await call(c.client, "POST", "/v1/nodes/c1/drain")
        #expect(drained.status == 200)

        // A read through any agent, right after the write returned, sees it (reads are served by the leader).
        for a in c.all {
            let services = try json(await call(a, "GET", "/v1/services"), [String: ServiceSpec].self)
            #expect(services["web"]?.max == 4)
            let d = try json(await call(a, "GET", "/v1/demand"), [String: Double].self)
            #expect(d == ["web": 12.5])
            let nodes = try json(await call(a, "GET", "/v1/nodes/drained"), [String].self)
            #expect(nodes == ["c1"])
        }
        // The Prometheus endpoint carries members, Raft and the services.
        // Alive 4 once membership has settled: on a loaded machine a probe may time out and make a
        // member suspect for a moment, which is what the suspicion mechanism is for.
        let settled = try await eventually { await c.servers[0].metricsText().contains(#"microscale_members{status="alive"} 4"#) }
        let text = await c.servers[0].metricsText()
        #expect(settled, "\(text)")
        #expect(text.contains("microscale_raft_term") && text.contains("microscale_raft_commit_index"))
        #expect(text.contains("microscale_raft_snapshot_index 0"), "no compaction yet: \(text)")
        #expect(text.contains(#"microscale_service_demand{service="web"} 12.5"#), "\(text)")

        // Every server applied the same state.
        #expect(
            try await eventually {
                var states: [ClusterState] = []
                for s in c.servers { if let r = s.raft { states.append(await r.state) } }
                return states.count == 3 && states.allSatisfy { $0.services == states[0].services && $0.demand == ["web": 12.5] }
            })
    }

    @Test func aMalformedServicesFileIsRefusedWithItsLineAndNothingCommittedChanges() async throws {
        let c = try await cluster()
        defer { Task { for a in c.all { await a.shutdown() } } }
        #expect(try await eventually { await leader(c.client) != nil })
        let good = "services:\n  web:\n    image: mini:latest\n    cpu: 0.5\n    memory: 64MiB\n    max: 4\n"
        #expect(try await call(c.client, "PUT", "/v1/services", good).status == 200)
        let bad =
            "services:\n  web:\n    image: mini:latest\n    cpu: -1\n    memory: 64MiB\n    max: 9\n  api:\n    image: a\n    cpu: 1\n    memory: 1MiB\n    max: 1\n"
        let refused = try await call(c.servers[1], "PUT", "/v1/services", bad)
        #expect(refused.status == 400)
        let message = try json(refused, [String: String].self)["error"] ?? ""
        #expect(message.contains("line 4") && message.contains("services.web.cpu"), "\(message)")
        let services = try json(await call(c.client, "GET", "/v1/services"), [String: ServiceSpec].self)
        #expect(services.keys.sorted() == ["web"] && services["web"]?.max == 4)

        let unknown = try await call(c.client, "PUT", "/v1/demand/nope", #"{"value": 1}"#)
        #expect(unknown.status == 404)
        let removed = try await call(c.client, "DELETE", "/v1/services/web")
        #expect(removed.status == 200)
        #expect(try await call(c.client, "DELETE", "/v1/services/web").status == 404)
    }

    @Test func withNoAPITokenConfiguredAClientAgentRelaysReadsButItsWritesAreRefusedWithWhatToDo() async throws {
        let c = try await cluster(token: nil)
        defer { Task { for a in c.all { await a.shutdown() } } }
        #expect(try await eventually { await leader(c.client) != nil })
        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, max: 4 } }"
        let refused = try await call(c.client, "PUT", "/v1/services", file)
        #expect(refused.status == 403)
        let message = try json(refused, [String: String].self)["error"] ?? ""
        #expect(message.contains("--api-token") && message.contains("server's API"), "\(message)")
        #expect(try await call(c.client, "POST", "/v1/nodes/c1/drain").status == 403)

        // A server's own API takes the write, and the client relays the read that shows it.
        #expect(try await call(c.servers[0], "PUT", "/v1/services", file).status == 200)
        let services = try json(await call(c.client, "GET", "/v1/services"), [String: ServiceSpec].self)
        #expect(services.keys.sorted() == ["web"])
        #expect(try json(await call(c.client, "GET", "/v1/nodes/drained"), [String].self) == [])
    }

    @Test func whenTheLeaderStopsAnotherIsElectedAndNoAcknowledgedWriteIsLost() async throws {
        let c = try await cluster()
        defer { Task { for a in c.all { await a.shutdown() } } }
        #expect(try await eventually { await leader(c.client) != nil })
        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, max: 4 } }"
        #expect(try await call(c.client, "PUT", "/v1/services", file).status == 200)
        #expect(try await call(c.client, "PUT", "/v1/demand/web", #"{"value": 3}"#).status == 200)
        let old = try #require(await leader(c.client))
        let oldRuntime = try #require(c.servers.first { $0.configuration.name == old })
        await oldRuntime.shutdown()

        // The survivors elect a new leader and take writes again, with everything acknowledged before.
        let survivors = c.servers.filter { $0.configuration.name != old }
        #expect(
            try await eventually {
                let r = await survivors[0].cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 4}"#.utf8))
                return r.status == 200
            })
        let now = await leader(survivors[1])
        #expect(now != nil && now != old)
        let services = try json(await call(survivors[1], "GET", "/v1/services"), [String: ServiceSpec].self)
        #expect(services["web"] != nil)
        let d = try json(await call(survivors[1], "GET", "/v1/demand"), [String: Double].self)
        #expect(d["web"] == 4)
    }
}
