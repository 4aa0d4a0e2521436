import ArgumentParser
import Foundation
import SimulationKit

/// `microscale-sim cluster --seeds A-B`: the whole cluster under one seed per run (servers' Raft,
/// the leader's planner, every node's reconciler on a simulated Docker Engine, faults), with the
/// invariants of docs/simulation.md checked throughout. A failing seed prints its invariant and a
/// short trace; running that one seed again replays it exactly.
struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Run seeded whole-cluster simulations under faults and check the cluster's invariants.")

    @Option(help: "Seeds to run: N or A-B (inclusive).")
    var seeds: String = "1-100"

    @Option(help: "Agents per cluster, servers included (1-32).")
    var nodes: Int = 4

    @Option(help: "Servers among them (3 or 5, at most --nodes).")
    var servers: Int = 3

    @Option(help: "Simulated seconds of faults per run.")
    var faultSeconds: Int = 12

    @Option(help: "Break a rule on purpose, to see a seed catch it: \(BrokenRule.allCases.map(\.rawValue).joined(separator: ", ")).")
    var broken: String?

    @Flag(help: "Plan as a leader did before plans carried the index of the state they were computed from (replays the drain race).")
    var plansWithoutBase = false

    @Flag(help: "Check that an assignment giving a node nothing, decided after the agent started, is carried out within 4 s.")
    var checkEmptyAssignments = false

    @Flag(help: "Print every run, not only the failing ones.")
    var verbose = false

    @Flag(help: "Print JSON.")
    var json = false

    func validate() throws {
        guard parseSeeds(seeds) != nil else { throw ValidationError("--seeds: expected N or A-B with A <= B, got '\(seeds)'") }
        guard (1...32).contains(nodes) else { throw ValidationError("--nodes: expected 1...32, got \(nodes)") }
        guard servers == 3 || servers == 5 else { throw ValidationError("--servers: expected 3 or 5, got \(servers)") }
        guard servers <= nodes else { throw ValidationError("--servers: \(servers) is more than --nodes \(nodes)") }
        guard (1...3600).contains(faultSeconds) else { throw ValidationError("--fault-seconds: expected 1...3600") }
        if let broken, BrokenRule(rawValue: broken) == nil {
            throw ValidationError("--broken: expected one of \(BrokenRule.allCases.map(\.rawValue).joined(separator: ", ")), got '\(broken)'")
        }
    }

    var replay: String {
        "microscale-sim cluster --nodes \(nodes) --servers \(servers) --fault-seconds \(faultSeconds)"
            + (broken.map { " --broken \($0)" } ?? "") + (plansWithoutBase ? " --plans-without-base" : "")
            + (checkEmptyAssignments ? " --check-empty-assignments" : "")
    }

    func run() throws {
        let range = parseSeeds(seeds)!
        var options = ClusterSimulationOptions()
        options.nodes = nodes
        options.servers = servers
        options.faultDuration = .seconds(faultSeconds)
        options.broken = broken.flatMap(BrokenRule.init(rawValue:))
        options.plansCarryBase = !plansWithoutBase
        options.checkEmptyAssignments = checkEmptyAssignments
        var failing: [ClusterSimulationResult] = []
        var faults: [String: Int] = [:], checks: [String: Int] = [:], violations: [String: Int] = [:]
        var runs = 0, elections = 0, plans = 0, refused = 0, started = 0, stopped = 0, operatorActions = 0
        var simulated = 0.0
        let began = ContinuousClock.now
        for seed in range {
            let r = runClusterSimulation(seed: seed, options: options)
            runs += 1
            elections += r.elections
            plans += r.plansCommitted
            refused += r.plansRefused
            started += r.containersStarted
            stopped += r.containersStopped
            operatorActions += r.operatorActions
            simulated += r.simulatedSeconds
            faults.merge(r.faults, uniquingKeysWith: +)
            checks.merge(r.checks, uniquingKeysWith: +)
            for v in r.violations { violations[v.invariant, default: 0] += 1 }
            if !r.violations.isEmpty {
                failing.append(r)
                if !json {
                    print("FAIL seed \(seed) (replay: \(replay) --seeds \(seed))")
                    for v in r.violations { print("  \(v.invariant) at t=\(String(format: "%.3f", v.time))s: \(v.detail)") }
                    print("  trace (last events):")
                    for line in r.trace.suffix(30) { print("    \(line)") }
                }
            } else if verbose && !json {
                print(
                    "ok   seed \(seed): \(r.elections) elections, \(r.plansCommitted) plans committed (\(r.plansRefused) refused), "
                        + "\(r.containersStarted) containers started, \(r.containersStopped) stopped, faults \(r.faults.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))"
                )
            }
        }
        let wall = (ContinuousClock.now - began).seconds
        if json {
            struct Summary: Encodable {
                var runs: Int
                var nodes: Int
                var servers: Int
                var broken: String?
                var plansWithoutBase: Bool
                var faults: [String: Int]
                var invariantChecks: [String: Int]
                var violations: Int
                var violationsByInvariant: [String: Int]
                var failingSeeds: [UInt64]
                var failing: [ClusterSimulationResult]
                var elections: Int
                var plansCommitted: Int
                var plansRefused: Int
                var operatorActions: Int
                var containersStarted: Int
                var containersStopped: Int
                var simulatedSeconds: Double
                var wallSeconds: Double
            }
            let s = Summary(
                runs: runs, nodes: nodes, servers: servers, broken: broken, plansWithoutBase: plansWithoutBase, faults: faults,
                invariantChecks: checks, violations: failing.reduce(0) { $0 + $1.violations.count }, violationsByInvariant: violations,
                failingSeeds: failing.map(\.seed), failing: failing, elections: elections, plansCommitted: plans, plansRefused: refused,
                operatorActions: operatorActions, containersStarted: started, containersStopped: stopped, simulatedSeconds: simulated,
                wallSeconds: wall)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(s), as: UTF8.self))
        } else {
            print(
                "cluster: \(runs) runs of \(nodes) agents (\(servers) servers), \(failing.count) failing; \(elections) elections, "
                    + "\(plans) plans committed, \(refused) refused, \(operatorActions) operator actions, \(started) containers started, \(stopped) stopped"
            )
            print("  faults: " + faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            print("  invariant checks: " + checks.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            if !violations.isEmpty {
                print("  violations: " + violations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            }
            print(String(format: "  %.0f simulated seconds in %.2f s", simulated, wall))
        }
        if !failing.isEmpty { throw ExitCode(1) }
    }
}
