import Consensus

/// What this node does with its assignment, pure (docs/scheduling.md): whether a round carries it
/// out or holds (the adoption grace after a restart), and the desired set handed to the
/// reconciler (counts, the services held back for their image, the containers a rollout keeps,
/// the planned stops' delays). `NodeExecutor` is its shell: it pulls images, runs the reconciler
/// against the local Docker Engine and reports what serves.
///
/// Time comes in as `now`, a `Duration` since the caller's epoch (`AgentClock`), and the agent's
/// start as the same reading plus the wall clock then (a plan's decision time is the leader's
/// wall clock).
public struct ExecutorPolicy: Sendable {
    /// After the agent starts, an assignment that gives this node nothing is not carried out for
    /// this long if its plan was decided before the agent started: such a plan was made while the
    /// agent was away (restarting); stopping on it would throw away the containers the agent
    /// should adopt, only to start them again a moment later when the leader sees the node back
    /// (static stability). A plan decided after the start is obeyed at once: a scale-to-zero right
    /// after a restart is the operator's, not an artefact of the absence.
    public var adoptionGrace: Duration
    /// When the agent started: monotonic (the caller's epoch) and wall clock (ms since 1970).
    public let startedAt: Duration
    public let startedAtWallMilliseconds: Int64
    /// Assignments received since the start.
    public private(set) var received = 0
    /// Whether the current assignment's plan may have been decided before this agent started.
    public private(set) var predatesStart = true
    /// The plan index of the first assignment received since the start: the plan committed when
    /// this agent came up (or later). A plan of a higher index was committed after that one had
    /// reached the running agent, so after its start, whatever any clock says.
    public private(set) var firstPlanIndex: UInt64?
    /// Whether the last round held an empty assignment (to say so once in the log).
    public private(set) var holdingEmpty = false

    public static let defaultAdoptionGrace: Duration = .seconds(10)

    public init(startedAt: Duration, startedAtWallMilliseconds: Int64, adoptionGrace: Duration = defaultAdoptionGrace) {
        self.startedAt = startedAt
        self.startedAtWallMilliseconds = startedAtWallMilliseconds
        self.adoptionGrace = adoptionGrace
    }

    /// A new assignment arrived (it replaces the previous one).
    public mutating func assigned(_ a: NodeAssignment) {
        received += 1
        if firstPlanIndex == nil { firstPlanIndex = a.planIndex }
        predatesStart = Self.predatesStart(a, firstPlanIndex: firstPlanIndex ?? a.planIndex, startedAtWallMilliseconds: startedAtWallMilliseconds)
    }

    /// Whether `a` may carry a plan decided before the agent started. By the Raft index first: a
    /// plan committed after the first one this agent received (`firstPlanIndex`) was decided
    /// while it ran, and is obeyed at once. Only the plan that was current when the agent came
    /// up (or an older one, pushed late) can predate the start; for it, the plan's decision time
    /// (a server reads it from its replicated state) against the start, when there is one.
    /// Comparing the leader's wall clock with ours for every plan held a drain decided after a
    /// restart for the whole grace whenever the leader's clock was behind (found by
    /// `microscale-sim cluster --check-empty-assignments`, seeds 14, 147, 167, 173).
    public static func predatesStart(_ a: NodeAssignment, firstPlanIndex: UInt64, startedAtWallMilliseconds: Int64) -> Bool {
        if a.planIndex > firstPlanIndex { return false }
        if let decided = a.decidedAtMilliseconds { return decided < startedAtWallMilliseconds }
        return true
    }

    /// Whether a round at `now` holds `a` (the current assignment) instead of carrying it out: it
    /// gives this node nothing, its plan may predate the start, and the grace has not passed.
    public func holds(_ a: NodeAssignment, now: Duration) -> Bool {
        let nothing = a.services.values.allSatisfy { $0.count == 0 }
        return nothing && predatesStart && now - startedAt < adoptionGrace
    }

    /// Where an image stands on this node (the shell's puller says).
    public enum Image: Sendable, Hashable {
        case ready
        /// Being pulled, or not asked about yet.
        case pending
        /// The last pull failed, with the registry's reason.
        case failed(reason: String)
    }

    /// The images `a` names: every service's (`used`: a failing one keeps being retried while
    /// some service uses it) and those of services with containers here (`wanted`: pulled now).
    public static func images(_ a: NodeAssignment) -> (used: Set<String>, wanted: Set<String>) {
        (Set(a.services.values.map(\.spec.image)), Set(a.services.values.filter { $0.count > 0 }.map(\.spec.image)))
    }

    /// What the reconciler is to make true on this node.
    public struct Desired: Sendable, Equatable {
        /// Every service of the assignment with its spec (a count of 0 included: its containers stop).
        public var specs: [String: Consensus.ServiceSpec]
        public var counts: [String: Int]
        /// Services none of whose containers may start yet: their image is not here.
        public var held: Set<String>
        /// Of those, the ones whose image failed to pull, with the registry's reason.
        public var pullFailures: [String: String]
        /// Per service under a rolling update: running containers of these spec hashes to keep.
        public var keep: [String: NodeAssignment.Kept]
        /// Per service: how long a serving container is withdrawn before a planned stop.
        public var stopDelays: [String: Duration]
        /// Per service: standby containers to keep created here (`standby(_:per:)`).
        public var standby: [String: Int] = [:]
        /// Per service: how many of those are warm, started and paused (`warm(_:pool:budget:)`).
        public var warmStandby: [String: Int] = [:]
    }

    /// One round's decision.
    public struct Round: Sendable, Equatable {
        /// Carry nothing out this round (the adoption grace): the desired set is still handed over.
        public var hold: Bool
        /// This round begins a hold (the log says so once).
        public var startsHolding: Bool
        public var desired: Desired
    }

    /// A round at `now` for assignment `a`, with where each image stands, keeping `standby`
    /// standby containers per priority-1 service (`standby(_:per:)`), as many of them warm as
    /// `warmStandbyMemory` bytes hold (`warm(_:pool:budget:)`).
    public mutating func round(
        _ a: NodeAssignment, images: [String: Image], now: Duration, standby: Int = 0, warmStandbyMemory: Int64 = 0
    ) -> Round {
        let hold = holds(a, now: now)
        let starts = hold && !holdingEmpty
        holdingEmpty = hold
        var desired = Self.desired(a, images: images)
        desired.standby = Self.standby(a, per: standby)
        desired.warmStandby = Self.warm(a, pool: desired.standby, budget: warmStandbyMemory)
        return Round(hold: hold, startsHolding: starts, desired: desired)
    }

    /// How many of each service's standby `pool` are warm (started and paused, docs/scheduling.md,
    /// "Warm standbys"): a paused container holds its memory, so the sum of the services' memory
    /// limits over the warm standbys stays within `budget` (`--warm-standby-memory`, which the
    /// node keeps out of the capacity it advertises). One per service per pass, services in name
    /// order, so every pooled service gets a warm standby before any gets a second; a service
    /// with fixed host ports gets none (a started standby would hold the ports). Beyond the
    /// budget the pool stays created (cold).
    public static func warm(_ a: NodeAssignment, pool: [String: Int], budget: Int64) -> [String: Int] {
        guard budget > 0 else { return [:] }
        var left = UInt64(budget)
        var out: [String: Int] = [:]
        let candidates = pool.filter { $0.value > 0 && a.services[$0.key].map { $0.spec.fixedHostPorts.isEmpty } == true }
            .keys.sorted()
        var placed = true
        while placed {
            placed = false
            for name in candidates {
                guard let memory = a.services[name]?.spec.memory, memory > 0, memory <= left,
                    out[name, default: 0] < pool[name, default: 0]
                else { continue }
                left -= memory
                out[name, default: 0] += 1
                placed = true
            }
        }
        return out
    }

    /// The standby pool of `a` (docs/scheduling.md, "Standby containers"): `per` standby
    /// containers for each priority-1 service, those a demand step must start fast (the planner
    /// preempts lower priorities for them), on a node the plan gives some work. A node given
    /// nothing keeps none: a drained node (the plan moves all its work away) or one the cluster
    /// does not need, so the pool sits only where the planner places work, and a drain removes it
    /// with the rest. A service under a rolling update keeps none while the update runs (its
    /// containers are being replaced).
    public static func standby(_ a: NodeAssignment, per: Int) -> [String: Int] {
        guard per > 0, a.services.values.contains(where: { $0.count > 0 }) else { return [:] }
        var out: [String: Int] = [:]
        for (name, s) in a.services where s.spec.priority == 1 && a.keep[name] == nil { out[name] = per }
        return out
    }

    /// The desired set of `a`: a service with containers here whose image is not ready starts
    /// none this round (its pull runs in the background).
    public static func desired(_ a: NodeAssignment, images: [String: Image]) -> Desired {
        var held: Set<String> = []
        var failures: [String: String] = [:]
        for (name, s) in a.services where s.count > 0 {
            switch images[s.spec.image] {
            case .ready?: break
            case .failed(let reason)?:
                held.insert(name)
                failures[name] = reason
            case .pending?, nil: held.insert(name)
            }
        }
        return Desired(
            specs: a.services.mapValues(\.spec), counts: a.services.mapValues(\.count), held: held, pullFailures: failures,
            keep: a.keep, stopDelays: a.services.mapValues { .milliseconds($0.spec.effectiveStopDelayMilliseconds) })
    }
}
