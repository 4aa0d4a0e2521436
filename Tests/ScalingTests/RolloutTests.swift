import Scaling
import SimulationKit
import Testing

/// A cluster carrying out rollouts as agents would: each step it runs what the rollout says, and a
/// new container serves `delay` steps after it was assigned (drawn per container), or fails.
struct RolloutRun {
    var rollout: Rollout?
    let policy: RolloutPolicy
    var target: [String: Int]
    /// Per node, the steps each new container still needs before it serves (0: serving).
    var pending: [String: [Int]] = [:]
    var failing: Set<String> = []
    var rng: SeededGenerator
    var history: [RolloutStep] = []

    init(seed: UInt64, startFirst: Bool? = nil) {
        rng = SeededGenerator(seed: seed)
        let nodes = Int(rng.next() % 5) + 1
        var t: [String: Int] = [:]
        for i in 0..<nodes { t["n\(i)"] = Int(rng.next() % 7) }
        target = t
        let parallel = Int(rng.next() % 3) + 1
        let drawn = rng.next() % 2 == 0
        policy = RolloutPolicy(maxParallel: parallel, startFirst: startFirst ?? drawn)
        rollout = Rollout.begin(from: "old", to: "new", running: t, reversing: nil)
    }

    var reports: [String: RolloutReport] {
        var out: [String: RolloutReport] = [:]
        for (n, p) in pending {
            out[n] = RolloutReport(spec: "new", serving: p.filter { $0 == 0 }.count, failed: failing.contains(n) ? 1 : 0)
        }
        return out
    }

    /// Old containers assumed serving (they were), plus the new ones that serve.
    func serving(_ r: Rollout) -> Int {
        r.oldTotal + pending.values.reduce(0) { $0 + $1.filter { $0 == 0 }.count }
    }

    mutating func step() -> RolloutStep? {
        guard let r = rollout else { return nil }
        let s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: reports)
        history.append(s)
        rollout = s.rollout
        // The agents: each node runs as many new containers as assigned; a new one gets a delay.
        for (n, _) in target.merging(s.rollout?.new ?? [:], uniquingKeysWith: { a, _ in a }) {
            let want = s.rollout?.new[n] ?? (s.rollout == nil ? (pending[n]?.count ?? 0) : 0)
            var p = (pending[n] ?? []).map { Swift.max(0, $0 - 1) }
            if p.count > want { p = Array(p.prefix(want)) }
            while p.count < want { p.append(Int(rng.next() % 3)) }
            pending[n] = p
        }
        return s
    }
}

/// Rolling updates (issue 17 item 4): the pure stepping, in a simulated cluster.
@Suite struct RolloutTests {
    static let seeds: [UInt64] = Array(1...300)

    @Test(arguments: seeds)
    func noMoreThanMaxParallelReplacementsAreInFlightAndEveryRolloutCompletes(seed: UInt64) {
        var run = RolloutRun(seed: seed)
        var steps = 0
        while let s = run.step() {
            steps += 1
            guard let r = s.rollout else { break }
            let inFlight = r.new.reduce(0) { $0 + $1.value - Swift.min($1.value, run.reports[$1.key]?.serving ?? 0) }
            // The step's own starts: new containers that did not yet serve when it was decided.
            #expect(inFlight <= run.policy.maxParallel, "seed \(seed): \(inFlight) in flight, max_parallel \(run.policy.maxParallel)")
            if steps > 500 { break }
        }
        #expect(run.rollout == nil, "seed \(seed): not complete after \(steps) steps: \(String(describing: run.rollout))")
        #expect(run.history.last?.reasons.last?.contains("rollout complete") == true, "seed \(seed)")
        // Every node ends with its count, all new.
        for (n, t) in run.target { #expect((run.pending[n]?.count ?? 0) == t, "seed \(seed): node \(n)") }
    }

    @Test(arguments: seeds)
    func startFirstNeverServesFewerThanTheTarget(seed: UInt64) {
        var run = RolloutRun(seed: seed, startFirst: true)
        let total = run.target.values.reduce(0, +)
        var steps = 0
        while let s = run.step(), let r = s.rollout {
            // What serves once the agents carried the step out: old containers go only once their
            // replacement serves, so this never dips.
            #expect(run.serving(r) >= total, "seed \(seed): \(run.serving(r)) serving of \(total)")
            steps += 1
            if steps > 500 { break }
        }
    }

    @Test(arguments: seeds)
    func stopFirstNeverRunsMoreThanTheTargetOnAnyNode(seed: UInt64) {
        var run = RolloutRun(seed: seed, startFirst: false)
        var steps = 0
        while let s = run.step(), let r = s.rollout {
            for (n, t) in run.target {
                #expect((r.old[n] ?? 0) + (r.new[n] ?? 0) <= t, "seed \(seed): node \(n) runs more than \(t)")
            }
            steps += 1
            if steps > 500 { break }
        }
    }

    @Test func maxParallelOneStartFirstReplacesOneAtATimeAndStopsTheOldOnlyOnceTheNewServes() {
        let policy = RolloutPolicy(maxParallel: 1, startFirst: true)
        let target = ["a": 2]
        var r = Rollout.begin(from: "v1", to: "v2", running: target, reversing: nil)
        var s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: [:])
        #expect(s.rollout?.old == ["a": 2] && s.rollout?.new == ["a": 1])
        r = s.rollout!
        // Not serving yet: nothing moves.
        s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: ["a": RolloutReport(spec: "v2", serving: 0)])
        #expect(s.rollout == r && s.reasons.isEmpty)
        // A report of another spec counts as nothing.
        s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: ["a": RolloutReport(spec: "v1", serving: 5)])
        #expect(s.rollout == r)
        // Serving: one old goes and the next replacement starts.
        s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: ["a": RolloutReport(spec: "v2", serving: 1)])
        #expect(s.rollout?.old == ["a": 1] && s.rollout?.new == ["a": 2])
        #expect(s.done == 1 && s.total == 2)
        r = s.rollout!
        s = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: ["a": RolloutReport(spec: "v2", serving: 2)])
        #expect(s.rollout == nil)
        #expect(s.reasons == ["web: rollout complete (2 containers of v2)"])
    }

    @Test func aFailedNewContainerPausesTheRolloutAndSaysWhy() {
        let policy = RolloutPolicy(maxParallel: 2, startFirst: false)
        let target = ["a": 3, "b": 3]
        var r = Rollout.begin(from: "v1", to: "v2", running: target, reversing: nil)
        r = RolloutStepper.step(r, service: "web", policy: policy, target: target, reports: [:]).rollout!
        #expect(r.newTotal == 2 && r.oldTotal == 4)
        let s = RolloutStepper.step(
            r, service: "web", policy: policy, target: target,
            reports: ["a": RolloutReport(spec: "v2", serving: 1, failed: 0), "b": RolloutReport(spec: "v2", serving: 0, failed: 2)])
        #expect(s.rollout?.paused == "2 new containers failed (health check or exit)")
        #expect(
            s.reasons == ["web: rollout paused: 2 new containers failed (health check or exit); roll back with `microscale services rollback web`"])
        // Paused: no replacement starts, however the new containers do afterwards.
        let later = RolloutStepper.step(
            s.rollout!, service: "web", policy: policy, target: target,
            reports: ["a": RolloutReport(spec: "v2", serving: 1), "b": RolloutReport(spec: "v2", serving: 1)])
        #expect(later.rollout?.oldTotal == 4 && later.rollout?.newTotal == 2 && later.rollout?.paused != nil)
    }

    @Test func aRollbackMidRolloutKeepsWhatAlreadyRunsOfTheOldSpec() {
        let paused = Rollout(from: "v1", to: "v2", old: ["a": 2, "b": 1], new: ["a": 1, "b": 2], paused: "1 new container failed")
        let back = Rollout.begin(from: "v2", to: "v1", running: ["a": 3, "b": 3], reversing: paused)
        #expect(back == Rollout(from: "v2", to: "v1", old: ["a": 1, "b": 2], new: ["a": 2, "b": 1]))
        // The v1 containers serve already (reported under v1): the rollback goes at max_parallel.
        let policy = RolloutPolicy(maxParallel: 1, startFirst: true)
        let s = RolloutStepper.step(
            back, service: "web", policy: policy, target: ["a": 3, "b": 3],
            reports: ["a": RolloutReport(spec: "v1", serving: 2), "b": RolloutReport(spec: "v1", serving: 1)])
        #expect(s.rollout?.paused == nil)
        #expect(s.rollout?.newTotal == 4 && s.rollout?.oldTotal == 3)
    }

    @Test func aChangeAppliedOverAnUnfinishedRolloutReplacesEverythingLeftAtThePolicysPace() {
        // A fix (v3) over a paused v1 → v2: v1 and v2 containers are both old now; nothing is
        // stopped at once, and one replacement starts.
        let paused = Rollout(from: "v1", to: "v2", old: ["a": 2, "b": 1], new: ["a": 1, "b": 2], paused: "1 new container failed")
        let fix = Rollout.begin(from: "v2", to: "v3", running: ["a": 3, "b": 3], reversing: paused)
        #expect(fix == Rollout(from: "v2", to: "v3", alsoFrom: ["v1"], old: ["a": 3, "b": 3]))
        let s = RolloutStepper.step(
            fix, service: "web", policy: RolloutPolicy(maxParallel: 1, startFirst: false),
            target: ["a": 3, "b": 3], reports: [:])
        #expect(s.rollout?.oldTotal == 5 && s.rollout?.newTotal == 1 && s.rollout?.paused == nil)
    }

    @Test func aCountChangedMidRolloutIsMadeUpWithNewContainersAndADeadNodesShareGoes() {
        let policy = RolloutPolicy(maxParallel: 1, startFirst: false)
        let r = Rollout(from: "v1", to: "v2", old: ["a": 2, "b": 2], new: ["a": 1])
        // a scaled up to 5, b is gone.
        let s = RolloutStepper.step(
            r, service: "web", policy: policy, target: ["a": 5],
            reports: ["a": RolloutReport(spec: "v2", serving: 1)])
        #expect(s.rollout?.old["b"] == nil && s.rollout?.new["b"] == nil)
        #expect((s.rollout?.old["a"] ?? 0) + (s.rollout?.new["a"] ?? 0) == 5)
    }
}
