import Consensus
import Foundation
import Logging
import SecureTransport

@testable import Agent

/// Server agents in this process for the day-two tests (backup, server membership): real TLS on
/// loopback, real SQLite logs, the cluster API as the HTTP routes call it.
struct ServerCluster {
    let dir: String
    var agents: [String: AgentRuntime] = [:]
    var ports: [String: Int] = [:]

    /// A CA and server certificates for `names` under a fresh directory named after `label`.
    /// `clients` get client certificates (`startClient`).
    init(label: String, names: [String], clients: [String] = []) throws {
        dir = NSTemporaryDirectory() + "microscale-\(label)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        for n in names {
            try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: n, server: true, in: "\(dir)/certs")
        }
        for n in clients {
            try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: n, server: false, in: "\(dir)/certs")
        }
    }

    /// Starts client agent `name` (no Raft), joining the agents started so far.
    @discardableResult
    mutating func startClient(_ name: String) async throws -> AgentRuntime {
        let port = AgentRuntimeTests.freePort()
        var s = loopbackAgentSettings(name, dir: dir, port: port, dataDir: dataDir(name))
        for p in ports.values.sorted().prefix(3) { s.append("join", "127.0.0.1:\(p)", origin: "test") }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let a = try AgentRuntime(configuration: try s.resolve(), logger: logger)
        try await a.start()
        agents[name] = a
        ports[name] = port
        return a
    }

    func dataDir(_ name: String, generation: Int = 0) -> String { "\(dir)/data-\(name)-\(generation)" }

    /// Starts server `name`, joining the first agent started (if any). `settings` adds flags.
    @discardableResult
    mutating func start(
        _ name: String, bootstrapExpect: Int? = 3, generation: Int = 0,
        settings: [(String, String)] = []
    ) async throws -> AgentRuntime {
        let port = AgentRuntimeTests.freePort()
        var s = loopbackAgentSettings(name, dir: dir, port: port, dataDir: dataDir(name, generation: generation))
        s.set("server", "true", origin: "test")
        if let bootstrapExpect { s.set("bootstrap-expect", "\(bootstrapExpect)", origin: "test") }
        for p in ports.values.sorted().prefix(3) { s.append("join", "127.0.0.1:\(p)", origin: "test") }
        for (k, v) in settings { s.set(k, v, origin: "test") }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let a = try AgentRuntime(configuration: try s.resolve(), logger: logger)
        try await a.start()
        agents[name] = a
        ports[name] = port
        return a
    }

    mutating func stop(_ name: String) async {
        if let a = agents.removeValue(forKey: name) { await a.shutdown() }
        ports[name] = nil
    }

    func shutdownAll() async {
        for a in agents.values { await a.shutdown() }
    }

    var running: [AgentRuntime] { agents.keys.sorted().map { agents[$0]! } }

    /// The leader every running server names, once they agree.
    func agreedLeader() async -> String? {
        var names: Set<String?> = []
        for a in running { names.insert(await a.raft?.status()?.leader) }
        guard names.count == 1, let l = names.first!, agents[l] != nil else { return nil }
        return l
    }
}

struct UnexpectedAnswer: Error, CustomStringConvertible { var description: String }

func decodeBody<T: Decodable>(_ r: APIResponse, _ type: T.Type) throws -> T {
    do { return try JSONDecoder().decode(T.self, from: Data(r.body)) } catch {
        throw UnexpectedAnswer(description: "HTTP \(r.status): \(String(decoding: r.body.prefix(500), as: UTF8.self))")
    }
}
