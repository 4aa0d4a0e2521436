import Bounds
import Consensus
import Demand
import Foundation
import Logging
import Prometheus
import Scaling

/// The leader's decision loop (docs/scheduling.md): node states from membership, demand from the sources,
/// the replicated services and drain flags → the Scaling planner → a new plan, committed through Raft
/// only when it differs from the committed one, with the reasons. It looks every `interval` (100 ms)
/// and plans when anything it reads changed, and at least once a second (so the stabilization
/// window and the random walk advance). It runs on every server and acts only while leader; a new
/// leader starts from the committed plan, so nothing is restarted by a change of leader.
public actor DecisionLoop {
    public var interval: Duration = .milliseconds(100)
    public var maxQuiet: Duration = .seconds(1)

    let raft: RaftService
    let membership: MembershipService
    let logger: Logger
    let planner = Planner()
    private var lastPlan: Scaling.Plan?
    private var lastInputs: Int?
    private var lastRun = ContinuousClock.now
    private var loop: WakeLoop?
    private var pollers: [String: (config: DemandSourceConfig, poller: DemandPoller, task: Task<Void, Never>)] = [:]
    /// Sources that could not be built, by service, so each is reported once.
    private var unusable: [String: DemandSourceConfig] = [:]
    private let epoch = ContinuousClock.now
    public private(set) var plansCommitted = 0
    /// The demand the last plan used, per service (known values only).
    public private(set) var demandInUse: [String: Double] = [:]
    /// One utilization sample a second, on every server, so that a new leader can report on the
    /// window before it led (docs/utilization.md). Bounded: `Limits.maxUtilizationSamples`.
    private var utilization = UtilizationHistory()

    let latency: DurationHistogram?
    /// A dead node keeps its work this long (as a suspect: no new work) before it moves
    /// (--dead-node-grace; "Restart is not leave" in docs/ARCHITECTURE.md).
    private(set) var deadNodeGrace: Duration
    /// When this leader first saw each node dead (its own probe unanswered).
    private var deadSince: [String: ContinuousClock.Instant] = [:]

    /// A configuration reload (SIGHUP) changed --dead-node-grace: the next round uses it.
    public func setDeadNodeGrace(_ grace: Duration) { deadNodeGrace = grace }

    public init(
        raft: RaftService, membership: MembershipService, logger: Logger, latency: DurationHistogram? = nil,
        deadNodeGrace: Duration = AgentConfiguration.defaultDeadNodeGrace
    ) {
        self.latency = latency
        self.deadNodeGrace = deadNodeGrace
        self.raft = raft
        self.membership = membership
        self.logger = logger
    }

    public func start() {
        // `poke` and the timer share one loop: a committed change is planned at once, and anything
        // else (membership, demand sources) within `interval`.
        loop = WakeLoop(every: interval) { [weak self] in
            guard let self else { return false }
            await self.step()
            return true
        }
    }

    /// Something the plan depends on changed (an applied entry: services, demand, drain).
    public func poke() {
        loop?.wake()
    }

    public func stop() {
        loop?.stop()
        loop = nil
        stopPollers()
    }

    private func stopPollers() {
        for (_, p) in pollers { p.task.cancel() }
        pollers = [:]
    }

    func step() async {
        let state = await raft.state
        let wallClock = Int64(Date().timeIntervalSince1970 * 1000)
        guard await raft.isLeader else {
            // Sources are polled by the leader only: followers' polls were wasted load on the
            // source, and a source that made a server fail made every server fail at once.
            stopPollers()
            lastPlan = nil
            lastInputs = nil
            if utilization.due(at: wallClock) {
                // A follower knows no polled reading: only the demand set through the API.
                let nodes = Self.plannerNodes(await membership.members(), state)
                sample(state, nodes, demand: state.demand.mapValues { .known($0) }, at: wallClock)
            }
            deadSince = [:]
            return
        }
        syncPollers(state.services)
        let members = await membership.members()
        var demand: [String: DemandValue] = [:]
        for (name, spec) in state.services where !spec.fill {
            if let p = pollers[name] {
                switch await p.poller.reading {
                case .known(let v): demand[name] = .known(v)
                case .unknown: demand[name] = .unknown
                }
            } else if let v = state.demand[name] {
                demand[name] = .known(v)
            } else {
                demand[name] = .unknown
            }
        }
        demandInUse = demand.compactMapValues { if case .known(let v) = $0 { return v } else { return nil } }
        var nodes = Self.plannerNodes(members, state)
        // Restart is not leave: an agent stopped by SIGTERM (an upgrade, a restart) is dead to the
        // others until it comes back; its work stays for `deadNodeGrace` after this leader saw it
        // dead, so a quick restart adopts its containers instead of seeing them moved and then
        // stopped. A node that said it leaves is not waited for.
        // Only a node whose record said it was stopping to restart is waited for: a crash or a
        // power cut says nothing, and its work moves as soon as this leader's own probe fails.
        let seenAt = ContinuousClock.now
        let restarting = Set(members.lazy.filter { $0.restarting == true }.map(\.name))
        var dead: Set<String> = []
        for i in nodes.indices where nodes[i].status == .dead && restarting.contains(nodes[i].name) {
            dead.insert(nodes[i].name)
            let since = deadSince[nodes[i].name] ?? seenAt
            deadSince[nodes[i].name] = since
            if seenAt - since < deadNodeGrace { nodes[i].status = .suspect }
        }
        deadSince = deadSince.filter { dead.contains($0.key) }
        if utilization.due(at: wallClock) { sample(state, nodes, demand: demand, at: wallClock) }
        var h = Hasher()
        h.combine(state.appliedIndex)
        h.combine(nodes)
        h.combine(demand)
        // What nodes report of rollouts moves them on: a new container serving starts the next.
        for m in members { h.combine(m.rollouts) }
        let inputs = h.finalize()
        let now = ContinuousClock.now
        guard inputs != lastInputs || now - lastRun >= maxQuiet else { return }
        lastInputs = inputs
        lastRun = now

        let services = state.services.map { Specs.planner($0.key, $0.value) }
        var current = lastPlan ?? Scaling.Plan()
        if lastPlan == nil { current.assignments = state.plan.assignments }
        let t0 = ContinuousClock.now
        let result = planner.plan(services: services, demand: demand, nodes: nodes, currentPlan: current, now: now - epoch)
        let planning = ContinuousClock.now - t0
        lastPlan = result.plan
        let next = result.plan.assignments.filter { !$0.value.isEmpty }.mapValues { $0.filter { $0.value > 0 } }
        let committed = state.plan.assignments.filter { !$0.value.isEmpty }.mapValues { $0.filter { $0.value > 0 } }
        // What each service's containers are made from: a change of image, command, env, ports,
        // resources or health alone changes no count, yet must reach every agent (issue 17 item 4).
        let specs = state.services.mapValues(Specs.hash)
        let specChanges = Self.specChanges(state, specs)
        let (rollouts, rolloutReasons) = Self.rollouts(state, specs: specs, next: next, members: members)
        guard next != committed || specs != state.plan.specs || rollouts != state.plan.rollouts else {
            latency?.record(ContinuousClock.now - now)
            return
        }
        let reasons = Array((specChanges + rolloutReasons + result.decisions.map(\.description) + result.shortfalls.map(\.description)).prefix(50))
        let decision = Consensus.Decision(
            timestampMilliseconds: Int64(Date().timeIntervalSince1970 * 1000),
            summary:
                "\(result.decisions.count + specChanges.count + rolloutReasons.count) change\(result.decisions.count + specChanges.count + rolloutReasons.count == 1 ? "" : "s") planned in \(String(format: "%.2f", planning.inMilliseconds)) ms",
            reasons: reasons)
        do {
            if let refused = try await raft.propose(.setPlan(Consensus.Plan(assignments: next, specs: specs, rollouts: rollouts), decision)) {
                logger.error("plan refused: \(refused)")
            } else {
                latency?.record(ContinuousClock.now - now)
                plansCommitted += 1
                logger.info(
                    "plan committed",
                    metadata: [
                        "changes": "\(result.decisions.count)",
                        "reasons": "\(reasons.prefix(5).joined(separator: "; "))",
                    ])
            }
        } catch {
            // Lost leadership or no quorum: the next leader plans from the committed state.
            lastPlan = nil
            lastInputs = nil
            logger.warning("plan not committed: \(error)")
        }
    }

    /// The rolling updates of the next plan (docs/rollouts.md): a service whose spec hash differs
    /// from the one the committed plan was made for starts one (from the containers the committed
    /// plan runs), and every rollout takes one step of the pure `RolloutStepper` against the new
    /// counts and what the nodes report. nil when there is none.
    static func rollouts(
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
    static func specChanges(_ state: ClusterState, _ specs: [String: String]) -> [String] {
        guard let before = state.plan.specs else { return [] }
        return specs.keys.sorted().compactMap { name in
            guard let old = before[name], old != specs[name] else { return nil }
            let was = state.previousServices[name].flatMap { Specs.hash($0) == old ? $0 : nil }
            let what = was.map { Specs.difference($0, state.services[name]!) } ?? "its spec"
            return "\(name): containers change: \(what)"
        }
    }

    static func plannerNodes(_ members: [MemberView], _ state: ClusterState) -> [Scaling.Node] {
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

    private func sample(_ state: ClusterState, _ nodes: [Scaling.Node], demand: [String: DemandValue], at time: Int64) {
        let services = state.services.map { Specs.sampled($0.key, $0.value) }
        utilization.append(
            Utilization.sample(
                time: time, services: services, assignments: state.plan.assignments,
                nodes: nodes, demand: demand))
    }

    /// `GET /v1/report/utilization`: this server's samples over the last `window`.
    public func utilizationSummary(window: Duration) -> UtilizationSummary {
        Utilization.summarize(utilization.samples, window: window, now: Int64(Date().timeIntervalSince1970 * 1000))
    }

    /// One poller per service whose demand comes from a source other than the API (`static`).
    private func syncPollers(_ services: [String: Consensus.ServiceSpec]) {
        for (name, p) in pollers where services[name]?.demand != p.config {
            p.task.cancel()
            pollers[name] = nil
        }
        for (name, spec) in services {
            guard pollers[name] == nil, let config = spec.demand, config.source != "static" else { continue }
            let source: any DemandSource
            switch Self.source(name: name, spec: spec, config: config) {
            case .success(let s): source = s
            case .failure(let e):
                // Once per configuration, not once per step (every 100 ms).
                if unusable[name] != config {
                    unusable[name] = config
                    logger.error(
                        "demand source not usable; demand stays unknown and the count is held",
                        metadata: ["service": "\(name)", "source": "\(config.source)", "error": "\(e)"])
                }
                continue
            }
            unusable[name] = nil
            // Never faster than Limits.minPollInterval, whatever an older entry says.
            let every = max(config.options["interval"].flatMap(Units.duration) ?? .seconds(1), Limits.minPollInterval)
            // The poller's timeout is the source's own (its connection is bounded by the same),
            // plus a margin so the source reports its own timeout with its own words.
            let timeout = DemandSourceOptions.timeout(config.options) + .milliseconds(500)
            let poller = DemandPoller(source: source, interval: every, timeout: timeout, staleness: .seconds(10), logger: logger)
            pollers[name] = (config, poller, Task { await poller.run() })
        }
    }

    static func source(name: String, spec: Consensus.ServiceSpec, config: DemandSourceConfig) -> Result<any DemandSource, DemandConfigError> {
        let o = config.options
        switch config.source {
        case "random":
            // The microscaling demo: a seeded walk over [min, max] demand (default: what min..max
            // containers absorb), in steps of at most `step` (default a tenth of the range).
            let per = config.perContainer ?? 1
            let low = o["min"].flatMap(Double.init) ?? Double(spec.min) * per
            let high = o["max"].flatMap(Double.init) ?? Double(spec.max) * per
            let step = o["step"].flatMap(Double.init) ?? max((high - low) / 10, 1)
            let start = o["start"].flatMap(Double.init) ?? (low + (high - low) / 4)
            // Apply refuses such options (DemandSourceConfig.validationError); this is the last
            // line before `Double.random(in: -step...step)`, which traps on an empty range.
            guard low.isFinite, high.isFinite, high >= low, step.isFinite, step > 0, start.isFinite else {
                return .failure(DemandConfigError(field: "min", reason: "the walk's range or step is empty"))
            }
            let seed = o["seed"].flatMap(UInt64.init) ?? Specs.fnv1a(name.utf8)
            return .success(RandomDemand(name: "random \(name)", walk: RandomWalk(seed: seed, start: start, step: step, bounds: low...high)))
        default:
            // Every other source is built (and its options checked, naming the key) in Demand.
            do {
                guard let s = try DemandSourceOptions.build(service: name, source: config.source, options: o) else {
                    return .failure(DemandConfigError(field: "source", reason: "\(config.source) is not polled"))
                }
                return .success(s)
            } catch {
                return .failure(error)
            }
        }
    }
}
