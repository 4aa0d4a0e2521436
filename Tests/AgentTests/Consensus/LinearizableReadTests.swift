import Determinism
import Dispatch
import Foundation
import Harness
import NIOConcurrencyHelpers
import SecureTransport
import Testing

@testable import Agent

/// Issue 19, item 3, as a client sees it (a Jepsen-style test): three real server processes;
/// five clients write unique demand values of one service and read them back, each request to a
/// server picked at random; meanwhile the leader is frozen (SIGSTOP) and thawed (SIGCONT) four
/// times, then killed (SIGKILL) and started again. The history of every acknowledged write, every
/// write of unknown outcome and every answered read must be linearizable (`RegisterHistory`).
/// Before reads went through ReadIndex, a thawed leader answered reads from its applied state and
/// such histories were not.
@Suite(.serialized) struct LinearizableReadTests {
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
        p.executableURL = URL(fileURLWithPath: RaftCrashTests.executable)
        var args = [
            "agent", "--name", s.name, "--bind", "\(s.host):7480", "--http", "\(s.host):7481",
            "--data-dir", "\(dir)/data/\(s.name)", "--tls-ca", "\(dir)/ca/ca.pem",
            "--tls-cert", "\(dir)/certs/\(s.name).pem", "--tls-key", "\(dir)/certs/\(s.name)-key.pem",
            "--server", "--bootstrap-expect", "3", "--log-level", "warning",
            "--docker-socket", "\(dir)/no-docker.sock",
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

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    @Test(arguments: [UInt64(20_261_130)])
    func concurrentClientsThroughEveryServerWhileTheLeaderIsFrozenThawedAndKilledSeeALinearizableRegister(seed: UInt64) async throws {
        #expect(
            FileManager.default.isExecutableFile(atPath: RaftCrashTests.executable),
            "build the microscale executable first: \(RaftCrashTests.executable)")
        let dir = NSTemporaryDirectory() + "microscale-linearizable-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let servers = (1...3).map { Server(name: "l\($0)", host: "127.0.6.\($0)") }
        for s in servers { try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: s.name, server: true, in: "\(dir)/certs") }
        defer {
            for s in servers where s.pid > 0 {
                kill(s.pid, SIGCONT)
                kill(s.pid, SIGKILL)
            }
        }
        for s in servers { try start(s, dir: dir, join: s === servers[0] ? nil : servers[0].host) }

        @Sendable func call(_ method: String, _ s: Server, _ path: String, _ body: String = "", timeout: Int = 2500) -> (Int, Data)? {
            PlainHTTP.blockingRequest(
                method, host: s.host, port: 7481, path: path, body: Array(body.utf8),
                timeoutMillis: timeout, maxBytes: 1 << 16)
        }
        func leader() -> Server? {
            for s in servers {
                if let (status, body) = call("GET", s, "/v1/leader", timeout: 1000), status == 200,
                    let view = try? JSONDecoder().decode(LeaderView.self, from: body)
                {
                    return servers.first { $0.name == view.name }
                }
            }
            return nil
        }
        var ready = false
        for _ in 0..<300 where !ready {
            ready = leader() != nil
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready, "seed \(seed): no leader; see \(dir)/*.log")
        let service = "services: { lin: { image: x, cpu: 0.1, memory: 1MiB, max: 1, demand: { source: static, per_container: 1e9 } } }"
        var declared = false
        for _ in 0..<100 where !declared {
            declared = call("PUT", servers[0], "/v1/services", service)?.0 == 200
            if !declared { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(declared, "seed \(seed): the service was not declared; see \(dir)/*.log")

        // The clients: blocking threads, each with its own seeded choices.
        let history = NIOLockedValueBox<[RegisterHistory.Operation]>([])
        let stop = NIOLockedValueBox(false)
        let clients = (0..<5).map { c in
            Thread {
                var rng = SeededGenerator(seed: seed &+ UInt64(c) &* 7919)
                var sequence = 0
                while !stop.withLockedValue({ $0 }) {
                    let s = servers[Int.random(in: 0..<servers.count, using: &rng)]
                    if Bool.random(using: &rng) {
                        sequence += 1
                        let value = Double(c * 1_000_000 + sequence)
                        let t0 = Self.now()
                        let answer = call("PUT", s, "/v1/demand/lin", #"{"value": \#(Int(c * 1_000_000 + sequence))}"#)
                        let t1 = Self.now()
                        // Only a 200 is known to have taken effect; a 4xx is known not to have; anything
                        // else (a timeout, a 503 or 504 after it may have been proposed) is unknown.
                        if let (status, _) = answer, (400..<500).contains(status) { continue }
                        let ret: UInt64? = answer?.0 == 200 ? t1 : nil
                        history.withLockedValue { $0.append(.init(kind: .write(value), call: t0, ret: ret, client: c)) }
                    } else {
                        let t0 = Self.now()
                        let answer = call("GET", s, "/v1/demand")
                        let t1 = Self.now()
                        guard let (status, body) = answer, status == 200,
                            let map = try? JSONDecoder().decode([String: Double].self, from: body)
                        else { continue }
                        history.withLockedValue { $0.append(.init(kind: .read(map["lin"]), call: t0, ret: t1, client: c)) }
                    }
                }
            }
        }
        clients.forEach { $0.start() }

        // The nemesis: freeze and thaw the leader four times, then kill it and start it again.
        var rng = SeededGenerator(seed: seed)
        var faults: [String] = []
        for _ in 0..<4 {
            try await Task.sleep(for: .milliseconds(Int64.random(in: 1000...2000, using: &rng)))
            guard let l = leader() else {
                faults.append("no leader to freeze")
                continue
            }
            let frozen = Int64.random(in: 1000...2000, using: &rng)
            kill(l.pid, SIGSTOP)
            try await Task.sleep(for: .milliseconds(frozen))
            kill(l.pid, SIGCONT)
            faults.append("froze \(l.name) \(frozen) ms")
        }
        try await Task.sleep(for: .milliseconds(1500))
        if let l = leader() {
            kill(l.pid, SIGKILL)
            var status: Int32 = 0
            waitpid(l.pid, &status, 0)
            try await Task.sleep(for: .milliseconds(500))
            try start(l, dir: dir, join: servers.first { $0 !== l }!.host)
            faults.append("killed and restarted \(l.name)")
        }
        try await Task.sleep(for: .seconds(3))
        stop.withLockedValue { $0 = true }
        while clients.contains(where: { !$0.isFinished }) { try await Task.sleep(for: .milliseconds(20)) }

        let ops = history.withLockedValue { $0 }
        let reads = ops.filter { if case .read = $0.kind { return true } else { return false } }.count
        let acknowledged = ops.filter { if case .write = $0.kind { return $0.ret != nil } else { return false } }.count
        let unknown = ops.count - reads - acknowledged
        print(
            "linearizable reads: seed \(seed), \(reads) reads, \(acknowledged) acknowledged writes, \(unknown) of unknown outcome; \(faults.joined(separator: "; "))"
        )
        #expect(reads >= 50 && acknowledged >= 50, "seed \(seed): too few operations answered; see \(dir)/*.log")
        let linearizable = RegisterHistory(operations: ops).isLinearizable()
        if !linearizable {
            let file = "\(dir)/history.txt"
            try? ops.sorted { $0.call < $1.call }.map(\.description).joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
            Issue.record("seed \(seed): the history is not linearizable; it is in \(file); faults: \(faults)")
        }

        // ?stale: every server answers from its own state, and converges on the last value.
        for s in servers {
            var answered = false
            for _ in 0..<100 where !answered {
                answered = call("GET", s, "/v1/demand?stale")?.0 == 200
                if !answered { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(answered, "seed \(seed): \(s.name) gave no stale read")
        }
    }
}
