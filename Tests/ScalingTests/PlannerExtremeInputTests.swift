import Bounds
import Scaling
import SimulationKit
import Testing

/// The planner is a core: whatever values it is handed (the shells bound them, docs/limits.md), a
/// plan comes back and nothing traps. Extremes: Int.max, 1e300, -0, NaN, infinities.
@Suite struct PlannerExtremeInputTests {
    static let node = Node(name: "n1", cpuMillis: 4000, memoryBytes: 8 << 30)

    func plan(_ spec: ServiceSpec, _ demand: DemandValue, nodes: [Node] = [node], current: Plan? = nil) -> PlanResult {
        Planner().plan(services: [spec], demand: [spec.name: demand], nodes: nodes, currentPlan: current, now: .zero)
    }

    @Test(arguments: [1e30, 1e300, Double.infinity, Double.greatestFiniteMagnitude])
    func aDemandTooLargeForAnyCountAsksForMax(demand: Double) {
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, max: 7, perContainer: 1)
        #expect(plan(web, .known(demand)).plan.desired["web"] == 7)
    }

    @Test(arguments: [Double.nan, -0.0, -1e300, -Double.infinity])
    func aDemandThatIsNotAPositiveNumberAsksForMin(demand: Double) {
        // NaN is no reading at all: the count is held, which with no containers yet is min.
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 2, max: 7, perContainer: 1)
        #expect(plan(web, .known(demand)).plan.desired["web"] == 2)
    }

    @Test(arguments: [1e-300, 0, -1, Double.nan])
    func aPerContainerFigureTooSmallOrInvalidAsksForMax(per: Double) {
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, max: 7, perContainer: per)
        #expect(plan(web, .known(5)).plan.desired["web"] == 7)
    }

    @Test func sizesAndCountsAtIntMaxPlanWithoutTrapping() {
        let huge = ServiceSpec(name: "huge", priority: 1, cpuMillis: .max, memoryBytes: .max, min: .max, max: .max, perContainer: 1)
        let nodes = [
            Node(name: "n1", cpuMillis: .max, memoryBytes: .max, running: ["huge": .max]),
            Node(name: "n2", cpuMillis: -1, memoryBytes: .min),
        ]
        var current = Plan()
        current.assignments = ["n1": ["huge": .max]]
        let r = plan(huge, .known(.infinity), nodes: nodes, current: current)
        #expect((r.plan.desired["huge"] ?? 0) <= Limits.maxContainersPerService)
        for (_, counts) in r.plan.assignments {
            #expect((counts["huge"] ?? 0) <= Limits.maxContainersPerService)
        }
    }

    @Test func aMillionOfTheLargestContainersOnOneNodeSaturateInsteadOfOverflowing() {
        let big = ServiceSpec(
            name: "big", priority: 2, cpuMillis: Int(Limits.maxContainerCPUMillicores),
            memoryBytes: Int(Limits.maxContainerMemoryBytes), max: 10, fill: true)
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, max: 10, perContainer: 1)
        var current = Plan()
        current.assignments = ["n1": ["big": Limits.maxContainersPerService]]
        let r = Planner().plan(services: [big, web], demand: ["web": .known(3)], nodes: [Self.node], currentPlan: current, now: .zero)
        // The node is far over capacity: the big ones go and web gets its room.
        #expect(r.plan.count("web", on: "n1") == 3)
        #expect(r.plan.count("big", on: "n1") == 0)
    }
}
