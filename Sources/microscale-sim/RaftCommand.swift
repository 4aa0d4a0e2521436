import ArgumentParser
import Foundation
import SimulationKit

/// `microscale-sim raft --seeds A-B`: seeded whole-cluster Raft runs with faults; a failing seed
/// prints itself, and running that one seed again replays it exactly.
struct RaftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft",
        abstract: "Run seeded Raft clusters under faults and check the Raft safety properties.")

    @Option(help: "Seeds to run: N or A-B (inclusive).")
    var seeds: String = "1-100"

    @Option(help: "Servers per cluster (3 or 5).")
    var nodes: Int = 3

    @Option(help: "Simulated seconds of faults per run.")
    var faultSeconds: Int = 8

    @Flag(help: "Print every run, not only the failing ones.")
    var verbose = false

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard parseSeeds(seeds) != nil else {
            throw ValidationError("--seeds: expected N or A-B with A <= B, got '\(seeds)'")
        }
        guard nodes == 3 || nodes == 5 else { throw ValidationError("--nodes: expected 3 or 5, got \(nodes)") }
        guard (1...3600).contains(faultSeconds) else { throw ValidationError("--fault-seconds: expected 1...3600") }
    }

    func run() throws {
        let range = parseSeeds(seeds)!
        var options = RaftSimulationOptions()
        options.nodes = nodes
        options.faultDuration = .seconds(faultSeconds)
        var failing: [RaftSimulationResult] = []
        var runs = 0, elections = 0, acknowledged = 0, crashes = 0, snapshots = 0, reads = 0, reconfigurations = 0
        var recoveries: [Double] = []
        for seed in range {
            let r = runRaftSimulation(seed: seed, options: options)
            runs += 1
            elections += r.elections
            acknowledged += r.acknowledged
            crashes += r.crashes
            snapshots += r.snapshotsInstalled
            reads += r.reads
            reconfigurations += r.configurationChanges
            if let t = r.recoverySeconds { recoveries.append(t) }
            if !r.violations.isEmpty {
                failing.append(r)
                if !json {
                    print("FAIL seed \(seed) (replay: microscale-sim raft --seeds \(seed) --nodes \(nodes) --fault-seconds \(faultSeconds))")
                    for v in r.violations { print("  \(v)") }
                }
            } else if verbose && !json {
                print(
                    "ok   seed \(seed): \(r.elections) elections, \(r.acknowledged)/\(r.proposals) writes acknowledged, "
                        + "\(r.reads) reads, \(r.crashes) crashes, \(r.snapshotsInstalled) snapshots installed, commit \(r.committedIndex), "
                        + "recovery \(r.recoverySeconds.map { String(format: "%.3fs", $0) } ?? "-")")
            }
        }
        recoveries.sort()
        let p50 = recoveries.isEmpty ? 0 : recoveries[recoveries.count / 2]
        let p99 = recoveries.isEmpty ? 0 : recoveries[min(recoveries.count - 1, recoveries.count * 99 / 100)]
        if json {
            struct Summary: Encodable {
                var runs: Int
                var nodes: Int
                var failing: [RaftSimulationResult]
                var violations: Int
                var elections: Int
                var acknowledgedWrites: Int
                var reads: Int
                var membershipChanges: Int
                var crashes: Int
                var snapshotsInstalled: Int
                var recoveryP50Seconds: Double
                var recoveryP99Seconds: Double
            }
            let s = Summary(
                runs: runs, nodes: nodes, failing: failing, violations: failing.reduce(0) { $0 + $1.violations.count },
                elections: elections, acknowledgedWrites: acknowledged, reads: reads, membershipChanges: reconfigurations, crashes: crashes,
                snapshotsInstalled: snapshots, recoveryP50Seconds: p50, recoveryP99Seconds: p99)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(s), as: UTF8.self))
        } else {
            print(
                "raft: \(runs) runs of \(nodes) servers, \(failing.count) failing; \(elections) elections, "
                    + "\(acknowledged) writes acknowledged, \(reads) linearizable reads checked, \(reconfigurations) membership changes, \(crashes) crashes, \(snapshots) snapshots installed; "
                    + String(format: "recovery after faults p50 %.3fs p99 %.3fs", p50, p99))
        }
        if !failing.isEmpty { throw ExitCode(1) }
    }
}

func parseSeeds(_ text: String) -> ClosedRange<UInt64>? {
    let parts = text.split(separator: "-", omittingEmptySubsequences: false)
    if parts.count == 1, let n = UInt64(parts[0]) { return n...n }
    if parts.count == 2, let a = UInt64(parts[0]), let b = UInt64(parts[1]), a <= b { return a...b }
    return nil
}
