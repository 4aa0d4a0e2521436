import DockerEngine
import Foundation
import Logging
import Testing

@testable import Agent

/// Issue 19, item 7: what an operator expects of files, metrics, logs and the CLI's output.
@Suite(.serialized) struct OperatorExpectationsTests {
    /// A one-server cluster on a data directory the test made too wide (0755, a file 0644).
    func server(dataDir: String) throws -> AgentRuntime {
        var s = loopbackAgentSettings("node-a", dir: AgentRuntimeTests.dir, port: AgentRuntimeTests.freePort(), dataDir: dataDir)
        s.set("server", "true", origin: "test")
        s.set("bootstrap-expect", "1", origin: "test")
        s.set("capacity-cpu", "4", origin: "test")
        s.set("capacity-memory", "8GiB", origin: "test")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        return try AgentRuntime(configuration: try s.resolve(), logger: logger)
    }

    func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int).flatMap { $0 }.map { $0 & 0o777 }
    }

    @Test func theDataDirectoryIs0700AndItsFiles0600AndPromtoolFindsTheMetricsClean() async throws {
        let dataDir = NSTemporaryDirectory() + "microscale-modes-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        FileManager.default.createFile(
            atPath: dataDir + "/left-by-an-older-version", contents: Data("x".utf8), attributes: [.posixPermissions: 0o644])
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let a = try server(dataDir: dataDir)
        try await a.start()
        defer { Task { await a.shutdown() } }
        #expect(try await pollUntil(20) { await a.cluster(method: "GET", path: "/v1/leader", body: []).status == 200 })
        let file = "services: { web: { image: x, cpu: 0.5, memory: 16MiB, min: 1, max: 2 } }"
        #expect(try await callRetryingUnavailable(a, "PUT", "/v1/services", file, for: 10).status == 200)
        #expect(try await callRetryingUnavailable(a, "PUT", "/v1/demand/web", #"{"value": 1}"#, for: 10).status == 200)

        #expect(mode(dataDir) == 0o700)
        let files = try FileManager.default.contentsOfDirectory(atPath: dataDir)
        #expect(files.contains("raft.sqlite") && files.contains("raft-peers.json"), "\(files)")
        for f in files {
            #expect(mode(dataDir + "/" + f) == 0o600, "\(f) is \(String(mode(dataDir + "/" + f) ?? -1, radix: 8))")
        }

        // promtool (Debian's prometheus package, installed by scripts/setup --test) on /metrics.
        let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first { FileManager.default.isExecutableFile(atPath: $0) }
        if promtool == nil, ProcessInfo.processInfo.environment["CI"] != "true" { return }
        let tool = try #require(promtool, "promtool is not installed: run scripts/setup --test")
        let metrics = await a.metricsText()
        #expect(metrics.contains("microscale_gossip_messages_sent_total"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        input.fileHandleForWriting.write(Data(metrics.utf8))
        try input.fileHandleForWriting.close()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && said.isEmpty, "promtool check metrics: \(said)")
    }

    @Test func jsonLogLinesAreOneObjectEach() throws {
        let line = JSONLogHandler.line(
            time: Date(timeIntervalSince1970: 0), level: .warning, message: "refused \"peer\"",
            label: "microscale.agent", metadata: ["node": "a", "n": .stringConvertible(3)])
        #expect(line.hasSuffix("\n") && !line.dropLast().contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String])
        #expect(
            object == [
                "time": "1970-01-01T00:00:00.000Z", "level": "warning", "message": "refused \"peer\"",
                "label": "microscale.agent", "node": "a", "n": "3",
            ])
    }

    @Test func versionNamesTheAgentAndTheProtocol() {
        let text = VersionCommand.text(VersionCommand.view)
        #expect(text.contains("microscale \(MicroscaleVersion.current)"))
        #expect(text.contains("protocol \(VersionCommand.view.protocolVersion)"))
    }

    @Test func anUnreachableAgentIsOneShortLine() {
        let nio =
            "cannot connect to 127.0.0.1:1: Connection errors: SingleConnectionFailure(target: [IPv4]127.0.0.1/127.0.0.1:1, "
            + "error: connection reset (error set): Connection refused) (errno: 111))"
        let line = HTTPClientOptions.unreachable("http://127.0.0.1:1", HTTPClientError.connectFailed(endpoint: "127.0.0.1:1", reason: nio))
        #expect(line == "cannot reach the agent at 127.0.0.1:1: connection refused (is 'microscale agent' running? see --http-addr)")
        let slow = HTTPClientOptions.unreachable("http://10.0.0.9:7481", HTTPClientError.timedOut(endpoint: "10.0.0.9:7481", after: .seconds(15)))
        #expect(slow == "cannot reach the agent at 10.0.0.9:7481: no answer within 15.0 seconds (is 'microscale agent' running? see --http-addr)")
    }
}
