import Scaling
import Testing

let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 500, memoryBytes: 64 << 20, min: 1, max: 40, perContainer: 10)
let batch = ServiceSpec(name: "batch", priority: 2, cpuMillis: 500, memoryBytes: 32 << 20, max: 100, fill: true)

func cluster(_ n: Int, cpu: Int = 2000) -> [Node] {
    (0..<n).map { Node(name: "node-\(Character(UnicodeScalar(97 + $0)!))", cpuMillis: cpu, memoryBytes: 8 << 30) }
}

@Suite struct PlannerSpecification {
    let planner = Planner()

    @Test func aDemandDrivenServiceWantsDemandOverPerContainerRoundedUpAndClamped() {
        let r = planner.plan(services: [web], demand: ["web": .known(63)], nodes: cluster(4), currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 7)
        #expect(r.decisions.contains { $0.node == nil && $0.description == "web 0→7: demand 63 at 10 per container → 7" })
        let low = planner.plan(services: [web], demand: ["web": .known(0)], nodes: cluster(4), currentPlan: nil, now: .zero)
        #expect(low.plan.total("web") == 1)
        let high = planner.plan(services: [web], demand: ["web": .known(10_000)], nodes: cluster(40), currentPlan: nil, now: .zero)
        #expect(high.plan.total("web") == 40)
    }

    @Test func aFillServiceTakesEverythingLeftAndGivesItBackWhenDemandRises() {
        let nodes = cluster(2)  // 8 slots of 500 millicores
        var r = planner.plan(services: [web, batch], demand: ["web": .known(20)], nodes: nodes, currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 2)
        #expect(r.plan.total("batch") == 6)
        r = planner.plan(services: [web, batch], demand: ["web": .known(50)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(r.plan.total("web") == 5)
        #expect(r.plan.total("batch") == 3)
        #expect(r.decisions.contains { $0.service == "batch" && $0.node != nil && $0.reason == "room for web (priority 1)" && $0.to < $0.from })
    }

    @Test func preemptionStopsTheLowestPriorityFirstAndNeverAnEqualPriority() {
        let mid = ServiceSpec(name: "orders", priority: 2, cpuMillis: 500, memoryBytes: 1 << 20, min: 2, max: 2, perContainer: 1)
        let low = ServiceSpec(name: "video", priority: 3, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, fill: true)
        let peer = ServiceSpec(name: "api", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, min: 0, max: 100, perContainer: 1)
        let nodes = cluster(1)  // 4 slots
        var r = planner.plan(
            services: [web, mid, low, peer], demand: ["web": .known(10), "api": .known(1)], nodes: nodes, currentPlan: nil, now: .zero)
        #expect(r.plan.total("orders") == 2)
        #expect(r.plan.total("video") == 0)
        r = planner.plan(services: [web, mid, low, peer], demand: ["web": .known(10), "api": .known(1)], nodes: nodes, currentPlan: nil, now: .zero)
        // Now web rises: orders (priority 2) yields, the equal-priority api does not.
        r = planner.plan(
            services: [web, mid, low, peer], demand: ["web": .known(30), "api": .known(1)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(r.plan.total("api") == 1)
        #expect(r.plan.total("web") == 3)
        #expect(r.plan.total("orders") == 0)
        #expect(r.shortfalls.contains { $0.service == "orders" })
    }

    @Test func preemptionPrefersTheNodeWhereTheFewestContainersStop() {
        let small = ServiceSpec(name: "small", priority: 3, cpuMillis: 250, memoryBytes: 1 << 20, max: 100, fill: true)
        let big = ServiceSpec(name: "big", priority: 3, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, fill: true)
        var current = Plan()
        current.assignments = ["node-a": ["small": 8], "node-b": ["big": 4]]
        let r = planner.plan(services: [web, small, big], demand: ["web": .known(10)], nodes: cluster(2), currentPlan: current, now: .zero)
        #expect(r.plan.count("web", on: "node-b") == 1)
        #expect(r.plan.count("big", on: "node-b") == 3)
        #expect(r.plan.count("small", on: "node-a") == 8)
    }

    @Test func scaleDownWaitsForTheStabilizationWindowAndScaleUpDoesNot() {
        let nodes = cluster(4)
        var r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 6)
        r = planner.plan(services: [web], demand: ["web": .known(20)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(r.plan.total("web") == 6)
        r = planner.plan(services: [web], demand: ["web": .known(20)], nodes: nodes, currentPlan: r.plan, now: .milliseconds(3500))
        #expect(r.plan.total("web") == 6)
        r = planner.plan(services: [web], demand: ["web": .known(20)], nodes: nodes, currentPlan: r.plan, now: .seconds(4))
        #expect(r.plan.total("web") == 2)
        r = planner.plan(services: [web], demand: ["web": .known(80)], nodes: nodes, currentPlan: r.plan, now: .milliseconds(4100))
        #expect(r.plan.total("web") == 8)
    }

    @Test func aFlickerBackUpResetsTheWindow() {
        let nodes = cluster(4)
        var r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: nil, now: .zero)
        r = planner.plan(services: [web], demand: ["web": .known(20)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: r.plan, now: .seconds(2))
        r = planner.plan(services: [web], demand: ["web": .known(20)], nodes: nodes, currentPlan: r.plan, now: .seconds(4))
        #expect(r.plan.total("web") == 6)
    }

    @Test func unknownDemandHoldsTheCurrentCount() {
        let nodes = cluster(4)
        var r = planner.plan(services: [web], demand: ["web": .known(50)], nodes: nodes, currentPlan: nil, now: .zero)
        r = planner.plan(services: [web], demand: ["web": .unknown], nodes: nodes, currentPlan: r.plan, now: .seconds(10))
        #expect(r.plan.total("web") == 5)
        #expect(r.decisions.isEmpty)
    }

    @Test func aDeadNodesContainersGoElsewhereAtOnceWithTheReason() {
        var nodes = cluster(3)
        var r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: nil, now: .zero)
        let onA = r.plan.count("web", on: "node-a")
        #expect(onA == 2)
        nodes[0].status = .dead
        r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(r.plan.total("web") == 6)
        #expect(r.plan.count("web", on: "node-a") == 0)
        #expect(r.decisions.contains { $0.description == "web +1 on node-b: node-a dead" })
        #expect(r.decisions.contains { $0.description == "web +1 on node-c: node-a dead" })
    }

    @Test func aSuspectNodeKeepsItsWorkAndADrainedNodeIsEmptied() {
        var nodes = cluster(3)
        var r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: nil, now: .zero)
        nodes[0].status = .suspect
        let kept = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(kept.plan.assignments == r.plan.assignments)
        nodes[0].status = .alive
        nodes[1].drained = true
        r = planner.plan(services: [web], demand: ["web": .known(60)], nodes: nodes, currentPlan: r.plan, now: .seconds(1))
        #expect(r.plan.count("web", on: "node-b") == 0)
        #expect(r.plan.total("web") == 6)
        #expect(r.decisions.contains { $0.node == "node-b" && $0.reason == "node-b drained" })
    }

    @Test func aShortfallIsReportedNotHidden() {
        let r = planner.plan(services: [web], demand: ["web": .known(400)], nodes: cluster(2), currentPlan: nil, now: .zero)
        #expect(r.plan.total("web") == 8)
        #expect(r.shortfalls == [Shortfall(service: "web", wanted: 40, placed: 8)])
    }

    @Test func aPriorityOneServiceIsSpreadAndAFillServiceIsPacked() {
        let nodes = cluster(4, cpu: 4000)
        let r = planner.plan(services: [web, batch], demand: ["web": .known(40)], nodes: nodes, currentPlan: nil, now: .zero)
        for node in nodes { #expect(r.plan.count("web", on: node.name) == 1) }
        let few = ServiceSpec(name: "batch", priority: 2, cpuMillis: 500, memoryBytes: 1 << 20, max: 7, fill: true)
        let p = planner.plan(services: [web, few], demand: ["web": .known(40)], nodes: nodes, currentPlan: nil, now: .zero)
        #expect(p.plan.assignments.values.filter { ($0["batch"] ?? 0) > 0 }.count == 1)
    }

    @Test func equalPrioritiesShareShortCapacityFairly() {
        let a = ServiceSpec(name: "a", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, perContainer: 1)
        let b = ServiceSpec(name: "b", priority: 1, cpuMillis: 500, memoryBytes: 1 << 20, max: 100, perContainer: 1)
        let r = planner.plan(services: [a, b], demand: ["a": .known(100), "b": .known(100)], nodes: cluster(5), currentPlan: nil, now: .zero)
        #expect(r.plan.total("a") == 10)
        #expect(r.plan.total("b") == 10)
    }
}
