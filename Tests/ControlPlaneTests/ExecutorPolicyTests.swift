import Consensus
import ControlPlane
import Testing

/// What a node does with its assignment (docs/scheduling.md), as a specification: the adoption
/// grace after a start, and the desired set the reconciler is handed. The agent started at 100 s
/// of its clock, at wall time 1,000,000 ms.
@Suite struct ExecutorPolicyTests {
    static let start: Duration = .seconds(100)
    static let startWall: Int64 = 1_000_000
    static let web = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, max: 4)

    static func policy() -> ExecutorPolicy {
        ExecutorPolicy(startedAt: start, startedAtWallMilliseconds: startWall)
    }

    static func assignment(_ count: Int, decidedAt: Int64? = nil, index: UInt64 = 5) -> NodeAssignment {
        NodeAssignment(planIndex: index, services: ["web": (count, web)], decidedAtMilliseconds: decidedAt)
    }

    @Test func anEmptyAssignmentWhosePlanPredatesTheStartIsHeldForTheGrace() {
        var p = Self.policy()
        let empty = Self.assignment(0, decidedAt: Self.startWall - 1)
        p.assigned(empty)
        #expect(p.predatesStart)
        #expect(p.holds(empty, now: Self.start))
        #expect(p.holds(empty, now: Self.start + p.adoptionGrace - .milliseconds(1)))
        #expect(!p.holds(empty, now: Self.start + p.adoptionGrace))
    }

    @Test func anEmptyAssignmentDecidedAfterTheStartIsObeyedAtOnce() {
        var p = Self.policy()
        let empty = Self.assignment(0, decidedAt: Self.startWall + 1)
        p.assigned(empty)
        #expect(!p.predatesStart)
        #expect(!p.holds(empty, now: Self.start))
    }

    @Test func anAssignmentWithWorkIsNeverHeld() {
        var p = Self.policy()
        let work = Self.assignment(2, decidedAt: Self.startWall - 1)
        p.assigned(work)
        #expect(!p.holds(work, now: Self.start))
    }

    @Test func aPushWithoutADecisionTimeMayPredateTheStartOnlyIfItIsTheFirst() {
        var p = Self.policy()
        p.assigned(Self.assignment(2, index: 5))
        #expect(p.predatesStart)
        let empty = Self.assignment(0, index: 6)
        p.assigned(empty)
        // Committed after the first reached this running agent: decided after the start.
        #expect(!p.predatesStart && p.received == 2)
        #expect(!p.holds(empty, now: Self.start))
    }

    /// The leader's wall clock 3 s behind ours: a drain committed after the first assignment
    /// reached this agent reads as "decided before the start" by the clocks, but its Raft index
    /// says it came later, and the index wins (microscale-sim cluster, seed 14).
    @Test func aPlanCommittedAfterTheFirstAssignmentIsObeyedAtOnceWhateverTheLeadersClockSays() {
        var p = Self.policy()
        p.assigned(Self.assignment(2, decidedAt: Self.startWall - 10_000, index: 5))
        #expect(p.predatesStart && p.firstPlanIndex == 5)
        let drain = Self.assignment(0, decidedAt: Self.startWall - 3_000, index: 7)
        p.assigned(drain)
        #expect(!p.predatesStart)
        #expect(!p.holds(drain, now: Self.start + .milliseconds(400)))
        // An older plan pushed late is still treated as one that may predate the start.
        let late = Self.assignment(0, decidedAt: Self.startWall - 20_000, index: 4)
        p.assigned(late)
        #expect(p.predatesStart && p.firstPlanIndex == 5)
    }

    @Test func aHoldIsAnnouncedOnceAndTheDesiredSetIsStillHandedOver() {
        var p = Self.policy()
        let empty = Self.assignment(0, decidedAt: Self.startWall - 1)
        p.assigned(empty)
        let first = p.round(empty, images: [:], now: Self.start + .seconds(1))
        #expect(first.hold && first.startsHolding)
        #expect(first.desired.counts == ["web": 0])
        let second = p.round(empty, images: [:], now: Self.start + .seconds(2))
        #expect(second.hold && !second.startsHolding)
        let after = p.round(empty, images: [:], now: Self.start + .seconds(11))
        #expect(!after.hold && !after.startsHolding && !p.holdingEmpty)
    }

    @Test func aServiceWhoseImageIsNotReadyStartsNothingAndAFailedPullSaysWhy() {
        var db = Self.web
        db.image = "db:1"
        var cache = Self.web
        cache.image = "cache:1"
        var gone = Self.web
        gone.image = "gone:1"
        let a = NodeAssignment(planIndex: 1, services: ["web": (2, Self.web), "db": (1, db), "cache": (1, cache), "gone": (0, gone)])
        let images: [String: ExecutorPolicy.Image] = ["web:1": .ready, "db:1": .failed(reason: "manifest unknown"), "cache:1": .pending]
        let d = ExecutorPolicy.desired(a, images: images)
        #expect(d.held == ["db", "cache"])
        #expect(d.pullFailures == ["db": "manifest unknown"])
        // A service with no containers here is never held: there is nothing of it to start.
        #expect(d.counts == ["web": 2, "db": 1, "cache": 1, "gone": 0] && d.specs["gone"] == gone)
        #expect(ExecutorPolicy.images(a) == (used: ["web:1", "db:1", "cache:1", "gone:1"], wanted: ["web:1", "db:1", "cache:1"]))
    }

    @Test func theDesiredSetCarriesARolloutsKeptContainersAndEachServicesStopDelay() {
        var slow = Self.web
        slow.stopDelayMilliseconds = 2500
        let kept = NodeAssignment.Kept(specs: ["aaa", "bbb"], count: 1)
        let a = NodeAssignment(planIndex: 1, services: ["web": (1, slow)], keep: ["web": kept])
        let d = ExecutorPolicy.desired(a, images: ["web:1": .ready])
        #expect(d.keep == ["web": kept] && d.stopDelays == ["web": .milliseconds(2500)] && d.held.isEmpty)
    }

    // The standby pool (docs/scheduling.md, "Standby containers").

    static let batch = ServiceSpec(image: "batch:1", priority: 2, cpu: 0.5, memory: 64 << 20, max: 4)

    @Test func aNodeWithWorkKeepsAPoolForEachPriorityOneServiceOnly() {
        let a = NodeAssignment(planIndex: 5, services: ["web": (0, Self.web), "batch": (3, Self.batch)])
        #expect(ExecutorPolicy.standby(a, per: 2) == ["web": 2])
    }

    @Test func aNodeGivenNoWorkKeepsNoPoolSoADrainedNodeHasNone() {
        let a = NodeAssignment(planIndex: 5, services: ["web": (0, Self.web), "batch": (0, Self.batch)])
        #expect(ExecutorPolicy.standby(a, per: 2).isEmpty)
    }

    @Test func aServiceUnderARollingUpdateKeepsNoPool() {
        let a = NodeAssignment(
            planIndex: 5, services: ["web": (1, Self.web)], keep: ["web": NodeAssignment.Kept(specs: ["old"], count: 1)])
        #expect(ExecutorPolicy.standby(a, per: 2).isEmpty)
    }

    @Test func aRoundHandsThePoolToTheReconciler() {
        var p = Self.policy()
        let a = Self.assignment(2)
        p.assigned(a)
        #expect(p.round(a, images: ["web:1": .ready], now: Self.start, standby: 1).desired.standby == ["web": 1])
        #expect(p.round(a, images: ["web:1": .ready], now: Self.start).desired.standby.isEmpty)
    }

    // Warm standbys (docs/scheduling.md, "Warm standbys"): as many of the pool as the budget's
    // memory holds, by the services' memory limits.

    static let api = ServiceSpec(image: "api:1", cpu: 0.5, memory: 16 << 20, max: 4)

    @Test func theWarmShareIsAsManyOfThePoolAsTheBudgetHolds() {
        let a = NodeAssignment(planIndex: 5, services: ["web": (1, Self.web)])
        // web is 64 MiB: 100 MiB holds one, 128 MiB two, and never more than the pool.
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2], budget: 100 << 20) == ["web": 1])
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2], budget: 128 << 20) == ["web": 2])
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2], budget: 1 << 30) == ["web": 2])
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2], budget: 0).isEmpty)
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2], budget: 32 << 20).isEmpty)
    }

    @Test func everyPooledServiceGetsAWarmStandbyBeforeAnyGetsASecond() {
        let a = NodeAssignment(planIndex: 5, services: ["web": (1, Self.web), "api": (1, Self.api)])
        // 64 + 16 = 80 MiB for one each; the 16 MiB left holds a second api, not a second web.
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2, "api": 2], budget: 96 << 20) == ["web": 1, "api": 2])
        #expect(ExecutorPolicy.warm(a, pool: ["web": 2, "api": 2], budget: 79 << 20) == ["api": 2])
    }

    @Test func aServiceWithFixedHostPortsGetsNoWarmStandby() {
        var edge = Self.api
        edge.ports = [PortMapping(container: 80, host: 80)]
        let a = NodeAssignment(planIndex: 5, services: ["edge": (1, edge)])
        #expect(ExecutorPolicy.warm(a, pool: ["edge": 2], budget: 1 << 30).isEmpty)
    }

    @Test func aRoundHandsTheWarmShareToTheReconcilerAndADrainedNodeGetsNone() {
        var p = Self.policy()
        let a = Self.assignment(2)
        p.assigned(a)
        let d = p.round(a, images: ["web:1": .ready], now: Self.start, standby: 2, warmStandbyMemory: 128 << 20).desired
        #expect(d.standby == ["web": 2] && d.warmStandby == ["web": 2])
        let drained = Self.assignment(0, index: 6)
        p.assigned(drained)
        let e = p.round(drained, images: [:], now: Self.start + .seconds(60), standby: 2, warmStandbyMemory: 128 << 20).desired
        #expect(e.standby.isEmpty && e.warmStandby.isEmpty)
    }
}
