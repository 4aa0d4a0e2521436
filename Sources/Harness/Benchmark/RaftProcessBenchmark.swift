import Agent
import Bounds
import Figures
import Foundation
import NIOConcurrencyHelpers
import SecureTransport

/// Raft with three real server agents on loopback (127.0.2.1-3), measured the way the etcd reference
/// was: SIGKILL the leader, then time until a write through the API of a survivor is committed;
/// restart the killed server and repeat. Also sequential committed writes and many concurrent
/// ones (which Raft batches). Figures, not assertions: `microscale-bench raft`.
public struct RaftProcessBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var electionTimeoutMilliseconds: Int
        public var heartbeatMilliseconds: Int
        public var trials: Int
        /// Every failover trial, failed ones kept with their reason.
        public var failover: Trials
        public var sequentialWrites: Int
        public var sequentialMedianMilliseconds: Double?
        public var sequentialP90Milliseconds: Double?
        public var concurrentClients: Int
        public var concurrentWritesPerSecond: Double
    }

    public var executable: String
    public var workDirectory: String
    public var electionTimeoutMilliseconds = 300
    public var heartbeatMilliseconds = 50
    public var trials = 30
    public var sequentialWrites = 500
    public var concurrentClients = 64
    public var concurrentSeconds = 3.0

    public init(executable: String, workDirectory: String) {
        self.executable = executable
        self.workDirectory = workDirectory
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let dir = workDirectory
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let servers = (1...3).map { ServerProcess(name: "s\($0)", ip: "127.0.2.\($0)", directory: dir, executable: executable) }
        for s in servers {
            try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: s.name, server: true, in: "\(dir)/certs")
        }
        defer { for s in servers { s.kill9() } }
        for s in servers { try start(s, join: servers[0].ip) }
        progress("3 servers started (election timeout \(electionTimeoutMilliseconds) ms, heartbeat \(heartbeatMilliseconds) ms)")
        guard let first = try await waitForLeader(servers, seconds: 30) else {
            throw CLIError("no leader elected within 30 s; see \(dir)/*.log")
        }
        progress("leader: \(first)")
        let services = "services: { bench: { image: bench:latest, cpu: 0.1, memory: 16MiB, max: 10 } }"
        guard let (status, _) = await write("PUT", servers.first { $0.name == first }!, "/v1/services", Array(services.utf8)),
            status == 200
        else { throw CLIError("could not declare the bench service") }

        // Sequential committed writes, to the leader.
        let leader = servers.first { $0.name == first }!
        var sequential: [Double] = []
        for i in 0..<sequentialWrites {
            let t = ContinuousClock.now
            if let (s, _) = await write("PUT", leader, "/v1/demand/bench", Array("{\"value\": \(i)}".utf8)), s == 200 {
                sequential.append((ContinuousClock.now - t).inMilliseconds)
            }
        }
        progress("sequential: median \(median(sequential).map { String(format: "%.2f", $0) } ?? "-") ms")

        // Concurrent writes: Raft batches what arrives while the previous append is in flight.
        let clients = concurrentClients
        // One thread per client: GCD's pool is only as wide as the machine, which would cap the
        // concurrency (and so the batching being measured) at two requests in flight.
        let seconds = concurrentSeconds
        let host = leader.ip
        let done: Int = await withCheckedContinuation { c in
            let tally = NIOLockedValueBox((total: 0, finished: 0))
            for i in 0..<clients {
                let t = Thread {
                    let deadline = Date().addingTimeInterval(seconds)
                    var n = 0
                    while Date() < deadline {
                        if let (s, _) = PlainHTTP.blockingRequest(
                            "PUT", host: host, port: 7481, path: "/v1/demand/bench",
                            body: Array("{\"value\": \(i)}".utf8), timeoutMillis: 10_000,
                            maxBytes: 1 << 16), s == 200
                        {
                            n += 1
                        }
                    }
                    let (last, total) = tally.withLockedValue { t in
                        t.total += n
                        t.finished += 1
                        return (t.finished == clients, t.total)
                    }
                    if last { c.resume(returning: total) }
                }
                t.start()
            }
        }
        let rate = Double(done) / concurrentSeconds
        progress(String(format: "concurrent: %.0f writes/s with %d clients", rate, clients))

        // Failover trials.
        var failovers = Trials(fault: "SIGKILL of the leader on loopback (kernel resets its connections); writes retried on a survivor every 5 ms")
        for trial in 1...trials {
            guard let current = try await waitForLeader(servers, seconds: 10),
                let victim = servers.first(where: { $0.name == current })
            else {
                failovers.fail("no leader before the kill")
                continue
            }
            let survivor = servers.first { $0.name != current }!
            victim.kill9()
            let t0 = ContinuousClock.now
            var committed = false
            while ContinuousClock.now - t0 < .seconds(10) {
                if let (s, _) = await write("PUT", survivor, "/v1/demand/bench", Array("{\"value\": \(trial)}".utf8), timeout: 1000), s == 200 {
                    committed = true
                    break
                }
                try await Task.sleep(for: .milliseconds(5))
            }
            let elapsed = (ContinuousClock.now - t0).inMilliseconds
            if committed { failovers.record(elapsed) } else { failovers.fail("no commit within 10 s") }
            progress("trial \(trial): \(committed ? String(format: "%.0f ms", elapsed) : "no commit within 10 s")")
            victim.waitUntilExit()
            try start(victim, join: survivor.ip)
            // Let the restarted server catch up and the cluster settle before the next kill.
            _ = try await pollUntil(10) { await self.leaderSeen(by: victim) != nil }
            try await Task.sleep(for: .milliseconds(1500))
        }
        return Report(
            electionTimeoutMilliseconds: electionTimeoutMilliseconds, heartbeatMilliseconds: heartbeatMilliseconds,
            trials: trials, failover: failovers, sequentialWrites: sequential.count,
            sequentialMedianMilliseconds: median(sequential), sequentialP90Milliseconds: percentile(sequential, 0.9),
            concurrentClients: clients, concurrentWritesPerSecond: rate)
    }

    func start(_ s: ServerProcess, join: String) throws {
        try s.start(
            join: join,
            extra: [
                "--raft-election-timeout", "\(electionTimeoutMilliseconds)ms",
                "--raft-heartbeat-interval", "\(heartbeatMilliseconds)ms",
            ])
    }

    func write(_ method: String, _ s: ServerProcess, _ path: String, _ body: [UInt8], timeout: Int = 10_000) async -> (Int, Data)? {
        await PlainHTTP.request(method, host: s.ip, port: 7481, path: path, body: body, timeoutMillis: timeout)
    }

    func leaderSeen(by s: ServerProcess) async -> String? {
        guard let data = await PlainHTTP.get(host: s.ip, port: 7481, path: "/v1/leader", timeoutMillis: 500),
            let view = try? JSONDecoder().decode(LeaderView.self, from: data)
        else { return nil }
        return view.name
    }

    /// The leader every running server agrees on.
    func waitForLeader(_ servers: [ServerProcess], seconds: Double) async throws -> String? {
        var found: String?
        _ = try await pollUntil(seconds) {
            var names: Set<String> = []
            for s in servers where s.isRunning {
                guard let l = await leaderSeen(by: s) else { return false }
                names.insert(l)
            }
            found = names.count == 1 ? names.first : nil
            return found != nil
        }
        return found
    }
}

public func median(_ xs: [Double]) -> Double? { percentile(xs, 0.5) }

public func percentile(_ xs: [Double], _ p: Double) -> Double? {
    guard !xs.isEmpty else { return nil }
    let s = xs.sorted()
    return s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
}
