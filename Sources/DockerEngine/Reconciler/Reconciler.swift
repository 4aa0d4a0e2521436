/// The node reconciler's decision, pure: desired counts per service and the containers observed on
/// the local Docker Engine in, the actions to take out. It never reads a clock or talks to Docker; the
/// shell (`ReconcilerShell`) lists containers, passes the time and executes what comes back.

/// What the planner wants on this node for one service.
public struct DesiredService: Sendable, Hashable {
    public var count: Int
    /// A hash of everything that makes a container of this service (image, command, limits...). A
    /// running container with another hash is replaced.
    public var specHash: String
    /// False while the service's image is not on the node (being pulled, or its pull failed): its
    /// running containers are kept and stopped as usual, but none is started.
    public var canStart: Bool
    /// A rolling update (docs/rollouts.md): up to `keepCount` running containers of the hashes in
    /// `keep` are kept besides `count` (never started); the rest of them are stopped as usual. When
    /// `keep` holds `specHash` itself (a change made mid-rollout back to a spec still running),
    /// containers of the desired spec beyond `count` are kept under the same budget.
    public var keep: Set<String>
    public var keepCount: Int
    /// How long a serving container stopped for a planned reason is withdrawn from the endpoints
    /// before it is stopped (`stop_delay`, Withdrawals); zero stops at once.
    public var stopDelay: Duration
    /// Host ports its containers hold fixed (`ports` with `host:`, or every port on the host
    /// network): a start that needs one waits while a withdrawn container still holds it.
    public var hostPorts: Set<Int>
    /// Standby containers to keep created (not started) for this service on this node, so a
    /// demand step starts them rather than creating containers on its critical path
    /// (docs/scheduling.md, "Standby containers"). Zero keeps none (and removes any there is).
    public var standby: Int
    /// How many of the `standby` pool are warm: created, started and then paused (`docker pause`,
    /// the cgroup freezer), so a demand step unpauses them rather than starting them
    /// (docs/scheduling.md, "Warm standbys"). The rest of the pool stays created. A service with
    /// fixed host ports keeps none warm: a started standby would hold the ports its running
    /// containers need.
    public var warmStandby: Int
    public init(
        count: Int, specHash: String, canStart: Bool = true, keep: Set<String> = [], keepCount: Int = 0, stopDelay: Duration = .zero,
        hostPorts: Set<Int> = [], standby: Int = 0, warmStandby: Int = 0
    ) {
        self.hostPorts = hostPorts
        self.standby = standby
        self.warmStandby = warmStandby
        self.count = count
        self.specHash = specHash
        self.canStart = canStart
        self.keep = keep
        self.keepCount = keepCount
        self.stopDelay = stopDelay
    }
}

/// One container as Docker reported it, reduced to plain values.
public struct ObservedContainer: Sendable, Hashable {
    public enum State: Sendable, Hashable {
        /// Running or restarting: it holds its reservation.
        case running
        /// Paused (frozen by the cgroup freezer): it holds its memory and uses no CPU. A warm
        /// standby, else a container the reconciler stops (it never leaves one of its own frozen).
        case paused
        /// Created but never started: holds nothing but is ours to finish or clean up.
        case created
        /// Exited or dead.
        case exited
        /// Being removed by the daemon already.
        case removing
    }
    public var id: String
    public var labels: [String: String]
    public var state: State
    /// For an exited container: how long it ran before exiting (StartedAt to FinishedAt), if known.
    public var ranFor: Duration?
    /// Docker's health state, when the container has a health check (the service's `health.command`
    /// or the image's own HEALTHCHECK); nil when it has none.
    public var health: Health?

    public enum Health: Sendable, Hashable {
        case starting, healthy, unhealthy

        /// From the list answer's Status text: "Up 3 minutes (healthy)", "(health: starting)",
        /// "(unhealthy)" (the Engine API prints the health state there, so no inspect is needed).
        public static func fromEngineStatus(_ status: String?) -> Health? {
            guard let status else { return nil }
            if status.contains("(unhealthy)") { return .unhealthy }
            if status.contains("(healthy)") { return .healthy }
            if status.contains("(health: starting)") { return .starting }
            return nil
        }
    }

    public init(id: String, labels: [String: String], state: State, ranFor: Duration? = nil, health: Health? = nil) {
        self.id = id
        self.labels = labels
        self.state = state
        self.ranFor = ranFor
        self.health = health
    }

    /// Serving: running, and healthy if it has a health check. Only these count toward demand met.
    public var isServing: Bool { state == .running && (health == nil || health == .healthy) }

    public var isManaged: Bool { labels[MicroscaleLabel.managed] == "true" }
    /// A standby container waiting to be started: created by the reconciler ahead of need
    /// (`MicroscaleLabel.standby`) and never started (cold), or started and paused (warm). It is
    /// not running for the plan: a cold one holds nothing, a warm one holds memory the node keeps
    /// out of the capacity it advertises (`--warm-standby-memory`). Docker labels cannot change,
    /// so a standby that is running (unpaused by a step) is an ordinary container of its service.
    public var isStandby: Bool { (state == .created || state == .paused) && labels[MicroscaleLabel.standby] == "true" }
    public var service: String? { labels[MicroscaleLabel.service] }
    public var node: String? { labels[MicroscaleLabel.node] }
    public var specHash: String? { labels[MicroscaleLabel.spec] }

    /// Maps the Engine API's State string ("running", "exited", ...).
    public static func state(fromEngine s: String) -> State {
        switch s {
        case "running", "restarting": .running
        case "paused": .paused
        case "created": .created
        case "removing": .removing
        default: .exited
        }
    }
}

/// What the shell does, in the order of `ReconcilePlan.actions`.
public enum ReconcileAction: Sendable, Hashable {
    /// Stop (SIGTERM, then SIGKILL after the stop timeout) and remove.
    case stop(id: String, service: String)
    /// Remove an exited or never-started container.
    case remove(id: String, service: String)
    /// Create and start one container of the service with this spec hash.
    case start(service: String, specHash: String)
    /// Start a standby container of the service (created earlier, of the desired spec): a start
    /// with no create before it.
    case startStandby(id: String, service: String)
    /// Unpause a warm standby of the service (started and paused earlier, of the desired spec):
    /// the start of a warm standby.
    case unpauseStandby(id: String, service: String)
    /// Create one standby container of the service with this spec hash, and leave it unstarted.
    case createStandby(service: String, specHash: String)
    /// Create one standby container of the service with this spec hash, start it and pause it.
    case createWarmStandby(service: String, specHash: String)

    public var service: String {
        switch self {
        case .stop(_, let s), .remove(_, let s), .start(let s, _), .startStandby(_, let s), .unpauseStandby(_, let s),
            .createStandby(let s, _), .createWarmStandby(let s, _):
            s
        }
    }
}

public struct ReconcilePlan: Sendable, Hashable {
    /// Stops and removals: they free room and must be done before `starts` begin (docs/ARCHITECTURE.md, Principles 3).
    public var stops: [ReconcileAction] = []
    public var starts: [ReconcileAction] = []
    /// Standby containers to create (`createStandby`), after the starts: refilling the pool is
    /// never on a step's critical path.
    public var standby: [ReconcileAction] = []
    /// Services held back because their containers keep exiting, and until when.
    public var crashLooping: [String: CrashLoop] = [:]
    /// Containers left alone because they are not ours (no managed label, or another node's).
    public var ignored: Int = 0
    /// Running containers stopped because Docker reports them unhealthy.
    public var unhealthy: Int = 0
    /// Containers withdrawn by this decision (a planned stop of a serving container with a stop
    /// delay): the node tells the cluster at once that they are no endpoints, and stops them later.
    public var withdrawn: [String] = []
    /// Containers withdrawn earlier and still waiting for their stop.
    public var draining: Int = 0
    /// Services whose starts wait for a withdrawn container to free a fixed host port they need.
    public var waitingForPorts: Set<String> = []
    /// Stops first, then starts, then the standby pool's refill.
    public var actions: [ReconcileAction] { stops + starts + standby }
    public var isEmpty: Bool { stops.isEmpty && starts.isEmpty && standby.isEmpty }
}

public struct CrashLoop: Sendable, Hashable {
    /// Consecutive quick exits.
    public var failures: Int
    /// No start before this time (the shell's clock, as passed to `decide`).
    public var retryAt: Duration
}

public struct ReconcilerPolicy: Sendable, Hashable {
    /// A container that exits sooner than this after starting counts as a crash.
    public var minimumRunTime: Duration = .seconds(10)
    /// Back-off after the first crash; doubles per consecutive crash up to `maximumBackoff`
    /// (the kubelet's CrashLoopBackOff shape).
    public var initialBackoff: Duration = .seconds(1)
    public var maximumBackoff: Duration = .seconds(300)
    /// At most this many starts per service per decision, so one decision cannot flood the daemon.
    public var maxStartsPerService: Int = 64
    /// Exit records kept to avoid counting one exit twice (bounded).
    public var rememberedExits: Int = 4096
    /// At most this many standby containers per service, whatever `DesiredService.standby` asks.
    public var maxStandbyPerService: Int = 8

    public init() {}
}

/// The reconciler's state: only the crash-loop bookkeeping. Desired and observed state come in whole
/// every time, so an agent that restarts with an empty Reconciler adopts what is running instead of
/// duplicating it.
public struct Reconciler: Sendable {
    public let node: String
    public var policy: ReconcilerPolicy
    private(set) public var crashLoops: [String: CrashLoop] = [:]
    private var countedExits: Set<String> = []
    private var countedExitOrder: [String] = []
    /// Containers of the desired spec that failed (went unhealthy, or exited) on this node, per
    /// service, while that spec was desired: what the node reports during a rollout, so the
    /// leader pauses it (docs/rollouts.md). Reset when the service's desired spec changes.
    private(set) public var failures: [String: (spec: String, count: Int)] = [:]
    private var failedCounted: Set<String> = []
    private var failedCountedOrder: [String] = []
    /// Containers withdrawn from the endpoints and waiting for their stop (docs/endpoints.md).
    private(set) public var withdrawals = Withdrawals()
    /// The last stop delay and fixed host ports of each service that still has containers here: a
    /// service removed from the services file is no longer desired, but its serving containers
    /// are withdrawn as long, and hold their ports meanwhile.
    private var stopDelays: [String: Duration] = [:]
    private var hostPorts: [String: Set<Int>] = [:]

    public init(node: String, policy: ReconcilerPolicy = ReconcilerPolicy()) {
        self.node = node
        self.policy = policy
    }

    public mutating func decide(
        desired: [String: DesiredService], observed: [ObservedContainer], now: Duration
    ) -> ReconcilePlan {
        var plan = ReconcilePlan()
        var byService: [String: [ObservedContainer]] = [:]
        for c in observed {
            // Never touch what is not ours (docs/contracts.md), nor what another node's agent created.
            guard c.isManaged, let service = c.service, c.node == node else {
                plan.ignored += 1
                continue
            }
            byService[service, default: []].append(c)
        }

        withdrawals.keepOnly(Set(byService.values.joined().filter { $0.state == .running }.map(\.id)))
        for (service, want) in desired {
            stopDelays[service] = want.stopDelay
            hostPorts[service] = want.hostPorts.isEmpty ? nil : want.hostPorts
        }
        for service in stopDelays.keys where desired[service] == nil && byService[service] == nil {
            stopDelays[service] = nil
            hostPorts[service] = nil
        }
        // Services with a container withdrawn and not stopped by this decision.
        var holding: Set<String> = []

        // Crash accounting first, so this decision already honours the back-off.
        // Quick exits seen together count as one failure of their service: they are one event
        // (a dockerd restart stops every container at once, a node's memory pressure kills
        // several), not a loop. Counted one by one, seven young containers stopped by one daemon
        // restart made a back-off of 64 s (microscale-sim cluster, seed 34; docs/simulation.md).
        var failedNow: Set<String> = []
        for c in observed.sorted(by: { $0.id < $1.id }) where c.isManaged && c.node == node && c.state == .exited {
            guard let service = c.service, !countedExits.contains(c.id) else { continue }
            remember(c.id)
            // An exit whose run time is unknown (the daemon can list a container as exited a
            // moment before its inspect shows FinishedAt) counts as quick: a wrongly counted crash
            // costs one short back-off, a missed one a restart storm.
            if c.ranFor.map({ $0 < policy.minimumRunTime }) ?? true {
                guard failedNow.insert(service).inserted else { continue }
                let failures = (crashLoops[service]?.failures ?? 0) + 1
                crashLoops[service] = CrashLoop(failures: failures, retryAt: now + backoff(failures))
            } else {
                crashLoops[service] = nil
            }
        }
        // A service that now has a container running long enough has recovered; one that is no
        // longer wanted forgets its history.
        for service in crashLoops.keys where desired[service] == nil { crashLoops[service] = nil }
        for (service, f) in failures where desired[service]?.specHash != f.spec { failures[service] = nil }
        for c in observed where c.isManaged && c.node == node && (c.state == .exited || (c.state == .running && c.health == .unhealthy)) {
            guard let service = c.service, let want = desired[service], c.specHash == want.specHash,
                !failedCounted.contains(c.id)
            else { continue }
            failedCounted.insert(c.id)
            failedCountedOrder.append(c.id)
            if failedCountedOrder.count > policy.rememberedExits { failedCounted.remove(failedCountedOrder.removeFirst()) }
            let before = failures[service]?.count ?? 0
            failures[service] = (want.specHash, min(before + 1, 1 << 30))
        }

        for service in Set(byService.keys).union(desired.keys).sorted() {
            let containers = (byService[service] ?? []).sorted { $0.id < $1.id }
            let want = desired[service]
            var keep = 0
            var runningCurrent: [ObservedContainer] = []
            var keepable: [ObservedContainer] = []
            // Standby containers of the desired spec, kept while the service wants a pool here:
            // created (cold) and paused (warm).
            var standbys: [ObservedContainer] = []
            var warmStandbys: [ObservedContainer] = []
            let pool = min(max(0, want?.standby ?? 0), policy.maxStandbyPerService)
            let warm = (want?.hostPorts.isEmpty ?? false) ? min(pool, max(0, want?.warmStandby ?? 0)) : 0
            // A planned stop: a serving container is withdrawn first and stopped once its delay
            // has passed. One not serving yet (its check has not passed) is no endpoint: at once.
            func plannedStop(_ c: ObservedContainer) {
                let delay = c.isServing ? (stopDelays[service] ?? .zero) : .zero
                let already = withdrawals.contains(c.id)
                if withdrawals.stopDue(c.id, delay: delay, now: now) {
                    plan.stops.append(.stop(id: c.id, service: service))
                } else if already {
                    plan.draining += 1
                    holding.insert(service)
                } else {
                    plan.withdrawn.append(c.id)
                    holding.insert(service)
                }
            }
            for c in containers {
                switch c.state {
                case .removing:
                    continue
                case .created where c.isStandby && pool > 0 && c.specHash == want?.specHash:
                    // A standby of the desired spec (adopted as such after a restart too): it
                    // counts as nothing; it is started below when a start is needed, else kept.
                    standbys.append(c)
                case .paused where c.isStandby && warm > 0 && c.specHash == want?.specHash:
                    // A warm standby of the desired spec (adopted too): not running for the plan;
                    // unpaused below when a start is needed, else kept.
                    warmStandbys.append(c)
                case .paused where c.isStandby:
                    // A warm standby the pool no longer wants (an old spec, a service gone, a
                    // pool or budget that shrank): removed, never left frozen. It served nothing.
                    plan.stops.append(.remove(id: c.id, service: service))
                case .paused:
                    // Any other container of ours that is paused (a step's victim whose stop did
                    // not happen, an agent stopped between the two, someone's `docker pause`):
                    // stopped, never left frozen. It serves nothing, so no withdrawal delay, and
                    // it counts for nothing: the count is made up by a start.
                    plan.stops.append(.stop(id: c.id, service: service))
                case .exited, .created:
                    // Exited containers go first: they free their names and show up in no count.
                    // A created container that is no standby of the desired spec (a create whose
                    // start never came, a standby of an old spec, of a service gone or no longer
                    // pooled here) is removed too.
                    plan.stops.append(.remove(id: c.id, service: service))
                case .running where c.health == .unhealthy:
                    // An unhealthy container is replaced: stopped, and a new one started in its place
                    // by this same decision (it no longer counts toward the target).
                    plan.stops.append(.stop(id: c.id, service: service))
                    plan.unhealthy += 1
                    // Counted as a crash (once per container), so a service whose checks always fail
                    // is replaced at the crash-loop back-off's pace, not every round.
                    if !countedExits.contains(c.id) {
                        remember(c.id)
                        let failures = (crashLoops[service]?.failures ?? 0) + 1
                        crashLoops[service] = CrashLoop(failures: failures, retryAt: now + backoff(failures))
                    }
                case .running where withdrawals.contains(c.id):
                    // Withdrawn earlier: counts for nothing, and is stopped when its delay is over.
                    plannedStop(c)
                case .running:
                    if let want, c.specHash == want.specHash {
                        runningCurrent.append(c)
                    } else if let want, let hash = c.specHash, want.keep.contains(hash) {
                        // An old container a rollout may keep for now (within its budget, below).
                        keepable.append(c)
                    } else {
                        plannedStop(c)
                    }
                }
            }
            let target = max(0, want?.count ?? 0)
            // Extras: stop the newest-looking last by id order; which one does not matter for
            // capacity, only that the choice is deterministic.
            if runningCurrent.count > target {
                if let want, want.keep.contains(want.specHash) {
                    keepable += runningCurrent[target...]
                } else {
                    for c in runningCurrent[target...] { plannedStop(c) }
                }
                keep = target
            } else {
                keep = runningCurrent.count
            }
            let budget = max(0, want?.keepCount ?? 0)
            if keepable.count > budget {
                for c in keepable.sorted(by: { $0.id < $1.id })[budget...] { plannedStop(c) }
            }
            var pooled = standbys[...]
            var warmPooled = warmStandbys[...]
            // Held (its image is not here) or backing off: the standbys stay, nothing is started
            // or created.
            let backingOff = crashLoops[service].map { now < $0.retryAt } ?? false
            if let want, want.canStart, !backingOff, keep < target {
                // Standbys first, warm before cold: an unpause, else a start with no create before
                // it (docs/scheduling.md, "Standby containers", "Warm standbys").
                var missing = min(target - keep, policy.maxStartsPerService)
                let fromWarm = min(missing, warmPooled.count)
                for c in warmPooled.prefix(fromWarm) { plan.starts.append(.unpauseStandby(id: c.id, service: service)) }
                warmPooled = warmPooled.dropFirst(fromWarm)
                missing -= fromWarm
                let fromPool = min(missing, pooled.count)
                for c in pooled.prefix(fromPool) { plan.starts.append(.startStandby(id: c.id, service: service)) }
                pooled = pooled.dropFirst(fromPool)
                for _ in 0..<(missing - fromPool) { plan.starts.append(.start(service: service, specHash: want.specHash)) }
            }
            // The pool is refilled after the starts (never in their way), up to its size, `warm`
            // of it warm and the rest cold; a pool that shrank (or whose warm share did) gives
            // its extra standbys back.
            for c in warmPooled.dropFirst(warm) { plan.stops.append(.remove(id: c.id, service: service)) }
            for c in pooled.dropFirst(pool - warm) { plan.stops.append(.remove(id: c.id, service: service)) }
            if let want, want.canStart, !backingOff {
                let warmKept = min(warmPooled.count, warm)
                let coldKept = min(pooled.count, pool - warm)
                for _ in 0..<(warm - warmKept) { plan.standby.append(.createWarmStandby(service: service, specHash: want.specHash)) }
                for _ in 0..<(pool - warm - coldKept) { plan.standby.append(.createStandby(service: service, specHash: want.specHash)) }
            } else if let want, want.canStart, keep < target, let loop = crashLoops[service] {
                plan.crashLooping[service] = loop
            }
        }
        // A withdrawn container still listens on its fixed host ports until its stop: a new
        // container needing one of them would fail to start (a stop-first rollout's replacement,
        // say). It starts in the round that stops the withdrawn one (stops before starts).
        let held = holding.reduce(into: Set<Int>()) { $0.formUnion(hostPorts[$1] ?? []) }
        if !held.isEmpty {
            var waiting: Set<String> = []
            var keptStandbys: [String: Int] = [:]
            plan.starts.removeAll { a in
                guard let ports = hostPorts[a.service], !ports.isDisjoint(with: held) else { return false }
                waiting.insert(a.service)
                if case .startStandby = a { keptStandbys[a.service, default: 0] += 1 }
                if case .unpauseStandby = a { keptStandbys[a.service, default: 0] += 1 }
                return true
            }
            // A standby that waits is still in the pool: no refill for it.
            for (s, n) in keptStandbys {
                for _ in 0..<n {
                    if let i = plan.standby.firstIndex(where: { $0.service == s }) { plan.standby.remove(at: i) }
                }
            }
            plan.waitingForPorts = waiting
        }
        return plan
    }

    /// Tells the reconciler that a container of `service` has been running for `ranFor`: at or above
    /// the minimum run time the service is healthy again.
    public mutating func observeRunning(service: String, ranFor: Duration) {
        if ranFor >= policy.minimumRunTime { crashLoops[service] = nil }
    }

    func backoff(_ failures: Int) -> Duration {
        var d = policy.initialBackoff
        for _ in 1..<max(1, failures) {
            d = d * 2
            if d >= policy.maximumBackoff { return policy.maximumBackoff }
        }
        return min(d, policy.maximumBackoff)
    }

    private mutating func remember(_ id: String) {
        countedExits.insert(id)
        countedExitOrder.append(id)
        if countedExitOrder.count > policy.rememberedExits {
            let drop = countedExitOrder.count - policy.rememberedExits
            for old in countedExitOrder.prefix(drop) { countedExits.remove(old) }
            countedExitOrder.removeFirst(drop)
        }
    }
}
