import Foundation

/// `chaos/run bench`: the figures table. Runs the real-process benchmarks the earlier issues
/// defined (same method as the reference measurements: all N agents join one seed at once and are
/// polled every 100 ms, one non-seed member SIGKILLed or SIGSTOPped; three Raft servers with the
/// leader SIGKILLed; three agents on one dockerd for the cluster figures) and writes one table.
public struct ChaosFigures: Sendable {
    public struct Row: Codable, Sendable {
        public var figure: String
        public var measured: String
        public var target: String
        public var reference: String
        /// The measured value in the row's unit (ms, s, B/s, %, MiB), for JSON consumers.
        public var value: Double?
    }

    public var executable: String
    public var dockerHost: String?
    public var image: String?
    public var sizes = [10, 25, 50]
    public var trials = 20

    public init(executable: String, dockerHost: String?, image: String?) {
        self.executable = executable
        self.dockerHost = dockerHost
        self.image = image
    }

    public func run(progress: @escaping @Sendable (String) -> Void) async throws -> [Row] {
        var rows: [Row] = []
        let serf: [Int: String] = [10: "Serf 5.6 s", 25: "Serf 7.8 s", 50: "Serf 9.5 s"]
        for n in sizes {
            progress("membership, \(n) agents")
            let b = MembershipProcessBenchmark(nodes: n, executable: executable, workDirectory: NSTemporaryDirectory() + "microscale-chaos-bench-membership-\(n)")
            let r = try await b.run(progress: progress)
            rows.append(Row(figure: "SIGKILLed member marked dead by all, N=\(n)", measured: Self.s(r.killDetectionSeconds), target: "≤ 1.5 s",
                            reference: serf[n] ?? "", value: r.killDetectionSeconds))
            rows.append(Row(figure: "SIGSTOPped member marked dead by all, N=\(n)", measured: Self.s(r.stopDetectionSeconds), target: "≤ 2 s",
                            reference: "", value: r.stopDetectionSeconds))
            rows.append(Row(figure: "join convergence, N=\(n)", measured: Self.s(r.joinConvergenceSeconds), target: n == 50 ? "≤ 0.5 s" : "",
                            reference: n == 50 ? "Serf 1.1 s (one run 86.7 s)" : "", value: r.joinConvergenceSeconds))
            rows.append(Row(figure: "gossip bytes per node, N=\(n)", measured: String(format: "%.0f B/s", r.bytesPerNodePerSecond), target: "≤ 500 B/s",
                            reference: "Serf ~330 B/s", value: r.bytesPerNodePerSecond))
            rows.append(Row(figure: "idle CPU / RSS per agent, N=\(n)", measured: String(format: "%.2f%% / %.1f MiB", r.idleCPUPercent, r.rssMiB),
                            target: "≤ 0.5% / ≤ 40 MiB", reference: "Serf 0.3% / 14.5 MiB", value: r.rssMiB))
        }
        progress("raft failover, \(trials) trials")
        var raft = RaftProcessBenchmark(executable: executable, workDirectory: NSTemporaryDirectory() + "microscale-chaos-bench-raft")
        raft.trials = trials
        let rr = try await raft.run(progress: progress)
        rows.append(Row(figure: "leader SIGKILLed → new leader (300/50 ms), median / p90",
                        measured: "\(Self.ms(rr.failoverMedianMilliseconds)) / \(Self.ms(rr.failoverP90Milliseconds))",
                        target: "≤ 500 / ≤ 800 ms", reference: "etcd 384 / 687 ms (1,305 / 1,638 at its defaults)", value: rr.failoverMedianMilliseconds))
        if let dockerHost, let image {
            progress("cluster, \(trials) trials")
            var c = ClusterProcessBenchmark(executable: executable, workDirectory: NSTemporaryDirectory() + "microscale-chaos-bench-cluster",
                                            dockerHost: dockerHost, image: image)
            c.trials = trials
            let cr = try await c.run(progress: progress)
            rows.append(Row(figure: "host SIGKILLed → its priority-1 containers running elsewhere, median / p90",
                            measured: "\(Self.ms(cr.hostKillMedianMilliseconds)) / \(Self.ms(percentile(cr.hostKillMilliseconds, 0.9)))",
                            target: "≤ 2,500 ms", reference: "Swarm 17-20 s; Kubernetes ~5 min 45 s", value: cr.hostKillMedianMilliseconds))
            rows.append(Row(figure: "demand step (6 more priority-1, preempting batch) → all running, median / p90",
                            measured: "\(Self.ms(cr.demandStepMedianMilliseconds)) / \(Self.ms(percentile(cr.demandStepMilliseconds, 0.9)))",
                            target: "≤ 1,000 ms", reference: "Swarm scale 6→12: 1.5-1.9 s", value: cr.demandStepMedianMilliseconds))
            rows.append(Row(figure: "leader's agent SIGKILLed with a demand step → next plan committed, median",
                            measured: Self.ms(cr.leaderKillMedianMilliseconds), target: "≤ 500 ms", reference: "", value: cr.leaderKillMedianMilliseconds))
        } else {
            progress("no dockerd given (MICROSCALE_TEST_DOCKER_HOST): cluster figures skipped")
        }
        return rows
    }

    public static func table(_ rows: [Row]) -> String {
        var out = "| figure | measured | target | reference |\n|---|---|---|---|\n"
        for r in rows { out += "| \(r.figure) | \(r.measured) | \(r.target) | \(r.reference) |\n" }
        return out
    }

    static func s(_ v: Double?) -> String { v.map { String(format: "%.2f s", $0) } ?? "timed out" }
    static func ms(_ v: Double?) -> String { v.map { String(format: "%.0f ms", $0) } ?? "-" }
}
