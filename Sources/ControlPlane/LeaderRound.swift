import Bounds
import Consensus
import Foundation  // String(format:) for the decision summary; no clock is read here
import Scaling

/// The leader's round (docs/scheduling.md), pure: the committed state, the member snapshot, the
/// demand readings and `now` → the planner's nodes, and the plan to commit, if any, with its
/// reasons. It holds what one leader remembers between rounds: the last plan it made (the
/// planner's stabilization and controller state), the inputs of the last round (to plan only when
/// something changed, or `maxQuiet` passed), and when it first saw each restarting node dead.
///
/// `DecisionLoop` is its shell: it reads Raft, membership and the demand pollers, calls `step`,
/// commits what it returns and records metrics. Time comes in as `now`, a `Duration` since an
/// epoch the caller owns (the agent's `AgentClock`, the simulator's virtual time): the round never
/// reads a clock.
public struct LeaderRound: Sendable {
    public var planner: Planner
    /// A dead node that said it was restarting keeps its work this long (as a suspect: no new
    /// work) before it moves (--dead-node-grace; docs/operations.md, "Restart is not leave").
    public var deadNodeGrace: Duration
    /// Plan at least this often even when nothing read changed, so the stabilization window and
    /// the random walk advance.
    public var maxQuiet: Duration
    /// When this leader first saw each restarting node dead (its own probe unanswered).
    public private(set) var deadSince: [String: Duration] = [:]
    /// The plan of the last round (nil: start from the committed plan's assignments).
    public private(set) var lastPlan: Scaling.Plan?
    private var lastInputs: Inputs?
    private var lastRun: Duration?

    public init(deadNodeGrace: Duration, maxQuiet: Duration = .seconds(1), planner: Planner = Planner()) {
        self.deadNodeGrace = deadNodeGrace
        self.maxQuiet = maxQuiet
        self.planner = planner
    }

    /// Everything a round's plan depends on. Kept whole (not hashed: `Hasher` is seeded per
    /// process, and a simulation must not depend on it), so a round runs exactly when one changed.
    struct Inputs: Equatable {
        var appliedIndex: UInt64
        var nodes: [Scaling.Node]
        var demand: [String: DemandValue]
        /// What nodes report of rollouts moves them on: a new container serving starts the next.
        var rollouts: [[String: MemberView.RolloutView]?]
    }

    /// What a round decided.
    public struct Outcome: Sendable, Equatable {
        /// The planner's nodes after the dead-node grace (what a utilization sample reads).
        public var nodes: [Scaling.Node]
        public var verdict: Verdict
    }

    public enum Verdict: Sendable, Equatable {
        /// Nothing read changed since the last round and `maxQuiet` has not passed: no planning.
        case quiet
        /// Planned; the plan is the committed one (counts, spec hashes and rollouts alike).
        case unchanged
        /// Planned; this differs from the committed plan and is to be proposed.
        case commit(Commit)
    }

    /// A plan to propose, with what the decision log says of it.
    public struct Commit: Sendable, Equatable {
        public var plan: Consensus.Plan
        /// Spec changes, rollout steps, the planner's decisions, then its shortfalls: at most 50.
        public var reasons: [String]
        /// Changes counted in the summary: the planner's decisions, spec changes and rollout reasons.
        public var changes: Int
        /// The planner's decisions alone (the log's "changes").
        public var plannerDecisions: Int

        public init(plan: Consensus.Plan, reasons: [String], changes: Int, plannerDecisions: Int) {
            self.plan = plan
            self.reasons = reasons
            self.changes = changes
            self.plannerDecisions = plannerDecisions
        }

        /// The decision entry committed with the plan. `timestampMilliseconds` is the leader's wall
        /// clock and `planning` how long the round took: both measured by the shell.
        public func decision(timestampMilliseconds: Int64, planning: Duration) -> Consensus.Decision {
            return Consensus.Decision(
                timestampMilliseconds: timestampMilliseconds,
                summary: "\(changes) change\(changes == 1 ? "" : "s") planned in \(String(format: "%.2f", planning.inMilliseconds)) ms",
                reasons: reasons)
        }
    }

    /// One round as the leader. `demand` is per non-fill service (see `demand(_:polled:)`).
    /// `servers` is the Raft configuration (voters and learners): once every one of them runs a
    /// version that refuses stale plans (`ServerFeatures.stalePlanCheck`), the plan carries the
    /// applied index it was computed from (`Consensus.Plan.basedOnIndex`); nil or an older server
    /// leaves it out, and the plan applies as before.
    public mutating func step(
        state: ClusterState, members: [MemberView], demand: [String: DemandValue], now: Duration,
        servers: Set<String>? = nil
    ) -> Outcome {
        var nodes = Self.plannerNodes(members, state)
        // Restart is not leave: an agent stopped by SIGTERM (an upgrade, a restart) is dead to the
        // others until it comes back; its work stays for `deadNodeGrace` after this leader saw it
        // dead, so a quick restart adopts its containers instead of seeing them moved and then
        // stopped. A node that said it leaves is not waited for.
        // Only a node whose record said it was stopping to restart is waited for: a crash or a
        // power cut says nothing, and its work moves as soon as this leader's own probe fails.
        let restarting = Set(members.lazy.filter { $0.restarting == true }.map(\.name))
        var dead: Set<String> = []
        for i in nodes.indices where nodes[i].status == .dead && restarting.contains(nodes[i].name) {
            dead.insert(nodes[i].name)
            let since = deadSince[nodes[i].name] ?? now
            deadSince[nodes[i].name] = since
            if now - since < deadNodeGrace { nodes[i].status = .suspect }
        }
        deadSince = deadSince.filter { dead.contains($0.key) }

        let inputs = Inputs(appliedIndex: state.appliedIndex, nodes: nodes, demand: demand, rollouts: members.map(\.rollouts))
        if inputs == lastInputs, let last = lastRun, now - last < maxQuiet { return Outcome(nodes: nodes, verdict: .quiet) }
        lastInputs = inputs
        lastRun = now

        let services = state.services.map { ServiceSpecs.planner($0.key, $0.value, specHash: state.specHashes[$0.key]) }
        var current = lastPlan ?? Scaling.Plan()
        if lastPlan == nil { current.assignments = state.plan.assignments }
        let result = planner.plan(services: services, demand: demand, nodes: nodes, currentPlan: current, now: now)
        lastPlan = result.plan
        let next = Self.nonEmpty(result.plan.assignments)
        let committed = Self.nonEmpty(state.plan.assignments)
        // What each service's containers are made from: a change of image, command, env, ports,
        // resources or health alone changes no count, yet must reach every agent.
        let specs = state.specHashes
        let specChanges = Self.specChanges(state, specs)
        let (rollouts, rolloutReasons) = Self.rollouts(state, specs: specs, next: next, members: members)
        guard next != committed || specs != state.plan.specs || rollouts != state.plan.rollouts else {
            return Outcome(nodes: nodes, verdict: .unchanged)
        }
        let reasons = Array(
            (specChanges + rolloutReasons + result.decisions.map(\.description) + result.shortfalls.map(\.description)).prefix(50))
        let based =
            servers.map { ServerFeatures.allServers($0, in: members, atLeast: ServerFeatures.stalePlanCheck) } == true
            ? state.appliedIndex : nil
        let commit = Commit(
            plan: Consensus.Plan(assignments: next, specs: specs, rollouts: rollouts, basedOnIndex: based), reasons: reasons,
            changes: result.decisions.count + specChanges.count + rolloutReasons.count,
            plannerDecisions: result.decisions.count)
        return Outcome(nodes: nodes, verdict: .commit(commit))
    }

    /// This server is not the leader (or stopped being it): a later leadership starts from the
    /// committed plan, plans at once, and waits a full grace for a dead node again.
    public mutating func follow() {
        lastPlan = nil
        lastInputs = nil
        deadSince = [:]
    }

    /// The proposal of the last `commit` failed (leadership lost, no quorum): the next round plans
    /// again from the committed state.
    public mutating func commitFailed() {
        lastPlan = nil
        lastInputs = nil
    }

    /// The demand the planner reads, per non-fill service: a polled source's reading where the
    /// service has a poller (`polled`, its `.unknown` included), else the value set through the
    /// API (replicated in the state), else unknown (the planner holds the count).
    public static func demand(_ state: ClusterState, polled: [String: DemandValue]) -> [String: DemandValue] {
        var demand: [String: DemandValue] = [:]
        for (name, spec) in state.services where !spec.fill {
            if let p = polled[name] {
                demand[name] = p
            } else if let v = state.demand[name] {
                demand[name] = .known(v)
            } else {
                demand[name] = .unknown
            }
        }
        return demand
    }

    /// A plan's assignments without empty nodes and zero counts: two plans differing only in
    /// those run the same containers.
    static func nonEmpty(_ a: [String: [String: Int]]) -> [String: [String: Int]] {
        a.filter { !$0.value.isEmpty }.mapValues { $0.filter { $0.value > 0 } }
    }

    /// The rolling updates of the next plan (docs/rollouts.md): a service whose spec hash differs
    /// from the one the committed plan was made for starts one (from the containers the committed
    /// plan runs), and every rollout takes one step of the pure `RolloutStepper` against the new
    /// counts and what the nodes report. nil when there is none.
    public static func rollouts(
        _ state: ClusterState, specs: [String: String], next: [String: [String: Int]],
        members: [MemberView]
    ) -> ([String: ServiceRollout]?, [String]) {
        var out: [String: ServiceRollout] = [:]
        var reasons: [String] = []
        let committed = state.plan.rollouts ?? [:]
        for name in specs.keys.sorted() {
            guard let spec = state.services[name], let hash = specs[name] else { continue }
            var current: Scaling.Rollout?
            if let r = committed[name] {
                current = Scaling.Rollout(from: r.from, to: r.to, alsoFrom: r.alsoFrom ?? [], old: r.old, new: r.new, paused: r.paused)
            }
            if let before = state.plan.specs?[name], before != hash {
                // The containers the committed plan runs: its rollout's (old and new), or its counts.
                var running: [String: Int] = [:]
                for (node, counts) in state.plan.assignments { if let n = counts[name], n > 0 { running[node] = n } }
                current = Scaling.Rollout.begin(from: before, to: hash, running: running, reversing: current)
                reasons.append(
                    "\(name): rolling out \(String(hash.prefix(8))) (\(spec.updatePolicy.effectiveOrder), max_parallel \(spec.updatePolicy.effectiveMaxParallel))"
                )
            }
            guard let rollout = current, rollout.to == hash else { continue }
            var target: [String: Int] = [:]
            for (node, counts) in next { if let n = counts[name], n > 0 { target[node] = n } }
            var reports: [String: RolloutReport] = [:]
            for m in members {
                if let p = m.rollouts?[name] { reports[m.name] = RolloutReport(spec: p.spec, serving: p.serving, failed: p.failed) }
            }
            let policy = RolloutPolicy(
                maxParallel: spec.updatePolicy.effectiveMaxParallel,
                startFirst: spec.updatePolicy.effectiveOrder == UpdatePolicy.startFirst)
            let step = RolloutStepper.step(rollout, service: name, policy: policy, target: target, reports: reports)
            reasons.append(contentsOf: step.reasons)
            if let r = step.rollout {
                out[name] = ServiceRollout(
                    from: r.from, to: r.to, alsoFrom: r.alsoFrom.isEmpty ? nil : r.alsoFrom, old: r.old, new: r.new, paused: r.paused,
                    done: step.done, total: step.total)
            }
        }
        return (out.isEmpty ? nil : out, reasons)
    }

    /// One reason per service whose containers are to be made from a new spec. A plan committed
    /// before plans carried spec hashes (nil) names none: its containers are what they were.
    public static func specChanges(_ state: ClusterState, _ specs: [String: String]) -> [String] {
        guard let before = state.plan.specs else { return [] }
        return specs.keys.sorted().compactMap { name in
            guard let old = before[name], old != specs[name], let now = state.services[name] else { return nil }
            let was = state.previousServices[name].flatMap { $0.containerHash == old ? $0 : nil }
            let what = was.map { ServiceSpecs.difference($0, now) } ?? "its spec"
            return "\(name): containers change: \(what)"
        }
    }

    /// The planner's nodes: the members as the leader sees them, with their drain flag and the
    /// services their image failures block.
    public static func plannerNodes(_ members: [MemberView], _ state: ClusterState) -> [Scaling.Node] {
        // Services by image, for the images members say fail to pull there.
        var byImage: [String: [String]] = [:]
        if members.contains(where: { $0.imageFailures != nil }) {
            for (name, spec) in state.services { byImage[spec.image, default: []].append(name) }
        }
        return members.map { m in
            var status = NodeStatus(m.status)
            // Hearsay does not move work: a node others call dead or left stays where it is (as a
            // suspect: it keeps its containers and gets no new ones) until this leader's own probe
            // of it fails or it said itself that it leaves.
            if (status == .dead || status == .left) && m.confirmedDown == false { status = .suspect }
            return Scaling.Node(
                name: m.name, cpuMillis: Int(clamping: m.capacity.cpuMillicores),
                memoryBytes: Int(m.capacity.memoryBytes), status: status,
                drained: state.isDrained(m.name), running: m.running, labels: m.labels ?? [:],
                blocked: blocked(m, byImage))
        }
    }

    /// The services `m` cannot run for now: their image fails to pull there (the registry's reason).
    static func blocked(_ m: MemberView, _ byImage: [String: [String]]) -> [String: String] {
        var out: [String: String] = [:]
        for (image, reason) in m.imageFailures ?? [:] {
            for s in byImage[image] ?? [] { out[s] = "image \(image) failing: \(reason)" }
        }
        return out
    }
}
