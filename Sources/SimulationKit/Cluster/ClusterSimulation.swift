import Consensus
import ControlPlane
import DockerEngine
import HeapModule
import Membership
import Scaling

/// The whole cluster under one seed (docs/simulation.md): servers running `RaftNode` over
/// `ClusterState`, the leader planning with `Planner` and committing plans, every agent carrying
/// its share out on a `SimulatedEngine` through the pure `Reconciler`, SWIM (`SWIMInstance` with
/// Lifeguard, as `MembershipService` runs it) on every agent over the `SimulatedNetwork`, an operator changing demand and draining nodes, and faults, all
/// driven by one `SeededGenerator` and one simulated clock. The same seed and options always give
/// the same run (nothing here iterates a dictionary where the order could reach a random draw).
/// The model is TigerBeetle's VOPR and FoundationDB's simulator: real cores, simulated world.

/// A rule deliberately broken, to show that some seed catches it (docs/simulation.md).
public enum BrokenRule: String, Sendable, Hashable, Codable, CaseIterable {
    /// The executor starts a round's new containers without waiting for the round's stops
    /// (docs/ARCHITECTURE.md, Principles 3: stops before starts).
    case startsBeforeStops = "starts-before-stops"
    /// The leader plans with every member as alive, whatever its SWIM instance says: the work of
    /// a crashed node is never moved (the check of SWIM's detection bound must catch it).
    case ignoresDeadMembers = "ignores-dead-members"
    /// The Raft shell takes frames from any certificate (`PeerAdmission.raftFrame` skipped): the
    /// hostile peer's append, sent as itself (a server outside the configuration may lead it),
    /// reaches `RaftNode` (the check of committed entries must catch it).
    case trustsClientRaft = "trusts-client-raft"
}

public struct ClusterSimulationOptions: Sendable, Hashable, Codable {
    /// Agents in all; the first `servers` of them are servers (which also run work, as in a
    /// small `microscale` cluster).
    public var nodes = 4
    public var servers = 3
    /// Faults happen during this first part of the run, then stop ...
    public var faultDuration: Duration = .seconds(12)
    /// ... and every live node must run its assignment of the last plan this long after.
    public var convergenceBound: Duration = .seconds(24)
    public var electionTimeout: Duration = .milliseconds(500)
    public var heartbeatInterval: Duration = .milliseconds(100)
    /// How often an agent's executor publishes what runs there into its SWIM record (the
    /// instance gossips a change as a delta; an unchanged record sends nothing). The agent
    /// publishes after each reconcile; this is at least as often.
    public var recordInterval: Duration = .milliseconds(500)
    /// DecisionLoop's settings (--dead-node-grace, its 100 ms look, its 1 s quiet bound).
    public var deadNodeGrace: Duration = .seconds(5)
    public var decisionInterval: Duration = .milliseconds(100)
    public var maxQuiet: Duration = .seconds(1)
    /// NodeExecutor's settings (its adoption grace and round interval).
    public var adoptionGrace: Duration = .seconds(10)
    public var executorInterval: Duration = .seconds(2)
    /// AssignmentService's subscription policy (client agents): its keepalive and retry.
    public var subscriptionKeepalive = Subscription().keepalive
    public var subscriptionRetry = Subscription().retry
    /// How often a client agent's view of the servers is looked at: the simulation's stand-in for
    /// the shell's wake-up on every member change (`MembershipService.onMembersChanged`).
    public var subscriptionCheck: Duration = .seconds(1)
    /// The leader stamps each plan with the applied index of the state it planned from
    /// (`Consensus.Plan.basedOnIndex`). False plans as a leader before that field did, which
    /// is how the race "a plan computed before a drain, applied after it" is replayed.
    public var plansCarryBase = true
    public var broken: BrokenRule?
    /// An assignment that gives a node nothing, from a plan decided after the agent started, is
    /// carried out within this bound (a round's interval, a round in progress, the stops).
    public var emptyAssignmentBound: Duration = .seconds(4)
    /// Check that bound (`empty-assignment-carried-out`). Off by default: the first plan an agent
    /// receives after its start, decided within the leaders' clock skew of that start, may still be
    /// held for the adoption grace, which no Raft index can settle (seed 125; docs/simulation.md).
    public var checkEmptyAssignments = false
    /// The scale mode (`microscale-sim cluster --scale`, docs/simulation.md "At scale"): no
    /// faults, the operator only declares the services and their first demand (the scale driver,
    /// `runClusterScale`, writes the rest), SWIM starts converged, and the services are sized to
    /// the node count. The composition is the same: Raft, the leader's round, the feed, the
    /// executors, SWIM on every agent, and every invariant checked as events happen.
    public var scale = false
    /// The adversary's faults (disk errors and a hostile peer, docs/simulation.md), drawn from a
    /// generator of their own so that the other faults of a seed stay where they were. Off in the
    /// scale mode, which has no faults.
    public var adversary = true
    /// Records signed as the agent's are (`SimulatedCertificates`); false runs unsigned, which
    /// takes the hostile peer's forged records (to show `no-forged-record-taken` can fail).
    public var signedRecords = true

    public init() {}
}

public struct ClusterViolation: Sendable, Hashable, Codable {
    public var invariant: String
    /// Simulated seconds since the start.
    public var time: Double
    public var detail: String
}

/// What one run found. `violations` is empty when every invariant held.
public struct ClusterSimulationResult: Sendable, Hashable, Codable {
    public var seed: UInt64
    public var nodes: Int
    public var servers: Int
    /// Faults injected, by kind.
    public var faults: [String: Int] = [:]
    /// Invariant checks made, by invariant.
    public var checks: [String: Int] = [:]
    public var violations: [ClusterViolation] = []
    /// The last events before the end (or the first violation), when the run failed.
    public var trace: [String] = []
    public var elections = 0
    public var plansCommitted = 0
    public var plansRefused = 0
    public var operatorActions = 0
    public var containersStarted = 0
    public var containersStopped = 0
    public var startFailures = 0
    /// Messages the shells' admission (`PeerAdmission`) refused, by rule.
    public var refused: [String: Int] = [:]
    /// Agents stopped by a failed Raft write (disk-error: RaftService's fail-stop).
    public var raftStops = 0
    public var simulatedSeconds: Double = 0
}

/// The invariants (docs/simulation.md, "Invariants").
public enum ClusterInvariant {
    public static let oneLeaderPerTerm = "one-leader-per-term"
    public static let noCommittedPlanLost = "no-committed-plan-lost"
    public static let capacity = "no-node-over-capacity"
    public static let noWorkOnDeadOrDrained = "no-work-on-dead-or-drained-node"
    public static let convergence = "convergence-after-faults"
    public static let emptyAssignmentCarriedOut = "empty-assignment-carried-out"
    public static let priorityOneDemand = "priority-1-demand-met"
    public static let unmanagedUntouched = "no-unmanaged-container-touched"
    public static let noTrap = "no-trap"
    /// No agent's membership view holds a record its owner did not sign (the hostile peer's).
    public static let noForgedRecordTaken = "no-forged-record-taken"
    /// Simulated time advances: no core keeps something due at one instant (a livelock, which
    /// would hang the agent as surely as a trap would end it).
    public static let timeAdvances = "time-advances"
    public static let all = [
        oneLeaderPerTerm, noCommittedPlanLost, capacity, noWorkOnDeadOrDrained, convergence, emptyAssignmentCarriedOut, priorityOneDemand,
        unmanagedUntouched, noTrap, noForgedRecordTaken, timeAdvances,
    ]
}

/// The fault kinds (docs/simulation.md, "Faults").
public enum ClusterFault: String, Sendable, CaseIterable {
    case crash, restart
    case gracefulRestart = "graceful-restart"
    case freeze, partition
    case loss = "message-loss"
    case clockSkew = "clock-skew"
    case
        dockerdDown = "dockerd-down"
    case imageMissing = "image-missing"
    case startFailure = "start-failure"
    case diskError = "disk-error"
    case hostilePeer = "hostile-peer"
}

/// Runs one seed. The same seed and options always give the same result.
public func runClusterSimulation(seed: UInt64, options: ClusterSimulationOptions = ClusterSimulationOptions()) -> ClusterSimulationResult {
    var sim = ClusterSimulation(seed: seed, options: options)
    return sim.run()
}

// MARK: - Messages and agents

enum ClusterMessage: Sendable {
    case raft(RaftMessage)
    case swim(Membership.Message)
    case subscribe(node: String, after: UInt64)
    case assignment(NodeAssignment)
}

final class ClusterAgent {
    let name: String
    let isServer: Bool
    let cpuMillis = 2000
    let memoryBytes = 4 << 30
    var engine: SimulatedEngine
    var up = true
    var frozen = false
    /// Bumped by every crash and restart: events of an earlier incarnation are dropped.
    var incarnation = 0
    var downSince: Duration?
    var downGraceful = false
    var skewMilliseconds: Int64 = 0
    var freezes = 0
    /// The server's disk refuses writes (disk-error): its next Raft write fails.
    var diskFailing = false
    /// Agent-side events that came due while the agent was frozen, run when it thaws.
    var deferred: [ClusterSimulation.Event] = []

    // Executor (NodeExecutor).
    var reconciler: Reconciler
    var assignment: NodeAssignment?
    var policy = ExecutorPolicy(startedAt: .zero, startedAtWallMilliseconds: 0)
    var startedAt: Duration = .zero
    /// Since when the agent has been running without a pause: its start or its last thaw.
    var observingSince: Duration = .zero
    /// When this server last became leader.
    var leadingSince: Duration = .zero
    var round: Round?
    var roundToken = 0
    var wakeWanted = false
    /// Images being pulled, and when each pull ends.
    var pulls: [String: Duration] = [:]
    var lastRunning: [String: Int] = [:]
    /// Set by an agent stopping to restart (SIGTERM with restart), gossiped in its record:
    /// "restart is not leave".
    var restarting = false
    /// Between the restart's announcement and the stop: the executor and the assignment
    /// subscription have stopped (AgentRuntime.stop), membership and Raft carry on.
    var stopping = false
    /// The leader's Lifeguard local health multiplier when it changed (time, value), for the
    /// detection bound of `no-work-on-dead-or-drained-node`; bounded, oldest dropped.
    var localHealth: [(at: Duration, value: Int)] = []
    // AssignmentService: whom a client agent follows and when it subscribes, and its own feed.
    var subscription: Subscription
    var upstream: String? { subscription.upstream }
    var feed: AssignmentFeed

    // Servers (RaftService, DecisionLoop, AssignmentService).
    var raft: RaftNode?
    var disk = MemoryStorage()
    var state = ClusterState()
    var pending: (ready: Ready, completeAt: Duration)?
    var lastTick: Duration = .zero
    var leaderRound = LeaderRound(deadNodeGrace: .seconds(5))
    var deciding = false
    var pokePending = false
    var awaiting: (index: UInt64, term: UInt64, deadline: Duration)?

    struct Round {
        var token: Int
        var loops: Int
        var nonEmpty: Bool
        var starts: [(service: String, hash: String)]
        var created: [(id: String, service: String)] = []
        var generation: Int
    }

    init(name: String, isServer: Bool) {
        self.name = name
        self.isServer = isServer
        self.engine = SimulatedEngine(node: name)
        self.reconciler = Reconciler(node: name)
        self.subscription = Subscription()
        self.feed = AssignmentFeed(node: name)
    }
}

// MARK: - The simulation

struct ClusterSimulation {
    enum Event {
        // Agent-side (dropped for another incarnation, deferred while frozen).
        case report(String, Int)
        case gracefulStop(String, Int)
        case decide(String, Int)
        /// DecisionLoop.poke from a member's change of status: one round now, the 100 ms looks
        /// unchanged (WakeLoop holds at most one pending wake).
        case poke(String, Int)
        case propose(String, Int, Consensus.Plan, Consensus.Decision, readAt: Duration)
        case executorTick(String, Int)
        case subscribe(String, Int)
        case startPhase(String, Int, token: Int)
        case roundEnd(String, Int, token: Int)
        case pullDone(String, Int, image: String)
        // The daemon's side (happen whatever the agent does).
        case engineStop(String, id: String, generation: Int)
        case engineCreate(String, Int, token: Int, service: String, hash: String, generation: Int)
        case engineStart(String, Int, id: String, service: String, crashes: Bool, generation: Int)
        // The world.
        case fault
        case endFaults
        case restartAgent(String, Int)
        case thaw(String, Int)
        case heal(Int)
        case lossEnds(Int)
        case daemonUp(String, Int)
        case operatorTick
        case checkEmpty(String, Int, planIndex: UInt64, freezes: Int, generation: Int)
        // The adversary (Adversary.swift).
        case diskFails
        case diskRepaired(String)
        case hostile(until: Duration)

        var agent: (String, Int)? {
            switch self {
            case .report(let a, let i), .decide(let a, let i), .poke(let a, let i), .executorTick(let a, let i), .subscribe(let a, let i),
                .gracefulStop(let a, let i):
                (a, i)
            case .propose(let a, let i, _, _, _), .startPhase(let a, let i, _), .roundEnd(let a, let i, _), .pullDone(let a, let i, _): (a, i)
            default: nil
            }
        }
    }

    struct Scheduled: Comparable {
        var at: Duration
        var sequence: UInt64
        var event: Event
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.at, a.sequence) < (b.at, b.sequence) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { a.sequence == b.sequence }
    }

    static let services: [String: Consensus.ServiceSpec] = {
        let mib: UInt64 = 1 << 20
        return [
            "web": Consensus.ServiceSpec(
                image: "sim/web:1", priority: 1, cpu: 0.25, memory: 256 * mib, min: 1, max: 12,
                demand: DemandSourceConfig(source: "static", perContainer: 10)),
            "api": Consensus.ServiceSpec(
                image: "sim/api:1", priority: 1, cpu: 0.5, memory: 512 * mib, min: 1, max: 6,
                demand: DemandSourceConfig(source: "static", perContainer: 20)),
            "worker": Consensus.ServiceSpec(
                image: "sim/worker:1", priority: 2, cpu: 0.25, memory: 256 * mib, max: 10,
                demand: DemandSourceConfig(source: "static", perContainer: 5)),
            "batch": Consensus.ServiceSpec(image: "sim/batch:1", priority: 3, cpu: 0.5, memory: 256 * mib, max: 8, fill: true),
        ]
    }()
    static let demandServices = ["api", "web", "worker"]
    static let demandRange: [String: ClosedRange<Int>] = ["web": 0...130, "api": 0...110, "worker": 0...60]
    /// Wall clocks start here (ms since 1970), plus each agent's skew.
    static let wallEpoch: Int64 = 1_800_000_000_000
    /// SWIM's configuration: the agent's default (`MembershipConfiguration.lan`, as
    /// AgentRuntime passes it to MembershipService).
    static let membership = MembershipConfiguration.lan
    /// Where an agent's SWIM listens (its record's address).
    static func swimAddress(_ name: String) -> String { "\(name):7946" }

    let seed: UInt64
    let options: ClusterSimulationOptions
    var rng: SeededGenerator
    /// The adversary's own draws (disk errors, the hostile peer): adding them moved no other
    /// fault of a seed.
    var adversary: SeededGenerator
    var net: SimulatedNetwork<String, ClusterMessage>
    /// Every agent's SWIM instance, by the agent's position in `agents` (shared with
    /// `MembershipCluster`).
    var swim: SWIMHosts
    var now: Duration = .zero
    var agents: [ClusterAgent]
    /// The servers among them (only they have Raft timers and disk writes to wait for).
    var servers: [ClusterAgent] = []
    var index: [String: Int] = [:]
    var names: [String]
    var serverNames: [String]
    var bootstrap: Configuration
    var events = Heap<Scheduled>()
    var sequence: UInt64 = 0
    var result: ClusterSimulationResult
    let planner = Planner()
    /// The services the operator declares (`services`, or `scaleServices` in the scale mode).
    let services: [String: Consensus.ServiceSpec]
    /// The scale driver's probes and the leader's CPU meter (nil outside the scale mode).
    var probe: ScaleProbe?
    /// The scale mode's converged membership: every instance starts knowing every member.
    var convergedMembers: [MemberState] = []
    var trace: [String] = []
    var stopped = false

    // Checker state.
    var leaders: [UInt64: String] = [:]
    var committed: [UInt64: Entry] = [:]
    /// Plans the leaders proposed, by index: the term and the time the leader read the state.
    var proposedPlans: [UInt64: (term: UInt64, readAt: Duration)] = [:]
    /// The last plan committed (not refused): its index and when it was first applied.
    var lastPlanIndex: UInt64 = 0
    var lastPlanAt: Duration = .zero
    var partitionEpoch = 0
    var lossEpoch = 0
    var faultsOver = false
    var demandLevel: [String: Int] = [:]

    var faultEnd: Duration { options.faultDuration }
    var end: Duration { options.faultDuration + options.convergenceBound }

    init(seed: UInt64, options: ClusterSimulationOptions) {
        self.seed = seed
        self.options = options
        var rng = SeededGenerator(seed: seed)
        self.net = SimulatedNetwork(seed: rng.next(), faults: .init(delay: .microseconds(300) ... .milliseconds(4)))
        let servers = max(1, min(options.servers, options.nodes))
        names = (1...max(1, options.nodes)).map { "n\($0)" }
        serverNames = Array(names.prefix(servers))
        agents = names.enumerated().map { ClusterAgent(name: $1, isServer: $0 < servers) }
        for (i, a) in agents.enumerated() { index[a.name] = i }
        self.servers = agents.filter(\.isServer)
        bootstrap = Configuration(voters: Set(serverNames))
        swim = SWIMHosts(configuration: Self.membership, addresses: names.map(Self.swimAddress))
        self.rng = rng
        adversary = SeededGenerator(seed: seed ^ Self.adversarySalt)
        if !options.scale && options.signedRecords {
            // Signed as the agent's records are (SimulatedCertificates: the agent's sizes and
            // verdicts): the hostile peer's forged records must be refused where the agent's are.
            let names = names
            swim.authenticator = { SimulatedCertificates(owner: names[$0]) }
        }
        services = options.scale ? Self.scaleServices(nodes: max(1, options.nodes)) : Self.services
        result = ClusterSimulationResult(seed: seed, nodes: names.count, servers: servers)
        for c in ClusterInvariant.all { result.checks[c] = 0 }
        if options.scale {
            // N simultaneous joins through three seeds cost the seeds O(N^2) push-pull bytes
            // (docs/membership.md): the scale questions start after membership converged.
            faultsOver = true
            convergedMembers = names.map {
                MemberState(incarnation: 0, status: .alive, record: Self.nodeRecord($0, server: serverNames.contains($0)))
            }
        }
        for a in agents {
            // Someone else's container on every host, and one another node's agent made: the
            // reconciler must leave both alone.
            a.engine.addForeign(labels: ["com.example.owner": "ops"], image: "postgres:16")
            a.engine.addForeign(
                labels: [MicroscaleLabel.managed: "true", MicroscaleLabel.service: "web", MicroscaleLabel.node: "elsewhere"],
                image: "sim/web:1")
            start(a)
        }
        if !options.scale {
            schedule(.milliseconds(Int64.random(in: 300...1200, using: &self.rng)), .fault)
            schedule(faultEnd, .endFaults)
            if options.adversary { scheduleAdversary() }
        }
        schedule(.milliseconds(200), .operatorTick)
    }

    func agent(_ name: String) -> ClusterAgent? { index[name].map { agents[$0] } }

    mutating func schedule(_ at: Duration, _ e: Event) {
        sequence += 1
        events.insert(Scheduled(at: at, sequence: sequence, event: e))
    }

    mutating func after(_ d: Duration, _ e: Event) { schedule(now + d, e) }

    mutating func draw(_ range: ClosedRange<Int64>) -> Duration { .milliseconds(Int64.random(in: range, using: &rng)) }

    func wall(_ a: ClusterAgent) -> Int64 { Self.wallEpoch + now.nanoseconds / 1_000_000 + a.skewMilliseconds }

    mutating func note(_ text: String) {
        trace.append("t=\(fmt(now)) \(text)")
        if trace.count > 80 { trace.removeFirst(trace.count - 80) }
    }

    func fmt(_ d: Duration) -> String {
        let ms = d.nanoseconds / 1_000_000
        return "\(ms / 1000).\(String(ms % 1000 + 1000).dropFirst())s"
    }

    mutating func check(_ invariant: String) { result.checks[invariant, default: 0] += 1 }

    mutating func violation(_ invariant: String, _ detail: String) {
        note("VIOLATION \(invariant): \(detail)")
        if result.violations.count < 20 {
            result.violations.append(ClusterViolation(invariant: invariant, time: now.seconds, detail: detail))
        }
    }

    // MARK: Agent lifecycle

    /// Starts (or restarts) an agent: a fresh executor and reconciler, a server's Raft from its disk.
    mutating func start(_ a: ClusterAgent) {
        a.up = true
        a.frozen = false
        a.incarnation += 1
        a.downSince = nil
        a.downGraceful = false
        a.deferred = []
        net.restart(a.name)
        net.thaw(a.name, now: now)
        a.reconciler = Reconciler(node: a.name)
        a.assignment = nil
        a.startedAt = now
        a.observingSince = now
        a.policy = ExecutorPolicy(startedAt: now, startedAtWallMilliseconds: wall(a), adoptionGrace: options.adoptionGrace)
        a.round = nil
        a.wakeWanted = false
        a.pulls = [:]
        a.restarting = false
        a.stopping = false
        a.lastRunning = [:]
        if (a.localHealth.last?.value ?? 0) != 0 { a.localHealth.append((now, 0)) }  // a fresh instance
        a.subscription = Subscription(keepalive: options.subscriptionKeepalive, retry: options.subscriptionRetry)
        a.feed = AssignmentFeed(node: a.name)
        let inc = a.incarnation
        if a.isServer {
            let recovered = a.disk.recover()
            var c = RaftConfig(id: a.name)
            c.electionTimeout = options.electionTimeout
            c.heartbeatInterval = options.heartbeatInterval
            c.maxEntriesPerMessage = 32
            a.raft = RaftNode(config: c, bootstrap: bootstrap, recovered: recovered, seed: rng.next())
            a.state = ClusterState()
            a.pending = nil
            a.lastTick = now
            a.leaderRound = LeaderRound(deadNodeGrace: options.deadNodeGrace, maxQuiet: options.maxQuiet)
            a.deciding = false
            a.pokePending = false
            a.awaiting = nil
            after(draw(0...100), .decide(a.name, inc))
        } else {
            after(draw(0...200), .subscribe(a.name, inc))
        }
        // MembershipService: a fresh instance (incarnation 0: hearing itself dead at a higher one
        // makes it refute above it), joining through the servers as `--join` names them. Its
        // record carries what runs here once the executor publishes it.
        let record = Self.nodeRecord(a.name, server: a.isServer)
        let seeds = serverNames.map(Self.swimAddress)
        if options.scale && now == .zero {
            // The scale mode's converged start (MembershipCluster.startConverged).
            // The record is valid by construction; a failure here is a bug in this file.
            var instance = try! SWIMInstance(configuration: Self.membership, record: record, seed: rng.next(), now: now)
            instance.restore(convergedMembers, now: now)
            carryOut(a, swim.install(index[a.name]!, instance, now: now))
        } else {
            // The record is valid by construction; a failure here is a bug in this file.
            let joined = try! swim.start(index[a.name]!, record: record, seed: rng.next(), now: now, joining: seeds)
            carryOut(a, joined)
        }
        after(draw(0...300), .report(a.name, inc))
        after(options.executorInterval, .executorTick(a.name, inc))
    }

    /// kill -9: the agent's memory is gone (a server keeps what its Ready writes persisted); the
    /// daemon and its containers carry on.
    mutating func crash(_ a: ClusterAgent, graceful: Bool) {
        guard a.up else { return }
        a.up = false
        a.frozen = false
        a.incarnation += 1
        a.downSince = now
        a.downGraceful = graceful
        a.deferred = []
        a.round = nil
        a.stopping = false
        net.thaw(a.name, now: now)
        net.crash(a.name)
        swim.remove(index[a.name]!)
        if a.isServer {
            a.raft = nil
            a.pending = nil
        }
    }

    // MARK: Run

    /// An agent's record as it joins (every simulated agent has the same capacity).
    static func nodeRecord(_ name: String, server: Bool) -> NodeRecord {
        NodeRecord(
            name: name, address: swimAddress(name), role: server ? .server : .client,
            capacity: Resources(cpuMillicores: 2000, memoryBytes: 4 << 30), agentVersion: "0.1.0")
    }

    mutating func run() -> ClusterSimulationResult {
        var stalled = 0
        while now < end && !stopped {
            let before = now
            step(upTo: end)
            if result.violations.count >= 5 { stopped = true }
            // A core that always has something due at the same instant would hang its agent.
            stalled = now == before ? stalled + 1 : 0
            if stalled >= Self.maxStepsAtOneInstant {
                violation(ClusterInvariant.timeAdvances, "\(stalled) steps at t=\(fmt(now)) without time advancing")
                stopped = true
            }
        }
        check(ClusterInvariant.timeAdvances)
        if !stopped { finalChecks() }
        return finish()
    }

    mutating func finish() -> ClusterSimulationResult {
        // Reaching here is the "no trap" invariant: a trap in any core would have ended the process.
        check(ClusterInvariant.noTrap)
        result.faults[ClusterFault.startFailure.rawValue] = result.startFailures
        result.simulatedSeconds = now.seconds
        if !result.violations.isEmpty { result.trace = trace }
        return result
    }

    /// Steps at one simulated instant before `time-advances` is violated (a run of 4 agents has
    /// a few dozen things due at once at most).
    static let maxStepsAtOneInstant = 100_000

    /// Advances to the next instant something is due (at most `limit`) and runs everything due then.
    mutating func step(upTo limit: Duration) {
        var next = limit
        if let t = net.nextDeliveryTime { next = min(next, t) }
        if let t = swim.nextTimer { next = min(next, t) }
        if let e = events.min { next = min(next, e.at) }
        for s in servers where s.up && !s.frozen {
            if let p = s.pending { next = min(next, p.completeAt) }
            if let r = s.raft, let d = r.timeoutUntilNext { next = min(next, s.lastTick + d) }
        }
        now = max(now, next)
        for s in servers where s.up && !s.frozen {
            if let p = s.pending, p.completeAt <= now {
                let leading = measuring(s, .raft)
                complete(s)
                if leading { probe?.meter.end() }
            }
        }
        while let e = net.deliverNext(upTo: now) { receive(e) }
        while let t = swim.nextTimer, t <= now {
            // A frozen agent's tick is dropped; its thaw wakes the instance.
            guard let i = swim.popTimer(), agents[i].up, !agents[i].frozen else { continue }
            carryOut(agents[i], swim.tick(i, now: now))
            probe?.observeSWIM(i, swim, now: now)
        }
        for s in servers where s.up && !s.frozen {
            if let r = s.raft, let d = r.timeoutUntilNext, s.lastTick + d <= now {
                let leading = measuring(s, .raft)
                tick(s)
                pump(s)
                if leading { probe?.meter.end() }
            }
        }
        while let e = events.min, e.at <= now {
            _ = events.removeMin()
            handle(e.event)
        }
    }

    /// Starts a CPU section of the leader's (`kind`) when the scale mode measures and `s` leads;
    /// true when the caller must end it.
    func measuring(_ s: ClusterAgent, _ kind: ScaleProbe.Kind) -> Bool {
        guard let probe, s.raft?.role == .leader else { return false }
        probe.meter.begin(kind)
        return true
    }

    // MARK: Raft shell (RaftService)

    mutating func tick(_ s: ClusterAgent) {
        if now > s.lastTick {
            s.raft?.tick(by: now - s.lastTick)
            s.lastTick = now
        }
    }

    mutating func pump(_ s: ClusterAgent) {
        var n = 0
        while s.pending == nil, let r = s.raft, r.hasReady, n < 100 {
            n += 1
            observeRole(s)
            let rd = s.raft!.ready()
            let needsDisk = rd.snapshot != nil || !rd.entries.isEmpty || rd.hardState != nil
            let latency: Duration = needsDisk ? .microseconds(Int64.random(in: 100...2_000, using: &rng)) : .zero
            s.pending = (rd, now + latency)
            if latency == .zero { complete(s) }
        }
        observeRole(s)
    }

    mutating func complete(_ s: ClusterAgent) {
        guard let (rd, _) = s.pending, s.raft != nil else { return }
        if s.diskFailing, rd.snapshot != nil || !rd.entries.isEmpty || rd.hardState != nil {
            // RaftService.drain: a write that fails stops Raft before anything it would have
            // answered goes out, and the agent with it (fail-stop, AgentRuntime); its service
            // manager starts it again a second later, and while the disk is broken the next
            // write stops it again. Its containers run on, as after a crash.
            note("\(s.name): the Raft write fails; the agent stops (fail-stop)")
            result.raftStops += 1
            crash(s, graceful: false)
            schedule(now + .seconds(1), .restartAgent(s.name, s.incarnation))
            return
        }
        s.disk.persist(snapshot: rd.snapshot, entries: rd.entries, hardState: rd.hardState)
        for m in rd.messages { net.send(.raft(m), from: s.name, to: m.to, size: m.approximateSize, now: now) }
        var planChanged = false
        for e in rd.committedEntries {
            let before = s.state.planIndex
            apply(e, on: s)
            if s.state.planIndex != before { planChanged = true }
        }
        s.raft!.advance(rd)
        s.pending = nil
        if planChanged { planApplied(s) }
        pump(s)
    }

    mutating func apply(_ e: Entry, on s: ClusterAgent) {
        check(ClusterInvariant.noCommittedPlanLost)
        let first = committed[e.index] == nil
        if let c = committed[e.index] {
            if c != e {
                violation(
                    ClusterInvariant.noCommittedPlanLost,
                    "\(s.name) applied entry \(e.index) of term \(e.term) where term \(c.term)'s entry was applied")
            }
        } else {
            committed[e.index] = e
            probe?.committed(e.index, now: now)
        }
        let planBefore = s.state.planIndex
        guard e.kind == .normal, !e.data.isEmpty else {
            s.state.apply([], index: e.index)
            return
        }
        let refused = s.state.apply(e.data, index: e.index)
        if s.state.planIndex < planBefore {
            violation(ClusterInvariant.noCommittedPlanLost, "\(s.name)'s plan went back from entry \(planBefore) to \(s.state.planIndex)")
        }
        guard let command = try? ClusterCommand.decode(e.data) else { return }
        if case .setPlan(let plan, _) = command {
            if let w = s.awaiting, w.index == e.index {
                s.awaiting = nil
                if w.term != e.term {
                    s.leaderRound.commitFailed()
                } else if let refused {
                    result.plansRefused += 1
                    note("\(s.name): plan \(e.index) refused: \(refused)")
                } else {
                    result.plansCommitted += 1
                }
            }
            if first && refused == nil {
                lastPlanIndex = e.index
                lastPlanAt = now
                probe?.planCommitted(plan, index: e.index, now: now)
                // At scale the assignments of thousands of nodes would make each trace line a book.
                note("plan \(e.index) committed: " + (options.scale ? "\(plan.assignments.count) nodes" : describe(plan.assignments)))
                checkPlan(plan, index: e.index, term: e.term, state: s.state)
            }
        } else if first {
            note("entry \(e.index): \(short(command))\(refused.map { " (refused: \($0))" } ?? "")")
        }
    }

    func short(_ c: ClusterCommand) -> String {
        switch c {
        case .applyServices(let s): "services applied: \(s.keys.sorted())"
        case .setDemand(let s, let v): "demand \(s) = \(v)"
        case .setDrain(let n, let d): d ? "drain \(n)" : "undrain \(n)"
        default: "\(c)".prefix(80).description
        }
    }

    func describe(_ a: [String: [String: Int]]) -> String {
        a.keys.sorted().map { n in "\(n){" + (a[n] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",") + "}" }
            .joined(separator: " ")
    }

    /// "Nothing runs on a dead, left or drained node once the plan says so", on the plan side: a
    /// committed plan gives nothing to a node drained in the state it is applied to, nor to a node
    /// whose agent had been down (not a graceful restart) longer than SWIM's detection bound
    /// (`detectionBound`) when the leader read the state it planned from.
    mutating func checkPlan(_ plan: Consensus.Plan, index: UInt64, term: UInt64, state: ClusterState) {
        check(ClusterInvariant.noWorkOnDeadOrDrained)
        for node in plan.assignments.keys.sorted() {
            let total = (plan.assignments[node] ?? [:]).values.reduce(0, +)
            guard total > 0 else { continue }
            if state.isDrained(node) {
                violation(
                    ClusterInvariant.noWorkOnDeadOrDrained,
                    "plan \(index) gives \(total) containers to \(node), drained in the state it was applied to")
            }
            guard let p = proposedPlans[index], p.term == term, let a = agent(node), !a.up, let since = a.downSince, !a.downGraceful,
                let leader = leaders[term], let l = agent(leader)
            else { continue }
            // SWIM's bound, counted from when the leader could first observe the node down: its
            // crash, or the leader's own start or thaw (messages held while it was frozen arrive
            // at the thaw, and a fresh instance must join first).
            let from = max(since, l.observingSince)
            // A leader still joining when the node stopped (started within a join's time before
            // it) probes no one until its join settles (seeds 5554 and 5668: the leader started
            // 0.19 and 0.36 s before the crash).
            let c = Self.membership
            let joining = c.joinRetryInterval + c.joinPushPullDelay * c.joinPushPulls
            let bound = detectionBound(l, from: from, to: p.readAt, fresh: l.startedAt + joining >= since)
            var earliest = from + bound
            // Restart is not leave: a node whose record as this leader holds it says it was
            // restarting keeps its work for the dead-node grace, counted from when this leader,
            // leading, first saw it dead (a crash after a restart it could not gossip changes
            // nothing the leader can see).
            if swim.instance(self.index[leader]!)?.member(named: node)?.record.restarting == true {
                earliest = max(earliest, l.leadingSince + bound) + options.deadNodeGrace + options.decisionInterval
            }
            if earliest <= p.readAt {
                violation(
                    ClusterInvariant.noWorkOnDeadOrDrained,
                    "plan \(index) gives \(total) containers to \(node), down since \(fmt(since)), planned at \(fmt(p.readAt))")
            }
        }
    }

    /// How long after a node stops the leader's own SWIM instance holds it dead and confirmed
    /// down (its own probe unanswered), which is when `LeaderRound` moves its work
    /// (docs/simulation.md, "Membership: SWIM, and the bound the checker holds it to"). With
    /// M = N − 1 other members and the leader's Lifeguard local health multiplier at most h over
    /// the interval (IV.A stretches its probe interval, probe timeout and suspicion timeouts by
    /// h + 1):
    ///
    /// - the leader probes the node within two of its rounds (SWIM §4.3: round-robin over an
    ///   order shuffled each round, so the node can be first of one round and last of the next):
    ///   2M − 1 probe intervals;
    /// - that probe fails at the end of its round: one probe interval (direct and indirect);
    /// - the suspicion times out after at most Lifeguard IV.B's Max = 3 · 1.5 · max(1, log10 N)
    ///   · probe interval (fewer with confirmations), and the leader's own probe having failed,
    ///   the node is confirmed down;
    /// - a leader that started (or restarted) after the node stopped, or so shortly before that
    ///   its join was not over, first joins: its join
    ///   retries every second while no server answers, and it probes only after its early
    ///   push-pulls (14 × 0.1 s), though hearsay of the death makes it verify at once.
    ///
    /// All scaled by h + 1, plus 20 ms for the network (at most 4 ms a message) and timers.
    func detectionBound(_ l: ClusterAgent, from: Duration, to: Duration, fresh: Bool) -> Duration {
        let c = Self.membership
        let n = names.count
        var h = 0
        for (at, value) in l.localHealth.reversed() {
            if at <= to { h = max(h, value) }
            if at <= from { break }
        }
        let probes = c.probeInterval * max(1, 2 * (n - 1))
        var bound = (probes + c.suspicionMax(members: n)) * (h + 1)
        if fresh { bound += c.joinRetryInterval + c.joinPushPullDelay * c.joinPushPulls }
        return bound + .milliseconds(20)
    }

    mutating func observeRole(_ s: ClusterAgent) {
        guard let r = s.raft, r.role == .leader else { return }
        check(ClusterInvariant.oneLeaderPerTerm)
        if let l = leaders[r.term] {
            if l != s.name { violation(ClusterInvariant.oneLeaderPerTerm, "\(l) and \(s.name) both lead term \(r.term)") }
            return
        }
        leaders[r.term] = s.name
        s.leadingSince = now
        result.elections += 1
        note("\(s.name) leads term \(r.term)")
    }

    // MARK: Messages

    mutating func receive(_ e: SimulatedNetwork<String, ClusterMessage>.Envelope) {
        receive(e.message, from: e.from, to: e.to)
    }

    /// A message from `peer` (the name its certificate vouches for; a server certificate if it is
    /// one of the servers), admitted or refused by the shells' own rules (`PeerAdmission`) before
    /// any core sees it, as RaftService, AssignmentService and MembershipService do.
    mutating func receive(_ message: ClusterMessage, from peer: String, to recipient: String) {
        guard let a = agent(recipient), a.up else { return }
        let peerIsServer = serverNames.contains(peer)
        switch message {
        case .raft(let m):
            guard a.isServer else { return }
            if options.broken != .trustsClientRaft, let rule = PeerAdmission.raftFrame(peerIsServer: peerIsServer) {
                return refuse(rule)
            }
            guard let members = a.raft?.configuration.members else { return }
            if let rule = PeerAdmission.raftMessage(m, peer: peer, me: a.name, members: members) { return refuse(rule) }
            let leading = measuring(a, .raft)
            tick(a)
            a.raft!.step(m)
            pump(a)
            if leading { probe?.meter.end() }
        case .swim(let m):
            guard PeerAdmission.membership(sender: m.senderName, peer: peer) else { return }
            carryOut(a, swim.receive(index[a.name]!, m, now: now))
            probe?.observeSWIM(index[a.name]!, swim, now: now)
        case .subscribe(let node, let after):
            guard a.isServer else { return }
            if let rule = PeerAdmission.subscription(for: node, peer: peer) { return refuse(rule) }
            let leading = measuring(a, .subscription)
            // Answered on its own (AssignmentService.receive): this subscriber's share, if due.
            if a.feed.subscribe(node, after: after), let due = a.feed.due(for: node, in: a.state) {
                push(due, from: a, to: node)
            }
            if leading { probe?.meter.end() }
        case .assignment(let s):
            // Only from the server this agent follows (AssignmentService.receive).
            if let rule = PeerAdmission.assignment(peer: peer, peerIsServer: peerIsServer, meIsServer: a.isServer, upstream: a.upstream) {
                return refuse(rule)
            }
            guard !a.stopping, a.feed.wants(planIndex: s.planIndex, for: a.name) else { return }
            a.feed.took(s.planIndex)
            deliver(s, to: a)
        }
    }

    mutating func refuse(_ rule: TrustRule) { result.refused[rule.rawValue, default: 0] += 1 }

    /// AssignmentService.planApplied, on the agent's own `AssignmentFeed`: a server's own agent
    /// reads the state; subscribers holding an older plan get a push.
    mutating func planApplied(_ s: ClusterAgent) {
        // A push answering a subscription is the subscription's (counted apart, not per plan).
        let leading = probe?.meter.current != .subscription && measuring(s, .push)
        defer {
            if leading {
                probe?.pushed(planIndex: s.state.planIndex)
                probe?.meter.end()
            }
        }
        let sends = s.feed.planApplied(s.state)
        if let local = sends.local { deliver(local, to: s) }
        for (peer, assignment) in sends.pushes { push(assignment, from: s, to: peer) }
    }

    /// AssignmentService.push: a connection that cannot be made drops the subscriber until it
    /// subscribes again.
    mutating func push(_ assignment: NodeAssignment, from s: ClusterAgent, to peer: String) {
        let reachable = net.canReach(s.name, peer)
        s.feed.pushed(to: peer, index: assignment.planIndex, delivered: reachable)
        guard reachable else { return }
        // A push carries no decision time (AssignmentService.push).
        var a = assignment
        a.decidedAtMilliseconds = nil
        net.send(.assignment(a), from: s.name, to: peer, now: now)
    }

    /// NodeExecutor.assign.
    mutating func deliver(_ s: NodeAssignment, to a: ClusterAgent) {
        a.assignment = s
        a.policy.assigned(s)
        probe?.assigned(index[a.name]!, planIndex: s.planIndex, now: now)
        if options.checkEmptyAssignments, s.services.values.allSatisfy({ $0.count == 0 }) {
            schedule(
                now + options.emptyAssignmentBound,
                .checkEmpty(a.name, a.incarnation, planIndex: s.planIndex, freezes: a.freezes, generation: a.engine.generation))
        }
        wake(a)
    }

    /// "Every live node converges to its assignment within a bound", for the assignment that
    /// gives a node nothing (a drain, a scale to zero): carried out within
    /// `emptyAssignmentBound` unless its plan was decided before the agent started (the adoption
    /// grace holds such a plan: it was made while the agent was away). Decided is the simulation's
    /// own time of the leader's reading, not a wall clock. Skipped when the agent restarted, froze
    /// or lost its daemon meanwhile, or holds another assignment by then (a later empty one is
    /// checked on its own).
    mutating func checkEmpty(_ name: String, incarnation: Int, planIndex: UInt64, freezes: Int, generation: Int) {
        guard let a = agent(name), a.up, a.incarnation == incarnation, !a.frozen, a.freezes == freezes, a.engine.up,
            a.engine.generation == generation, let asg = a.assignment, asg.planIndex == planIndex,
            let p = proposedPlans[planIndex], committed[planIndex]?.term == p.term, p.readAt > a.startedAt
        else { return }
        check(ClusterInvariant.emptyAssignmentCarriedOut)
        let running = a.engine.runningManaged()
        if !running.isEmpty {
            violation(
                ClusterInvariant.emptyAssignmentCarriedOut,
                "\(name) still runs \(running.sorted { $0.key < $1.key }) \(fmt(options.emptyAssignmentBound)) after plan \(planIndex) gave it nothing; "
                    + "the plan was decided at \(fmt(p.readAt)), after the agent started at \(fmt(a.startedAt))")
        }
    }

    // MARK: Events

    mutating func handle(_ e: Event) {
        if let (name, inc) = e.agent {
            guard let a = agent(name), a.up, a.incarnation == inc else { return }
            if a.frozen {
                a.deferred.append(e)
                return
            }
        }
        switch e {
        case .report(let name, let inc):
            let a = agent(name)!
            if !a.stopping { publishRecord(a) }
            after(options.recordInterval, .report(name, inc))
        case .gracefulStop(let name, _):
            // AgentRuntime.stop(leave: false): announceRestart ticks once more after its 300 ms,
            // then everything stops.
            let a = agent(name)!
            carryOut(a, swim.tick(index[name]!, now: now))
            note("\(name) stops to restart")
            crash(a, graceful: true)
            schedule(now + draw(500...3500), .restartAgent(a.name, a.incarnation))
        case .decide(let name, let inc):
            decideMeasured(agent(name)!)
            after(options.decisionInterval, .decide(name, inc))
        case .poke(let name, _):
            let s = agent(name)!
            s.pokePending = false
            decideMeasured(s)
        case .propose(let name, _, let plan, let decision, let readAt):
            let s = agent(name)!
            let leading = measuring(s, .raft)
            propose(s, plan, decision, readAt: readAt)
            if leading { probe?.meter.end() }
        case .executorTick(let name, let inc):
            wake(agent(name)!)
            after(options.executorInterval, .executorTick(name, inc))
        case .subscribe(let name, let inc):
            subscribe(agent(name)!)
            after(options.subscriptionCheck, .subscribe(name, inc))
        case .startPhase(let name, let inc, let token):
            startPhase(agent(name)!, incarnation: inc, token: token)
        case .roundEnd(let name, _, let token):
            roundEnd(agent(name)!, token: token)
        case .pullDone(let name, _, let image):
            let a = agent(name)!
            a.pulls[image] = nil
            if a.engine.up { a.engine.images.insert(image) }
            wake(a)
        case .engineStop(let name, let id, let generation):
            let a = agent(name)!
            if a.engine.stopAndRemove(id, issuedIn: generation) { result.containersStopped += 1 }
            checkUnmanaged(a)
            probe?.engineChanged(index[name]!, a.engine, now: now)
        case .engineCreate(let name, let inc, let token, let service, let hash, let generation):
            let a = agent(name)!
            let spec = services[service]!
            guard a.engine.up, a.engine.generation == generation,
                let id = a.engine.create(
                    service: service, specHash: hash, image: spec.image, cpuMillis: spec.cpuMillicores, memoryBytes: Int(spec.memory))
            else { return }
            if a.up, a.incarnation == inc, a.round?.token == token { a.round!.created.append((id, service)) }
        case .engineStart(let name, _, let id, let service, let crashes, let generation):
            let a = agent(name)!
            switch a.engine.start(id, now: now, crashes: crashes, issuedIn: generation) {
            case .started:
                result.containersStarted += 1
                checkCapacity(a)
                probe?.engineChanged(index[name]!, a.engine, now: now)
            case .failed:
                if crashes { result.startFailures += 1 }
            case .imageMissing:
                note("\(name): start of \(service) failed: image missing")
            case .daemonDown:
                break
            }
            checkUnmanaged(a)
        case .fault:
            injectFault()
            let next = now + draw(300...1300)
            if next < faultEnd { schedule(next, .fault) }
        case .endFaults:
            endFaults()
        case .restartAgent(let name, let inc):
            if let a = agent(name), !a.up, a.incarnation == inc {
                note("\(name) starts again")
                start(a)
            }
        case .thaw(let name, let inc):
            if let a = agent(name), a.up, a.frozen, a.incarnation == inc { thaw(a) }
        case .heal(let epoch):
            if epoch == partitionEpoch {
                net.heal()
                note("partition healed")
            }
        case .lossEnds(let epoch):
            if epoch == lossEpoch { net.faults.loss = 0 }
        case .daemonUp(let name, let generation):
            if let a = agent(name), !a.engine.up, a.engine.generation == generation {
                a.engine.daemonUp()
                note("\(name): dockerd up")
            }
        case .operatorTick:
            operatorTick()
        case .checkEmpty(let name, let inc, let planIndex, let freezes, let generation):
            checkEmpty(name, incarnation: inc, planIndex: planIndex, freezes: freezes, generation: generation)
        case .diskFails:
            diskFails()
        case .diskRepaired(let name):
            diskRepaired(name)
        case .hostile(let until):
            hostileMessage()
            let next = now + .milliseconds(Int64.random(in: 20...150, using: &adversary))
            if next < min(until, faultEnd) { schedule(next, .hostile(until: until)) }
        }
    }

    mutating func thaw(_ a: ClusterAgent) {
        a.frozen = false
        a.observingSince = now
        net.thaw(a.name, now: now)
        a.lastTick = now  // a frozen process's timers fire late, all at once
        swim.wake(index[a.name]!, now: now)
        let deferred = a.deferred
        a.deferred = []
        for e in deferred { schedule(now, e) }
        note("\(a.name) thawed")
    }

    /// NodeExecutor's report (AgentRuntime: `membership.updateRecord { $0.running = ... }`): what
    /// runs here into the agent's own SWIM record, gossiped as a delta when it changed.
    mutating func publishRecord(_ a: ClusterAgent) {
        if let running = a.engine.up ? a.engine.runningManaged() : nil { a.lastRunning = running }
        let i = index[a.name]!
        guard var r = swim.instance(i)?.record else { return }
        r.running = a.lastRunning
        r.restarting = a.restarting
        // Four services fit the record's bounds; were one refused, the record would stay as it was.
        let e = try? swim.step(i, now: now) { (x: inout SWIMInstance) throws(NodeRecordError) in try x.updateRecord(r, now: now) }
        if let e { carryOut(a, e) }
    }

    /// MembershipService.execute: the instance's messages go out on the network, its verdicts
    /// into the trace; the leader's local health is kept for the detection bound.
    mutating func carryOut(_ a: ClusterAgent, _ e: SWIMHosts.Effects) {
        for (to, message, size) in e.messages { net.send(.swim(message), from: a.name, to: names[to], size: size, now: now) }
        for event in e.events {
            guard case .memberChanged(let c) = event else { continue }
            if c.status == .dead || c.status == .left || c.previous == .dead {
                note("\(a.name) sees \(c.name) \(c.status)")
            }
            // AgentRuntime: MembershipService.onMemberStatusChanged pokes the decision loop.
            if a.isServer, !a.pokePending {
                a.pokePending = true
                after(.zero, .poke(a.name, a.incarnation))
            }
        }
        if a.isServer, let h = swim.instance(index[a.name]!)?.localHealth, h != (a.localHealth.last?.value ?? 0) {
            a.localHealth.append((now, h))
            if a.localHealth.count > 4096 { a.localHealth.removeFirst(a.localHealth.count - 4096) }
        }
    }

    /// AssignmentService.check: the servers this agent's membership holds alive or suspect, and
    /// `Subscription` says whether to subscribe now and to whom.
    mutating func subscribe(_ a: ClusterAgent) {
        guard !a.stopping else { return }
        let view = swim.instance(index[a.name]!)
        let servers = serverNames.filter { name in
            guard let m = view?.member(named: name) else { return false }
            return m.status == .alive || m.status == .suspect
        }
        guard let up = a.subscription.check(servers: servers, now: now, pick: { Int.random(in: 0..<$0, using: &rng) }) else { return }
        // A connection that cannot be made fails the send (AssignmentService.subscribe).
        guard net.canReach(a.name, up) else {
            a.subscription.sendFailed(now: now)
            return
        }
        net.send(.subscribe(node: a.name, after: a.feed.lastIndex), from: a.name, to: up, now: now)
    }

    // MARK: The leader's decision loop (DecisionLoop.step)

    /// One decision round, its CPU charged to the leader when the scale mode measures.
    mutating func decideMeasured(_ s: ClusterAgent) {
        let leading = measuring(s, .decide)
        let before = s.deciding
        decide(s)
        if leading { probe?.meter.end(roundPlanned: !before && s.deciding) }
    }

    mutating func decide(_ s: ClusterAgent) {
        guard let r = s.raft, r.role == .leader else {
            s.leaderRound.follow()
            s.awaiting = nil
            return
        }
        if let w = s.awaiting {
            guard now >= w.deadline else { return }
            // The proposal timed out: the next round plans from the committed state.
            s.awaiting = nil
            s.leaderRound.commitFailed()
        }
        guard !s.deciding else { return }
        let state = s.state
        guard !state.services.isEmpty else { return }
        // The agent's own round (ControlPlane.LeaderRound), on this server's member view.
        let outcome = s.leaderRound.step(
            state: state, members: memberViews(s), demand: LeaderRound.demand(state, polled: [:]), now: now)
        guard case .commit(var commit) = outcome.verdict else { return }
        if options.plansCarryBase { commit.plan.basedOnIndex = state.appliedIndex }
        let decision = commit.decision(timestampMilliseconds: wall(s), planning: .zero)
        // Between reading the state and proposing, the loop awaits (membership, the demand
        // sources, the Raft actor): other proposals, an operator's drain say, can enter the log
        // in that time.
        s.deciding = true
        after(
            .microseconds(Int64.random(in: 500...20_000, using: &rng)), .propose(s.name, s.incarnation, commit.plan, decision, readAt: now))
    }

    mutating func propose(_ s: ClusterAgent, _ plan: Consensus.Plan, _ decision: Consensus.Decision, readAt: Duration) {
        s.deciding = false
        guard s.raft?.role == .leader, let data = try? ClusterCommand.setPlan(plan, decision).encoded() else {
            s.leaderRound.commitFailed()
            return
        }
        tick(s)
        guard let (index, term) = try? s.raft!.propose(data) else {
            s.leaderRound.commitFailed()
            return
        }
        s.awaiting = (index, term, now + .seconds(3))
        proposedPlans[index] = (term, readAt)
        pump(s)
    }

    /// What `MembershipService.members()` gives the leader: its own SWIM instance's members
    /// (`MemberView.members(of:)`, the agent's own mapping), records as gossiped.
    func memberViews(_ s: ClusterAgent) -> [MemberView] {
        var members = swim.instance(index[s.name]!).map(MemberView.members(of:)) ?? []
        if options.broken == .ignoresDeadMembers {
            for i in members.indices {
                members[i].status = .alive
                members[i].confirmedDown = nil
            }
        }
        return members
    }

    // MARK: The executor (NodeExecutor.round, ReconcilerShell.reconcileOnce)

    mutating func wake(_ a: ClusterAgent) {
        guard a.up, !a.stopping else { return }
        if a.round != nil {
            a.wakeWanted = true
            return
        }
        beginRound(a, loops: 0)
    }

    mutating func beginRound(_ a: ClusterAgent, loops: Int) {
        guard !a.stopping, let asg = a.assignment else { return }
        a.wakeWanted = false
        // The agent's own policy (ControlPlane.ExecutorPolicy): the adoption grace, and which
        // services wait for their image.
        let (used, wanted) = ExecutorPolicy.images(asg)
        var images: [String: ExecutorPolicy.Image] = [:]
        for image in used { images[image] = a.engine.images.contains(image) ? .ready : .pending }
        let round = a.policy.round(asg, images: images, now: now)
        if round.hold { return }
        guard let observed = a.engine.list(now: now) else { return }  // dockerd down: the next tick retries
        for image in wanted.sorted() where images[image] != .ready && a.pulls[image] == nil {
            let done = now + draw(300...2500)
            a.pulls[image] = done
            schedule(done, .pullDone(a.name, a.incarnation, image: image))
        }
        let d = round.desired
        var desired: [String: DesiredService] = [:]
        for (name, spec) in d.specs {
            desired[name] = DesiredService(
                count: d.counts[name] ?? 0, specHash: spec.containerHash, canStart: !d.held.contains(name),
                keep: Set(d.keep[name]?.specs ?? []), keepCount: d.keep[name]?.count ?? 0, stopDelay: d.stopDelays[name] ?? .zero,
                hostPorts: Set(spec.fixedHostPorts))
        }
        let plan = a.reconciler.decide(desired: desired, observed: observed, now: now)
        guard !plan.isEmpty else { return }
        a.roundToken += 1
        let token = a.roundToken
        let generation = a.engine.generation
        var stopsDone = now, createsDone = now
        for action in plan.stops {
            switch action {
            case .stop(let id, _):
                let at = now + draw(50...900)
                stopsDone = max(stopsDone, at)
                schedule(at, .engineStop(a.name, id: id, generation: generation))
            case .remove(let id, _):
                let at = now + draw(5...60)
                stopsDone = max(stopsDone, at)
                schedule(at, .engineStop(a.name, id: id, generation: generation))
            // The simulated agents keep no standby pool (their desired state asks for none).
            case .start, .startStandby, .unpauseStandby, .createStandby, .createWarmStandby: break
            }
        }
        var starts: [(String, String)] = []
        for action in plan.starts {
            guard case .start(let service, let hash) = action else { continue }
            starts.append((service, hash))
            let at = now + draw(10...150)
            createsDone = max(createsDone, at)
            schedule(at, .engineCreate(a.name, a.incarnation, token: token, service: service, hash: hash, generation: generation))
        }
        a.round = ClusterAgent.Round(token: token, loops: loops, nonEmpty: true, starts: starts, generation: generation)
        // Stops before starts: the starts begin once every stop is done (the creates overlap them).
        let phase = options.broken == .startsBeforeStops ? createsDone : max(stopsDone, createsDone)
        schedule(phase + .microseconds(1), .startPhase(a.name, a.incarnation, token: token))
    }

    mutating func startPhase(_ a: ClusterAgent, incarnation: Int, token: Int) {
        guard let r = a.round, r.token == token else { return }
        var doneAt = now
        for (id, service) in r.created {
            let at = now + draw(50...600)
            doneAt = max(doneAt, at)
            let crashes = !faultsOver && rng.chance(0.03)
            schedule(at, .engineStart(a.name, incarnation, id: id, service: service, crashes: crashes, generation: r.generation))
        }
        schedule(doneAt + .microseconds(1), .roundEnd(a.name, incarnation, token: token))
    }

    mutating func roundEnd(_ a: ClusterAgent, token: Int) {
        guard let r = a.round, r.token == token else { return }
        a.round = nil
        // Up to five reconcile rounds while there is work (NodeExecutor.round), then wait.
        if r.loops < 4 {
            beginRound(a, loops: r.loops + 1)
            if a.round != nil { return }
        }
        if a.wakeWanted { wake(a) }
    }

    mutating func checkCapacity(_ a: ClusterAgent) {
        check(ClusterInvariant.capacity)
        let (cpu, memory) = a.engine.reserved()
        if cpu > a.cpuMillis || memory > a.memoryBytes {
            violation(
                ClusterInvariant.capacity,
                "\(a.name) runs \(cpu)m of \(a.cpuMillis)m CPU, \(memory >> 20) of \(a.memoryBytes >> 20) MiB: \(a.engine.runningManaged().sorted { $0.key < $1.key })"
            )
        }
    }

    mutating func checkUnmanaged(_ a: ClusterAgent) {
        check(ClusterInvariant.unmanagedUntouched)
        if let t = a.engine.touchedUnmanaged.first {
            violation(ClusterInvariant.unmanagedUntouched, "\(a.name): \(t)")
            stopped = true
        }
    }

    // MARK: The operator

    mutating func operatorTick() {
        if options.scale {
            scaleOperatorTick()
            return
        }
        // After the faults the operator goes on only until the services are declared: its
        // declaration may have been proposed to a leader that crashed before committing it
        // (seeds 3132 and 8180 of 1-10000 ended with none declared, a leader in place for 24 s).
        defer { if !faultsOver || agents.allSatisfy({ $0.state.services.isEmpty }) { after(draw(300...900), .operatorTick) } }
        guard let leader = agents.first(where: { $0.up && !$0.frozen && $0.raft?.role == .leader }) else { return }
        var command: ClusterCommand?
        if leader.state.services.isEmpty {
            command = .applyServices(Self.services)
        } else if faultsOver {
            return
        } else if let name = Self.demandServices.first(where: { leader.state.demand[$0] == nil }) {
            command = .setDemand(service: name, value: Double(Int.random(in: Self.demandRange[name]!, using: &rng)))
        } else {
            let roll = Int.random(in: 0..<100, using: &rng)
            if roll < 70 {
                let name = Self.demandServices[Int.random(in: 0..<Self.demandServices.count, using: &rng)]
                let range = Self.demandRange[name]!
                let old = Int(leader.state.demand[name] ?? 0)
                let v = min(range.upperBound, max(range.lowerBound, old + Int.random(in: -40...40, using: &rng)))
                command = .setDemand(service: name, value: Double(v))
            } else if let drained = leader.state.drainedNodes.first {
                command = .setDrain(node: drained, drained: false)
            } else {
                command = .setDrain(node: names[Int.random(in: 0..<names.count, using: &rng)], drained: true)
            }
        }
        guard let command, let data = try? command.encoded() else { return }
        tick(leader)
        if (try? leader.raft!.propose(data)) != nil {
            result.operatorActions += 1
            pump(leader)
        }
    }

    // MARK: Faults

    mutating func count(_ f: ClusterFault) { result.faults[f.rawValue, default: 0] += 1 }

    mutating func pick(_ filter: (ClusterAgent) -> Bool) -> ClusterAgent? {
        let candidates = agents.filter(filter)
        guard !candidates.isEmpty else { return nil }
        return candidates[Int.random(in: 0..<candidates.count, using: &rng)]
    }

    mutating func injectFault() {
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<12:
            guard let a = pick({ $0.up }) else { return }
            count(.crash)
            note("\(a.name) crashes")
            crash(a, graceful: false)
            schedule(now + draw(2000...7000), .restartAgent(a.name, a.incarnation))
        case 12..<22:
            guard let a = pick({ $0.up }) else { return }
            count(.restart)
            note("\(a.name) killed and restarted")
            crash(a, graceful: false)
            schedule(now + draw(50...400), .restartAgent(a.name, a.incarnation))
        case 22..<32:
            guard let a = pick({ $0.up && !$0.frozen && !$0.stopping }) else { return }
            count(.gracefulRestart)
            note("\(a.name) restarts gracefully")
            // SIGTERM with restart (AgentRuntime.stop(leave: false)): the executor and the
            // subscription stop, the record says "restarting" (announceRestart), and the agent
            // stops 300 ms later, the gossip having had that moment on the wire.
            a.stopping = true
            a.restarting = true
            publishRecord(a)
            a.round = nil
            schedule(now + .milliseconds(300), .gracefulStop(a.name, a.incarnation))
        case 32..<42:
            guard let a = pick({ $0.up && !$0.frozen }) else { return }
            count(.freeze)
            note("\(a.name) frozen")
            a.frozen = true
            a.freezes += 1
            net.freeze(a.name)
            schedule(now + draw(300...3000), .thaw(a.name, a.incarnation))
        case 42..<54:
            count(.partition)
            var sideA: [String] = [], sideB: [String] = []
            for n in names { if rng.chance(0.5) { sideA.append(n) } else { sideB.append(n) } }
            net.partition([sideA, sideB])
            partitionEpoch += 1
            note("partition \(sideA) | \(sideB)")
            schedule(now + draw(800...4000), .heal(partitionEpoch))
        case 54..<64:
            count(.loss)
            net.faults.loss = Double(Int.random(in: 5...35, using: &rng)) / 100
            lossEpoch += 1
            note("message loss \(net.faults.loss)")
            schedule(now + draw(800...4000), .lossEnds(lossEpoch))
        case 64..<72:
            guard let a = pick({ _ in true }) else { return }
            count(.clockSkew)
            a.skewMilliseconds = Int64.random(in: -3000...3000, using: &rng)
            note("\(a.name)'s clock off by \(a.skewMilliseconds) ms")
        case 72..<84:
            guard let a = pick({ $0.engine.up }) else { return }
            count(.dockerdDown)
            note("\(a.name): dockerd restarts")
            a.engine.daemonDown(now: now)
            schedule(now + draw(500...4000), .daemonUp(a.name, a.engine.generation))
        default:
            guard let a = pick({ !$0.engine.images.isEmpty }) else { return }
            let image = a.engine.images.sorted()[Int.random(in: 0..<a.engine.images.count, using: &rng)]
            count(.imageMissing)
            note("\(a.name): image \(image) removed")
            a.engine.images.remove(image)
        }
    }

    /// The last fault: every agent up and thawed, the network whole, every daemon up.
    mutating func endFaults() {
        faultsOver = true
        net.heal()
        net.faults.loss = 0
        partitionEpoch += 1
        lossEpoch += 1
        for a in agents {
            if !a.engine.up { a.engine.daemonUp() }
            a.diskFailing = false  // the operator replaced any broken disk
            if !a.up { start(a) } else if a.frozen { thaw(a) }
        }
        note("faults end")
    }

    // MARK: At the end

    /// Why a node may not run what it should: crash-loop back-offs, images, the daemon.
    func diagnosis(_ a: ClusterAgent) -> String {
        var out: [String] = []
        for (service, loop) in a.reconciler.crashLoops.sorted(by: { $0.key < $1.key }) {
            out.append("\(service) crash-looping (\(loop.failures) failures, retry at \(fmt(loop.retryAt)))")
        }
        if !a.engine.up { out.append("dockerd down") }
        if !a.up { out.append("agent down") } else if a.frozen { out.append("agent frozen") }
        if !a.pulls.isEmpty { out.append("pulling \(a.pulls.keys.sorted())") }
        return out.isEmpty ? "" : "; " + out.joined(separator: ", ")
    }

    mutating func finalChecks() {
        let servers = agents.filter { $0.isServer && $0.up }
        guard let reference = servers.max(by: { ($0.state.appliedIndex, $0.name) < ($1.state.appliedIndex, $1.name) }) else { return }
        let state = reference.state
        // No committed plan lost: every server holds the last committed plan.
        for s in servers {
            check(ClusterInvariant.noCommittedPlanLost)
            if s.state.planIndex != lastPlanIndex {
                violation(
                    ClusterInvariant.noCommittedPlanLost,
                    "\(s.name) holds plan \(s.state.planIndex) (applied to \(s.state.appliedIndex)); plan \(lastPlanIndex) was committed")
            }
        }
        guard !state.services.isEmpty else {
            violation(ClusterInvariant.convergence, "no services were ever declared (no leader for the operator?)")
            return
        }
        // Convergence: every live node runs its share of the last plan.
        if now - lastPlanAt < .seconds(2) {
            violation(ClusterInvariant.convergence, "the plan was still changing at the end (plan \(lastPlanIndex) at \(fmt(lastPlanAt)))")
        }
        for a in agents {
            check(ClusterInvariant.convergence)
            let want = (state.plan.assignments[a.name] ?? [:]).filter { $0.value > 0 }
            let have = a.engine.runningManaged()
            if a.assignment?.planIndex != state.planIndex {
                violation(
                    ClusterInvariant.convergence,
                    "\(a.name) has assignment \(a.assignment.map { "\($0.planIndex)" } ?? "none"), not \(state.planIndex)")
            } else if want != have {
                violation(
                    ClusterInvariant.convergence,
                    "\(a.name) runs \(have.sorted { $0.key < $1.key }), plan \(state.planIndex) says \(want.sorted { $0.key < $1.key })"
                        + diagnosis(a))
            }
            // Nothing on a drained node once the plan says so (the node side).
            if state.isDrained(a.name) {
                check(ClusterInvariant.noWorkOnDeadOrDrained)
                if !have.isEmpty { violation(ClusterInvariant.noWorkOnDeadOrDrained, "drained \(a.name) still runs \(have)") }
            }
            checkUnmanaged(a)
        }
        // Priority-1 demand met whenever capacity allows: the live, undrained capacity less one
        // container of the largest size per node (what packing can strand) covers it.
        var cpuFree = 0, memoryFree = 0
        for a in agents where !state.isDrained(a.name) {
            cpuFree += a.cpuMillis - 500
            memoryFree += a.memoryBytes - (512 << 20)
        }
        var wanted: [String: Int] = [:]
        var cpuNeeded = 0, memoryNeeded = 0
        for name in state.services.keys.sorted() {
            let spec = state.services[name]!
            guard spec.priority == 1, let demand = state.demand[name], let per = spec.demand?.perContainer else { continue }
            let n = min(spec.max, max(spec.min, Int((demand / per).rounded(.up))))
            wanted[name] = n
            cpuNeeded += n * spec.cpuMillicores
            memoryNeeded += n * Int(spec.memory)
        }
        if cpuNeeded <= cpuFree && memoryNeeded <= memoryFree {
            for name in wanted.keys.sorted() {
                check(ClusterInvariant.priorityOneDemand)
                let running = agents.reduce(0) { $0 + ($1.engine.runningManaged()[name] ?? 0) }
                if running < wanted[name]! {
                    violation(ClusterInvariant.priorityOneDemand, "\(name): \(running) running, demand needs \(wanted[name]!)")
                }
            }
        }
    }
}

extension RaftNode {
    var timeoutUntilNext: Duration? { timeUntilNextTimeout }
}
