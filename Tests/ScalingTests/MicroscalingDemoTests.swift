import Scaling
import SimulationKit
import Testing

/// The microscaling demo: web (priority 1) follows a random-walk demand; batch (priority 2) fills the rest.
@Suite struct MicroscalingDemo {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func webTracksDemandBatchFillsAndNothingIdles(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let nodes = (0..<5).map { Node(name: "node-\($0)", cpuMillis: 4000, memoryBytes: 8 << 30) }
        let slots = 40
        let planner = Planner(stabilizationWindow: .zero)
        var demand = 100.0
        var plan: Plan? = nil
        for second in 0..<200 {
            demand = Swift.min(Swift.max(demand + Double(Int(rng.next() % 61) - 30), 0), 350)
            let r = planner.plan(services: [web, batch], demand: ["web": .known(demand)], nodes: nodes, currentPlan: plan, now: .seconds(second))
            plan = r.plan
            let wantWeb = Swift.max(1, Int((demand / 10).rounded(.up)))
            #expect(r.plan.total("web") == wantWeb, "seed \(seed) second \(second)")
            #expect(r.plan.total("web") + r.plan.total("batch") == slots, "seed \(seed) second \(second): idle capacity")
            #expect(r.shortfalls.isEmpty, "seed \(seed) second \(second)")
        }
    }
}
