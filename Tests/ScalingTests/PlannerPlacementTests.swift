import Bounds
import PropertyBased
import Scaling
import SimulationKit
import Testing

/// Placement constraints and spread (issue 17 item 6, docs/scheduling.md "Constraints and spread"),
/// and nodes that cannot run a service because its image fails to pull there (item 2).
@Suite struct PlannerPlacementTests {
    let planner = Planner()

    /// node-a and node-b in zone a, node-c in zone b; node-b has an hdd.
    func zones(cpu: Int = 2000) -> [Node] {
        [
            Node(name: "node-a", cpuMillis: cpu, memoryBytes: 8 << 30, labels: ["zone": "a", "disk": "ssd"]),
            Node(name: "node-b", cpuMillis: cpu, memoryBytes: 8 << 30, labels: ["zone": "a", "disk": "hdd"]),
            Node(name: "node-c", cpuMillis: cpu, memoryBytes: 8 << 30, labels: ["zone": "b"]),
        ]
    }

    func c(_ text: String) -> PlacementConstraint { try! PlacementConstraint.parse(text).get() }

    @Test func aServiceConstrainedToAZoneRunsOnlyOnThatZonesNodes() {
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 6, max: 6, constraints: [c("zone == a")])
        let r = planner.plan(services: [web], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 6)
        #expect(r.plan.count("web", on: "node-c") == 0)
        #expect(r.plan.count("web", on: "node-a") == 3 && r.plan.count("web", on: "node-b") == 3)
        #expect(r.shortfalls.isEmpty)
    }

    @Test func notEqualAdmitsNodesWithoutTheLabelAndConstraintsCombine() {
        let db = ServiceSpec(name: "db", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 4, max: 4, constraints: [c("disk != hdd")])
        let r = planner.plan(services: [db], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(r.plan.count("db", on: "node-b") == 0)
        #expect(r.plan.count("db", on: "node-a") == 2 && r.plan.count("db", on: "node-c") == 2)

        let both = ServiceSpec(
            name: "db", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 4, max: 4,
            constraints: [c("disk != hdd"), c("zone == a")])
        let r2 = planner.plan(services: [both], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(r2.plan.assignments == ["node-a": ["db": 4]])
    }

    @Test func aContainerNotPlacedBecauseOfAConstraintIsExplained() {
        // 1 core nodes, 0.5 core containers: zone b has room for 2 of the 4 wanted.
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, min: 4, max: 4, constraints: [c("zone == b")])
        let r = planner.plan(services: [web], demand: [:], nodes: zones(cpu: 1000), currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 2)
        #expect(r.shortfalls.count == 1)
        let text = r.shortfalls[0].description
        #expect(text == "web: 2 not placed: constraint zone == b matches 1 of 3 nodes, 1 with room (wanted 4, placed 2)", "\(text)")
    }

    @Test func aConstraintNoNodeMatchesPlacesNothingAndSaysSo() {
        let gpu = ServiceSpec(name: "gpu", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 1, max: 1, constraints: [c("gpu == yes")])
        let r = planner.plan(services: [gpu], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(r.plan.total("gpu") == 0)
        #expect(r.shortfalls.map(\.description) == ["gpu: 1 not placed: constraint gpu == yes matches 0 of 3 nodes (wanted 1, placed 0)"])
    }

    @Test func spreadBalancesAcrossTheLabelsValuesNotTheNodes() {
        // Zone a has two nodes, zone b one: spread by zone puts half in each zone.
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 6, max: 6, spread: "zone")
        let r = planner.plan(services: [web], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(r.plan.count("web", on: "node-c") == 3)
        #expect(r.plan.count("web", on: "node-a") + r.plan.count("web", on: "node-b") == 3)
        #expect(abs(r.plan.count("web", on: "node-a") - r.plan.count("web", on: "node-b")) <= 1)
        // Without spread the same service water-fills over nodes: two each.
        var plain = web
        plain.spread = nil
        let p = planner.plan(services: [plain], demand: [:], nodes: zones(), currentPlan: nil, now: .zero)
        #expect(p.plan.count("web", on: "node-c") == 2)
    }

    @Test func spreadIsSoftAFullZoneLeavesTheRestToTheOthers() {
        // node-c (zone b) holds 2 containers of 0.5 core at most.
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, min: 6, max: 6, spread: "zone")
        let r = planner.plan(services: [web], demand: [:], nodes: zones(cpu: 1000), currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 6)
        #expect(r.plan.count("web", on: "node-c") == 2)
    }

    @Test func scaleDownOfASpreadServiceShedsFromTheFullestValue() {
        // max lowered from 6 to 4: the two go from zone a (4 there, 2 in zone b), one from each node.
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 4, max: 4, spread: "zone")
        var current = Plan()
        current.assignments = ["node-a": ["web": 2], "node-b": ["web": 2], "node-c": ["web": 2]]
        let r = planner.plan(services: [web], demand: [:], nodes: zones(), currentPlan: current, now: .zero)
        #expect(r.plan.total("web") == 4)
        #expect(r.plan.count("web", on: "node-c") == 2)
        #expect(r.plan.count("web", on: "node-a") == 1 && r.plan.count("web", on: "node-b") == 1)
    }

    @Test func preemptionStopsLowerPriorityWorkOnlyWhereTheConstraintAllows() {
        let batch = ServiceSpec(name: "batch", priority: 2, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, fill: true)
        let first = planner.plan(services: [batch], demand: [:], nodes: zones(cpu: 1000), currentPlan: nil, now: .zero)
        #expect(first.plan.total("batch") == 6)
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, min: 3, max: 3, constraints: [c("zone == a")])
        let r = planner.plan(services: [batch, web], demand: [:], nodes: zones(cpu: 1000), currentPlan: first.plan, now: .seconds(1))
        #expect(r.plan.total("web") == 3)
        #expect(r.plan.count("web", on: "node-c") == 0)
        // Zone b's batch is untouched: stopping it would free nothing web may use.
        #expect(r.plan.count("batch", on: "node-c") == 2)
        #expect(r.plan.total("batch") == 3)
    }

    @Test func preemptionForASpreadServiceGoesToTheValueWithFewest() {
        let batch = ServiceSpec(name: "batch", priority: 2, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, fill: true)
        let first = planner.plan(services: [batch], demand: [:], nodes: zones(cpu: 1000), currentPlan: nil, now: .zero)
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, min: 2, max: 2, spread: "zone")
        let r = planner.plan(services: [batch, web], demand: [:], nodes: zones(cpu: 1000), currentPlan: first.plan, now: .seconds(1))
        #expect(r.plan.total("web") == 2)
        #expect(r.plan.count("web", on: "node-c") == 1)
    }

    @Test func aNodeThatNoLongerMatchesLosesItsContainersWhichMoveToOneThatDoes() {
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 2, max: 2, constraints: [c("zone == b")])
        var current = Plan()
        current.assignments = ["node-a": ["web": 2]]
        let r = planner.plan(services: [web], demand: [:], nodes: zones(), currentPlan: current, now: .zero)
        #expect(r.plan.assignments == ["node-c": ["web": 2]])
        #expect(r.decisions.contains { $0.node == "node-a" && $0.reason == "node-a does not match zone == b" })
    }

    @Test func aNodeWhoseImagePullFailsGetsNoneOfThatServiceAndTheDecisionsSayWhy() {
        var nodes = zones()
        nodes[2].blocked = ["web": "image web:v2 failing: manifest unknown"]
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 3, max: 3)
        var current = Plan()
        current.assignments = ["node-a": ["web": 1], "node-b": ["web": 1], "node-c": ["web": 1]]
        let r = planner.plan(services: [web], demand: [:], nodes: nodes, currentPlan: current, now: .zero)
        #expect(r.plan.count("web", on: "node-c") == 0)
        #expect(r.plan.total("web") == 3)
        #expect(r.decisions.contains { $0.node == "node-c" && $0.reason == "node-c cannot run it: image web:v2 failing: manifest unknown" })
        // Blocked everywhere: nothing placed, and the shortfall carries the registry's reason.
        for i in nodes.indices { nodes[i].blocked = ["web": "image web:v2 failing: manifest unknown"] }
        let none = planner.plan(services: [web], demand: [:], nodes: nodes, currentPlan: nil, now: .zero)
        #expect(none.plan.total("web") == 0)
        #expect(
            none.shortfalls.map(\.description)
                == ["web: 3 not placed: 3 nodes cannot run it (node-a: image web:v2 failing: manifest unknown) (wanted 3, placed 0)"])
    }

    @Test func constraintsAndSpreadParseAsWrittenAndRefuseWhatIsNot() {
        #expect(c("zone==a") == PlacementConstraint(key: "zone", op: .equal, value: "a"))
        #expect(c(" disk  !=  hdd ") == PlacementConstraint(key: "disk", op: .notEqual, value: "hdd"))
        #expect(c("gpu == ") == PlacementConstraint(key: "gpu", op: .equal, value: ""))
        for bad in ["zone = a", "zone", "== a", "zone == a b", "zo ne == a", String(repeating: "k", count: 64) + " == a"] {
            if case .success(let p) = PlacementConstraint.parse(bad) { Issue.record("\(bad) parsed as \(p)") }
        }
        if case .success = NodeLabels.parse(["zone=a", "zone=b"]) { Issue.record("a label given twice was taken") }
        if case .success = NodeLabels.parse((0...Limits.maxNodeLabels).map { "k\($0)=v" }) { Issue.record("too many labels were taken") }
        #expect((try? NodeLabels.parse(["zone=a", "gpu="]).get()) == ["zone": "a", "gpu": ""])
    }
}

/// The same properties with labels, constraints and spread drawn at random.
@Suite struct PlannerPlacementProperties {
    struct Drawn {
        var services: [ServiceSpec]
        var nodes: [Node]
        var current: Plan

        init(seed: UInt64) {
            var rng = SeededGenerator(seed: seed)
            let zones = ["a", "b", "c"]
            nodes = (0..<(Int(rng.next() % 7) + 1)).map { i in
                var labels: [String: String] = [:]
                if rng.next() % 5 != 0 { labels["zone"] = zones[Int(rng.next() % 3)] }
                if rng.next() % 2 == 0 { labels["disk"] = rng.next() % 2 == 0 ? "ssd" : "hdd" }
                return Node(name: "n\(i)", cpuMillis: [1000, 2000, 4000][Int(rng.next() % 3)], memoryBytes: 4 << 30, labels: labels)
            }
            let pool = ["zone == a", "zone == b", "zone != c", "disk != hdd", "disk == ssd"].map { try! PlacementConstraint.parse($0).get() }
            services = (0..<(Int(rng.next() % 4) + 1)).map { i in
                let k = Int(rng.next() % 3)
                return ServiceSpec(
                    name: "s\(i)", priority: Int(rng.next() % 3) + 1, cpuMillis: [250, 500, 1000][Int(rng.next() % 3)],
                    memoryBytes: 64 << 20, min: Int(rng.next() % 6), max: 12, fill: rng.next() % 4 == 0,
                    constraints: (0..<k).map { _ in pool[Int(rng.next() % UInt64(pool.count))] },
                    spread: rng.next() % 2 == 0 ? "zone" : nil)
            }
            // A plan from before the constraints: the services unconstrained, so some containers
            // start where they may no longer be.
            current =
                Planner().plan(
                    services: services.map {
                        var s = $0
                        s.constraints = []
                        return s
                    }, demand: [:],
                    nodes: nodes.map {
                        var n = $0
                        n.labels = [:]
                        return n
                    }, currentPlan: nil, now: .zero
                ).plan
        }
    }

    @Test func noContainerIsEverPlannedOnANodeItsConstraintsRefuse() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            let d = Drawn(seed: seed)
            let r = Planner().plan(services: d.services, demand: [:], nodes: d.nodes, currentPlan: d.current, now: .seconds(10))
            for node in d.nodes {
                for s in d.services where r.plan.count(s.name, on: node.name) > 0 {
                    #expect(s.constraints.allSatisfy { $0.admits(node.labels) }, "seed \(seed): \(s.name) on \(node.name) \(node.labels)")
                }
            }
            for short in r.shortfalls {
                let s = d.services.first { $0.name == short.service }!
                if !s.constraints.isEmpty { #expect(short.why != nil, "seed \(seed): \(short) without why") }
            }
        }
    }

    @Test func aSpreadServiceWithRoomEverywhereDiffersByAtMostOneAcrossValues() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var rng = SeededGenerator(seed: seed)
            let nodes = (0..<(Int(rng.next() % 8) + 1)).map { i in
                Node(name: "n\(i)", cpuMillis: 64_000, memoryBytes: 64 << 30, labels: ["zone": ["a", "b", "c"][Int(rng.next() % 3)]])
            }
            let want = Int(rng.next() % 40)
            let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: want, max: want, spread: "zone")
            let r = Planner().plan(services: [web], demand: [:], nodes: nodes, currentPlan: nil, now: .zero)
            #expect(r.plan.total("web") == want, "seed \(seed)")
            var perZone: [String: Int] = [:]
            for n in nodes { perZone[n.labels["zone"]!, default: 0] += r.plan.count("web", on: n.name) }
            #expect((perZone.values.max() ?? 0) - (perZone.values.min() ?? 0) <= 1, "seed \(seed): \(perZone)")
            // And again from that plan: nothing moves.
            let again = Planner().plan(services: [web], demand: [:], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
            #expect(again.decisions.isEmpty, "seed \(seed): \(again.decisions)")
        }
    }
}
