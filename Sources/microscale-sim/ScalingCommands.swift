import ArgumentParser
import Scaling
import SimulationKit

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Scale benchmarks.", subcommands: [BenchPlanner.self])
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
            result = planner.plan(services: services, demand: ["web": .known(Double(webCount * 10))], nodes: lost, currentPlan: first, now: .seconds(1))
        }
        let afterLoss = result.plan
        let moved = result.decisions.filter { $0.node != nil && $0.to > $0.from }.reduce(0) { $0 + $1.to - $1.from }
        let tick = clock.measure {
            result = planner.plan(services: services, demand: ["web": .known(Double(webCount * 10 + 50))], nodes: lost, currentPlan: afterLoss, now: .seconds(2))
        }
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        if json {
            print("{\"nodes\":\(nodes),\"containers\":\(containers),\"placed\":\(placed),\"full_ms\":\(ms(full)),\"replan_after_node_loss_ms\":\(ms(replan)),\"moved_after_loss\":\(moved),\"incremental_tick_ms\":\(ms(tick))}")
        } else {
            print("planner: \(containers) containers over \(nodes) nodes (placed \(placed))")
            print("  full plan from scratch:     \(ms(full)) ms (target ≤ 10000)")
            print("  re-plan after a node loss:  \(ms(replan)) ms (target ≤ 100), \(moved) containers moved")
            print("  incremental tick:           \(ms(tick)) ms (target ≤ 10)")
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
            print("{\"seconds\":\(r.seconds),\"seed\":\(r.seed),\"utilization\":\(r.utilization),\"priority_one_met\":\(r.priorityOneMet),"
                + "\"separate_nodes\":\(c?.separateNodes ?? 0),\"shared_nodes\":\(c?.sharedNodes ?? 0),\"saved_nodes\":\(c?.savedNodes ?? 0),"
                + "\"saved_percent\":\(c?.savedPercent ?? 0)}")
        } else {
            print("utilization over \(r.seconds) s, seed \(r.seed): \(r.utilization * 100)% of reserved capacity in use (target ≥ 95%)")
            print("priority-1 demand met in \(r.priorityOneMet * 100)% of seconds (target ≥ 99%)")
            print("cell compaction (docs/utilization.md): \(r.summary.compactionText)")
        }
    }
}
