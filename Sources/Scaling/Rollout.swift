import Bounds

/// Rolling updates (issue 17 item 4, docs/rollouts.md): the pure stepping of one service's change
/// of containers across the cluster, from the containers of spec hash `from` to those of `to`.
///
/// Pure like the planner: the state travels in the committed plan (so a new leader carries on
/// where the old one stopped), and each step takes the planner's count per node, what the nodes
/// report of the new containers, and returns the next state. No clock: a rollout advances on
/// reports, not on time.
///
/// The planner keeps deciding how many containers each node runs (`target`); the rollout only
/// splits that count between old and new containers, which is why the two compose: a scale-up
/// mid-rollout adds new containers, a scale-down removes new ones first, a dead node's share goes
/// to zero on both sides.
///
/// Semantics follow Docker Swarm's `update_config` (parallelism, order, failure_action pause with
/// max_failure_ratio 0): at most `maxParallel` replacements are in flight (a new container that
/// is not yet serving, across the whole cluster); `stop-first` stops an old container and starts
/// its replacement in the same step, so a node never runs more than its count; `start-first`
/// starts the replacement first and stops the old one only once the new one serves, so the
/// serving count never drops below the target; the first new container that fails (its health
/// check, or it exits) pauses the rollout until it is rolled back or the spec changes again.
public struct Rollout: Sendable, Hashable {
    /// Spec hash of the containers being replaced, and of their replacements.
    public var from: String
    public var to: String
    /// Older hashes whose containers count as old too (a change applied mid-rollout), newest first.
    public var alsoFrom: [String]
    /// Per node: old containers still to keep (never started again), and new containers to run.
    public var old: [String: Int]
    public var new: [String: Int]
    /// Why the rollout stopped advancing (nil: it advances).
    public var paused: String?

    public init(from: String, to: String, alsoFrom: [String] = [], old: [String: Int], new: [String: Int] = [:], paused: String? = nil) {
        self.alsoFrom = alsoFrom
        self.from = from
        self.to = to
        self.old = old.filter { $0.value > 0 }
        self.new = new.filter { $0.value > 0 }
        self.paused = paused
    }

    /// A rollout of a service whose containers (hash `from`) run `running` per node, to hash `to`.
    /// When a rollout from `to` to `from` is under way (a rollback mid-rollout), it is reversed:
    /// the containers already replaced become the old ones, and those not yet replaced are kept
    /// as the new ones rather than stopped and started again.
    public static func begin(from: String, to: String, running: [String: Int], reversing current: Rollout?) -> Rollout {
        if let r = current, r.from == to, r.to == from, r.alsoFrom.isEmpty {
            return Rollout(from: from, to: to, old: r.new, new: r.old)
        }
        if let r = current, r.to == from {
            // A second change before the first finished (a fix applied over a paused rollout, say):
            // every container the first left running, old or new, is old now, and is replaced at
            // the policy's pace: none is stopped all at once. Containers of `to` among them (a
            // change back to an older spec) are kept by the agents as current ones.
            var older: [String] = []
            for h in [r.from] + r.alsoFrom where h != from && !older.contains(h) { older.append(h) }
            return Rollout(
                from: from, to: to, alsoFrom: Array(older.prefix(maxAlsoFrom)),
                old: r.old.merging(r.new, uniquingKeysWith: { a, b in Swift.min(a + b, Limits.maxContainersPerService) }))
        }
        return Rollout(from: from, to: to, old: running)
    }

    /// Older hashes a rollout keeps at most (a chain of changes each made before the last finished).
    public static let maxAlsoFrom = 8

    public var oldTotal: Int { old.values.reduce(0, +) }
    public var newTotal: Int { new.values.reduce(0, +) }
}

public struct RolloutPolicy: Sendable, Hashable {
    /// Replacements in flight at most, cluster-wide (≥ 1).
    public var maxParallel: Int
    public var startFirst: Bool

    public init(maxParallel: Int = 1, startFirst: Bool = false) {
        self.maxParallel = maxParallel
        self.startFirst = startFirst
    }
}

/// What one node reports of a service's new containers (its gossiped record): those serving (running,
/// and healthy if they have a check) and those that failed since the node was told to run them.
public struct RolloutReport: Sendable, Hashable {
    /// The spec hash the counts are of; a report of another hash (a node that has not yet heard of
    /// this rollout, or of a rollback) counts as nothing.
    public var spec: String
    public var serving: Int
    public var failed: Int

    public init(spec: String, serving: Int, failed: Int = 0) {
        self.spec = spec
        self.serving = serving
        self.failed = failed
    }
}

public struct RolloutStep: Sendable, Hashable {
    /// The next state; nil when the rollout is complete (every container is new and serving).
    public var rollout: Rollout?
    /// What changed, for the decisions (empty when nothing did).
    public var reasons: [String]
    /// New containers serving, of the target count: the progress `status` shows.
    public var done: Int
    public var total: Int
}

public enum RolloutStepper {
    /// One step of `rollout` for `service`. `target`: the planner's count per node (nodes absent
    /// run none); `reports`: per node, the node's report of the service.
    public static func step(
        _ rollout: Rollout, service: String, policy: RolloutPolicy, target: [String: Int], reports: [String: RolloutReport]
    ) -> RolloutStep {
        var r = rollout
        let parallel = Swift.min(Swift.max(policy.maxParallel, 1), Limits.maxUpdateParallel)
        let nodes = Set(target.keys).union(r.old.keys).union(r.new.keys).sorted()
        var serving: [String: Int] = [:]
        var failed = 0
        for n in nodes {
            let t = Swift.min(Swift.max(target[n] ?? 0, 0), Limits.maxContainersPerService)
            guard let report = reports[n], report.spec == r.to else {
                serving[n] = 0
                continue
            }
            serving[n] = Swift.min(Swift.max(report.serving, 0), t)
            failed = Swift.min(failed + Swift.min(Swift.max(report.failed, 0), Limits.maxContainersPerService), Limits.maxContainersPerService)
        }
        // 1. Fit old and new to the planner's counts.
        for n in nodes {
            let t = Swift.min(Swift.max(target[n] ?? 0, 0), Limits.maxContainersPerService)
            var new = Swift.min(r.new[n] ?? 0, t)
            var old = Swift.max(r.old[n] ?? 0, 0)
            let live = Swift.min(serving[n] ?? 0, new)
            // start-first: an old container goes only once a new one serves in its place, so the
            // node may run `new - live` more than its count meanwhile (the replacements in flight).
            // stop-first: never more than the count.
            old = Swift.min(old, policy.startFirst ? t - live : t - new)
            // A count raised mid-rollout (or a node given work) is made up with new containers.
            if old + new < t { new = t - old }
            r.old[n] = old > 0 ? old : nil
            r.new[n] = new > 0 ? new : nil
        }
        var reasons: [String] = []
        let total = nodes.reduce(0) { $0 + Swift.min(Swift.max(target[$1] ?? 0, 0), Limits.maxContainersPerService) }
        func live(_ n: String) -> Int { Swift.min(serving[n] ?? 0, r.new[n] ?? 0) }
        var done = nodes.reduce(0) { $0 + live($1) }
        // 2. A failed new container pauses the rollout (Swarm's failure_action pause).
        if r.paused == nil && failed > 0 {
            r.paused = "\(failed) new container\(failed == 1 ? "" : "s") failed (health check or exit)"
            reasons.append("\(service): rollout paused: \(r.paused!); roll back with `microscale services rollback \(service)`")
        }
        if r.paused != nil {
            return RolloutStep(rollout: r, reasons: reasons, done: done, total: total)
        }
        // 3. Complete when no old container is left and every new one serves.
        if r.old.isEmpty && nodes.allSatisfy({ live($0) >= (r.new[$0] ?? 0) }) {
            reasons.append("\(service): rollout complete (\(total) container\(total == 1 ? "" : "s") of \(short(r.to)))")
            return RolloutStep(rollout: nil, reasons: reasons, done: done, total: total)
        }
        // 4. Start replacements while fewer than `maxParallel` are in flight. Nodes with the most
        //    old containers go first (then by name): the replacements spread over the nodes.
        var inFlight = nodes.reduce(0) { $0 + (r.new[$1] ?? 0) - live($1) }
        var started = 0
        while inFlight < parallel {
            // Old containers on n whose replacement has not started yet.
            func waiting(_ n: String) -> Int {
                let t = Swift.min(Swift.max(target[n] ?? 0, 0), Limits.maxContainersPerService)
                let old = r.old[n] ?? 0, new = r.new[n] ?? 0
                return policy.startFirst ? old - Swift.max(0, old + new - t) : old
            }
            guard let n = nodes.filter({ waiting($0) > 0 }).max(by: { (waiting($0), $1) < (waiting($1), $0) }) else { break }
            if !policy.startFirst {
                let old = (r.old[n] ?? 0) - 1
                r.old[n] = old > 0 ? old : nil
            }
            r.new[n] = (r.new[n] ?? 0) + 1
            inFlight += 1
            started += 1
        }
        if started > 0 {
            done = nodes.reduce(0) { $0 + live($1) }
            reasons.append(
                "\(service): rollout to \(short(r.to)): \(started) replacement\(started == 1 ? "" : "s") started (\(policy.startFirst ? "start-first" : "stop-first"), \(done)/\(total) done)"
            )
        }
        return RolloutStep(rollout: r, reasons: reasons, done: done, total: total)
    }

    static func short(_ hash: String) -> String { String(hash.prefix(8)) }
}
