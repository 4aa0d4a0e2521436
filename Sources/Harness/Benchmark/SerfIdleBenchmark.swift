import Agent
import Figures
import Foundation

/// serf measured beside our agents: N real `serf agent` processes (Debian's `serf`) on
/// 127.0.8.x, all joining one seed, gossip encrypted (`-encrypt`, AES-GCM: our agents speak TLS),
/// settled and then left idle for the same windows as `IdleFootprintBenchmark`, and read the same
/// way (VmRSS at the end, the threads' run time over the window). The serf figures
/// (14.5 MiB, 0.3%) were taken on another day; a CPU figure on this machine moves by a factor of
/// two with the host's load, so only two figures read in the same minutes compare.
///
/// serf runs its own defaults (memberlist's LAN profile: a probe every 1 s, gossip every 200 ms,
/// a push-pull every 30 s); ours probes every 200 ms, which is what detects a death in ~1 s. Both
/// are printed beside the figures.
public struct SerfIdleBenchmark: Sendable {
    /// At most this many serf agents (one 127.0.8.x address each).
    public static let maxNodes = 250
    /// memberlist's LAN profile (serf's default), as documented by serf and memberlist.
    public static let profile = "serf's default (lan): probe every 1 s, gossip every 200 ms, push-pull every 30 s"

    public struct Figures: Codable, Sendable {
        public var version: String
        public var profile: String
        public var nodes: Int
        /// Seconds until every agent listed N alive members (polled with `serf members`
        /// every 500 ms; nil: not within the timeout).
        public var joinSeconds: Double?
        public var idleSeconds: Double
        public var rssMedianMiB: Double?
        public var rssP90MiB: Double?
        public var cpuMedianPercent: Double?
        public var cpuP90Percent: Double?
        /// Agents gone or unreadable at the end (failed trials, ranked last).
        public var failedAgents: [String]
    }

    public var nodes: Int
    public var serf: String
    public var workDirectory: String
    public var settleSeconds: Double = 15
    public var idleSeconds: Double = 30
    public var joinTimeoutSeconds: Double = 60

    public init(nodes: Int, serf: String, workDirectory: String) {
        self.nodes = nodes
        self.serf = serf
        self.workDirectory = workDirectory
    }

    /// `serf` on the PATH, or nil.
    public static func installed() -> String? { Shell.which("serf") }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Figures {
        guard (2...Self.maxNodes).contains(nodes) else { throw CLIError("--nodes: serf runs 2...\(Self.maxNodes) agents, not \(nodes)") }
        try? FileManager.default.removeItem(atPath: workDirectory)
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        // A fixed key: what is measured is the cost of encrypting, not the key.
        let key = Data((0..<32).map { UInt8($0) }).base64EncodedString()
        var agents: [(name: String, host: String, process: Process)] = []
        defer {
            for a in agents where a.process.isRunning { kill(a.process.processIdentifier, SIGKILL) }
            for a in agents { a.process.waitUntilExit() }
        }
        for i in 0..<nodes {
            let name = "serf-\(i)", host = "127.0.8.\(i + 1)"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: serf)
            var args = [
                "agent", "-node=\(name)", "-bind=\(host):7946", "-rpc-addr=\(host):7373", "-encrypt=\(key)", "-log-level=warn",
            ]
            if i > 0 { args.append("-join=127.0.8.1:7946") }
            p.arguments = args
            FileManager.default.createFile(atPath: "\(workDirectory)/\(name).log", contents: nil)
            let log = FileHandle(forWritingAtPath: "\(workDirectory)/\(name).log")
            p.standardOutput = log
            p.standardError = log
            try BenchmarkChildren.run(p)
            agents.append((name, host, p))
            // The seed must listen before the others join it (-join fails the agent otherwise).
            if i == 0 {
                guard await waitFor(5, { aliveCount(rpc: "\(host):7373") == 1 }) else {
                    throw CLIError("the serf seed did not start; see \(workDirectory)/serf-0.log")
                }
            }
        }
        progress("\(nodes) serf agents started; waiting for every one to list \(nodes) alive")
        let t0 = Date()
        var pending = Set(agents.indices)
        while !pending.isEmpty, Date().timeIntervalSince(t0) < joinTimeoutSeconds {
            for i in pending.sorted() where aliveCount(rpc: "\(agents[i].host):7373") == nodes { pending.remove(i) }
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(500)) }
        }
        let join = pending.isEmpty ? Date().timeIntervalSince(t0) : nil
        progress("serf settling \(Int(settleSeconds)) s, then \(Int(idleSeconds)) s idle, nobody polling")
        try await Task.sleep(for: .seconds(settleSeconds))
        let before = agents.map { ProcessSample.read($0.process.processIdentifier)?.cpuSeconds }
        let start = Date()
        try await Task.sleep(for: .seconds(idleSeconds))
        let elapsed = Date().timeIntervalSince(start)
        let after = agents.map { ProcessSample.read($0.process.processIdentifier) }
        var rss = Trials(fault: "none: \(nodes) serf agents idle after the join", unit: "MiB")
        var cpu = Trials(fault: "none: \(nodes) serf agents idle after the join", unit: "%")
        var failed: [String] = []
        for (i, a) in agents.enumerated() {
            guard a.process.isRunning, let b = before[i], let e = after[i] else {
                failed.append(a.name)
                rss.fail("\(a.name) gone")
                cpu.fail("\(a.name) gone")
                continue
            }
            rss.record(e.rssBytes / 1_048_576)
            cpu.record((e.cpuSeconds - b) / elapsed * 100)
        }
        return Figures(
            version: Self.version(serf), profile: Self.profile, nodes: nodes, joinSeconds: join, idleSeconds: elapsed,
            rssMedianMiB: rss.median, rssP90MiB: rss.p90, cpuMedianPercent: cpu.median, cpuP90Percent: cpu.p90,
            failedAgents: failed)
    }

    /// How many members `serf members` on this RPC address lists alive (nil: no answer).
    func aliveCount(rpc: String) -> Int? {
        guard let out = Self.output(serf, ["members", "-rpc-addr=\(rpc)", "-status=alive"]) else { return nil }
        return out.split(separator: "\n").filter { !$0.isEmpty }.count
    }

    static func version(_ serf: String) -> String {
        output(serf, ["version"])?.split(separator: "\n").first.map { String($0) } ?? "serf"
    }

    /// A short command's standard output, or nil when it fails (bounded: 5 s, then killed).
    static func output(_ exe: String, _ args: [String]) -> String? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        guard (try? p.runWithSignalsUnblocked()) != nil else { return nil }
        let deadline = Date().addingTimeInterval(5)
        while p.isRunning, Date() < deadline { usleep(10_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        // Output of a member list is a few KB: it fits in the pipe's buffer while we wait.
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    func waitFor(_ seconds: Double, _ condition: () -> Bool) async -> Bool {
        let t0 = Date()
        while Date().timeIntervalSince(t0) < seconds {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}
