import Agent
import Figures
import Foundation

/// An idle agent's cost, per agent: N real agents join one seed (as `membership` starts them),
/// settle, and then sit idle with nobody polling them. Resident memory and CPU of every agent,
/// median and p90 across agents, and where the memory of the median agent goes (`Footprint`).
/// Figures, not assertions: `microscale-bench idle`.
public struct IdleFootprintBenchmark: Sendable {
    /// serf's idle agent: issue 20's reference figures, taken on another day (`serf` below is
    /// serf measured beside ours, when it is installed).
    public static let serfRSSMiB = 14.5
    public static let serfCPUPercent = 0.3

    public struct Report: Codable, Sendable {
        public var nodes: Int
        /// What the agents did during the window: nothing injected.
        public var fault: String
        public var joinConvergenceSeconds: Double?
        public var settleSeconds: Double
        public var idleSeconds: Double
        /// Every agent's resident set at the end of the window, MiB, in agent order.
        public var rssMiB: [Double]
        public var rssMedianMiB: Double?
        public var rssP90MiB: Double?
        /// Proportional set size (shared pages split among the agents that map them), median.
        public var pssMedianMiB: Double?
        /// Every agent's CPU over the window, percent of one core.
        public var cpuPercent: [Double]
        public var cpuMedianPercent: Double?
        public var cpuP90Percent: Double?
        /// Agents that were gone or unreadable at the end (counted as failed trials).
        public var failedAgents: [String]
        /// Where the median agent's resident memory goes.
        public var medianAgent: String?
        public var breakdown: Footprint?
        /// Where the median-CPU agent's CPU went: each thread's share of one core over the window,
        /// and how often it was switched to (wake-ups: each is an epoll or futex return).
        public var medianCPUAgent: String?
        public var cpuByThread: [ThreadCPU]
        public var serfRSSMiB: Double
        public var serfCPUPercent: Double
        /// serf measured in the minutes after ours, at the same N and windows (nil: not installed,
        /// or `--no-serf`).
        public var serf: SerfIdleBenchmark.Figures? = nil
        /// Our probe period, for reading the CPU figures side by side.
        public var probePeriod: String = "a probe every 200 ms"
    }

    /// One thread's CPU over the idle window.
    public struct ThreadCPU: Codable, Sendable {
        public var name: String
        public var cpuPercent: Double
        public var switchesPerSecond: Double
    }

    public var nodes: Int
    public var executable: String
    public var workDirectory: String
    public var settleSeconds: Double = 15
    public var idleSeconds: Double = 30

    public init(nodes: Int, executable: String, workDirectory: String) {
        self.nodes = nodes
        self.executable = executable
        self.workDirectory = workDirectory
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let reader = try FootprintReader(executable: executable)
        var cluster = MembershipProcessBenchmark(nodes: nodes, executable: executable, workDirectory: workDirectory)
        cluster.settleSeconds = settleSeconds
        var agents: [MembershipProcessBenchmark.Agent] = []
        defer {
            for a in agents where a.process.isRunning { kill(a.process.processIdentifier, SIGKILL) }
        }
        let (all, join) = try await cluster.startCluster(progress: progress) { agents.append($0) }
        agents = all
        progress("settling \(Int(settleSeconds)) s, then \(Int(idleSeconds)) s idle, nobody polling")
        try await Task.sleep(for: .seconds(settleSeconds))
        let threadsBefore = agents.map { Self.threadTimes($0.process.processIdentifier) }
        let before = agents.map { ProcessSample.read($0.process.processIdentifier)?.cpuSeconds }
        let start = Date()
        try await Task.sleep(for: .seconds(idleSeconds))
        let elapsed = Date().timeIntervalSince(start)
        let after = agents.map { ProcessSample.read($0.process.processIdentifier) }
        let threadsAfter = agents.map { Self.threadTimes($0.process.processIdentifier) }

        var rss = Trials(fault: "none: \(nodes) agents idle after the join", unit: "MiB")
        var cpu = Trials(fault: "none: \(nodes) agents idle after the join", unit: "%")
        var pss = Trials(fault: "none", unit: "MiB")
        var failed: [String] = []
        var rssList: [Double] = [], cpuList: [Double] = []
        var footprints: [(String, Footprint)] = []
        var cpuOf: [(Int, Double)] = []
        for (i, a) in agents.enumerated() {
            guard a.process.isRunning, let b = before[i], let e = after[i], let f = reader.read(pid: a.process.processIdentifier) else {
                failed.append(a.name)
                rss.fail("\(a.name) gone")
                cpu.fail("\(a.name) gone")
                continue
            }
            let c = (e.cpuSeconds - b) / elapsed * 100
            rss.record(e.rssBytes / 1_048_576)
            cpu.record(c)
            pss.record(f.pssKiB / 1024)
            rssList.append(e.rssBytes / 1_048_576)
            cpuList.append(c)
            cpuOf.append((i, c))
            footprints.append((a.name, f))
        }
        // The breakdown of the agent whose resident set is the median one.
        let median = footprints.sorted { $0.1.rssKiB < $1.1.rssKiB }.dropFirst(footprints.count / 2).first
        var threads: [ThreadCPU] = []
        let medianCPU = cpuOf.sorted { $0.1 < $1.1 }.dropFirst(cpuOf.count / 2).first?.0
        if let m = medianCPU {
            for (tid, a) in threadsAfter[m] {
                let b = threadsBefore[m][tid] ?? (a.name, 0, 0)
                threads.append(
                    ThreadCPU(
                        name: a.name, cpuPercent: Double(a.nanoseconds - b.nanoseconds) / 1e9 / elapsed * 100,
                        switchesPerSecond: Double(a.switches - b.switches) / elapsed))
            }
            threads.sort { $0.cpuPercent > $1.cpuPercent }
        }
        return Report(
            nodes: nodes, fault: "none (idle; nobody polls the agents during the window)", joinConvergenceSeconds: join,
            settleSeconds: settleSeconds, idleSeconds: elapsed, rssMiB: rssList, rssMedianMiB: rss.median, rssP90MiB: rss.p90,
            pssMedianMiB: pss.median, cpuPercent: cpuList, cpuMedianPercent: cpu.median, cpuP90Percent: cpu.p90,
            failedAgents: failed, medianAgent: median?.0, breakdown: median?.1,
            medianCPUAgent: medianCPU.map { agents[$0].name }, cpuByThread: threads,
            serfRSSMiB: Self.serfRSSMiB, serfCPUPercent: Self.serfCPUPercent)
    }

    /// Each thread's name, run time (ns, schedstat) and context switches (voluntary and not).
    static func threadTimes(_ pid: Int32) -> [String: (name: String, nanoseconds: Int, switches: Int)] {
        var out: [String: (name: String, nanoseconds: Int, switches: Int)] = [:]
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            let dir = "/proc/\(pid)/task/\(tid)"
            guard let sched = try? String(contentsOfFile: "\(dir)/schedstat", encoding: .utf8),
                let ns = sched.split(separator: " ").first.flatMap({ Int($0) }),
                let status = try? String(contentsOfFile: "\(dir)/status", encoding: .utf8)
            else { continue }
            var name = "?", switches = 0
            for line in status.split(separator: "\n") {
                let f = line.split(separator: "\t", omittingEmptySubsequences: true)
                guard f.count >= 2 else { continue }
                if f[0] == "Name:" { name = String(f[1]) }
                if f[0].hasSuffix("ctxt_switches:") { switches += Int(f[1].trimmingCharacters(in: .whitespaces)) ?? 0 }
            }
            out[tid] = (name, ns, switches)
        }
        return out
    }

    /// The report as text: the figures with serf beside them, then the breakdown.
    public static func text(_ r: Report) -> String {
        func f(_ v: Double?, _ digits: Int = 1) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "did not finish" }
        var lines: [String] = []
        lines.append(
            "N=\(r.nodes) idle \(Int(r.idleSeconds.rounded())) s after a \(Int(r.settleSeconds)) s settle (join \(f(r.joinConvergenceSeconds, 2)) s), fault: \(r.fault)"
        )
        lines.append(
            "  RSS per agent  median \(f(r.rssMedianMiB)) MiB  p90 \(f(r.rssP90MiB)) MiB  (PSS median \(f(r.pssMedianMiB)) MiB; target <= 20; serf \(r.serfRSSMiB) MiB)"
        )
        lines.append(
            "  CPU per agent  median \(f(r.cpuMedianPercent, 2))%  p90 \(f(r.cpuP90Percent, 2))% of a core  (target <= 0.25%; serf \(r.serfCPUPercent)% on the issue's day)"
        )
        if let s = r.serf {
            lines.append("  serf measured now (\(s.version), \(s.nodes) agents, encrypted; join \(f(s.joinSeconds, 1)) s, \(s.profile)):")
            lines.append(
                "    RSS median \(f(s.rssMedianMiB)) MiB  p90 \(f(s.rssP90MiB)) MiB   CPU median \(f(s.cpuMedianPercent, 2))%  p90 \(f(s.cpuP90Percent, 2))%"
                    + (s.failedAgents.isEmpty ? "" : "   failed: \(s.failedAgents.count) gone"))
            if let ours = r.cpuMedianPercent, let theirs = s.cpuMedianPercent, theirs > 0, let m = r.rssMedianMiB, let n = s.rssMedianMiB, n > 0 {
                lines.append(
                    "    ours / serf: RSS \(f(m / n, 2))x, CPU \(f(ours / theirs, 2))x (ours: \(r.probePeriod); serf: a probe every 1 s)")
            }
        }
        if !r.failedAgents.isEmpty {
            lines.append("  failed: \(r.failedAgents.count) of \(r.nodes) agents gone: \(r.failedAgents.joined(separator: ", "))")
        }
        if let name = r.medianCPUAgent {
            lines.append("  where \(name)'s CPU goes (the median agent by CPU), by thread:")
            for t in r.cpuByThread {
                lines.append(String(format: "    %5.3f%%  %6.1f switches/s  %@", t.cpuPercent, t.switchesPerSecond, t.name))
            }
        }
        guard let b = r.breakdown, let name = r.medianAgent else { return lines.joined(separator: "\n") }
        func mib(_ kib: Double) -> String { String(format: "%6.2f MiB", kib / 1024) }
        lines.append(
            "  where \(name)'s \(mib(b.rssKiB)) go (anonymous \(mib(b.anonymousKiB)), \(b.threads.count) threads: \(threadSummary(b.threads))):")
        for p in b.byMapping { lines.append("    \(mib(p.kib))  \(p.name)") }
        lines.append("  the executable by section:")
        for p in b.binaryBySection where p.kib >= 64 { lines.append("    \(mib(p.kib))  \(p.name)") }
        let small = b.binaryBySection.filter { $0.kib < 64 }
        if !small.isEmpty { lines.append("    \(mib(small.reduce(0) { $0 + $1.kib }))  \(small.count) smaller parts") }
        lines.append("  its .text by module:")
        for p in b.textByModule.prefix(16) { lines.append("    \(mib(p.kib))  \(p.name)") }
        let rest = b.textByModule.dropFirst(16)
        if !rest.isEmpty { lines.append("    \(mib(rest.reduce(0) { $0 + $1.kib }))  \(rest.count) other modules") }
        return lines.joined(separator: "\n")
    }

    /// "NIO-ELT-0-#0 ×2, ..." from the thread names.
    static func threadSummary(_ names: [String]) -> String {
        var counts: [String: Int] = [:]
        for n in names {
            // NIO-ELT-1-#0 and NIO-ELT-2-#1 are the same kind of thread.
            let kind = n.replacingOccurrences(of: #"[0-9]+"#, with: "N", options: .regularExpression)
            counts[kind, default: 0] += 1
        }
        return counts.sorted { $0.key < $1.key }.map { $0.value > 1 ? "\($0.key) ×\($0.value)" : $0.key }.joined(separator: ", ")
    }
}
