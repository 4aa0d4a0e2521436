import Bounds
import Foundation

/// The replicated cluster state: what every server applies from the Raft log, in the same order,
/// to the same result (Raft §5 "replicated state machine"). Plain data only: the planner
/// (Scaling) and the agent translate to and from their own types.

/// Where a service's demand comes from (docs/contracts.md `demand:`); the Demand module interprets it.
public struct DemandSourceConfig: Sendable, Hashable, Codable {
    /// static | random | prometheus | redis
    public var source: String
    /// Demand one container absorbs: desired = ceil(demand / perContainer).
    public var perContainer: Double?
    /// Source-specific settings (a Prometheus query, a Redis key, ...).
    public var options: [String: String]
    /// Control (docs/demand.md, docs/scaling.md "Control"): scale down only once demand is at or
    /// below this fraction of what the current count absorbs (microscaling's band, 0.7).
    public var scaleDownAt: Double?
    /// At most this many containers added or removed per decision.
    public var maxChange: Int?
    /// An optional PD controller's gains.
    public var controller: ControllerGains?

    public init(
        source: String, perContainer: Double? = nil, options: [String: String] = [:],
        scaleDownAt: Double? = nil, maxChange: Int? = nil, controller: ControllerGains? = nil
    ) {
        self.source = source
        self.perContainer = perContainer
        self.options = options
        self.scaleDownAt = scaleDownAt
        self.maxChange = maxChange
        self.controller = controller
    }
}

/// `demand.controller: { kp: K, kd: SECONDS }`. Optional fields of the replicated spec are encoded
/// only when set, so entries written before they existed keep their bytes.
public struct ControllerGains: Sendable, Hashable, Codable {
    /// Fraction of the way down to the proportional count taken per decision (0 < kp ≤ 1).
    public var kp: Double
    /// Look-ahead along the queue's trend, in seconds (0 to `Limits.maxControllerLookaheadSeconds`).
    public var kd: Double

    public init(kp: Double, kd: Double = 0) {
        self.kp = kp
        self.kd = kd
    }
}

/// One entry of the services file (docs/contracts.md).
public struct ServiceSpec: Sendable, Hashable, Codable {
    public var image: String
    public var command: [String]
    /// 1 is the most important.
    public var priority: Int
    /// Cores reserved per container. Stored as cores because that is the committed JSON every
    /// agent version reads; the services file gives millicores (`Units.millicores`) and everything
    /// downstream counts in `cpuMillicores`.
    public var cpu: Double
    /// `cpu` in millicores, the unit of the planner and the YAML: the one place cores become
    /// millicores. A spec that got in has 0.001 to `Limits.maxContainerCPUMillicores` / 1000 cores
    /// written from whole millicores, so this is exact; anything else (never applied) is clamped.
    public var cpuMillicores: Int {
        guard let m = (cpu * 1000).exactlyRoundedInt else { return Int(Limits.maxContainerCPUMillicores) }
        return Swift.min(Swift.max(m, 0), Int(Limits.maxContainerCPUMillicores))
    }
    /// Bytes reserved per container.
    public var memory: UInt64
    public var min: Int
    public var max: Int
    public var demand: DemandSourceConfig?
    /// Use whatever capacity is left.
    public var fill: Bool
    public var stopTimeoutMilliseconds: Int64
    /// The workload keys (docs/contracts.md, "The services file", Workload.swift); nil when not declared.
    public var env: [String: String]?
    public var network: String?
    public var ports: [PortMapping]?
    public var health: HealthCheck?
    /// How a change of the containers rolls out (`update:`, Workload.swift); nil: Swarm's defaults.
    public var update: UpdatePolicy?
    /// Placement (docs/scheduling.md, "Constraints and spread"): `zone == a`, `disk != hdd` over
    /// node labels, and the label to spread across. nil when not declared (older entries decode
    /// unchanged); not part of the spec hash: a new constraint moves containers, it does not
    /// rebuild them.
    public var constraints: [String]?
    public var spread: String?
    /// `stop_delay`: how long a serving container stopped for a planned reason (a scale-down, a
    /// rollout, a drain) is out of the endpoints before it is stopped (docs/endpoints.md); nil:
    /// the default, `effectiveStopDelayMilliseconds`. Not part of the spec hash.
    public var stopDelayMilliseconds: Int64?

    public init(
        image: String, command: [String] = [], priority: Int = 1, cpu: Double, memory: UInt64,
        min: Int = 0, max: Int, demand: DemandSourceConfig? = nil, fill: Bool = false,
        stopTimeoutMilliseconds: Int64 = 10_000, env: [String: String]? = nil, network: String? = nil,
        ports: [PortMapping]? = nil, health: HealthCheck? = nil, update: UpdatePolicy? = nil
    ) {
        self.update = update
        self.env = env
        self.network = network
        self.ports = ports
        self.health = health
        self.image = image
        self.command = command
        self.priority = priority
        self.cpu = cpu
        self.memory = memory
        self.min = min
        self.max = max
        self.demand = demand
        self.fill = fill
        self.stopTimeoutMilliseconds = stopTimeoutMilliseconds
    }

    /// The first thing wrong with the spec of `name`, naming the field and the limit (the table is
    /// `Limits`, docs/limits.md). Checked where a spec enters (the services file, the API) and
    /// again on apply, so a value that would make the planner or Docker trap never reaches them,
    /// whichever way it came into the log.
    public func validationError(name: String) -> ClusterStateError? {
        func bad(_ field: String, _ why: String) -> ClusterStateError { .invalidService(name: name, field: field, reason: why) }
        if name.isEmpty || name.utf8.count > 63 { return bad("name", "must be 1-63 characters") }
        if image.isEmpty { return bad("image", "must not be empty") }
        if image.utf8.count > Limits.maxImageBytes { return bad("image", "is longer than \(Limits.maxImageBytes) bytes") }
        if command.count > Limits.maxCommandArguments {
            return bad("command", "has \(command.count) arguments; at most \(Limits.maxCommandArguments)")
        }
        if let long = command.firstIndex(where: { $0.utf8.count > Limits.maxArgumentBytes }) {
            return bad("command", "argument \(long) is longer than \(Limits.maxArgumentBytes) bytes")
        }
        if priority < 1 || priority > Limits.maxPriority {
            return bad("priority", "must be 1 to \(Limits.maxPriority) (1 is the most important)")
        }
        let maxCores = Double(Limits.maxContainerCPUMillicores) / 1000
        if !cpu.isFinite || cpu < 0.001 || cpu > maxCores {
            return bad("cpu", "must be 0.001 (1m) to \(Int(maxCores)) cores")
        }
        if memory == 0 || memory > UInt64(Limits.maxContainerMemoryBytes) {
            return bad("memory", "must be 1 byte to 16TiB")
        }
        if min < 0 { return bad("min", "must not be negative") }
        if max > Limits.maxContainersPerService { return bad("max", "must be at most \(Limits.maxContainersPerService)") }
        if max < min { return bad("max", "must be at least min (\(min))") }
        if stopTimeoutMilliseconds < 0 || stopTimeoutMilliseconds > Limits.maxStopTimeoutMilliseconds {
            return bad("stop_timeout", "must be 0 to 1h")
        }
        if let d = stopDelayMilliseconds, d < 0 || d > Limits.maxStopDelayMilliseconds {
            return bad("stop_delay", "must be 0 to \(Limits.maxStopDelayMilliseconds / 60_000)m")
        }
        if let d = demand, let e = d.validationError() { return bad("demand.\(e.field)", e.reason) }
        if let e = workloadValidationError() { return bad(e.field, e.reason) }
        if let e = placementValidationError() { return bad(e.field, e.reason) }
        return nil
    }
}

extension DemandSourceConfig {
    /// Numeric options a source reads as demand values (the random walk's).
    static let demandOptions: Set<String> = ["min", "max", "step", "start"]

    /// The first option out of its limits: which one (relative to `demand.`) and why.
    public func validationError() -> (field: String, reason: String)? {
        if source.isEmpty || source.utf8.count > 32 { return ("source", "must be a source name") }
        if let p = perContainer, !(p >= Limits.minPerContainer && p <= Limits.maxPerContainer) {
            return ("per_container", "must be \(Limits.text(Limits.minPerContainer)) to \(Limits.text(Limits.maxPerContainer))")
        }
        if options.count > Limits.maxDemandOptions { return ("options", "at most \(Limits.maxDemandOptions) settings") }
        for (k, v) in options where k.utf8.count > Limits.maxDemandOptionBytes || v.utf8.count > Limits.maxDemandOptionBytes {
            return (String(k.prefix(64)), "longer than \(Limits.maxDemandOptionBytes) bytes")
        }
        var numbers: [String: Double] = [:]
        for key in Self.demandOptions {
            guard let text = options[key] else { continue }
            guard let v = Double(text), v.isFinite, v >= 0, v <= Limits.maxDemand else {
                return (key, "must be a number from 0 to \(Limits.text(Limits.maxDemand))")
            }
            numbers[key] = v
        }
        if let step = numbers["step"], !(step > 0) { return ("step", "must be greater than 0") }
        if let low = numbers["min"], let high = numbers["max"], low > high { return ("max", "must be at least min (\(low))") }
        if let text = options["interval"] {
            guard let d = Units.duration(text), d >= Limits.minPollInterval, d <= Limits.maxPollInterval else {
                return ("interval", "must be a duration from 100ms to 1h")
            }
        }
        if let text = options["seed"], UInt64(text) == nil { return ("seed", "must be a whole number from 0 to \(UInt64.max)") }
        if let a = scaleDownAt, !(a >= 0 && a <= 1) { return ("scale_down_at", "must be a fraction from 0 to 1 (0.7: scale down at 70% of target)") }
        if let m = maxChange, m < 1 || m > Limits.maxContainersPerService {
            return ("max_change", "must be a whole number from 1 to \(Limits.maxContainersPerService)")
        }
        if let g = controller {
            if !(g.kp > 0 && g.kp <= 1) { return ("controller.kp", "must be greater than 0 and at most 1") }
            if !(g.kd >= 0 && g.kd <= Limits.maxControllerLookaheadSeconds) {
                return ("controller.kd", "must be 0 to \(Limits.text(Limits.maxControllerLookaheadSeconds)) seconds")
            }
        }
        return nil
    }
}

/// The planner's output as data: per node, per service, how many containers.
public struct Plan: Sendable, Hashable, Codable {
    public var assignments: [String: [String: Int]]
    /// The spec hash each service's containers are made to (`ServiceSpec.containerHash`), so that a change of the
    /// containers alone (image, command, env...) makes a new plan, and so a new assignment for
    /// every agent. nil in plans committed before it existed.
    public var specs: [String: String]?
    /// Rolling updates under way, by service (docs/rollouts.md): for those services an agent runs
    /// `new[node]` containers of the service's spec and keeps `old[node]` of hash `from`, while
    /// `assignments` stays the planner's count. nil (not empty) when there is none, so the bytes of
    /// a plan without rollouts are what they were.
    public var rollouts: [String: ServiceRollout]?
    /// The applied index of the state the leader planned from. Apply refuses a plan older than the
    /// last change of the services, the drained nodes or the deny list (`ClusterState.declaredIndex`):
    /// a plan computed before a drain and committed after it would give work to the drained node
    /// (found by `microscale-sim cluster --seeds 144`, docs/simulation.md). nil in plans written
    /// before it existed, which apply as they always did.
    public var basedOnIndex: UInt64?
    public init(
        assignments: [String: [String: Int]] = [:], specs: [String: String]? = nil,
        rollouts: [String: ServiceRollout]? = nil, basedOnIndex: UInt64? = nil
    ) {
        self.assignments = assignments
        self.specs = specs
        self.rollouts = rollouts
        self.basedOnIndex = basedOnIndex
    }

    public func count(service: String) -> Int { assignments.values.reduce(0) { $0 + ($1[service] ?? 0) } }
}

/// One service's rolling update as the plan carries it (the pure stepping is `Scaling.RolloutStepper`).
public struct ServiceRollout: Sendable, Hashable, Codable {
    /// Spec hash of the containers being replaced, and of their replacements.
    public var from: String
    public var to: String
    /// Older hashes whose containers count as old too: a change applied while another rolled out
    /// keeps what both left running, and replaces it at the same pace. nil when none.
    public var alsoFrom: [String]?
    public static let maxAlsoFrom = 8
    /// Per node: old containers still kept, and new containers to run.
    public var old: [String: Int]
    public var new: [String: Int]
    /// Why the rollout stopped advancing (nil: it advances).
    public var paused: String?
    /// New containers serving, of the service's count, when the plan was made: what `status` shows.
    public var done: Int
    public var total: Int

    public init(
        from: String, to: String, alsoFrom: [String]? = nil, old: [String: Int], new: [String: Int], paused: String? = nil,
        done: Int = 0, total: Int = 0
    ) {
        self.alsoFrom = alsoFrom
        self.from = from
        self.to = to
        self.old = old
        self.new = new
        self.paused = paused
        self.done = done
        self.total = total
    }

    /// The first value out of its limits (the leader writes it; apply checks it like the rest of a plan).
    func validationError(service: String) -> ClusterStateError? {
        func bad(_ why: String) -> ClusterStateError { .malformed("plan: the rollout of \(service.prefix(63)) \(why)") }
        if service.isEmpty || service.utf8.count > 63 { return bad("is of a service name not of 1-63 bytes") }
        if from.utf8.count > 64 || to.utf8.count > 64 || (alsoFrom ?? []).contains(where: { $0.utf8.count > 64 }) {
            return bad("has a spec hash over 64 bytes")
        }
        if (alsoFrom?.count ?? 0) > Self.maxAlsoFrom { return bad("keeps more than \(Self.maxAlsoFrom) older specs") }
        if (paused?.utf8.count ?? 0) > Decision.maxTextBytes { return bad("has a pause reason over \(Decision.maxTextBytes) bytes") }
        if old.count > Limits.defaultMaxMembers || new.count > Limits.defaultMaxMembers {
            return bad("names more than \(Limits.defaultMaxMembers) nodes")
        }
        for (node, n) in old.merging(new, uniquingKeysWith: { max($0, $1) }) {
            if node.isEmpty || node.utf8.count > ClusterState.maxNodeNameBytes {
                return bad("names a node not of 1-\(ClusterState.maxNodeNameBytes) bytes")
            }
            if n < 0 || n > Limits.maxContainersPerService { return bad("has \(n) containers on a node; 0 to \(Limits.maxContainersPerService)") }
        }
        if old.values.contains(where: { $0 < 0 }) || new.values.contains(where: { $0 < 0 }) { return bad("has a negative count") }
        if !(0...Limits.maxContainersPerService).contains(done) || !(0...Limits.maxContainersPerService).contains(total) {
            return bad("has progress out of 0 to \(Limits.maxContainersPerService)")
        }
        return nil
    }
}

/// One decision of the leader's planner, with its reasons, for `microscale decisions`.
public struct Decision: Sendable, Hashable, Codable {
    /// The log index that committed it (set on apply).
    public var index: UInt64
    /// Wall-clock milliseconds the leader stamped it with (data, so apply stays deterministic).
    public var timestampMilliseconds: Int64
    public var summary: String
    public var reasons: [String]
    /// Set when this records a committed entry that was refused on apply (nil otherwise, so the
    /// bytes of every other decision are what they were before the field existed).
    public var refused: Bool?

    public init(
        index: UInt64 = 0, timestampMilliseconds: Int64, summary: String, reasons: [String],
        refused: Bool? = nil
    ) {
        self.index = index
        self.timestampMilliseconds = timestampMilliseconds
        self.summary = summary
        self.reasons = reasons
        self.refused = refused
    }

    /// Bounds on what one decision carries (the leader writes them; apply refuses more).
    public static let maxReasons = 64
    public static let maxTextBytes = 1024
}

/// A change to the cluster state, as proposed through Raft.
public enum ClusterCommand: Sendable, Hashable, Codable {
    /// `services apply FILE`: declares (adds or replaces) these services.
    case applyServices([String: ServiceSpec])
    case removeService(String)
    case setDemand(service: String, value: Double)
    case setDrain(node: String, drained: Bool)
    /// The leader's planner: a new plan and why.
    case setPlan(Plan, Decision)
    /// `operator snapshot restore FILE`: replaces what an operator declared (services, demand,
    /// drained nodes) with a backup's, as one committed entry, so every server applies the same
    /// restore at the same point of the log. The plan is not restored: the leader plans anew from
    /// the restored services and the nodes alive now.
    case restore(ClusterBackup)
    /// `services rollback NAME`: the service's spec and the one it replaced (kept in
    /// `ClusterState.previousServices`) change places, so a second rollback undoes the first
    /// (as `docker service rollback`).
    case rollbackService(String)
    /// `node deny NAME`: every agent refuses that certificate name at the handshake and drops its
    /// open connections (docs/ARCHITECTURE.md, "Trust"); `denied: false` lifts it.
    case setDenied(node: String, denied: Bool)

    /// Encoding: a version byte, then JSON with sorted keys. Commands are few (operator actions
    /// and plan changes, not a hot path), JSON is readable when inspecting the log with sqlite3,
    /// tolerant of added optional fields across versions, and sorted keys make the bytes (and so
    /// the snapshots) identical on every server.
    /// Throws for what JSON cannot carry (a non-finite number), naming it.
    public func encoded() throws(ClusterStateError) -> [UInt8] {
        do {
            return [ClusterState.formatVersion] + (try ClusterState.encoder.encode(self))
        } catch {
            throw .malformed("command cannot be encoded: \(error)")
        }
    }

    /// The first value in the command outside its limits, independent of the state it applies to.
    /// The proposer checks it before proposing (so the log never holds it) and every server checks
    /// it again on apply (so an entry that came into the log some other way changes nothing).
    public func validationError() -> ClusterStateError? {
        switch self {
        case .applyServices(let specs):
            if specs.count > ClusterState.maxServices {
                return .malformed("services: \(specs.count) in one command; at most \(ClusterState.maxServices)")
            }
            for name in specs.keys.sorted() {
                if let e = specs[name]!.validationError(name: name) { return e }
            }
        case .removeService(let name), .rollbackService(let name):
            if name.isEmpty || name.utf8.count > Limits.maxServiceNameBytes { return .unknownService(String(name.prefix(63))) }
        case .setDemand(let service, let value):
            if service.isEmpty || service.utf8.count > Limits.maxServiceNameBytes { return .unknownService(String(service.prefix(63))) }
            guard value.isFinite, value >= 0, value <= Limits.maxDemand else { return .invalidDemand(service: service, value: value) }
        case .setDrain(let node, _):
            if node.isEmpty || node.utf8.count > ClusterState.maxNodeNameBytes {
                return .malformed("node name: must be 1-\(ClusterState.maxNodeNameBytes) bytes")
            }
        case .setPlan(let plan, let decision):
            if plan.assignments.count > Limits.defaultMaxMembers {
                return .malformed("plan: \(plan.assignments.count) nodes; at most \(Limits.defaultMaxMembers)")
            }
            if let specs = plan.specs {
                if specs.count > ClusterState.maxServices {
                    return .malformed("plan: \(specs.count) spec hashes; at most \(ClusterState.maxServices)")
                }
                for (service, hash) in specs where service.utf8.count > 63 || hash.utf8.count > 64 {
                    return .malformed("plan: the spec hash of \(service.prefix(63)) is not of a service of 1-63 bytes and a hash of at most 64")
                }
            }
            if let rollouts = plan.rollouts {
                if rollouts.count > ClusterState.maxServices {
                    return .malformed("plan: \(rollouts.count) rollouts; at most \(ClusterState.maxServices)")
                }
                for (service, r) in rollouts {
                    if let e = r.validationError(service: service) { return e }
                }
            }
            for (node, counts) in plan.assignments {
                if node.isEmpty || node.utf8.count > ClusterState.maxNodeNameBytes {
                    return .malformed("plan: a node name is not 1-\(ClusterState.maxNodeNameBytes) bytes")
                }
                if counts.count > ClusterState.maxServices {
                    return .malformed("plan: \(counts.count) services on \(node); at most \(ClusterState.maxServices)")
                }
                for (service, n) in counts where n < 0 || n > Limits.maxContainersPerService || service.utf8.count > 63 {
                    return .malformed(
                        "plan: \(n) containers of \(service.prefix(63)) on \(node); 0 to \(Limits.maxContainersPerService) of a service of 1-63 bytes"
                    )
                }
            }
            if decision.reasons.count > Decision.maxReasons || decision.summary.utf8.count > Decision.maxTextBytes
                || decision.reasons.contains(where: { $0.utf8.count > Decision.maxTextBytes })
            {
                return .malformed("plan: decision text over \(Decision.maxReasons) reasons of \(Decision.maxTextBytes) bytes")
            }
        case .restore(let backup):
            return backup.validationError()
        case .setDenied(let node, _):
            if node.isEmpty || node.utf8.count > ClusterState.maxNodeNameBytes {
                return .malformed("node name: must be 1-\(ClusterState.maxNodeNameBytes) bytes")
            }
        }
        return nil
    }

    public static func decode(_ bytes: [UInt8]) throws(ClusterStateError) -> ClusterCommand {
        guard let v = bytes.first else { throw .malformed("empty command") }
        guard v == ClusterState.formatVersion else { throw .unsupportedVersion(v) }
        do {
            return try JSONDecoder().decode(ClusterCommand.self, from: Data(bytes.dropFirst()))
        } catch {
            throw .malformed("command: \(error)")
        }
    }
}

/// A copy of the declared cluster state, for backups (`ClusterState.backup`) and restore
/// (`ClusterCommand.restore`).
public struct ClusterBackup: Sendable, Hashable, Codable {
    /// The log index the copy was taken at.
    public var index: UInt64
    /// Wall-clock milliseconds the leader stamped it with.
    public var takenAtMilliseconds: Int64
    public var services: [String: ServiceSpec]
    public var demand: [String: Double]
    public var drainedNodes: [String]
    /// The deny list (nil in a backup made before it existed: a restore then leaves it as it is).
    public var deniedNodes: [String]?

    public init(
        index: UInt64, takenAtMilliseconds: Int64, services: [String: ServiceSpec], demand: [String: Double],
        drainedNodes: [String], deniedNodes: [String]? = nil
    ) {
        self.index = index
        self.takenAtMilliseconds = takenAtMilliseconds
        self.services = services
        self.demand = demand
        self.drainedNodes = drainedNodes
        self.deniedNodes = deniedNodes
    }

    /// The first thing in the backup outside the limits that apply to the commands that build
    /// the same state (docs/limits.md); a backup is restored whole or not at all.
    public func validationError() -> ClusterStateError? {
        if services.count > ClusterState.maxServices {
            return .malformed("backup: \(services.count) services; at most \(ClusterState.maxServices)")
        }
        for name in services.keys.sorted() {
            if let e = services[name]!.validationError(name: name) { return e }
        }
        for (name, value) in demand.sorted(by: { $0.key < $1.key }) {
            guard services[name] != nil else { return .malformed("backup: demand for \(name.prefix(63)), which is not a service of the backup") }
            if let e = ClusterCommand.setDemand(service: name, value: value).validationError() { return e }
        }
        if drainedNodes.count > Limits.defaultMaxMembers {
            return .malformed("backup: \(drainedNodes.count) drained nodes; at most \(Limits.defaultMaxMembers)")
        }
        for node in drainedNodes where node.isEmpty || node.utf8.count > ClusterState.maxNodeNameBytes {
            return .malformed("backup: a drained node name is not 1-\(ClusterState.maxNodeNameBytes) bytes")
        }
        if Set(drainedNodes).count != drainedNodes.count { return .malformed("backup: a drained node is listed twice") }
        let denied = deniedNodes ?? []
        if denied.count > Limits.defaultMaxMembers || Set(denied).count != denied.count
            || denied.contains(where: { $0.isEmpty || $0.utf8.count > ClusterState.maxNodeNameBytes })
        {
            return .malformed(
                "backup: the deny list holds a name twice, a name not of 1-\(ClusterState.maxNodeNameBytes) bytes, or more than \(Limits.defaultMaxMembers) names"
            )
        }
        return nil
    }
}

public enum ClusterStateError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidService(name: String, field: String, reason: String)
    case unknownService(String)
    case invalidDemand(service: String, value: Double)
    /// A committed entry that did not decode or broke a limit (not a user's everyday mistake).
    case malformed(String)
    case unsupportedVersion(UInt8)
    /// A plan computed from the state at `basedOn`, committed after entry `changedAt` changed the
    /// services, the drained nodes or the deny list: the leader plans again.
    case stalePlan(basedOn: UInt64, changedAt: UInt64)

    public var description: String {
        switch self {
        case .invalidService(let n, let f, let r): return "service \(n): \(f) \(r)"
        case .unknownService(let n): return "no service named \(n)"
        case .invalidDemand(let s, let v): return "demand for \(s): \(v) is not a number from 0 to \(Limits.text(Limits.maxDemand))"
        case .malformed(let m): return "malformed \(m)"
        case .unsupportedVersion(let v): return "unsupported encoding version \(v)"
        case .stalePlan(let b, let c):
            return
                "plan computed on the state of entry \(b), before entry \(c) changed the services, drained nodes or deny list; the leader plans again"
        }
    }
}

public struct ClusterState: Sendable, Hashable, Codable {
    static let formatVersion: UInt8 = 1
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    /// Bound on the decision history kept (docs/ARCHITECTURE.md, Principles 7).
    public static let maxDecisions = 1000
    /// Bound on services declared in all (a services file holds at most 256).
    public static let maxServices = 1024
    /// Node names are certificate names (a DNS label and more: 64 bytes, as gossip's records).
    public static let maxNodeNameBytes = 64

    public private(set) var services: [String: ServiceSpec] = [:]
    /// For each service whose containers changed (`makesSameContainers`), the spec it replaced:
    /// what `services rollback` goes back to (Swarm keeps a service's PreviousSpec the same way).
    public private(set) var previousServices: [String: ServiceSpec] = [:]
    public private(set) var demand: [String: Double] = [:]
    /// Sorted, so encoding is deterministic; at most `Limits.defaultMaxMembers`.
    public private(set) var drainedNodes: [String] = []
    /// Certificate names every agent refuses (`node deny`). Sorted; at most `Limits.defaultMaxMembers`.
    public private(set) var deniedNodes: [String] = []
    /// The log index of the entry that last changed `deniedNodes` (a deny, an undeny or a restore;
    /// 0 before the first). The same on every server, so client agents, which are sent the list by
    /// whichever server reaches them, keep the newest by it (docs/ARCHITECTURE.md, "Rotating and
    /// revoking certificates").
    public private(set) var deniedIndex: UInt64 = 0
    public private(set) var plan = Plan()
    /// The log index of the entry that committed `plan` (0 before the first).
    public private(set) var planIndex: UInt64 = 0
    /// Oldest first, at most `maxDecisions`.
    public private(set) var decisions: [Decision] = []
    /// The last log index applied.
    public private(set) var appliedIndex: UInt64 = 0
    /// The log index of the entry that last changed what a plan is computed from besides the
    /// nodes and the demand: the services, the drained nodes, the deny list (0 before the first).
    /// A plan based on an older state is refused (`Plan.basedOnIndex`).
    public private(set) var declaredIndex: UInt64 = 0
    /// Each service's `containerHash`, computed once when its spec is applied (or the state
    /// decoded), not on every leader round and every node's assignment. Derived from `services`,
    /// so not part of the snapshot's bytes.
    public private(set) var specHashes: [String: String] = [:]

    public init() {}

    enum CodingKeys: String, CodingKey {
        case services, previousServices, demand, drainedNodes, deniedNodes, deniedIndex, plan, planIndex, decisions, appliedIndex
        case declaredIndex
    }

    /// Snapshots written before `planIndex` existed lack it: it was the last decision's index then.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        services = try c.decode([String: ServiceSpec].self, forKey: .services)
        previousServices = try c.decodeIfPresent([String: ServiceSpec].self, forKey: .previousServices) ?? [:]
        demand = try c.decode([String: Double].self, forKey: .demand)
        drainedNodes = try c.decode([String].self, forKey: .drainedNodes)
        deniedNodes = try c.decodeIfPresent([String].self, forKey: .deniedNodes) ?? []
        plan = try c.decode(Plan.self, forKey: .plan)
        decisions = try c.decode([Decision].self, forKey: .decisions)
        appliedIndex = try c.decode(UInt64.self, forKey: .appliedIndex)
        planIndex = try c.decodeIfPresent(UInt64.self, forKey: .planIndex) ?? (decisions.last?.index ?? 0)
        // Snapshots written before `deniedIndex` existed: the list is at least as old as the
        // snapshot, and a client agent holding none must still be sent it.
        deniedIndex = try c.decodeIfPresent(UInt64.self, forKey: .deniedIndex) ?? (deniedNodes.isEmpty ? 0 : appliedIndex)
        // Snapshots written before `declaredIndex` existed: 0, so every plan applies until the
        // next change, as before.
        declaredIndex = try c.decodeIfPresent(UInt64.self, forKey: .declaredIndex) ?? 0
        specHashes = services.mapValues(\.containerHash)
    }

    public func isDrained(_ node: String) -> Bool { drainedNodes.contains(node) }

    /// Applies the committed entry at `index`. A command that is invalid (say, demand for a service
    /// that does not exist) changes nothing and returns the error, the same on every server,
    /// so the proposer can report it; a committed entry never stops the state machine. Returns
    /// nil when the command took effect.
    @discardableResult
    public mutating func apply(_ data: [UInt8], index: UInt64) -> ClusterStateError? {
        appliedIndex = max(appliedIndex, index)
        if data.isEmpty { return nil }  // a leader's no-op
        let command: ClusterCommand
        do { command = try ClusterCommand.decode(data) } catch {
            recordRefusal(error, index: index)
            return error
        }
        return apply(command, index: index)
    }

    public mutating func apply(_ command: ClusterCommand, index: UInt64) -> ClusterStateError? {
        appliedIndex = max(appliedIndex, index)
        // An entry whose values break a limit cannot have come from this version's API, which
        // checks them before proposing: an older version, or a server that is not what it should
        // be, wrote it. Every server refuses it alike and says so in the decisions.
        if let e = command.validationError() {
            recordRefusal(e, index: index)
            return e
        }
        switch command {
        case .applyServices(let specs):
            let added = specs.keys.filter { services[$0] == nil }.count
            guard services.count + added <= Self.maxServices else {
                return .malformed("services: \(services.count + added) would be declared; at most \(Self.maxServices)")
            }
            for (name, spec) in specs {
                if let old = services[name], !old.makesSameContainers(as: spec) { previousServices[name] = old }
            }
            services.merge(specs) { _, new in new }
            for (name, spec) in specs { specHashes[name] = spec.containerHash }
        case .removeService(let name):
            guard services.removeValue(forKey: name) != nil else { return .unknownService(name) }
            specHashes[name] = nil
            demand[name] = nil
            previousServices[name] = nil
        case .rollbackService(let name):
            guard let current = services[name] else { return .unknownService(name) }
            guard let previous = previousServices[name] else {
                return .invalidService(
                    name: name, field: "rollback", reason: "has no previous spec: its containers have not changed since it was declared")
            }
            services[name] = previous
            previousServices[name] = current
            specHashes[name] = previous.containerHash
        case .setDemand(let service, let value):
            guard services[service] != nil else { return .unknownService(service) }
            demand[service] = value
        case .setDrain(let node, let drained):
            drainedNodes.removeAll { $0 == node }
            if drained {
                guard drainedNodes.count < Limits.defaultMaxMembers else {
                    return .malformed("drain: \(drainedNodes.count) nodes are drained already; at most \(Limits.defaultMaxMembers)")
                }
                drainedNodes.append(node)
                drainedNodes.sort()
            }
        case .setPlan(let p, var d):
            if let based = p.basedOnIndex, based < declaredIndex {
                let e = ClusterStateError.stalePlan(basedOn: based, changedAt: declaredIndex)
                recordRefusal(e, index: index)
                return e
            }
            plan = p
            planIndex = index
            d.index = index
            appendDecision(d)
        case .setDenied(let node, let denied):
            deniedNodes.removeAll { $0 == node }
            if denied {
                guard deniedNodes.count < Limits.defaultMaxMembers else {
                    return .malformed("deny: \(deniedNodes.count) nodes are denied already; at most \(Limits.defaultMaxMembers)")
                }
                deniedNodes.append(node)
                deniedNodes.sort()
            }
            deniedIndex = index
        case .restore(let backup):
            services = backup.services
            specHashes = services.mapValues(\.containerHash)
            previousServices = [:]
            demand = backup.demand
            drainedNodes = backup.drainedNodes.sorted()
            if let denied = backup.deniedNodes {
                deniedNodes = denied.sorted()
                deniedIndex = index
            }
            // Its time is the backup's: apply reads no clock (every server records the same bytes).
            appendDecision(
                Decision(
                    index: index, timestampMilliseconds: backup.takenAtMilliseconds,
                    summary: "restored \(backup.services.count) services from a snapshot of entry \(backup.index)",
                    reasons: ["demand values: \(backup.demand.count), drained nodes: \(backup.drainedNodes.count)"]))
        }
        switch command {
        case .applyServices, .removeService, .rollbackService, .setDrain, .setDenied, .restore: declaredIndex = index
        case .setDemand, .setPlan: break
        }
        return nil
    }

    /// What `operator snapshot save` keeps: the state an operator declared, as of the last applied
    /// entry. The plan and the decisions are left out: both describe nodes and times that a
    /// restore into another cluster does not have, and the leader plans anew after a restore.
    public func backup(takenAtMilliseconds: Int64) -> ClusterBackup {
        ClusterBackup(
            index: appliedIndex, takenAtMilliseconds: takenAtMilliseconds, services: services,
            demand: demand, drainedNodes: drainedNodes, deniedNodes: deniedNodes)
    }

    private mutating func appendDecision(_ d: Decision) {
        decisions.append(d)
        if decisions.count > Self.maxDecisions { decisions.removeFirst(decisions.count - Self.maxDecisions) }
    }

    /// The decision that says a committed entry was refused. Its time is the last decision's:
    /// apply reads no clock, and every server must record the same bytes.
    private mutating func recordRefusal(_ error: ClusterStateError, index: UInt64) {
        appendDecision(
            Decision(
                index: index, timestampMilliseconds: decisions.last?.timestampMilliseconds ?? 0,
                summary: "entry \(index) refused", reasons: [String(error.description.prefix(Decision.maxTextBytes))],
                refused: true))
    }

    /// The state as bytes for a Raft snapshot (Raft §7); same version byte and JSON as commands.
    /// Apply admits only finite numbers, the one thing JSON cannot encode, and restore only what
    /// JSON could decode; an encoding failure would be a bug here, so it is reported, not hidden.
    public func snapshot() throws(ClusterStateError) -> [UInt8] {
        do {
            return [Self.formatVersion] + (try Self.encoder.encode(self))
        } catch {
            throw .malformed("snapshot cannot be encoded: \(error)")
        }
    }

    /// The state a snapshot holds. Services and demand values that break today's limits (written
    /// by an older version) are left out, the same on every server, as apply would have refused
    /// them; anything else that does not decode is an error, and the caller must not serve an
    /// empty state in its place.
    public static func restore(_ bytes: [UInt8]) throws(ClusterStateError) -> ClusterState {
        if bytes.isEmpty { return ClusterState() }
        guard bytes[0] == formatVersion else { throw .unsupportedVersion(bytes[0]) }
        var state: ClusterState
        do {
            state = try JSONDecoder().decode(ClusterState.self, from: Data(bytes.dropFirst()))
        } catch {
            throw .malformed("snapshot: \(error)")
        }
        for (name, spec) in state.services where spec.validationError(name: name) != nil {
            state.services[name] = nil
            state.specHashes[name] = nil
            state.demand[name] = nil
        }
        for (name, spec) in state.previousServices where state.services[name] == nil || spec.validationError(name: name) != nil {
            state.previousServices[name] = nil
        }
        for (name, value) in state.demand
        where state.services[name] == nil || ClusterCommand.setDemand(service: name, value: value).validationError() != nil {
            state.demand[name] = nil
        }
        return state
    }
}
