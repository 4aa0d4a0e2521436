import Consensus
import Determinism
import Foundation
import Harness
import NIOConcurrencyHelpers
import SecureTransport
import Testing

@testable import Agent

/// Real server processes, killed with SIGKILL at random moments while a stream of writes goes on:
/// every write that was acknowledged must be in the state afterwards (Raft §5.4: committed entries
/// survive any minority of crashes; our Ready persists with fsync before answering).
@Suite(.serialized) struct RaftCrashTests {
    /// The `microscale` executable built next to the test bundle.
    static var executable: String {
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [here, here.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("microscale").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/microscale").path
    }

    final class Server: @unchecked Sendable {
        let name: String
        let host: String
        var pid: Int32 = 0
        init(name: String, host: String) {
            self.name = name
            self.host = host
        }
    }

    func start(_ s: Server, dir: String, join: String?) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.executable)
        var args = [
            "agent", "--name", s.name, "--bind", "\(s.host):7480", "--http", "\(s.host):7481",
            "--data-dir", "\(dir)/data/\(s.name)", "--tls-ca", "\(dir)/ca/ca.pem",
            "--tls-cert", "\(dir)/certs/\(s.name).pem", "--tls-key", "\(dir)/certs/\(s.name)-key.pem",
            "--server", "--bootstrap-expect", "3", "--log-level", "warning",
        ]
        if let join { args += ["--join", "\(join):7480"] }
        p.arguments = args
        let log = "\(dir)/\(s.name).log"
        if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = FileHandle(forWritingAtPath: log)
        handle?.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        s.pid = p.processIdentifier
    }

    func services(from s: Server) async -> Set<String>? {
        guard let data = await PlainHTTP.get(host: s.host, port: 7481, path: "/v1/services", timeoutMillis: 2000),
            let map = try? JSONDecoder().decode([String: ServiceSpec].self, from: data)
        else { return nil }
        return Set(map.keys)
    }

    @Test(arguments: [UInt64(20_261_123)])
    func killingServersDuringAStreamOfWritesNeverLosesAnAcknowledgedOne(seed: UInt64) async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.executable), "build the microscale executable first: \(Self.executable)")
        let dir = NSTemporaryDirectory() + "microscale-raft-crash-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let servers = (1...3).map { Server(name: "s\($0)", host: "127.0.4.\($0)") }
        for s in servers { try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: s.name, server: true, in: "\(dir)/certs") }
        defer {
            for s in servers where s.pid > 0 { kill(s.pid, SIGKILL) }
        }
        for s in servers { try start(s, dir: dir, join: s === servers[0] ? nil : servers[0].host) }

        // The writer: service w<i> declared through a round-robin of servers, one at a time.
        let acknowledged = NIOLockedValueBox<[Int]>([])
        let stopWriting = NIOLockedValueBox(false)
        let writer = Thread {
            var i = 0
            while !stopWriting.withLockedValue({ $0 }) {
                i += 1
                let s = servers[i % 3]
                let body = Array("services: { w\(i): { image: x, cpu: 0.1, memory: 1MiB, max: 1 } }".utf8)
                if let (status, _) = PlainHTTP.blockingRequest(
                    "PUT", host: s.host, port: 7481, path: "/v1/services", body: body,
                    timeoutMillis: 3000, maxBytes: 1 << 16), status == 200
                {
                    acknowledged.withLockedValue { $0.append(i) }
                } else {
                    usleep(20_000)
                }
            }
        }
        writer.start()

        var rng = SeededGenerator(seed: seed)
        for _ in 0..<6 {
            try await Task.sleep(for: .milliseconds(Int64.random(in: 400...900, using: &rng)))
            let victim = servers[Int.random(in: 0..<3, using: &rng)]
            kill(victim.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(victim.pid, &status, 0)
            try await Task.sleep(for: .milliseconds(Int64.random(in: 100...600, using: &rng)))
            let other = servers.first { $0 !== victim }!
            try start(victim, dir: dir, join: other.host)
        }
        try await Task.sleep(for: .seconds(1))
        stopWriting.withLockedValue { $0 = true }
        while !writer.isFinished { try await Task.sleep(for: .milliseconds(20)) }

        let acked = acknowledged.withLockedValue { $0 }
        #expect(acked.count >= 20, "seed \(seed): only \(acked.count) writes acknowledged; see \(dir)/*.log")
        // Read through every server (each answers from the leader), after the last restart settled.
        for s in servers {
            var present: Set<String>?
            let deadline = Date().addingTimeInterval(15)
            while present == nil, Date() < deadline {
                present = await services(from: s)
                if present == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let have = try #require(present, "seed \(seed): \(s.name) never answered; see \(dir)/\(s.name).log")
            let missing = acked.filter { !have.contains("w\($0)") }
            #expect(missing.isEmpty, "seed \(seed): acknowledged writes missing through \(s.name): \(missing.prefix(20))")
        }
    }
}
