import Agent
import ControlPlane
import Figures
import Foundation
import SecureTransport

/// Membership with real agent processes on loopback addresses 127.0.0.x, measured the way the
/// serf reference was: all N agents join one seed at once, every agent's view is polled every
/// 100 ms, then one non-seed member is SIGKILLed and another SIGSTOPped. Figures, not
/// assertions: `microscale-bench membership`.
public struct MembershipProcessBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var nodes: Int
        /// From the moment every process was started to every agent seeing all N alive.
        public var joinConvergenceSeconds: Double?
        /// SIGKILL to every survivor showing the member dead.
        public var killDetectionSeconds: Double?
        /// SIGSTOP to every other agent showing the member dead.
        public var stopDetectionSeconds: Double?
        /// `silentTrials` members silenced one after another (SIGSTOP: nothing answers and no
        /// connection is reset, as when a host loses power), each until every other agent shows it
        /// dead, then thawed and waited back; the first is `stopDetectionSeconds`. Seconds.
        public var silentDetections: Trials?
        /// Members marked dead while alive, before the kill: transitions in the agents' logs,
        /// plus members shown dead at the end of the idle window.
        public var falsePositives: Int
        public var bytesPerNodePerSecond: Double
        public var idleCPUPercent: Double
        public var rssMiB: Double
        /// The private part of RSS (heap, stacks): the rest is the binary's and the shared
        /// libraries' pages, which every process using them shares.
        public var rssAnonMiB: Double
    }

    public var nodes: Int
    public var executable: String
    public var workDirectory: String
    public var idleSeconds: Double = 10
    public var settleSeconds: Double = 15
    public var timeoutSeconds: Double = 30
    /// How often each agent not yet converged is asked for its view during the join.
    public var pollMilliseconds = 100
    /// How many members are silenced in turn (`Report.silentDetections`); 1: the SIGSTOP alone.
    public var silentTrials = 1

    public init(nodes: Int, executable: String, workDirectory: String) {
        self.nodes = nodes
        self.executable = executable
        self.workDirectory = workDirectory
    }

    struct Agent: @unchecked Sendable {
        var name: String
        var host: String
        var process: Process
    }

    /// What loads the cores during a soak: `stress-ng --cpu N` (Debian's stress-ng, what the
    /// issue's soak names: N workers, each a busy mix of CPU methods), or N shell busy loops
    /// where stress-ng is not installed.
    public enum SoakLoad: Sendable, Hashable {
        case stressNG(workers: Int)
        case shellLoops(Int)

        /// stress-ng when it is on the PATH, shell loops otherwise.
        public static func preferred(workers: Int) -> SoakLoad {
            Shell.which("stress-ng") != nil ? .stressNG(workers: workers) : .shellLoops(workers)
        }

        /// The fault the report names: what ran beside the agents.
        public var name: String {
            switch self {
            case .stressNG(let n): "stress-ng --cpu \(n)"
            case .shellLoops(let n): "\(n) shell busy loops"
            }
        }

        var workers: Int {
            switch self {
            case .stressNG(let n), .shellLoops(let n): n
            }
        }
    }

    /// The no-false-positive run (Lifeguard §I, the promise measured: no live member declared
    /// dead under CPU starvation): N agents join, `load` loads the cores, and for `seconds` every
    /// agent's view is polled once a second. Any member marked dead (or suspect) is a false
    /// positive, since every agent stays alive; the agents' own logs (warning level: every suspect
    /// and dead transition) count the ones a poll would miss.
    public struct SoakReport: Codable, Sendable {
        public var nodes: Int
        public var seconds: Double
        /// The load beside the agents, named (`stress-ng --cpu 2`, or shell loops).
        public var load: String
        public var busyLoops: Int
        public var joinConvergenceSeconds: Double?
        /// Transitions while the cluster formed, before the load and the soak began (suspicions
        /// are expected there under load; deaths are worth reading).
        public var joinDeaths: Int
        public var joinSuspicions: Int
        /// Transitions to dead during the soak, summed over every agent's log (0 is the target).
        public var falseDeaths: Int
        /// Transitions to suspect, summed over every agent's log (refuted suspicions; allowed).
        public var suspicions: Int
        /// Polls (agent × second) in which some member was not alive.
        public var pollsWithNonAlive: Int
        public var polls: Int
        public var cpuPercentPerAgent: Double
        public var bytesPerNodePerSecond: Double
        public var rssMiB: Double
    }

    public func soak(seconds: Double, load: SoakLoad, progress: @Sendable (String) -> Void = { _ in }) async throws -> SoakReport {
        let dir = workDirectory
        var agents: [Agent] = []
        var busy: [Process] = []
        defer {
            // SIGTERM first: stress-ng passes it on to its workers and waits for them.
            for p in busy where p.isRunning { kill(p.processIdentifier, SIGTERM) }
            for p in busy {
                for _ in 0..<20 where p.isRunning { usleep(100_000) }
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            }
            for a in agents where a.process.isRunning { kill(a.process.processIdentifier, SIGKILL) }
        }
        let (all, join) = try await startCluster(progress: progress) { agents.append($0) }
        agents = all
        switch load {
        case .stressNG(let workers):
            // One process: stress-ng forks its workers and, on SIGKILL of the parent, they see
            // it gone within a second (--oomable aside, stress-ng workers poll their parent).
            // The timeout bounds them should this process itself be killed.
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Shell.which("stress-ng") ?? "/usr/bin/stress-ng")
            p.arguments = ["--cpu", "\(workers)", "--timeout", "\(Int(seconds) + 120)s", "--quiet"]
            try BenchmarkChildren.run(p)
            busy.append(p)
        case .shellLoops(let n):
            for _ in 0..<n {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/sh")
                p.arguments = ["-c", "while :; do :; done"]
                try BenchmarkChildren.run(p)
                busy.append(p)
            }
        }
        progress("\(load.name) started; soaking for \(Int(seconds)) s")
        let before = await traffic(agents)
        let cpuBefore = agents.map { ProcessSample.read($0.process.processIdentifier)?.cpuSeconds ?? 0 }
        let offsets = logOffsets(dir)
        let joinTransitions = countTransitions(dir)
        progress("during the join: \(joinTransitions.dead) dead, \(joinTransitions.suspect) suspect transitions (not counted as the soak's)")
        let start = Date()
        var polls = 0, nonAlive = 0
        var lastReport = start
        while Date().timeIntervalSince(start) < seconds {
            try await Task.sleep(for: .seconds(1))
            for a in agents {
                guard let v = await view(a) else { continue }
                polls += 1
                if v.values.contains(where: { $0 != "alive" }) { nonAlive += 1 }
            }
            if Date().timeIntervalSince(lastReport) >= 60 {
                lastReport = Date()
                let (d, sus) = countTransitions(dir, from: offsets)
                progress(
                    "\(Int(Date().timeIntervalSince(start))) s: \(d) dead, \(sus) suspect transitions, \(nonAlive) of \(polls) polls saw a non-alive member"
                )
            }
        }
        let elapsed = Date().timeIntervalSince(start)
        let end = agents.map { ProcessSample.read($0.process.processIdentifier) }
        let after = await traffic(agents)
        let cpu = zip(cpuBefore, end).map { ((($1?.cpuSeconds) ?? 0) - $0) / elapsed * 100 }.reduce(0, +) / Double(nodes)
        let rss = end.map { $0?.rssBytes ?? 0 }.reduce(0, +) / Double(nodes) / 1_048_576
        let (deaths, suspicions) = countTransitions(dir, from: offsets)
        return SoakReport(
            nodes: nodes, seconds: elapsed, load: load.name, busyLoops: load.workers, joinConvergenceSeconds: join,
            joinDeaths: joinTransitions.dead, joinSuspicions: joinTransitions.suspect,
            falseDeaths: deaths, suspicions: suspicions, pollsWithNonAlive: nonAlive, polls: polls,
            cpuPercentPerAgent: cpu, bytesPerNodePerSecond: Double(after - before) / elapsed / Double(nodes),
            rssMiB: rss)
    }

    /// Every agent's log size now: where a later count starts, so that the join (where members
    /// are suspected while the mesh forms under load) is not counted as the soak's.
    func logOffsets(_ dir: String) -> [Int] {
        (0..<nodes).map { i in
            ((try? FileManager.default.attributesOfItem(atPath: "\(dir)/node-\(i).log"))?[.size] as? Int) ?? 0
        }
    }

    /// Transitions to dead and to suspect in every agent's log (MembershipService logs both at
    /// warning level as "member NAME is dead|suspect"), from `offsets` on (the whole logs without).
    func countTransitions(_ dir: String, from offsets: [Int] = []) -> (dead: Int, suspect: Int) {
        var dead = 0, suspect = 0
        for i in 0..<nodes {
            guard let data = FileManager.default.contents(atPath: "\(dir)/node-\(i).log") else { continue }
            let from = i < offsets.count ? min(offsets[i], data.count) : 0
            let text = String(decoding: data[from...], as: UTF8.self)
            for line in text.split(separator: "\n") where line.contains("member ") {
                if line.contains(" is dead") { dead += 1 } else if line.contains(" is suspect") { suspect += 1 }
            }
        }
        return (dead, suspect)
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        var agents: [Agent] = []
        defer {
            for a in agents where a.process.isRunning {
                kill(a.process.processIdentifier, SIGCONT)
                kill(a.process.processIdentifier, SIGKILL)
            }
        }
        let (all, join) = try await startCluster(progress: progress) { agents.append($0) }
        agents = all
        return try await measure(agents, join: join)
    }

    /// Starts the seed, then the N−1 others at once with `--join` the seed; returns them and
    /// the time from the last start to every view holding N alive members (nil: timed out).
    /// `started` sees each agent as soon as it runs, so the caller can clean up after a throw.
    func startCluster(progress: @Sendable (String) -> Void, started: (Agent) -> Void) async throws -> ([Agent], Double?) {
        let dir = workDirectory
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        for i in 0..<nodes {
            try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: "node-\(i)", server: i < 3, in: "\(dir)/certs")
        }
        var agents: [Agent] = []
        func spawn(_ i: Int) throws -> Agent {
            let name = "node-\(i)", host = "127.0.0.\(i + 1)"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            var args = [
                "agent", "--name", name, "--bind", "\(host):7480", "--http", "\(host):7481",
                "--data-dir", "\(dir)/data/\(name)", "--tls-ca", "\(dir)/ca/ca.pem",
                "--tls-cert", "\(dir)/certs/\(name).pem", "--tls-key", "\(dir)/certs/\(name)-key.pem",
                "--capacity-cpu", "2", "--capacity-memory", "4GiB", "--log-level", "warning",
            ]
            if i > 0 { args += ["--join", "127.0.0.1:7480"] }
            p.arguments = args
            FileManager.default.createFile(atPath: "\(dir)/\(name).log", contents: nil)
            let log = FileHandle(forWritingAtPath: "\(dir)/\(name).log")
            p.standardOutput = log
            p.standardError = log
            try BenchmarkChildren.run(p)
            let a = Agent(name: name, host: host, process: p)
            started(a)
            return a
        }

        agents.append(try spawn(0))
        progress("seed started")
        // Our seed, not another agent left on the address: its view names it, and it runs.
        guard
            try await waitUntil(
                timeoutSeconds,
                {
                    guard agents[0].process.isRunning else { return false }
                    return await self.view(agents[0])?["node-0"] != nil
                })
        else {
            throw CLIError("the seed agent did not start; see \(dir)/node-0.log")
        }
        for i in 1..<nodes { agents.append(try spawn(i)) }
        let t0 = Date()
        progress("\(nodes) agents started; waiting for every view to hold \(nodes) alive members")
        let seen = await firstSeeingAllAlive(agents, since: t0)
        let join = seen.contains(where: { $0 == nil }) ? nil : seen.compactMap { $0 }.max()
        if let join, let last = seen.firstIndex(of: join) {
            let sorted = seen.compactMap { $0 }.sorted()
            progress("converged: \(join) s (last: \(agents[last].name); the median agent at \(sorted[sorted.count / 2]) s)")
        } else {
            progress("not converged: \(zip(agents, seen).filter { $0.1 == nil }.map(\.0.name)) never saw \(nodes) alive")
        }
        return (agents, join)
    }

    /// For each agent, when its view first held every member alive (seconds since `start`; nil:
    /// not within the timeout). Each agent is polled every 100 ms on its own, as the serf
    /// measurement polled, and stops being polled once it has converged: the join has converged
    /// when the last agent has. (Polling all agents in rounds until every one answers "all
    /// alive" in the same round added up to a round's length, 50 requests on a loaded machine,
    /// to the figure.) A time is taken when the answer arrives, so it is never early.
    func firstSeeingAllAlive(_ agents: [Agent], since start: Date) async -> [Double?] {
        let deadline = start.addingTimeInterval(timeoutSeconds)
        let nodes = nodes, pollMilliseconds = max(1, pollMilliseconds)
        return await withTaskGroup(of: (Int, Double?).self) { group in
            for (i, a) in agents.enumerated() {
                group.addTask {
                    while Date() < deadline {
                        if let v = await self.view(a), v.values.filter({ $0 == "alive" }).count == nodes {
                            return (i, Date().timeIntervalSince(start))
                        }
                        try? await Task.sleep(for: .milliseconds(pollMilliseconds))
                    }
                    return (i, nil)
                }
            }
            var seen = [Double?](repeating: nil, count: agents.count)
            for await (i, t) in group { seen[i] = t }
            return seen
        }
    }

    func measure(_ agents: [Agent], join: Double?) async throws -> Report {
        // Idle: bytes, CPU, memory over a quiet window, after `settleSeconds` (the transient
        // after a mass join: each agent opens its connections over its first probe round, ~N·0.2 s)
        // and without polling the agents meanwhile (a /v1/members answer costs an agent more CPU
        // than a second of membership traffic). False positives come from the agents' own logs.
        try await Task.sleep(for: .seconds(settleSeconds))
        let before = await traffic(agents)
        let cpuBefore = agents.map { ProcessSample.read($0.process.processIdentifier)?.cpuSeconds ?? 0 }
        let idleStart = Date()
        try await Task.sleep(for: .seconds(idleSeconds))
        let idle = Date().timeIntervalSince(idleStart)
        // Sampled first: answering the traffic query is not idle work.
        let end = agents.map { ProcessSample.read($0.process.processIdentifier) }
        let after = await traffic(agents)
        let cpu = zip(cpuBefore, end).map { ((($1?.cpuSeconds) ?? 0) - $0) / idle * 100 }.reduce(0, +) / Double(nodes)
        let rss = end.map { $0?.rssBytes ?? 0 }.reduce(0, +) / Double(nodes) / 1_048_576
        let rssAnon = end.map { $0?.anonBytes ?? 0 }.reduce(0, +) / Double(nodes) / 1_048_576
        let bytesPerNode = Double(after - before) / idle / Double(nodes)
        var falsePositives = countTransitions(workDirectory).dead
        for a in agents {
            if let v = await view(a) { falsePositives += v.values.filter { $0 == "dead" }.count }
        }

        // SIGKILL one non-seed member.
        let victim = agents[nodes / 2]
        kill(victim.process.processIdentifier, SIGKILL)
        let tk = Date()
        let survivors = agents.filter { $0.name != victim.name }
        let killed = try await waitUntil(timeoutSeconds) {
            await self.allSee(survivors, { $0[victim.name] == "dead" })
        }
        let killDetection = killed ? Date().timeIntervalSince(tk) : nil

        // SIGSTOP another: its sockets stay open, so only probe timeouts can tell.
        let frozen = agents[nodes / 2 + 1 < nodes ? nodes / 2 + 1 : 1]
        kill(frozen.process.processIdentifier, SIGSTOP)
        let ts = Date()
        let others = survivors.filter { $0.name != frozen.name }
        let stopped = try await waitUntil(timeoutSeconds) {
            await self.allSee(others, { $0[frozen.name] == "dead" })
        }
        let stopDetection = stopped ? Date().timeIntervalSince(ts) : nil
        var silent = Trials(
            fault: "SIGSTOP of one member on loopback (nothing answers, no connection reset: a power cut as its peers see it)", unit: "s")
        if let stopDetection { silent.record(stopDetection) } else { silent.fail("not dead everywhere within \(Int(timeoutSeconds)) s") }
        if silentTrials > 1 {
            try await silenceInTurn(frozen, among: others, trials: silentTrials - 1, into: &silent)
        }

        return Report(
            nodes: nodes, joinConvergenceSeconds: join, killDetectionSeconds: killDetection,
            stopDetectionSeconds: stopDetection, silentDetections: silent, falsePositives: falsePositives,
            bytesPerNodePerSecond: bytesPerNode, idleCPUPercent: cpu, rssMiB: rss, rssAnonMiB: rssAnon)
    }

    /// More silent-member trials: the member frozen last is thawed and waited back (alive in every
    /// view: it refutes with a higher incarnation), then the next one, never the seed, is frozen
    /// and timed until every other agent shows it dead. A member that does not come back is killed
    /// and left out; a trial that times out counts as failed, never dropped.
    func silenceInTurn(_ first: Agent, among live: [Agent], trials: Int, into silent: inout Trials) async throws {
        var thawing = first
        var pool = live
        // Members frozen in turn: the non-seed agents from the upper half down, so the servers
        // (the first three) are the last picked.
        let order = pool.filter { $0.name != "node-0" }.reversed()
        var next = order.makeIterator()
        for _ in 0..<trials {
            kill(thawing.process.processIdentifier, SIGCONT)
            let name = thawing.name, others = pool
            let back = try await waitUntil(timeoutSeconds) {
                await self.allSee(others, { $0[name] == "alive" })
            }
            if back {
                pool.append(thawing)
            } else {
                kill(thawing.process.processIdentifier, SIGKILL)
            }
            guard let victim = next.next() else { break }
            pool.removeAll { $0.name == victim.name }
            kill(victim.process.processIdentifier, SIGSTOP)
            let t = Date()
            let watchers = pool
            let seen = try await waitUntil(timeoutSeconds) {
                await self.allSee(watchers, { $0[victim.name] == "dead" })
            }
            if seen { silent.record(Date().timeIntervalSince(t)) } else { silent.fail("not dead everywhere within \(Int(timeoutSeconds)) s") }
            thawing = victim
        }
        kill(thawing.process.processIdentifier, SIGCONT)
    }

    // MARK: Polling

    /// Polls every 100 ms, as the serf measurement did.
    func waitUntil(_ seconds: Double, _ condition: () async -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    func allSee(_ agents: [Agent], _ predicate: @Sendable @escaping ([String: String]) -> Bool) async -> Bool {
        await withTaskGroup(of: Bool.self) { g in
            for a in agents { g.addTask { await view(a).map(predicate) ?? false } }
            for await ok in g where !ok {
                g.cancelAll()
                return false
            }
            return true
        }
    }

    func view(_ a: Agent) async -> [String: String]? {
        guard let data = await PlainHTTP.get(host: a.host, port: 7481, path: "/v1/members"),
            let members = try? JSONDecoder().decode([MemberView].self, from: data)
        else { return nil }
        return Dictionary(members.map { ($0.name, $0.status.rawValue) }, uniquingKeysWith: { a, _ in a })
    }

    func traffic(_ agents: [Agent]) async -> Int {
        var total = 0
        for a in agents {
            guard let data = await PlainHTTP.get(host: a.host, port: 7481, path: "/v1/agent/self"),
                let s = try? JSONDecoder().decode(AgentSelfView.self, from: data)
            else { continue }
            total += s.gossipBytesSent
        }
        return total
    }
}
