import PropertyBased
import Scaling
import SimulationKit
import Testing

/// A queue-driven worker under random control settings, decided once a second through the whole
/// planner (one roomy node), as the decision loop would: each decision starts from the last plan.
struct QueueRun {
    var spec: ServiceSpec
    var planner: Planner
    var plan = Plan()
    var counts: [Int] = []
    var now: Duration = .zero

    /// Settings drawn from one seed: band, max change, PD gains, window, per_container, max.
    init(seed: UInt64, maxChange: Bool = true) {
        var rng = SeededGenerator(seed: seed)
        func unit(_ rng: inout SeededGenerator) -> Double { Double(rng.next() % 10_001) / 10_000 }
        let band = [1, 0.7, unit(&rng)][Int(rng.next() % 3)]
        let change = maxChange && rng.next() % 2 == 0 ? Int(rng.next() % 5) + 1 : nil
        let gains = rng.next() % 2 == 0 ? Gains(kp: Swift.max(0.05, unit(&rng)), kd: Double(rng.next() % 61)) : nil
        spec = ServiceSpec(
            name: "worker", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: Int(rng.next() % 3),
            max: Int(rng.next() % 60) + 5, perContainer: Double(rng.next() % 50 + 1),
            control: Control(scaleDownAt: band, maxChange: change, gains: gains, queue: true))
        planner = Planner(stabilizationWindow: .seconds(Int64(rng.next() % 4)))
    }

    static let node = [Node(name: "n", cpuMillis: 1_000_000, memoryBytes: 1 << 40)]

    mutating func start(at count: Int) {
        plan = Plan()
        plan.desired["worker"] = count
        if count > 0 { plan.assignments["n"] = ["worker": count] }
    }

    /// One decision on `queue`; returns the new count.
    @discardableResult
    mutating func decide(_ queue: Double) -> Int {
        let r = planner.plan(services: [spec], demand: ["worker": .known(queue)], nodes: Self.node, currentPlan: plan, now: now)
        plan = r.plan
        now += .seconds(1)
        counts.append(r.plan.total("worker"))
        return r.plan.total("worker")
    }

    var description: String { "\(spec.control), window \(planner.stabilizationWindow), per \(spec.perContainer), min \(spec.min), max \(spec.max)" }

    /// How many times the count turned from rising to falling or back.
    static func reversals(_ counts: [Int]) -> Int {
        var last = 0, turns = 0
        for (a, b) in zip(counts, counts.dropFirst()) where a != b {
            let direction = b > a ? 1 : -1
            if last != 0 && direction != last { turns += 1 }
            last = direction
        }
        return turns
    }

    func proportional(_ queue: Double) -> Int {
        Swift.min(Swift.max(Int((queue / spec.perContainer).rounded(.up)), spec.min), spec.max)
    }
}

@Suite struct ControlProperties {
    @Test func aConstantQueueGivesAConstantCount() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var run = QueueRun(seed: seed)
            var rng = SeededGenerator(seed: seed ^ 0x9e37)
            let queue = Double(rng.next() % 3000)
            // At its own count, nothing moves it.
            run.start(at: run.proportional(queue))
            for _ in 0..<30 { run.decide(queue) }
            #expect(Set(run.counts) == [run.proportional(queue)], "seed \(seed) queue \(queue) \(run.description): \(run.counts)")
            // From any count: it moves one way only, then holds.
            run.start(at: Int(rng.next() % UInt64(run.spec.max + 1)))
            run.counts = []
            for _ in 0..<400 { run.decide(queue) }
            #expect(QueueRun.reversals(run.counts) == 0, "seed \(seed) queue \(queue) \(run.description): \(run.counts)")
            #expect(Set(run.counts.suffix(50)).count == 1, "seed \(seed) queue \(queue) \(run.description): still moving \(run.counts.suffix(50))")
        }
    }

    @Test func aQueueDrainedAtTheWorkersRateDoesNotOscillate() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var run = QueueRun(seed: seed)
            var rng = SeededGenerator(seed: seed ^ 0x51ed)
            var queue = Double(rng.next() % 5000 + 100)
            let rate = Double(rng.next() % 20 + 1)  // messages per worker per second
            run.start(at: Int(rng.next() % UInt64(run.spec.max + 1)))
            // Until the queue is empty (at most max workers drain it: no fixed number of decisions is
            // enough for every draw), then long enough for band, window, kp and max_change to let go.
            // A step down can wait a window each time (max_change 1 from max takes max windows).
            let letGo = 100 + run.spec.max * (Int(run.planner.stabilizationWindow.components.seconds) + 2)
            var afterEmpty = 0
            while afterEmpty < letGo && run.counts.count < 20_000 {
                let workers = run.decide(queue)
                queue = Swift.max(0, queue - Double(workers) * rate)
                if queue == 0 { afterEmpty += 1 }
            }
            // Up to what the queue needs (if it started short), then down: at most one turn.
            #expect(QueueRun.reversals(run.counts) <= 1, "seed \(seed) rate \(rate) \(run.description): \(run.counts)")
            #expect(queue == 0, "seed \(seed) \(run.description): queue left \(queue)")
            #expect(run.counts.last == run.spec.min, "seed \(seed) \(run.description): ends at \(run.counts.last ?? -1), not min")
        }
    }

    @Test func theCountFollowsAStepUpWithinOneDecision() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var run = QueueRun(seed: seed, maxChange: false)
            var rng = SeededGenerator(seed: seed ^ 0x57e9)
            let low = Double(rng.next() % 500)
            let high = low + Double(rng.next() % 2000 + 1)
            run.start(at: run.proportional(low))
            for _ in 0..<10 { run.decide(low) }
            let after = run.decide(high)
            #expect(after >= run.proportional(high), "seed \(seed) \(low)→\(high) \(run.description): \(run.counts)")
            if run.spec.control.gains == nil {
                #expect(after == run.proportional(high), "seed \(seed) \(low)→\(high) \(run.description): \(run.counts)")
            }
        }
    }

    @Test func theCountFollowsAStepDownWithinOneDecisionWhenNoBandWindowOrGainsHoldIt() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var run = QueueRun(seed: seed, maxChange: false)
            run.spec.control = Control(queue: true)
            run.planner = Planner(stabilizationWindow: .zero)
            var rng = SeededGenerator(seed: seed ^ 0xd0)
            let high = Double(rng.next() % 3000 + 1)
            let low = Double(rng.next() % UInt64(high))
            run.start(at: run.proportional(high))
            run.decide(high)
            #expect(run.decide(low) == run.proportional(low), "seed \(seed) \(high)→\(low) \(run.description): \(run.counts)")
        }
    }

    /// A steady queue with bounded noise inside the band: `d ± a` with the band holding the count at
    /// its start for the proportional rule alone, so any change is the controller's. White noise (a new
    /// draw each second) or a random walk reflected at ±a, whose steps are a fifth to the whole of a.
    struct NoisyQueue {
        var run: QueueRun
        var rng: SeededGenerator
        var start: Int
        var middle: Double
        var amplitude: Double
        var white: Bool
        var step: Double
        var offset = 0.0

        init(seed: UInt64) {
            run = QueueRun(seed: seed)
            rng = SeededGenerator(seed: seed ^ 0x0a15e)
            func unit(_ rng: inout SeededGenerator) -> Double { Double(rng.next() % 10_001) / 10_000 }
            // Always a controller and a band (the noise must fit inside it); the rest as drawn.
            let band = rng.next() % 2 == 0 ? 0.7 : 0.5 + 0.4 * unit(&rng)
            let kd = rng.next() % 2 == 0 ? 1 + 9 * unit(&rng) : 1 + 59 * unit(&rng)
            run.spec.control.scaleDownAt = band
            run.spec.control.gains = Gains(kp: Swift.max(0.05, unit(&rng)), kd: kd)
            start = Int(rng.next() % 38) + 3
            run.spec.max = start * 3 + 5
            run.spec.min = Swift.min(run.spec.min, start)
            let absorbs = Double(start) * run.spec.perContainer
            // Between band × absorbs and absorbs, with a tenth of the margin to spare each side.
            middle = (band + 1) / 2 * absorbs
            amplitude = (1 - band) / 2 * absorbs * 0.9
            white = rng.next() % 2 == 0
            step = amplitude * (0.2 + 0.8 * unit(&rng))
        }

        mutating func next() -> Double {
            if white {
                offset = amplitude * (2 * Double(rng.next() % 10_001) / 10_000 - 1)
            } else {
                offset += step * (2 * Double(rng.next() % 10_001) / 10_000 - 1)
                if offset > amplitude { offset = 2 * amplitude - offset }
                if offset < -amplitude { offset = -2 * amplitude - offset }
            }
            return middle + offset
        }

        var description: String {
            "\(white ? "white" : "walk, step \(step)") noise ±\(amplitude) around \(middle), start \(start), \(run.description)"
        }

        static func changes(_ counts: [Int], from start: Int) -> Int {
            zip([start] + counts, counts).filter { $0 != $1 }.count
        }
    }

    @Test func noiseInsideTheBandDoesNotMakeTheControllerFlap() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var noisy = NoisyQueue(seed: seed)
            let readings = (0..<300).map { _ in noisy.next() }
            // The proportional rule and the band alone hold the count on these readings (the draw is right).
            var plain = noisy.run
            plain.spec.control.gains = nil
            plain.start(at: noisy.start)
            for q in readings { plain.decide(q) }
            #expect(Set(plain.counts) == [noisy.start], "seed \(seed): the band alone moved: \(noisy.description)")
            // With the controller: at most one excursion (up and back) in 300 decisions.
            noisy.run.start(at: noisy.start)
            for q in readings { noisy.run.decide(q) }
            let changes = NoisyQueue.changes(noisy.run.counts, from: noisy.start)
            #expect(changes <= 2, "seed \(seed): \(changes) changes in 300 decisions, \(noisy.description): \(noisy.run.counts)")
        }
    }

    @Test func afterNoiseAStepIsFollowedWithinOneDecisionAndASteadyRiseGetsItsLookAhead() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var noisy = NoisyQueue(seed: seed)
            // Nothing caps the look-ahead here: no max_change, a roomy max, and kp 1 (a smaller kp takes
            // only part of the way up, which a fast enough rise of the proportional count outruns).
            noisy.run.spec.control.maxChange = nil
            noisy.run.spec.max = 100_000
            let kd = noisy.run.spec.control.gains!.kd
            noisy.run.spec.control.gains = Gains(kp: 1, kd: kd)
            noisy.run.start(at: noisy.start)
            for _ in 0..<60 { noisy.run.decide(noisy.next()) }
            var stepped = noisy.run
            // A step to twice what the count absorbs: proportional, within one decision.
            let high = 2 * Double(noisy.start) * noisy.run.spec.perContainer
            let after = stepped.decide(high)
            #expect(after >= stepped.proportional(high), "seed \(seed): step to \(high) gave \(after), \(noisy.description)")
            // A steady rise of four times the noise's amplitude a second (and at least two containers'
            // worth over kd), the same noise on top: the controller goes beyond proportional within three
            // filter time constants (kd / 10) or noise memories (10 s), whichever is longer.
            let slope = Swift.max(4 * noisy.amplitude, 2 * noisy.run.spec.perContainer / kd)
            let within = Int((3 * Swift.max(kd / 10, 10)).rounded(.up)) + 5
            var queue = noisy.middle
            var ahead = false
            for _ in 0..<within {
                queue += slope
                let q = queue + noisy.next() - noisy.middle
                if noisy.run.decide(q) > noisy.run.proportional(q) {
                    ahead = true
                    break
                }
            }
            #expect(
                ahead,
                "seed \(seed): rising \(slope)/s, no look-ahead within \(within) decisions, \(noisy.description): \(noisy.run.counts.suffix(within))")
        }
    }
}
