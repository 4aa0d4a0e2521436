import Consensus
import ControlPlane
import Membership

/// `microscale-sim cluster --scale` (issue 20 item 4; docs/simulation.md, "At scale"): the
/// whole-cluster simulation of `ClusterSimulation`, the same composition, with N up to
/// `maxNodes` agents and no faults. Once the cluster has converged, the driver writes demand
/// steps to the leader, changes one node's record and crashes one node, and measures in
/// simulated time how far each change has spread; the leader's CPU per plan is real CPU time,
/// read through the clock the caller passes (the harness's; no core reads it, and nothing the
/// run does depends on it, so a seed still replays the same run).
public struct ClusterScaleOptions: Sendable, Hashable, Codable {
    /// The largest cluster the scale mode runs (SWIM's `maxMembers`; docs/membership.md).
    public static let maxNodes = 10_000
    public static let maxSteps = 50
    public var nodes = 1000
    public var servers = 3
    /// Demand steps (each a write to the leader, then a plan), alternately up and down.
    public var steps = 5
    /// A phase that has not finished after this long (simulated) is reported as not finished.
    public var phaseLimit: Duration = .seconds(60)

    public init() {}
}

/// What one scale run measured. Times are simulated seconds from the change; nil: the phase did
/// not get there within `phaseLimit`.
public struct ClusterScaleReport: Sendable, Hashable, Codable {
    public struct LeaderCPU: Sendable, Hashable, Codable {
        /// The decision round that planned (`LeaderRound.step`: member view, planner inputs,
        /// `Planner.plan`), in milliseconds of CPU.
        public var decideMilliseconds: Double
        /// Proposing the plan, the Raft work until it committed (ready, append, the followers'
        /// answers), and applying the committed entry to the leader's state.
        public var raftMilliseconds: Double
        /// The leader's own assignment and the pushes to its subscribers (`AssignmentFeed`).
        public var pushMilliseconds: Double
        public var totalMilliseconds: Double
    }

    public struct Step: Sendable, Hashable, Codable {
        public var service: String
        public var demandFrom: Double
        public var demandTo: Double
        /// The plan the demand change produced (0: none within the limit).
        public var planIndex: UInt64 = 0
        /// Nodes whose share the plan changed.
        public var nodesChanged = 0
        public var demandCommittedSeconds: Double?
        public var planCommittedSeconds: Double?
        /// Until 99.9% and 100% of the nodes hold the plan's assignment.
        public var assignment999Seconds: Double?
        public var assignmentAllSeconds: Double?
        /// Until 99.9% and 100% of the nodes whose share changed run it on their engine.
        public var containers999Seconds: Double?
        public var containersAllSeconds: Double?
        public var leaderCPU: LeaderCPU?
        /// Plans committed during the step besides the measured one.
        public var otherPlans = 0
    }

    public struct Figure: Sendable, Hashable, Codable {
        public var median: Double?
        public var p90: Double?
        /// Steps that did not get there (not in the median: counted here).
        public var failed: Int
    }

    public var nodes: Int
    public var servers: Int
    public var seed: UInt64
    public var convergedSeconds: Double?
    public var steps: [Step] = []
    public var assignment999: Figure?
    public var assignmentAll: Figure?
    public var containers999: Figure?
    public var containersAll: Figure?
    public var leaderCPUPerPlanMilliseconds: Figure?
    /// The leader's CPU over the steps, per simulated second: every decision round (most find
    /// nothing changed), and serving subscriptions (each client re-subscribes every second).
    public var leaderDecideMillisecondsPerSecond: Double?
    public var leaderSubscriptionsMillisecondsPerSecond: Double?
    /// One client's record changed (a label): until 99.9% and 100% of the others hold it.
    public var recordSpread999Seconds: Double?
    public var recordSpreadAllSeconds: Double?
    /// One client crashed (its containers run on): until 99.9% and 100% of the others hold it
    /// dead, and until the leader committed a plan without it.
    public var crashDead999Seconds: Double?
    public var crashDeadAllSeconds: Double?
    public var crashReplannedSeconds: Double?
    /// The crashed node started again and the cluster converged (the end's invariants need it).
    public var reconvergedSeconds: Double?
    public var plansCommitted = 0
    public var containersStarted = 0
    public var containersStopped = 0
    /// Every invariant checked as in the seeded runs, and at the end.
    public var checks: [String: Int] = [:]
    public var violations: [ClusterViolation] = []
    public var simulatedSeconds: Double = 0
}

/// Runs the scale scenario. `cpuClock` is the calling thread's CPU time (the harness reads it;
/// pass `{ .zero }` where CPU is not wanted, as the tests do).
public func runClusterScale(seed: UInt64, options: ClusterScaleOptions, cpuClock: @escaping () -> Duration) -> ClusterScaleReport {
    var o = ClusterSimulationOptions()
    o.scale = true
    o.nodes = max(1, min(options.nodes, ClusterScaleOptions.maxNodes))
    o.servers = options.servers
    var sim = ClusterSimulation(seed: seed, options: o)
    sim.probe = ScaleProbe(nodes: sim.names.count, clock: cpuClock)
    return sim.runScale(options)
}

/// The scale driver's probes (everything here is the harness's: it reads what the simulation
/// did and steers nothing). A class, so the hooks in `ClusterSimulation` update it in place.
final class ScaleProbe {
    enum Kind: Int, CaseIterable { case decide, raft, push, subscription }

    /// CPU time of the leader's sections, nested (a section's time excludes the sections it
    /// contains): per kind in all, and per plan from the decision round that planned it until
    /// the leader pushed it.
    final class Meter {
        let clock: () -> Duration
        var totals = [Duration](repeating: .zero, count: Kind.allCases.count)
        private var stack: [(kind: Kind, start: Duration, inner: Duration)] = []
        private var roundStart: [Duration] = []
        private var inFlight: [Duration]?
        private var pushedIndex: UInt64?
        /// Per plan (by index): CPU by kind.
        var samples: [UInt64: [Duration]] = [:]

        init(clock: @escaping () -> Duration) { self.clock = clock }

        var current: Kind? { stack.last?.kind }

        func begin(_ kind: Kind) {
            if kind == .decide && stack.isEmpty { roundStart = totals }
            stack.append((kind: kind, start: clock(), inner: .zero))
        }

        func end(roundPlanned: Bool = false) {
            guard let top = stack.popLast() else { return }
            let elapsed = clock() - top.start
            totals[top.kind.rawValue] += elapsed - top.inner
            if !stack.isEmpty { stack[stack.count - 1].inner += elapsed }
            if roundPlanned { inFlight = roundStart }
            if stack.isEmpty, let index = pushedIndex, let start = inFlight {
                samples[index] = zip(totals, start).map { $0 - $1 }
                inFlight = nil
                pushedIndex = nil
            }
        }

        /// The leader's feed handed out plan `index`; the sample closes with the outermost section.
        func pushed(_ index: UInt64) {
            if inFlight != nil { pushedIndex = index }
        }
    }

    let meter: Meter
    let nodes: Int

    // A demand step: the first plan committed after `afterEntry`.
    var afterEntry: UInt64?
    var target: UInt64?
    var holds: [Bool]
    var holdTimes: [Duration] = []
    /// Nodes whose share the target plan changed, with what they must run, until they do.
    var want: [Int: [String: Int]] = [:]
    var changed = 0
    var runTimes: [Duration] = []
    var checkWanted = false
    var otherPlans = 0
    var plansCommitted = 0
    var commits: [UInt64: Duration] = [:]
    var previousPlan: [String: [String: Int]] = [:]
    var nodeIndex: [String: Int] = [:]

    // Membership: a record version or a death to watch, on every other instance.
    enum Watch {
        case record(subject: String, version: UInt64)
        case dead(subject: String)
    }
    var watch: Watch?
    var seen: [Bool]
    var seenTimes: [Duration] = []
    // The crashed node's work: when a plan gave it nothing.
    var replanSubject: String?
    var replannedAt: Duration?

    init(nodes: Int, clock: @escaping () -> Duration) {
        self.nodes = nodes
        meter = Meter(clock: clock)
        holds = Array(repeating: false, count: nodes)
        seen = Array(repeating: false, count: nodes)
    }

    func pushed(planIndex: UInt64) { meter.pushed(planIndex) }

    func committed(_ index: UInt64, now: Duration) {
        if afterEntry != nil { commits[index] = now }
    }

    func planCommitted(_ plan: Consensus.Plan, index: UInt64, now: Duration) {
        plansCommitted += 1
        defer { previousPlan = plan.assignments }
        if let subject = replanSubject, replannedAt == nil, (plan.assignments[subject] ?? [:]).values.allSatisfy({ $0 == 0 }) {
            replannedAt = now
        }
        guard let after = afterEntry, index > after else { return }
        guard target == nil else {
            otherPlans += 1
            return
        }
        target = index
        let keys = Set(plan.assignments.keys).union(previousPlan.keys)
        for node in keys {
            let new = (plan.assignments[node] ?? [:]).filter { $0.value > 0 }
            let old = (previousPlan[node] ?? [:]).filter { $0.value > 0 }
            if new != old, let i = nodeIndex[node] { want[i] = new }
        }
        changed = want.count
        checkWanted = true
    }

    func assigned(_ i: Int, planIndex: UInt64, now: Duration) {
        guard let target, planIndex >= target, !holds[i] else { return }
        holds[i] = true
        holdTimes.append(now)
    }

    func engineChanged(_ i: Int, _ engine: SimulatedEngine, now: Duration) {
        guard let w = want[i], engine.runningManaged() == w else { return }
        want[i] = nil
        runTimes.append(now)
    }

    func observeSWIM(_ i: Int, _ hosts: SWIMHosts, now: Duration) {
        guard let watch, !seen[i], let instance = hosts.instance(i) else { return }
        switch watch {
        case .record(let subject, let version):
            guard let m = instance.member(named: subject), m.record.version >= version else { return }
        case .dead(let subject):
            guard let m = instance.member(named: subject), m.status == .dead || m.status == .left else { return }
        }
        seen[i] = true
        seenTimes.append(now)
    }

    /// When `fraction` of `of` had got there, counted from `from`.
    static func time(_ times: [Duration], fraction: Double, of count: Int, from: Duration) -> Double? {
        guard count > 0 else { return 0 }
        let k = Int((Double(count) * fraction).rounded(.up))
        return times.count >= k ? (times[k - 1] - from).seconds : nil
    }
}

extension ClusterSimulation {
    /// The scale mode's services: the seeded runs' four, their bounds sized to the N nodes so
    /// that every node runs some (priority 1 and 2 about 0.6 of a node's 2 cores, the batch
    /// filling up to half a core more per node).
    static func scaleServices(nodes n: Int) -> [String: Consensus.ServiceSpec] {
        let mib: UInt64 = 1 << 20
        return [
            "web": Consensus.ServiceSpec(
                image: "sim/web:1", priority: 1, cpu: 0.25, memory: 256 * mib, min: 1, max: 4 * n,
                demand: DemandSourceConfig(source: "static", perContainer: 10)),
            "api": Consensus.ServiceSpec(
                image: "sim/api:1", priority: 1, cpu: 0.5, memory: 512 * mib, min: 1, max: 2 * n,
                demand: DemandSourceConfig(source: "static", perContainer: 20)),
            "worker": Consensus.ServiceSpec(
                image: "sim/worker:1", priority: 2, cpu: 0.25, memory: 256 * mib, max: 2 * n,
                demand: DemandSourceConfig(source: "static", perContainer: 5)),
            "batch": Consensus.ServiceSpec(image: "sim/batch:1", priority: 3, cpu: 0.5, memory: 256 * mib, max: n, fill: true),
        ]
    }

    /// The first demand of each service: web one container per node, api and worker one per two.
    static func scaleBaseDemand(nodes n: Int) -> [String: Double] {
        ["web": Double(10 * n), "api": Double(10 * n), "worker": Double(5 * n / 2)]
    }

    /// The scale mode's operator: declares the services, then each service's first demand, through
    /// the leader's log as the API would; the driver writes the steps.
    mutating func scaleOperatorTick() {
        guard let leader = agents.first(where: { $0.up && $0.raft?.role == .leader }) else {
            after(.milliseconds(200), .operatorTick)
            return
        }
        let base = Self.scaleBaseDemand(nodes: names.count)
        var command: ClusterCommand?
        if leader.state.services.isEmpty {
            command = .applyServices(services)
        } else if let name = Self.demandServices.first(where: { leader.state.demand[$0] == nil }) {
            command = .setDemand(service: name, value: base[name]!)
        }
        guard let command else { return }
        after(.milliseconds(200), .operatorTick)
        guard let data = try? command.encoded() else { return }
        tick(leader)
        if (try? leader.raft!.propose(data)) != nil {
            result.operatorActions += 1
            pump(leader)
        }
    }

    var currentLeader: ClusterAgent? { servers.first { $0.up && $0.raft?.role == .leader } }

    /// Every agent holds the last plan and runs its share, and the plan has not changed for 2 s.
    var scaleConverged: Bool {
        guard lastPlanIndex > 0, now - lastPlanAt >= .seconds(2), let leader = currentLeader,
            leader.state.planIndex == lastPlanIndex, Self.demandServices.allSatisfy({ leader.state.demand[$0] != nil })
        else { return false }
        let plan = leader.state.plan.assignments
        for a in agents where a.up {
            guard a.assignment?.planIndex == lastPlanIndex, a.engine.runningManaged() == (plan[a.name] ?? [:]).filter({ $0.value > 0 })
            else { return false }
        }
        return true
    }

    /// Runs until `done` or `limit`; `done` is asked after each instant (it must be cheap) and,
    /// with `every`, only that often.
    mutating func run(until limit: Duration, every: Duration? = nil, _ done: (inout ClusterSimulation) -> Bool) -> Bool {
        var nextCheck = now
        while now < limit {
            step(upTo: limit)
            if let every {
                guard now >= nextCheck else { continue }
                nextCheck = now + every
            }
            if done(&self) { return true }
        }
        return done(&self)
    }

    mutating func runScale(_ options: ClusterScaleOptions) -> ClusterScaleReport {
        let probe = self.probe!
        for (i, n) in names.enumerated() { probe.nodeIndex[n] = i }
        var report = ClusterScaleReport(nodes: names.count, servers: serverNames.count, seed: seed)
        let n = names.count
        if run(until: now + options.phaseLimit, every: .milliseconds(100), { $0.scaleConverged }) {
            report.convergedSeconds = now.seconds
        }

        // Demand steps: web up by a tenth of a container per node, then back, alternately.
        let base = Self.scaleBaseDemand(nodes: n)["web"]!
        let cpuBefore = probe.meter.totals
        let stepsFrom = now
        // Bounded here as `nodes` is, not only by the command: a negative count would trap the range.
        let steps = max(0, min(options.steps, ClusterScaleOptions.maxSteps))
        for k in 0..<(report.convergedSeconds == nil ? 0 : steps) {
            _ = run(until: now + .seconds(1)) { _ in false }
            guard let leader = currentLeader else { continue }
            let value = k % 2 == 0 ? base + Double(n) : base
            var step = ClusterScaleReport.Step(service: "web", demandFrom: leader.state.demand["web"] ?? 0, demandTo: value)
            guard let data = try? ClusterCommand.setDemand(service: "web", value: value).encoded() else { continue }
            tick(leader)
            guard let (entry, _) = try? leader.raft!.propose(data) else {
                report.steps.append(step)
                continue
            }
            let t0 = now
            probe.afterEntry = entry
            probe.target = nil
            probe.holds = Array(repeating: false, count: n)
            probe.holdTimes = []
            probe.want = [:]
            probe.runTimes = []
            probe.otherPlans = 0
            probe.commits = [:]
            pump(leader)
            _ = run(until: t0 + options.phaseLimit) { sim in
                let p = sim.probe!
                if p.checkWanted {
                    p.checkWanted = false
                    for (i, w) in p.want.sorted(by: { $0.key < $1.key }) where sim.agents[i].engine.runningManaged() == w {
                        p.want[i] = nil
                        p.runTimes.append(sim.now)
                    }
                }
                return p.target != nil && p.holdTimes.count == p.nodes && p.want.isEmpty
            }
            step.demandCommittedSeconds = probe.commits[entry].map { ($0 - t0).seconds }
            if let target = probe.target {
                step.planIndex = target
                step.planCommittedSeconds = probe.commits[target].map { ($0 - t0).seconds }
                step.nodesChanged = probe.changed
                step.assignment999Seconds = ScaleProbe.time(probe.holdTimes, fraction: 0.999, of: n, from: t0)
                step.assignmentAllSeconds = ScaleProbe.time(probe.holdTimes, fraction: 1, of: n, from: t0)
                step.containers999Seconds = ScaleProbe.time(probe.runTimes, fraction: 0.999, of: probe.changed, from: t0)
                step.containersAllSeconds = ScaleProbe.time(probe.runTimes, fraction: 1, of: probe.changed, from: t0)
                step.otherPlans = probe.otherPlans
                if let s = probe.meter.samples[target] {
                    let ms = s.map { $0.seconds * 1000 }
                    step.leaderCPU = .init(
                        decideMilliseconds: ms[ScaleProbe.Kind.decide.rawValue], raftMilliseconds: ms[ScaleProbe.Kind.raft.rawValue],
                        pushMilliseconds: ms[ScaleProbe.Kind.push.rawValue],
                        totalMilliseconds: ms[0..<ScaleProbe.Kind.subscription.rawValue].reduce(0, +))
                }
            }
            probe.afterEntry = nil
            probe.target = nil
            report.steps.append(step)
        }
        let stepSeconds = (now - stepsFrom).seconds
        if stepSeconds > 0, !report.steps.isEmpty {
            let used = zip(probe.meter.totals, cpuBefore).map { ($0 - $1).seconds * 1000 }
            report.leaderDecideMillisecondsPerSecond = used[ScaleProbe.Kind.decide.rawValue] / stepSeconds
            report.leaderSubscriptionsMillisecondsPerSecond = used[ScaleProbe.Kind.subscription.rawValue] / stepSeconds
        }
        func figure(_ values: [Double?]) -> ClusterScaleReport.Figure? {
            guard !values.isEmpty else { return nil }
            let done = values.compactMap { $0 }.sorted()
            let failed = values.count - done.count
            // p90 counts the failed as "did not finish": nil when they reach it.
            let all = done.map { Optional($0) } + Array(repeating: nil, count: failed)
            func at(_ q: Double) -> Double? { all[min(all.count - 1, Int((Double(all.count) * q).rounded(.up)) - 1)] }
            return .init(median: done.isEmpty ? nil : done[done.count / 2], p90: at(0.9), failed: failed)
        }
        report.assignment999 = figure(report.steps.map(\.assignment999Seconds))
        report.assignmentAll = figure(report.steps.map(\.assignmentAllSeconds))
        report.containers999 = figure(report.steps.map(\.containers999Seconds))
        report.containersAll = figure(report.steps.map(\.containersAllSeconds))
        report.leaderCPUPerPlanMilliseconds = figure(report.steps.map { $0.leaderCPU?.totalMilliseconds })

        if n >= servers.count + 2, report.convergedSeconds != nil {
            // One client's record changes (a label: no service is constrained, so no plan moves).
            _ = run(until: now + .seconds(1)) { _ in false }
            let subject = names[n - 1]
            let i = index[subject]!
            if var r = swim.instance(i)?.record {
                r.labels["zone"] = "b"
                if let e = try? swim.step(i, now: now, { (x: inout SWIMInstance) throws(NodeRecordError) in try x.updateRecord(r, now: now) }) {
                    let version = swim.instance(i)!.record.version
                    probe.watch = .record(subject: subject, version: version)
                    probe.seen = Array(repeating: false, count: n)
                    probe.seen[i] = true
                    probe.seenTimes = []
                    let t0 = now
                    carryOut(agents[i], e)
                    _ = run(until: t0 + options.phaseLimit) { $0.probe!.seenTimes.count == n - 1 }
                    report.recordSpread999Seconds = ScaleProbe.time(probe.seenTimes, fraction: 0.999, of: n - 1, from: t0)
                    report.recordSpreadAllSeconds = ScaleProbe.time(probe.seenTimes, fraction: 1, of: n - 1, from: t0)
                }
            }

            // One client crashes (kill -9: no reset hints, its containers run on).
            _ = run(until: now + .seconds(1)) { _ in false }
            let victim = agents[n - 2]
            probe.watch = .dead(subject: victim.name)
            probe.seen = Array(repeating: false, count: n)
            probe.seen[n - 2] = true
            probe.seenTimes = []
            let hadWork = !(lastPlanAssignments[victim.name] ?? [:]).values.allSatisfy { $0 == 0 }
            probe.replanSubject = hadWork ? victim.name : nil
            probe.replannedAt = nil
            let t0 = now
            note("\(victim.name) crashes (scale driver)")
            crash(victim, graceful: false)
            _ = run(until: t0 + options.phaseLimit) { sim in
                let p = sim.probe!
                return p.seenTimes.count == n - 1 && (p.replanSubject == nil || p.replannedAt != nil)
            }
            report.crashDead999Seconds = ScaleProbe.time(probe.seenTimes, fraction: 0.999, of: n - 1, from: t0)
            report.crashDeadAllSeconds = ScaleProbe.time(probe.seenTimes, fraction: 1, of: n - 1, from: t0)
            report.crashReplannedSeconds = hadWork ? probe.replannedAt.map { ($0 - t0).seconds } : 0
            probe.watch = nil
            probe.replanSubject = nil

            // It starts again (a real join), and the cluster converges, so the end's checks hold
            // for every node.
            let t1 = now
            start(victim)
            if run(until: t1 + options.phaseLimit, every: .milliseconds(100), { $0.scaleConverged }) {
                report.reconvergedSeconds = (now - t1).seconds
            }
        }
        if result.violations.isEmpty { finalChecks() }
        let r = finish()
        report.plansCommitted = probe.plansCommitted
        report.containersStarted = r.containersStarted
        report.containersStopped = r.containersStopped
        report.checks = r.checks
        report.violations = r.violations
        report.simulatedSeconds = r.simulatedSeconds
        return report
    }

    /// The last committed plan's assignments, as the leader holds them.
    var lastPlanAssignments: [String: [String: Int]] { currentLeader?.state.plan.assignments ?? [:] }
}
