import ArgumentParser
import Foundation
import SimulationKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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

    @Option(help: "Agents per cluster, servers included (1-32; with --scale 5-10000).")
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

    @Flag(help: "Records unsigned (the agent signs them): the hostile peer's forged records are then taken, and caught.")
    var unsignedRecords = false

    @Flag(help: "No disk errors and no hostile peer (the adversary's faults, drawn apart from the others).")
    var noAdversary = false

    @Flag(help: "Print every run, not only the failing ones.")
    var verbose = false

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(
        help:
            "The scale mode: no faults, --nodes up to 10000; demand steps, a record change and a crash, measured (docs/simulation.md, \"At scale\").")
    var scale = false

    @Option(help: "With --scale: the seed.")
    var seed: UInt64 = 1

    @Option(help: "With --scale: demand steps (1-50).")
    var steps: Int = 5

    func validate() throws {
        guard parseSeeds(seeds) != nil else { throw ValidationError("--seeds: expected N or A-B with A <= B, got '\(seeds)'") }
        if scale {
            let most = ClusterScaleOptions.maxNodes
            guard (servers + 2...most).contains(nodes) else {
                throw ValidationError("--nodes: expected \(servers + 2)...\(most) with --scale and --servers \(servers), got \(nodes)")
            }
            guard (1...ClusterScaleOptions.maxSteps).contains(steps) else {
                throw ValidationError("--steps: expected 1...\(ClusterScaleOptions.maxSteps), got \(steps)")
            }
        } else {
            guard (1...32).contains(nodes) else { throw ValidationError("--nodes: expected 1...32 (up to 10000 with --scale), got \(nodes)") }
        }
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
            + (checkEmptyAssignments ? " --check-empty-assignments" : "") + (unsignedRecords ? " --unsigned-records" : "")
            + (noAdversary ? " --no-adversary" : "")
    }

    func run() throws {
        if scale { return try runScale() }
        let range = parseSeeds(seeds)!
        var options = ClusterSimulationOptions()
        options.nodes = nodes
        options.servers = servers
        options.faultDuration = .seconds(faultSeconds)
        options.broken = broken.flatMap(BrokenRule.init(rawValue:))
        options.plansCarryBase = !plansWithoutBase
        options.checkEmptyAssignments = checkEmptyAssignments
        options.signedRecords = !unsignedRecords
        options.adversary = !noAdversary
        var failing: [ClusterSimulationResult] = []
        var faults: [String: Int] = [:], checks: [String: Int] = [:], violations: [String: Int] = [:], admission: [String: Int] = [:]
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
            admission.merge(r.refused, uniquingKeysWith: +)
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
                        + "\(r.containersStarted) containers started, \(r.containersStopped) stopped, faults \(counted(r.faults.filter { $0.value > 0 }))"
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
                /// Messages the shells' admission refused, by trust rule.
                var refusedByAdmission: [String: Int]
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
                invariantChecks: checks, refusedByAdmission: admission, violations: failing.reduce(0) { $0 + $1.violations.count },
                violationsByInvariant: violations,
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
            print("  faults: " + counted(faults))
            print("  invariant checks: " + counted(checks))
            print("  refused by admission: " + (admission.isEmpty ? "none" : counted(admission)))
            if !violations.isEmpty {
                print("  violations: " + counted(violations))
            }
            print(String(format: "  %.0f simulated seconds in %.2f s", simulated, wall))
        }
        if !failing.isEmpty { throw ExitCode(1) }
    }
}

extension ClusterCommand {
    /// The calling thread's CPU time (the harness's clock: no core reads it).
    static func threadCPU() -> Duration {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return .seconds(Int64(t.tv_sec)) + .nanoseconds(Int64(t.tv_nsec))
    }

    /// Peak resident memory of this process, in bytes.
    static func peakResidentBytes() -> Int {
        var u = rusage()
        #if canImport(Darwin)
            getrusage(RUSAGE_SELF, &u)
            return Int(u.ru_maxrss)
        #else
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
            return Int(u.ru_maxrss) * 1024  // kilobytes on Linux
        #endif
    }

    func runScale() throws {
        var o = ClusterScaleOptions()
        o.nodes = nodes
        o.servers = servers
        o.steps = steps
        let began = ContinuousClock.now
        let cpuBegan = Self.threadCPU()
        let r = runClusterScale(seed: seed, options: o, cpuClock: Self.threadCPU)
        let wall = (ContinuousClock.now - began).seconds
        let cpu = (Self.threadCPU() - cpuBegan).seconds
        let rss = Self.peakResidentBytes()
        if json {
            struct Output: Encodable {
                var report: ClusterScaleReport
                var wallSeconds: Double
                var cpuSeconds: Double
                var peakResidentBytes: Int
            }
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(Output(report: r, wallSeconds: wall, cpuSeconds: cpu, peakResidentBytes: rss)), as: UTF8.self))
        } else {
            func s(_ v: Double?) -> String { v.map { String(format: "%.3f s", $0) } ?? "did not finish" }
            func ms(_ v: Double?) -> String { v.map { String(format: "%.2f ms", $0) } ?? "-" }
            func fig(_ f: ClusterScaleReport.Figure?, _ unit: (Double?) -> String) -> String {
                guard let f else { return "-" }
                return "median \(unit(f.median)), p90 \(unit(f.p90)), \(f.failed) failed"
            }
            print(
                "cluster --scale: \(r.nodes) agents (\(r.servers) servers), seed \(r.seed), no faults; converged at \(s(r.convergedSeconds)) (simulated)"
            )
            print(
                "  step  demand (web)        plan  nodes changed  plan committed  assignment 99.9% / 100%   containers 99.9% / 100%   leader CPU (decide + raft + push)"
            )
            for (k, st) in r.steps.enumerated() {
                let cpu =
                    st.leaderCPU.map {
                        String(
                            format: "%.2f ms (%.2f + %.2f + %.2f)", $0.totalMilliseconds, $0.decideMilliseconds, $0.raftMilliseconds,
                            $0.pushMilliseconds)
                    } ?? "-"
                print(
                    "  \(k + 1)     \(Int(st.demandFrom)) -> \(Int(st.demandTo))  \(st.planIndex)  \(st.nodesChanged)  \(s(st.planCommittedSeconds))  "
                        + "\(s(st.assignment999Seconds)) / \(s(st.assignmentAllSeconds))  \(s(st.containers999Seconds)) / \(s(st.containersAllSeconds))  \(cpu)"
                        + (st.otherPlans > 0 ? "  (\(st.otherPlans) other plans)" : ""))
            }
            print("  demand step -> assignment on 99.9% of nodes: \(fig(r.assignment999, s)); on 100%: \(fig(r.assignmentAll, s))")
            print("  demand step -> containers running on 99.9% of changed nodes: \(fig(r.containers999, s)); on 100%: \(fig(r.containersAll, s))")
            print("  leader CPU per plan: \(fig(r.leaderCPUPerPlanMilliseconds, ms))")
            print(
                String(
                    format: "  leader CPU per simulated second: decision rounds %.2f ms, subscriptions %.2f ms",
                    r.leaderDecideMillisecondsPerSecond ?? 0, r.leaderSubscriptionsMillisecondsPerSecond ?? 0))
            print("  record change -> 99.9% of nodes: \(s(r.recordSpread999Seconds)); 100%: \(s(r.recordSpreadAllSeconds))")
            print(
                "  crash (no reset hint) -> dead in 99.9% of views: \(s(r.crashDead999Seconds)); 100%: \(s(r.crashDeadAllSeconds)); "
                    + "a plan without it committed: \(s(r.crashReplannedSeconds)); restarted and converged: \(s(r.reconvergedSeconds))")
            print(
                "  \(r.plansCommitted) plans committed, \(r.containersStarted) containers started, \(r.containersStopped) stopped; "
                    + "invariant checks: " + counted(r.checks))
            print("  violations: \(r.violations.count)" + r.violations.map { "\n    \($0.invariant) at t=\($0.time)s: \($0.detail)" }.joined())
            print(
                String(
                    format: "  %.1f simulated seconds in %.1f s wall, %.1f s CPU, %.2f GB peak resident", r.simulatedSeconds, wall, cpu,
                    Double(rss) / 1e9))
        }
        if !r.violations.isEmpty || r.convergedSeconds == nil { throw ExitCode(1) }
    }
}

/// "key value, key value", by key: how the summaries print counts.
func counted(_ d: [String: Int]) -> String {
    d.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
}
