import ControlPlane
import Foundation
import Logging
import NIOPosix
import SecureTransport
import Testing

@testable import Agent

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Real agents in this process: real TLS over loopback, real timers, the real HTTP API.
@Suite(.serialized) struct AgentRuntimeTests {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-agent-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        for n in ["node-a", "node-b", "node-c"] {
            try! CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: n, server: n == "node-a", in: "\(d)/certs")
        }
        return d
    }()

    static func freePort() -> Int {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    func agent(_ name: String, server: Bool = false, join: [Int] = [], token: String? = nil) throws -> (AgentRuntime, Int) {
        let port = Self.freePort()
        var s = loopbackAgentSettings(name, dir: Self.dir, port: port)
        s.set("capacity-cpu", "4", origin: "test")
        s.set("capacity-memory", "8GiB", origin: "test")
        if let token { s.set("api-token", token, origin: "test") }
        if server { s.set("server", "true", origin: "test") }
        for j in join { s.append("join", "127.0.0.1:\(j)", origin: "test") }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return (try AgentRuntime(configuration: try s.resolve(), logger: logger), port)
    }

    func statuses(_ a: AgentRuntime) async -> [String: String] {
        Dictionary(uniqueKeysWithValues: await a.members().map { ($0.name, $0.status.rawValue) })
    }

    func eventually(_ seconds: Double = 10, _ condition: () async -> Bool) async throws -> Bool {
        try await pollUntil(seconds, condition)
    }

    @Test func threeAgentsJoinThroughOneSeedAndSeeEachOtherAlive() async throws {
        let (a, pa) = try agent("node-a", server: true)
        try await a.start()
        let (b, _) = try agent("node-b", join: [pa])
        let (c, _) = try agent("node-c", join: [pa])
        try await b.start()
        try await c.start()
        let all = ["node-a": "alive", "node-b": "alive", "node-c": "alive"]
        #expect(
            try await eventually {
                let sa = await statuses(a)
                let sb = await statuses(b)
                let sc = await statuses(c)
                return sa == all && sb == all && sc == all
            })
        let view = await c.members().first { $0.name == "node-a" }
        #expect(view?.role == "server")
        #expect(view?.capacity == .init(cpuMillicores: 4000, memoryBytes: 8 << 30))
        for r in [a, b, c] { await r.shutdown() }
    }

    @Test func aStoppedAgentIsDeclaredDeadAndALeavingOneLeft() async throws {
        let (a, pa) = try agent("node-a")
        try await a.start()
        let (b, _) = try agent("node-b", join: [pa])
        let (c, _) = try agent("node-c", join: [pa])
        try await b.start()
        try await c.start()
        #expect(try await eventually { await statuses(a).values.filter { $0 == "alive" }.count == 3 })
        await c.shutdown()
        #expect(
            try await eventually {
                let sa = await statuses(a)
                let sb = await statuses(b)
                return sa["node-c"] == "dead" && sb["node-c"] == "dead"
            })
        await b.stop()
        #expect(try await eventually { await statuses(a)["node-b"] == "left" })
        await a.shutdown()
    }

    @Test func aShutDownAgentAnswersWithTheViewItHadAndASecondShutdownReturns() async throws {
        let (a, pa) = try agent("node-a")
        try await a.start()
        let (b, _) = try agent("node-b", join: [pa])
        try await b.start()
        let both = ["node-a": "alive", "node-b": "alive"]
        #expect(try await eventually { await statuses(b) == both })
        await b.shutdown()
        // Its event loops are gone: the answer is the view it had at stop, with no hop onto them
        // (work NIO drops there, so the caller would never resume; under SWIFTNIO_STRICT a crash).
        #expect(await statuses(b) == both)
        let (messages, _) = await b.membership.traffic()
        #expect(messages > 0)
        await b.shutdown()
        await a.shutdown()
    }

    @Test func theHTTPAPIServesMembersAndEnforcesItsToken() async throws {
        let (a, _) = try agent("node-a", token: "s3cret")
        try await a.start()
        let url = URL(string: "http://127.0.0.1:\(a.httpAddress!.port!)/v1/members")!
        let (_, refused) = try await URLSession.shared.data(from: url)
        #expect((refused as? HTTPURLResponse)?.statusCode == 401)
        var request = URLRequest(url: url)
        request.setValue("Bearer s3cret", forHTTPHeaderField: "Authorization")
        let (data, ok) = try await URLSession.shared.data(for: request)
        #expect((ok as? HTTPURLResponse)?.statusCode == 200)
        let members = try JSONDecoder().decode([MemberView].self, from: data)
        #expect(members.map(\.name) == ["node-a"])
        await a.shutdown()
    }

    @Test func aCertificateForAnotherNodeIsRefusedAtStart() throws {
        var s = AgentSettings()
        for (k, v) in [
            "name": "node-b", "data-dir": "\(Self.dir)/x", "tls-ca": "\(Self.dir)/ca/ca.pem",
            "tls-cert": "\(Self.dir)/certs/node-a.pem", "tls-key": "\(Self.dir)/certs/node-a-key.pem",
        ] {
            s.set(k, v, origin: "--\(k)")
        }
        #expect(throws: ConfigurationError("--tls-cert: certificate \(Self.dir)/certs/node-a.pem names node node-a, but --name is node-b")) {
            _ = try AgentRuntime(configuration: try s.resolve(), logger: Logger(label: "test"))
        }
    }

    @Test func aServerNeedsAServerCertificate() throws {
        var s = AgentSettings()
        for (k, v) in [
            "name": "node-b", "data-dir": "\(Self.dir)/x", "tls-ca": "\(Self.dir)/ca/ca.pem",
            "tls-cert": "\(Self.dir)/certs/node-b.pem", "tls-key": "\(Self.dir)/certs/node-b-key.pem", "server": "true",
        ] {
            s.set(k, v, origin: "--\(k)")
        }
        #expect(throws: ConfigurationError.self) {
            _ = try AgentRuntime(configuration: try s.resolve(), logger: Logger(label: "test"))
        }
    }

    @Test func membersTableReadsLikeConsulMembers() {
        let m = MemberView(
            .init(
                name: "node-a", address: "10.0.0.1:7480", role: .server,
                capacity: .init(cpuMillicores: 2500, memoryBytes: 8 << 30), running: ["web": 3, "batch": 4]),
            status: .alive, incarnation: 1)
        var labelled = m
        labelled.name = "node-b"
        labelled.labels = ["zone": "a", "disk": "ssd"]
        let lines = MembersCommand.table([m, labelled]).split(separator: "\n")
        #expect(lines[0] == "NAME    ADDRESS        STATUS  ROLE    CPU   MEMORY  CONTAINERS  LABELS")
        #expect(lines[1] == "node-a  10.0.0.1:7480  alive   server  2.50  8.0GiB  7           -")
        #expect(lines[2] == "node-b  10.0.0.1:7480  alive   server  2.50  8.0GiB  7           disk=ssd,zone=a")
    }
}
