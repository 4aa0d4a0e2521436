import Bounds
import PropertyBased
import Scaling
import SimulationKit
import Testing

/// A cluster that moves: a random cell planned from nothing, then a chain of random deltas (a node
/// dies, leaves, turns suspect, is drained or comes back; a node's labels, blocked images or size
/// change; demand moves or goes unknown; and, for the fallback, a node added or removed, a spec
/// changed, the nodes handed over in another order), each planned twice: from the previous plan
/// as the planner left it (its index kept, the incremental path) and from the same plan without
/// the index (the full path). docs/scaling.md, "Incremental re-planning".
struct MovingCell {
    var services: [ServiceSpec]
    var nodes: [Node]
    var demand: [String: DemandValue]
    var rng: SeededGenerator
    var now: Duration = .zero

    init(seed: UInt64) {
        rng = SeededGenerator(seed: seed)
        let serviceCount = Int(rng.next() % 8) + 1
        var services: [ServiceSpec] = []
        for i in 0..<serviceCount {
            var constraints: [PlacementConstraint] = []
            switch rng.next() % 6 {
            case 0: constraints = [PlacementConstraint(key: "zone", op: .equal, value: ["a", "b"][Int(rng.next() % 2)])]
            case 1: constraints = [PlacementConstraint(key: "disk", op: .notEqual, value: "hdd")]
            default: break
            }
            services.append(
                ServiceSpec(
                    name: "s\(i)", priority: Int(rng.next() % 3) + 1, cpuMillis: [100, 250, 500, 1000][Int(rng.next() % 4)],
                    memoryBytes: [32, 64, 256][Int(rng.next() % 3)] << 20, min: Int(rng.next() % 3), max: Int(rng.next() % 40) + 3,
                    perContainer: 10, fill: rng.next() % 4 == 0, hostPorts: rng.next() % 10 == 0 ? [80] : [],
                    constraints: constraints, spread: rng.next() % 5 == 0 ? "zone" : nil))
        }
        self.services = services
        let nodeCount = Int(rng.next() % 10) + 1
        var nodes: [Node] = []
        for i in 0..<nodeCount {
            var labels = ["disk": rng.next() % 2 == 0 ? "ssd" : "hdd"]
            if rng.next() % 5 != 0 { labels["zone"] = ["a", "b", "c"][Int(rng.next() % 3)] }
            nodes.append(
                Node(
                    name: "n\(i)", cpuMillis: [1000, 2000, 4000, 8000][Int(rng.next() % 4)],
                    memoryBytes: [512, 1024, 4096][Int(rng.next() % 3)] << 20, labels: labels))
        }
        self.nodes = nodes
        demand = [:]
        for s in services { demand[s.name] = .known(Double(rng.next() % 300)) }
    }

    mutating func pick(_ n: Int) -> Int { Int(rng.next() % UInt64(Swift.max(1, n))) }

    /// One to three random changes, and the clock moved on by 0 to 4 s (so the stabilization
    /// window sometimes lets a lower count through).
    mutating func move() -> [String] {
        var what: [String] = []
        for _ in 0...pick(3) {
            let n = pick(nodes.count), s = pick(services.count)
            switch pick(14) {
            case 0:
                nodes[n].status = [.alive, .suspect, .dead, .left][pick(4)]
                what.append("\(nodes[n].name) \(nodes[n].status)")
            case 1:
                nodes[n].drained.toggle()
                what.append("\(nodes[n].name) drained \(nodes[n].drained)")
            case 2:
                nodes[n].labels["zone"] = ["a", "b", "c", nil][pick(4)]
                what.append("\(nodes[n].name) zone \(nodes[n].labels["zone"] ?? "-")")
            case 3:
                let name = services[s].name
                nodes[n].blocked[name] = nodes[n].blocked[name] == nil ? "pull failed" : nil
                what.append("\(nodes[n].name) blocked \(nodes[n].blocked.keys.sorted())")
            case 4:
                nodes[n].cpuMillis = [500, 1000, 2000, 4000, 8000][pick(5)]
                what.append("\(nodes[n].name) cpu \(nodes[n].cpuMillis)")
            case 5, 6, 7, 8:
                demand[services[s].name] = pick(6) == 0 ? .unknown : .known(Double(pick(500)))
                what.append("\(services[s].name) demand \(demand[services[s].name]!)")
            case 9:
                nodes.append(Node(name: "n\(nodes.count)-\(pick(1000))", cpuMillis: 2000, memoryBytes: 1 << 30, labels: ["zone": "a"]))
                what.append("node added")
            case 10 where nodes.count > 1:
                what.append("\(nodes.remove(at: n).name) removed")
            case 11:
                services[s].max = pick(40) + 1
                services[s].min = Swift.min(services[s].min, services[s].max)
                what.append("\(services[s].name) max \(services[s].max)")
            case 12:
                nodes.shuffle(using: &rng)
                what.append("nodes reordered")
            default:
                what.append("nothing")
            }
        }
        now += .seconds(pick(5))
        return what
    }

    func plan(from current: Plan?) -> PlanResult {
        Planner().plan(services: services, demand: demand, nodes: nodes, currentPlan: current, now: now)
    }
}

@Suite struct PlannerIncrementalProperties {
    @Test func aPlanMadeFromTheKeptIndexEqualsThePlanMadeInFull() async {
        await propertyCheck(count: 150, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var cell = MovingCell(seed: seed)
            var previous = cell.plan(from: nil).plan
            for step in 1...8 {
                let what = cell.move()
                let kept = cell.plan(from: previous)
                let full = cell.plan(from: previous.withoutIndex)
                let context = "seed \(seed), step \(step) (\(what.joined(separator: ", ")))"
                #expect(kept.plan == full.plan, "\(context): plans differ")
                #expect(kept.decisions == full.decisions, "\(context): decisions differ")
                #expect(kept.shortfalls == full.shortfalls, "\(context): shortfalls differ")
                #expect(kept.plan.isIndexed, "\(context): the plan carries no index")
                guard kept.plan == full.plan else { return }
                previous = kept.plan
            }
        }
    }

    @Test func changingAPlansAssignmentsDropsItsIndex() {
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, max: 10, perContainer: 1)
        let nodes = [Node(name: "n1", cpuMillis: 4000, memoryBytes: 8 << 30)]
        var plan = Planner().plan(services: [web], demand: ["web": .known(3)], nodes: nodes, currentPlan: nil, now: .zero).plan
        #expect(plan.isIndexed)
        plan.assignments["n1"] = ["web": 7]
        #expect(!plan.isIndexed)
        // Planned from the changed counts (7 already there), not from the index of the 3 they
        // replaced (which would start 4 more).
        let next = Planner().plan(services: [web], demand: ["web": .known(7)], nodes: nodes, currentPlan: plan, now: .seconds(1))
        #expect(next.plan.count("web", on: "n1") == 7)
        #expect(next.plan.assignments == plan.assignments, "\(next.plan.assignments)")
    }
}
