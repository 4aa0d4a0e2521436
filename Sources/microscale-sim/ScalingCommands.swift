import ArgumentParser
import Bounds
import Scaling
import SimulationKit

#if canImport(Glibc)
    import Glibc
#endif

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Scale benchmarks.", subcommands: [BenchPlanner.self, BenchCell.self])
}

/// Plans M containers over N nodes from scratch, re-plans after losing one node, then an incremental tick
/// with a small demand change. Prints wall-clock figures; targets: 10 s, 100 ms, 10 ms at 1M over 5,000.
struct BenchPlanner: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "planner")
    @Option var nodes: Int = 5000
    @Option var containers: Int = 1_000_000
    @Flag var json = false

    func run() throws {
        let perNode = Swift.max(1, (containers + nodes - 1) / nodes)
        let cluster = (0..<nodes).map {
            Node(name: "node-\($0)", cpuMillis: perNode * 100 + 200, memoryBytes: perNode << 26 + (1 << 28))
        }
        // Web takes half the containers by demand, batch fills the rest.
        let webCount = containers / 2
        let services = [
            ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 64 << 20, min: 1, max: webCount * 2, perContainer: 10),
            ServiceSpec(name: "batch", priority: 2, cpuMillis: 100, memoryBytes: 64 << 20, max: containers - webCount, fill: true),
        ]
        let planner = Planner()
        let clock = ContinuousClock()
        var result: PlanResult! = nil
        let full = clock.measure {
            result = planner.plan(services: services, demand: ["web": .known(Double(webCount * 10))], nodes: cluster, currentPlan: nil, now: .zero)
        }
        let placed = result.plan.assignments.values.reduce(0) { $0 + $1.values.reduce(0, +) }
        var lost = cluster
        lost[0].status = .dead
        let first = result.plan
        let replan = clock.measure {
            result = planner.plan(
                services: services, demand: ["web": .known(Double(webCount * 10))], nodes: lost, currentPlan: first, now: .seconds(1))
        }
        let afterLoss = result.plan
        let moved = result.decisions.filter { $0.node != nil && $0.to > $0.from }.reduce(0) { $0 + $1.to - $1.from }
        let tick = clock.measure {
            result = planner.plan(
                services: services, demand: ["web": .known(Double(webCount * 10 + 50))], nodes: lost, currentPlan: afterLoss, now: .seconds(2))
        }
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        if json {
            print(
                "{\"nodes\":\(nodes),\"containers\":\(containers),\"placed\":\(placed),\"full_ms\":\(ms(full)),\"replan_after_node_loss_ms\":\(ms(replan)),\"moved_after_loss\":\(moved),\"incremental_tick_ms\":\(ms(tick))}"
            )
        } else {
            print("planner: \(containers) containers over \(nodes) nodes (placed \(placed))")
            print("  full plan from scratch:     \(ms(full)) ms (target ≤ 10000)")
            print("  re-plan after a node loss:  \(ms(replan)) ms (target ≤ 100), \(moved) containers moved")
            print("  incremental tick:           \(ms(tick)) ms (target ≤ 10)")
        }
    }
}

/// The planner on a realistic cell rather than the easiest case there is: a thousand services of
/// three priorities and sizes from 0.1 to 4 cores (most small, as in Borg's traces), some of the
/// lowest priority filling what is left, over nodes of four sizes. Figures, not assertions:
/// the full plan from nothing, one node's loss re-planned, and one service's demand step, each
/// over `--trials` runs as CPU time per plan and wall time (median, p90, failed trials), with
/// placements per CPU second beside Nomad's published C1M and C2M (1,000,000 and 2,000,000
/// containers scheduled at 3,750 and about 1,500 per second).
struct BenchCell: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cell")
    @Option var nodes: Int = 5000
    @Option var services: Int = 1000
    @Option var containers: Int = 1_000_000
    @Option var seed: UInt64 = 1
    @Option var trials: Int = 5
    @Flag var json = false

    struct Cell {
        var nodes: [Node]
        var services: [ServiceSpec]
        var demand: [String: DemandValue]
    }

    /// Drawn from `seed`: node sizes 32/48/64/96 cores with 4 GiB per core; services' sizes 0.1,
    /// 0.25, 1 or 4 cores in the shares 70/20/8/2% (1 GiB per core, 64 MiB at least); priorities
    /// 1/2/3 in the shares 20/30/50%, a fifth of priority 3 filling; a fifth of all constrained to
    /// a zone (nodes are in zones a, b, c) or to nodes without `disk=hdd` (half of them); counts
    /// around the mean that makes `containers` in all.
    static func cell(nodes n: Int, services m: Int, containers: Int, seed: UInt64) -> Cell {
        var rng = SeededGenerator(seed: seed)
        let sizes = [32_000, 48_000, 64_000, 96_000]
        let nodes = (0..<n).map { i -> Node in
            let cpu = sizes[Int(rng.next() % 4)]
            let labels = ["zone": ["a", "b", "c"][i % 3], "disk": rng.next() % 2 == 0 ? "ssd" : "hdd"]
            return Node(name: "node-\(i)", cpuMillis: cpu, memoryBytes: (cpu / 1000) << 32, labels: labels)
        }
        let mean = Swift.max(1, containers / Swift.max(1, m))
        var services: [ServiceSpec] = []
        var demand: [String: DemandValue] = [:]
        for i in 0..<m {
            let r = rng.next() % 100
            let cpu = r < 70 ? 100 : r < 90 ? 250 : r < 98 ? 1000 : 4000
            let p = rng.next() % 10
            let priority = p < 2 ? 1 : p < 5 ? 2 : 3
            let count = Swift.max(1, mean / 2 + Int(rng.next() % UInt64(mean)))
            let name = "svc-\(i)"
            let fill = priority == 3 && rng.next() % 5 == 0
            // A fifth of the services are kept to some nodes: a zone, or off the slow disks.
            var constraints: [PlacementConstraint] = []
            switch rng.next() % 10 {
            case 0: constraints = [PlacementConstraint(key: "zone", op: .equal, value: ["a", "b", "c"][i % 3])]
            case 1: constraints = [PlacementConstraint(key: "disk", op: .notEqual, value: "hdd")]
            default: break
            }
            services.append(
                ServiceSpec(
                    name: name, priority: priority, cpuMillis: cpu,
                    memoryBytes: Swift.max(64 << 20, cpu << 20), min: 0, max: fill ? count : count * 2,
                    perContainer: 10, fill: fill, constraints: constraints))
            if !fill { demand[name] = .known(Double(count * 10)) }
        }
        return Cell(nodes: nodes, services: services, demand: demand)
    }

    /// One figure over the trials: the CPU time this thread spent in the plan and the wall time
    /// around it, in ms, and the trials that failed. A plan is one synchronous call of a pure
    /// function, so it cannot time out; a trial fails when a re-plan from the kept index differs
    /// from the same plan computed from scratch (plan, decisions or shortfalls). As in the harness's
    /// `Trials` (Sources/Figures), a failed trial ranks after every finished one, so a percentile
    /// that lands on one is "did not finish"; the trial's times are not counted.
    struct Figure {
        var name: String
        var key: String
        var targetMs: Double
        var cpu: [Double] = []
        var wall: [Double] = []
        var failures: [String] = []
        var count: Int { cpu.count + failures.count }

        /// Index round((n - 1) · p) of the sorted trials, failed ones last (Figures.Trials' rule).
        func percentile(_ xs: [Double], _ p: Double) -> Double? {
            let n = count
            guard n > 0 else { return nil }
            let rank = Int((Double(n - 1) * p).rounded())
            let sorted = xs.sorted()
            return rank < sorted.count ? sorted[rank] : nil
        }

        func show(_ v: Double?) -> String { v.map { String(format: "%.1f", $0) } ?? "did not finish" }
        func json(_ v: Double?) -> String { v.map { "\($0)" } ?? "null" }

        var text: String {
            let failed = failures.isEmpty ? "none failed" : "\(failures.count) failed: \(Set(failures).sorted().joined(separator: "; "))"
            return "\(name): CPU \(show(percentile(cpu, 0.5))) ms median, \(show(percentile(cpu, 0.9))) ms p90; "
                + "wall \(show(percentile(wall, 0.5))) / \(show(percentile(wall, 0.9))) ms (target ≤ \(Int(targetMs)) ms CPU; \(count) trials, \(failed))"
        }

        var jsonObject: String {
            let failures = self.failures.map { "\"\($0)\"" }.joined(separator: ",")
            return "\"\(key)\":{\"target_ms\":\(targetMs),\"trials\":\(count),\"failed\":\(self.failures.count),\"failures\":[\(failures)],"
                + "\"cpu_ms\":{\"median\":\(json(percentile(cpu, 0.5))),\"p90\":\(json(percentile(cpu, 0.9))),\"values\":\(cpu)},"
                + "\"wall_ms\":{\"median\":\(json(percentile(wall, 0.5))),\"p90\":\(json(percentile(wall, 0.9))),\"values\":\(wall)}}"
        }
    }

    /// CPU time of the calling thread (the plan runs on it alone), in ms: what the planner costs,
    /// whatever else the machine is doing. Wall time on a shared machine includes the other loads.
    static func threadCPUms() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) * 1000 + Double(t.tv_nsec) / 1e6
    }

    /// Runs `plan` once, timed by the thread's CPU clock and the wall clock.
    static func timed(_ plan: () -> PlanResult) -> (result: PlanResult, cpu: Double, wall: Double) {
        let clock = ContinuousClock()
        var r: PlanResult? = nil
        let cpu0 = threadCPUms()
        let wall = clock.measure { r = plan() }
        let cpu = threadCPUms() - cpu0
        let d = wall.components
        return (r!, cpu, Double(d.seconds) * 1000 + Double(d.attoseconds) / 1e15)
    }

    /// Whether two results of the same inputs agree (the plan, every decision, every shortfall).
    static func same(_ a: PlanResult, _ b: PlanResult) -> Bool {
        a.plan == b.plan && a.decisions == b.decisions && a.shortfalls == b.shortfalls
    }

    func run() throws {
        let c = Self.cell(nodes: nodes, services: services, containers: containers, seed: seed)
        let planner = Planner()
        var full = Figure(name: "full plan from nothing", key: "full_plan", targetMs: 1000)
        var loss = Figure(name: "fullest node lost", key: "node_loss", targetMs: 50)
        var step = Figure(name: "one service's demand +10%", key: "demand_step", targetMs: 5)
        var placed = 0, moved = 0, stepDecisions = 0
        let cpuUsed = { (p: Plan) -> Int in
            let spec = Dictionary(uniqueKeysWithValues: c.services.map { ($0.name, $0.cpuMillis) })
            return p.assignments.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.value * (spec[$1.key] ?? 0) } }
        }
        var utilization = 0.0
        func record(_ f: inout Figure, _ t: (result: PlanResult, cpu: Double, wall: Double), check: () -> PlanResult) {
            // The re-plan from the kept index must be the plan computed from scratch: checked
            // outside the timed call, and a trial that differs is failed, its times not counted.
            if Self.same(t.result, check()) {
                f.cpu.append(t.cpu)
                f.wall.append(t.wall)
            } else {
                f.failures.append("re-plan differs from the full computation")
            }
        }
        for _ in 0..<Swift.max(1, trials) {
            let made = Self.timed { planner.plan(services: c.services, demand: c.demand, nodes: c.nodes, currentPlan: nil, now: .zero) }
            full.cpu.append(made.cpu)
            full.wall.append(made.wall)
            let first = made.result.plan
            placed = first.assignments.values.reduce(0) { $0 + $1.values.reduce(0, +) }
            utilization = Double(cpuUsed(first)) / Double(c.nodes.reduce(0) { $0 + $1.cpuMillis })
            // The fullest node dies: the worst single loss.
            var lost = c.nodes
            let victim = first.assignments.max { ($0.value.values.reduce(0, +), $1.key) < ($1.value.values.reduce(0, +), $0.key) }?.key
            if let i = lost.firstIndex(where: { $0.name == victim }) { lost[i].status = .dead }
            let afterLoss = Self.timed { planner.plan(services: c.services, demand: c.demand, nodes: lost, currentPlan: first, now: .seconds(1)) }
            record(&loss, afterLoss) {
                planner.plan(services: c.services, demand: c.demand, nodes: lost, currentPlan: first.withoutIndex, now: .seconds(1))
            }
            moved = afterLoss.result.decisions.filter { $0.node != nil && $0.to > $0.from }.reduce(0) { $0 + $1.to - $1.from }
            // One priority-1 service's demand rises by a tenth.
            var stepped = c.demand
            if let s = c.services.first(where: { $0.priority == 1 && !$0.fill }), case .known(let d) = c.demand[s.name] ?? .unknown {
                stepped[s.name] = .known(d * 1.1)
            }
            let previous = afterLoss.result.plan
            let stepResult = Self.timed { planner.plan(services: c.services, demand: stepped, nodes: lost, currentPlan: previous, now: .seconds(2)) }
            record(&step, stepResult) {
                planner.plan(services: c.services, demand: stepped, nodes: lost, currentPlan: previous.withoutIndex, now: .seconds(2))
            }
            stepDecisions = stepResult.result.decisions.count
        }
        let figures = [full, loss, step]
        let rate = full.percentile(full.cpu, 0.5).map { Double(placed) / ($0 / 1000) } ?? 0
        if json {
            print(
                "{\"nodes\":\(nodes),\"services\":\(services),\"containers_wanted\":\(containers),\"placed\":\(placed),\"cpu_utilization\":\(utilization),"
                    + "\"seed\":\(seed),\"trials\":\(full.count),\"moved_after_loss\":\(moved),\"demand_step_decisions\":\(stepDecisions),"
                    + "\"placements_per_cpu_second\":\(rate),\"fault\":\"the fullest node dead; one priority-1 service's demand +10%\","
                    + figures.map(\.jsonObject).joined(separator: ",") + "}")
        } else {
            print(
                "planner, realistic cell (seed \(seed)): \(services) services of 3 priorities, 0.1-4 cores, over \(nodes) nodes of 4 sizes; \(full.count) trials"
            )
            let constrained = c.services.filter { !$0.constraints.isEmpty }.count
            print(
                String(
                    format: "  %d containers placed (%.0f%% of the cell's CPU); %d constrained services (a zone, or disk != hdd)",
                    placed, utilization * 100, constrained))
            print("  times are per plan: CPU of the planning thread (clock_gettime(CLOCK_THREAD_CPUTIME_ID)) and wall")
            for f in figures { print("  " + f.text) }
            print(String(format: "  placements per CPU second: %.0f (Nomad C1M 3,750/s, C2M ~1,500/s)", rate))
            print(
                "  fault: the fullest node dead (\(moved) containers placed elsewhere); "
                    + "one priority-1 service's demand +10% (\(stepDecisions) decisions)")
        }
    }
}

struct Utilization: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a seeded demand trace; print the share of capacity in use and of seconds with priority-1 demand met.")
    @Option var seconds: Int = 600
    @Option var seed: UInt64 = 1
    @Flag var json = false

    func run() throws {
        let r = UtilizationReplay.run(seconds: seconds, seed: seed)
        if json {
            let c = r.summary.compaction
            print(
                "{\"seconds\":\(r.seconds),\"seed\":\(r.seed),\"utilization\":\(r.utilization),\"priority_one_met\":\(r.priorityOneMet),"
                    + "\"separate_nodes\":\(c?.separateNodes ?? 0),\"shared_nodes\":\(c?.sharedNodes ?? 0),\"saved_nodes\":\(c?.savedNodes ?? 0),"
                    + "\"saved_percent\":\(c?.savedPercent ?? 0)}")
        } else {
            print("utilization over \(r.seconds) s, seed \(r.seed): \(r.utilization * 100)% of reserved capacity in use (target ≥ 95%)")
            print("priority-1 demand met in \(r.priorityOneMet * 100)% of seconds (target ≥ 99%)")
            print("cell compaction (docs/utilization.md): \(r.summary.compactionText)")
        }
    }
}
