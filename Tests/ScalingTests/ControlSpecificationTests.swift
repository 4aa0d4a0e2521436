import Bounds
import Scaling
import Testing

/// The control rules of docs/scaling.md "Control", one at a time, with the reason each one writes.
@Suite struct ControlSpecification {
    static let node = [Node(name: "n", cpuMillis: 1_000_000, memoryBytes: 1 << 40)]

    static func worker(_ control: Control, min: Int = 0, max: Int = 100, per: Double = 20) -> ServiceSpec {
        ServiceSpec(
            name: "worker", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: min, max: max,
            perContainer: per, control: control)
    }

    /// One decision from a plan whose desired count is `count`.
    static func decide(
        _ spec: ServiceSpec, queue: Double, count: Int, planner: Planner = Planner(stabilizationWindow: .zero),
        state: ControlState? = nil, now: Duration = .seconds(100)
    ) -> PlanResult {
        var current = Plan()
        current.desired["worker"] = count
        if count > 0 { current.assignments["n"] = ["worker": count] }
        if let state { current.control["worker"] = state }
        return planner.plan(services: [spec], demand: ["worker": .known(queue)], nodes: node, currentPlan: current, now: now)
    }

    static func reason(_ r: PlanResult) -> String? { r.decisions.first { $0.node == nil }?.reason }

    @Test func aQueueIsWorkedAtItsTargetLengthPerContainerAndTheReasonSaysSo() {
        let r = Self.decide(Self.worker(Control(queue: true)), queue: 340, count: 5)
        #expect(r.plan.total("worker") == 17)
        #expect(Self.reason(r) == "queue 340, target 20 per container → 17")
    }

    @Test func theBandHoldsTheCountUntilTheQueueIsAtOrBelowItsFractionOfWhatTheCountAbsorbs() {
        let spec = Self.worker(Control(scaleDownAt: 0.7, queue: true))
        // 5 containers absorb 100; 71 > 70 holds 5 (proportional would be 4).
        let held = Self.decide(spec, queue: 71, count: 5)
        #expect(held.plan.total("worker") == 5)
        #expect(held.decisions.isEmpty)
        // At 70 (≤ 0.7 × 100) the count goes down to the proportional count.
        let down = Self.decide(spec, queue: 70, count: 5)
        #expect(down.plan.total("worker") == 4)
        #expect(Self.reason(down) == "queue 70, target 20 per container → 4; band: 70 ≤ 0.7×100 (lower for 0.0 seconds)")
        // The band never delays a rise.
        #expect(Self.decide(spec, queue: 101, count: 5).plan.total("worker") == 6)
    }

    @Test func maxChangeBoundsEachDecisionBothWaysButNotMinOrMax() {
        let spec = Self.worker(Control(maxChange: 2, queue: true), min: 3, max: 6)
        let up = Self.decide(Self.worker(Control(maxChange: 2, queue: true)), queue: 340, count: 5)
        #expect(up.plan.total("worker") == 7)
        #expect(Self.reason(up) == "queue 340, target 20 per container → 17; max_change 2: 5 → 7")
        #expect(Self.decide(Self.worker(Control(maxChange: 2)), queue: 0, count: 5).plan.total("worker") == 3)
        // A count outside [min, max] (the operator changed them) goes inside at once.
        #expect(Self.decide(spec, queue: 0, count: 10).plan.total("worker") == 6)
        #expect(Self.decide(spec, queue: 0, count: 0).plan.total("worker") == 3)
    }

    @Test func theControllerLooksAheadAlongAGrowingQueueOnceItsTrendStandsAboveTheNoise() throws {
        let spec = Self.worker(Control(gains: Gains(kp: 1, kd: 10), queue: true))
        // The queue grew from 100 to 200 over the last 2 s (50/s) after a flat start: the first slope is
        // a change of slope of 50/s, as large as any noise, so it is not acted on yet.
        let first = Self.decide(spec, queue: 200, count: 5, state: ControlState(reference: 100, referenceAt: .seconds(98)))
        #expect(first.plan.total("worker") == 10)
        // The filter (Tf = kd / 10 = 1 s, over a 2 s span) takes two thirds of the slope; the noise is 50/s.
        let measured = try #require(first.plan.control["worker"])
        #expect(abs(measured.trend - 100.0 / 3) < 1e-9)
        #expect(measured.slope == 50 && measured.noise == 50 && measured.reference == 200 && measured.referenceAt == .seconds(100))
        // It keeps growing at 50/s, a decision a second: the slope no longer changes, the noise seen at the
        // start decays (10 s memory) and the filtered trend nears 50/s, until the trend stands above twice
        // the noise and the controller looks 10 s ahead.
        var state = first.plan.control["worker"]
        var count = 10
        var queue = 200.0
        var ahead: PlanResult?
        var at = 0
        for second in 101...120 where ahead == nil {
            queue += 50
            let r = Self.decide(spec, queue: queue, count: count, state: state, now: .seconds(Int64(second)))
            count = r.plan.total("worker")
            state = r.plan.control["worker"]
            if count > Int((queue / 20).rounded(.up)) { (ahead, at) = (r, second) }
        }
        let r = try #require(ahead)
        // Trend 49.9/s against a noise decayed to 23.3/s: the ninth measured span, 8 s after the first.
        #expect(at == 108)
        #expect(Self.reason(r)?.contains("PD kp 1 kd 10s (trend +") == true, "\(Self.reason(r) ?? "")")
        #expect((state?.trend ?? 0) > 2 * (state?.noise ?? 0))
    }

    @Test func aSingleJumpIsFollowedByTheProportionalRuleWithoutADerivativeKick() {
        // A step from 100 to 600 in one span is a slope of 500/s once: as large a change as the noise
        // estimate has seen, so the controller adds nothing to the proportional 30 (Åström & Murray §10.5
        // avoid the same kick on setpoint steps by acting on the process output only).
        let spec = Self.worker(Control(gains: Gains(kp: 1, kd: 10), queue: true))
        let r = Self.decide(spec, queue: 600, count: 5, state: ControlState(reference: 100, referenceAt: .seconds(99)))
        #expect(r.plan.total("worker") == 30)
    }

    @Test func theControllerNeverTakesTheCountBelowProportionalAndKpMakesScaleDownGradual() {
        let spec = Self.worker(Control(gains: Gains(kp: 0.5, kd: 10), queue: true))
        // Shrinking fast and steadily (−50/s, as over the spans before): looking ahead says 0, but the
        // queue now needs 5.
        let shrinking = ControlState(reference: 200, referenceAt: .seconds(98), trend: -50, slope: -50)
        let r = Self.decide(spec, queue: 100, count: 20, state: shrinking)
        // Half the way from 20 to 0 is 10; never below the proportional 5.
        #expect(r.plan.total("worker") == 10)
        let flat = Self.decide(spec, queue: 100, count: 6, state: shrinking)
        #expect(flat.plan.total("worker") == 5)
    }

    @Test func theTrendIsMeasuredOverAtLeastTheSpanSoAnEarlyReplanKeepsIt() {
        let spec = Self.worker(Control(gains: Gains(kp: 1, kd: 10), queue: true))
        let state = ControlState(reference: 200, referenceAt: .seconds(99.5), trend: 50)
        let r = Self.decide(spec, queue: 200, count: 35, state: state)
        #expect(r.plan.control["worker"] == state, "half a second is shorter than the span: the trend is kept")
        #expect(r.plan.total("worker") == 35)
    }

    @Test func aNewLeaderWithoutTheControllersMemoryStartsFromAFlatTrend() {
        // The decision loop hands a new leader the committed assignments only (no `control`): the first
        // decision is proportional, and the state it returns is the reference for the next.
        let spec = Self.worker(Control(gains: Gains(kp: 1, kd: 10), queue: true))
        let r = Self.decide(spec, queue: 200, count: 5, state: nil)
        #expect(r.plan.total("worker") == 10)
        #expect(r.plan.control["worker"] == ControlState(reference: 200, referenceAt: .seconds(100), trend: 0))
    }

    @Test func unknownDemandHoldsTheCountAndKeepsTheControllersMemory() {
        let spec = Self.worker(Control(gains: Gains(kp: 1, kd: 10), queue: true))
        var current = Plan()
        current.desired["worker"] = 7
        current.assignments["n"] = ["worker": 7]
        current.control["worker"] = ControlState(reference: 10, referenceAt: .seconds(3), trend: 2)
        let r = Planner().plan(services: [spec], demand: ["worker": .unknown], nodes: Self.node, currentPlan: current, now: .seconds(9))
        #expect(r.plan.total("worker") == 7)
        #expect(r.plan.control == current.control)
    }

    @Test func outOfRangeControlHandedToTheCoreIsBoundedNotTrapped() {
        let wild = Control(scaleDownAt: .infinity, maxChange: Int.min, gains: Gains(kp: .nan, kd: 1e300))
        let r = Self.decide(Self.worker(wild), queue: 1e12, count: 5, state: ControlState(reference: 0, referenceAt: .zero))
        #expect(r.plan.total("worker") == 6, "max_change below 1 is 1")
        let huge = Control(gains: Gains(kp: 1, kd: 1e300))
        #expect(
            Self.decide(Self.worker(huge), queue: 1e12, count: 5, state: ControlState(reference: 0, referenceAt: .zero)).plan.total("worker") == 100)
    }

    @Test(arguments: [
        (69.09833951060915, "69.1"), (85.67, "85.7"), (3.14159, "3.14"), (340, "340"), (0.5, "0.5"), (1234.5678, "1234.6"), (0.0123456, "0.012"),
        (1e12, "1000000000000"),
        (2.0 / 3.0, "0.667"), (-0.25, "-0.25"),
    ])
    func demandIsWrittenAsPeopleWriteIt(value: Double, text: String) {
        #expect(DemandText.format(value) == text)
    }
}
