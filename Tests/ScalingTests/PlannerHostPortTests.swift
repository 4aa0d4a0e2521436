import Scaling
import Testing

/// Fixed host ports (`ports: [{host: 80}]`, docs/contracts.md, "The services file") are a resource of the node.
@Suite struct PlannerHostPortTests {
    let planner = Planner()

    @Test func twoContainersNeedingHostPort80NeverShareANode() {
        let lb = ServiceSpec(name: "lb", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 5, max: 5, hostPorts: [80])
        let r = planner.plan(services: [lb], demand: [:], nodes: cluster(3), currentPlan: nil, now: .zero)
        #expect(r.plan.total("lb") == 3)
        for node in cluster(3) { #expect(r.plan.count("lb", on: node.name) == 1) }
        #expect(r.shortfalls.contains { $0.service == "lb" })
    }

    @Test func twoServicesSharingAHostPortTakeDifferentNodesAndOtherPortsDoNotCollide() {
        let a = ServiceSpec(name: "a", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 1, max: 1, hostPorts: [80, 443])
        let b = ServiceSpec(name: "b", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 1, max: 1, hostPorts: [443])
        let c = ServiceSpec(name: "c", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 2, max: 2, hostPorts: [8080])
        let r = planner.plan(services: [a, b, c], demand: [:], nodes: cluster(2), currentPlan: nil, now: .zero)
        #expect(r.plan.total("a") == 1 && r.plan.total("b") == 1 && r.plan.total("c") == 2)
        for node in cluster(2) {
            #expect(r.plan.count("a", on: node.name) + r.plan.count("b", on: node.name) == 1)
            #expect(r.plan.count("c", on: node.name) == 1)
        }
    }

    @Test func preemptionDoesNotPlaceOnANodeWhoseHostPortIsTaken() {
        let holder = ServiceSpec(name: "holder", priority: 2, cpuMillis: 100, memoryBytes: 1 << 20, min: 1, max: 1, hostPorts: [80])
        let filler = ServiceSpec(name: "filler", priority: 3, cpuMillis: 1900, memoryBytes: 1 << 20, max: 1, fill: true)
        let urgent = ServiceSpec(name: "urgent", priority: 1, cpuMillis: 1000, memoryBytes: 1 << 20, min: 1, max: 1, hostPorts: [80])
        let first = planner.plan(services: [holder, filler], demand: [:], nodes: cluster(1), currentPlan: nil, now: .zero)
        #expect(first.plan.total("holder") == 1)
        let r = planner.plan(services: [holder, filler, urgent], demand: [:], nodes: cluster(1), currentPlan: first.plan, now: .seconds(1))
        #expect(r.plan.total("urgent") == 0)
        #expect(r.plan.total("holder") == 1)
    }
}
