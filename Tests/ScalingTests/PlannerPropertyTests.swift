import PropertyBased
import Scaling
import SimulationKit
import Testing

/// A random cluster, service set and demand drawn from one seed; the current plan is the planner's own
/// answer to an earlier random state, so it is a plan the system could really be in.
struct Scenario {
    var services: [ServiceSpec]
    var nodes: [Node]
    var demand: [String: DemandValue]
    var current: Plan

    init(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let serviceCount = Int(rng.next() % 5) + 1
        services = (0..<serviceCount).map { i in
            ServiceSpec(
                name: "s\(i)", priority: Int(rng.next() % 3) + 1, cpuMillis: [250, 500, 1000][Int(rng.next() % 3)],
                memoryBytes: [32, 64, 256][Int(rng.next() % 3)] << 20, min: Int(rng.next() % 3), max: Int(rng.next() % 30) + 3,
                perContainer: 10, fill: rng.next() % 3 == 0)
        }
        let nodeCount = Int(rng.next() % 8) + 1
        nodes = (0..<nodeCount).map { i in
            Node(name: "n\(i)", cpuMillis: [1000, 2000, 4000][Int(rng.next() % 3)], memoryBytes: [512, 1024, 4096][Int(rng.next() % 3)] << 20)
        }
        let names = services.map(\.name)
        func randomDemand(_ rng: inout SeededGenerator) -> [String: DemandValue] {
            Dictionary(
                uniqueKeysWithValues: names.map { s in
                    (s, rng.next() % 6 == 0 ? DemandValue.unknown : .known(Double(rng.next() % 400)))
                })
        }
        let firstDemand = randomDemand(&rng)
        current = Planner().plan(services: services, demand: firstDemand, nodes: nodes, currentPlan: nil, now: .zero).plan
        for i in nodes.indices {
            switch rng.next() % 8 {
            case 0: nodes[i].status = .dead
            case 1: nodes[i].status = .left
            case 2: nodes[i].status = .suspect
            case 3: nodes[i].drained = true
            default: break
            }
        }
        demand = randomDemand(&rng)
    }

    func plan(now: Duration = .seconds(10)) -> PlanResult {
        Planner().plan(services: services, demand: demand, nodes: nodes, currentPlan: current, now: now)
    }
}

@Suite struct PlannerProperties {
    @Test func capacityIsNeverExceededAndNothingRunsOnDeadLeftOrDrainedNodes() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            let s = Scenario(seed: seed)
            let r = s.plan()
            let spec = Dictionary(uniqueKeysWithValues: s.services.map { ($0.name, $0) })
            for node in s.nodes {
                let counts = r.plan.assignments[node.name] ?? [:]
                let cpu = counts.reduce(0) { $0 + $1.value * spec[$1.key]!.cpuMillis }
                let mem = counts.reduce(0) { $0 + $1.value * spec[$1.key]!.memoryBytes }
                #expect(cpu <= node.cpuMillis && mem <= node.memoryBytes, "seed \(seed): \(node.name) over capacity")
                if node.status == .dead || node.status == .left || node.drained {
                    #expect(counts.isEmpty, "seed \(seed): work left on \(node.name)")
                }
            }
        }
    }

    @Test func aLowerPriorityNeverRunsWhereAShortHigherPriorityCouldHaveHadItsRoom() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            let s = Scenario(seed: seed)
            let r = s.plan()
            let spec = Dictionary(uniqueKeysWithValues: s.services.map { ($0.name, $0) })
            for short in r.shortfalls {
                let want = spec[short.service]!
                for node in s.nodes where node.status == .alive && !node.drained {
                    let counts = r.plan.assignments[node.name] ?? [:]
                    var cpu = node.cpuMillis, mem = node.memoryBytes
                    for (name, c) in counts where spec[name]!.priority <= want.priority {
                        cpu -= c * spec[name]!.cpuMillis
                        mem -= c * spec[name]!.memoryBytes
                    }
                    #expect(
                        cpu < want.cpuMillis || mem < want.memoryBytes,
                        "seed \(seed): \(short.service) short while \(node.name) had lower-priority room")
                }
            }
        }
    }

    @Test func theSameInputsGiveTheSamePlanInAnyOrder() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            let s = Scenario(seed: seed)
            let a = s.plan()
            let b = Planner().plan(
                services: s.services.reversed(), demand: s.demand, nodes: s.nodes.reversed(), currentPlan: s.current, now: .seconds(10))
            #expect(a.plan == b.plan, "seed \(seed)")
            #expect(a.decisions == b.decisions, "seed \(seed)")
        }
    }

    /// Seed 3843169673: preempting a priority-3 service for a priority-2 one freed more than the
    /// priority-2 service could use, and a priority-1 fill service took the rest only in the
    /// next plan. Found by the property below (one run in about thirty).
    @Test func roomFreedByPreemptionGoesToFillServicesInTheSamePlan() {
        let s = Scenario(seed: 3843169673)
        let first = s.plan()
        let again = Planner().plan(services: s.services, demand: s.demand, nodes: s.nodes, currentPlan: first.plan, now: .seconds(10))
        #expect(again.plan.assignments == first.plan.assignments)
        #expect(again.decisions.isEmpty, "\(again.decisions)")
    }

    @Test func unchangedInputsChangeNothing() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            let s = Scenario(seed: seed)
            let first = s.plan()
            let again = Planner().plan(services: s.services, demand: s.demand, nodes: s.nodes, currentPlan: first.plan, now: .seconds(10))
            #expect(again.plan.assignments == first.plan.assignments, "seed \(seed)")
            #expect(again.decisions.isEmpty, "seed \(seed): \(again.decisions)")
        }
    }
}
