import Bounds
import Consensus
import ControlPlane
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
    public var maxQuiet: Duration {
        get { round.maxQuiet }
        set { round.maxQuiet = newValue }
    }

    let raft: RaftService
    let membership: MembershipService
    let logger: Logger
    let clock: AgentClock
    /// The decisions (pure, ControlPlane): this actor reads their inputs, commits their plan and
    /// keeps the metrics.
    private var round: LeaderRound
    private var loop: WakeLoop?
    private var pollers: [String: (config: DemandSourceConfig, poller: DemandPoller, task: Task<Void, Never>)] = [:]
    /// Sources that could not be built, by service, so each is reported once.
    private var unusable: [String: DemandSourceConfig] = [:]
    public private(set) var plansCommitted = 0
    /// The demand the last plan used, per service (known values only).
    public private(set) var demandInUse: [String: Double] = [:]
    /// One utilization sample a second, on every server, so that a new leader can report on the
    /// window before it led (docs/utilization.md). Bounded: `Limits.maxUtilizationSamples`.
    private var utilization = UtilizationHistory()

    let latency: DurationHistogram?
    /// A dead node keeps its work this long (as a suspect: no new work) before it moves
    /// (--dead-node-grace; docs/operations.md, "Restart is not leave").
    var deadNodeGrace: Duration { round.deadNodeGrace }

    /// A configuration reload (SIGHUP) changed --dead-node-grace: the next round uses it.
    public func setDeadNodeGrace(_ grace: Duration) { round.deadNodeGrace = grace }

    public init(
        raft: RaftService, membership: MembershipService, logger: Logger, latency: DurationHistogram? = nil,
        deadNodeGrace: Duration = AgentConfiguration.defaultDeadNodeGrace, clock: AgentClock = .system()
    ) {
        self.latency = latency
        self.round = LeaderRound(deadNodeGrace: deadNodeGrace)
        self.raft = raft
        self.membership = membership
        self.logger = logger
        self.clock = clock
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
        let wallClock = clock.wallMilliseconds
        guard await raft.isLeader else {
            // Sources are polled by the leader only: followers' polls were wasted load on the
            // source, and a source that made a server fail made every server fail at once.
            stopPollers()
            round.follow()
            if utilization.due(at: wallClock) {
                // A follower knows no polled reading: only the demand set through the API.
                let nodes = LeaderRound.plannerNodes(await membership.members(), state)
                sample(state, nodes, demand: state.demand.mapValues { .known($0) }, at: wallClock)
            }
            return
        }
        syncPollers(state.services)
        let members = await membership.members()
        var polled: [String: DemandValue] = [:]
        for (name, spec) in state.services where !spec.fill {
            guard let p = pollers[name] else { continue }
            switch await p.poller.reading {
            case .known(let v): polled[name] = .known(v)
            case .unknown: polled[name] = .unknown
            }
        }
        let demand = LeaderRound.demand(state, polled: polled)
        demandInUse = demand.compactMapValues { if case .known(let v) = $0 { return v } else { return nil } }
        let now = clock.now
        let outcome = round.step(
            state: state, members: members, demand: demand, now: now, servers: await raft.configurationMembers)
        if utilization.due(at: wallClock) { sample(state, outcome.nodes, demand: demand, at: wallClock) }
        let commit: LeaderRound.Commit
        switch outcome.verdict {
        case .quiet: return
        case .unchanged:
            latency?.record(clock.now - now)
            return
        case .commit(let c): commit = c
        }
        let decision = commit.decision(timestampMilliseconds: clock.wallMilliseconds, planning: clock.now - now)
        do {
            if let refused = try await raft.propose(.setPlan(commit.plan, decision)) {
                // A stale plan (the state changed between reading and committing) is refused
                // by apply: plan again from the committed state, not from the refused plan.
                round.commitFailed()
                if case .stalePlan = refused {
                    logger.info("plan refused as stale; planning again", metadata: ["reason": "\(refused)"])
                } else {
                    logger.error("plan refused: \(refused)")
                }
            } else {
                latency?.record(clock.now - now)
                plansCommitted += 1
                logger.info(
                    "plan committed",
                    metadata: [
                        "changes": "\(commit.plannerDecisions)",
                        "reasons": "\(commit.reasons.prefix(5).joined(separator: "; "))",
                    ])
            }
        } catch {
            // Lost leadership or no quorum: the next leader plans from the committed state.
            round.commitFailed()
            logger.warning("plan not committed: \(error)")
        }
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
        Utilization.summarize(utilization.samples, window: window, now: clock.wallMilliseconds)
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
            let seed = o["seed"].flatMap(UInt64.init) ?? StableHash.fnv1a(name.utf8)
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
