@testable import Agent
import Consensus
import DockerEngine
import Foundation
import Logging
import SecureTransport
import Testing

/// Three server agents in this process, each carrying out its assignment on the real dockerd that
/// `scripts/test-env` starts (each labels its containers with its own node name, so they share the
/// daemon as three hosts would their own).
@Suite(.serialized) struct EndToEndTests {
    static let run = "e\(UInt32.random(in: 0...UInt32.max) % 100_000)"
    static let names = (1...3).map { "\(run)-\($0)" }
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-e2e-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        for n in names { try! CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: n, server: true, in: "\(d)/certs") }
        return d
    }()

    static func env(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else {
            throw CLIError("\(name) is not set: run the tests through scripts/test (they need a real dockerd)")
        }
        return v
    }

    func agent(_ name: String, join: Int?, docker: String) throws -> (AgentRuntime, Int) {
        let port = AgentRuntimeTests.freePort()
        var s = AgentSettings()
        for (k, v) in [("name", name), ("bind", "127.0.0.1:\(port)"), ("http", "127.0.0.1:0"),
                       ("data-dir", "\(Self.dir)/data-\(name)-\(port)"), ("tls-ca", "\(Self.dir)/ca/ca.pem"),
                       ("tls-cert", "\(Self.dir)/certs/\(name).pem"), ("tls-key", "\(Self.dir)/certs/\(name)-key.pem"),
                       ("capacity-cpu", "2"), ("capacity-memory", "4GiB"), ("server", "true"), ("bootstrap-expect", "3"),
                       ("docker-socket", docker)] {
            s.set(k, v, origin: "test")
        }
        if let join { s.append("join", "127.0.0.1:\(join)", origin: "test") }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return (try AgentRuntime(configuration: try s.resolve(), logger: logger), port)
    }

    func eventually(_ seconds: Double = 30, _ condition: () async -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return await condition()
    }

    /// Running containers per node, per service, as the daemon reports them.
    func running(_ client: DockerClient) async -> [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for n in Self.names {
            let list = (try? await client.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.node)=\(n)"], all: false)) ?? []
            for c in list where c.State == "running" {
                out[n, default: [:]][c.Labels?[MicroscaleLabel.service] ?? "?", default: 0] += 1
            }
        }
        return out
    }

    func total(_ r: [String: [String: Int]], _ service: String) -> Int { r.values.reduce(0) { $0 + ($1[service] ?? 0) } }

    func removeAll(_ client: DockerClient, node: String? = nil) async {
        for n in node.map({ [$0] }) ?? Self.names {
            for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(n)"])) ?? [] {
                try? await client.remove(c.Id, force: true)
            }
        }
    }

    @Test func demandDrivesPriorityOneWhileBatchFillsTheRestAndADeadHostsWorkMoves() async throws {
        let docker = try Self.env("MICROSCALE_TEST_DOCKER_HOST")
        let image = try Self.env("MICROSCALE_TEST_IMAGE")
        let client = try DockerClient(host: docker)
        await removeAll(client)
        let (a1, p1) = try agent(Self.names[0], join: nil, docker: docker)
        try await a1.start()
        var agents = [a1]
        for n in Self.names.dropFirst() {
            let (a, _) = try agent(n, join: p1, docker: docker)
            try await a.start()
            agents.append(a)
        }
        let running = agents
        defer {
            let stillRunning = agents.map(ObjectIdentifier.init)
            Task {
                for a in running where stillRunning.contains(ObjectIdentifier(a)) { await a.shutdown() }
                await removeAll(client)
            }
        }
        #expect(try await eventually { await a1.cluster(method: "GET", path: "/v1/leader", body: []).status == 200 })

        // 3 hosts × 2 cores = 12 slots of 0.5 core.
        let file = """
            services:
              web:
                image: \(image)
                command: ["sleep", "600"]
                priority: 1
                cpu: 0.5
                memory: 16MiB
                min: 1
                max: 8
                demand: { source: static, per_container: 10 }
                stop_timeout: 1s
              batch:
                image: \(image)
                command: ["sleep", "600"]
                priority: 2
                cpu: 0.5
                memory: 16MiB
                max: 20
                fill: true
                stop_timeout: 1s
            """
        let applied = await a1.cluster(method: "PUT", path: "/v1/services", body: Array(file.utf8))
        #expect(applied.status == 200, "\(String(decoding: applied.body, as: UTF8.self))")
        #expect(await a1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 30}"#.utf8)).status == 200)
        var seen: [String: [String: Int]] = [:]
        #expect(try await eventually { seen = await self.running(client); return total(seen, "web") == 3 && total(seen, "batch") == 9 },
                "running: \(seen)")

        // The containers carry the labels of DESIGN.md §6 and their limits.
        let webs = try await client.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.service)=web"], all: false)
        let one = try #require(webs.first { Self.names.contains($0.Labels?[MicroscaleLabel.node] ?? "") })
        let inspected = try await client.inspect(one.Id)
        #expect(inspected.Config.Labels?[MicroscaleLabel.managed] == "true")
        #expect(inspected.HostConfig.NanoCpus == 500_000_000)
        #expect(inspected.HostConfig.Memory == 16 << 20)

        // A demand spike: web doubles, batch is stopped to make room.
        #expect(await a1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 60}"#.utf8)).status == 200)
        #expect(try await eventually { seen = await self.running(client); return total(seen, "web") == 6 && total(seen, "batch") == 6 },
                "running: \(seen)")

        // A host dies (agent and its containers): its web containers run elsewhere, batch shrinks.
        let leader = try JSONDecoder().decode(LeaderView.self, from: Data(await a1.cluster(method: "GET", path: "/v1/leader", body: []).body)).name
        let victimIndex = try #require(Self.names.firstIndex { $0 != leader })
        let victim = agents.remove(at: victimIndex)
        await victim.shutdown()
        await removeAll(client, node: Self.names[victimIndex])
        #expect(try await eventually {
            seen = await self.running(client)
            return seen[Self.names[victimIndex]] == nil && total(seen, "web") == 6 && total(seen, "batch") == 2
        }, "running: \(seen)")
    }
}
