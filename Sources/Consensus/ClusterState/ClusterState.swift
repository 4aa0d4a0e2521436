import Foundation

/// The replicated cluster state: what every server applies from the Raft log, in the same order,
/// to the same result (Raft §5 "replicated state machine"). Plain data only: the planner
/// (Scaling) and the agent translate to and from their own types.

/// Where a service's demand comes from (DESIGN.md §6 `demand:`); the Demand module interprets it.
public struct DemandSourceConfig: Sendable, Hashable, Codable {
    /// static | random | prometheus | redis
    public var source: String
    /// Demand one container absorbs: desired = ceil(demand / perContainer).
    public var perContainer: Double?
    /// Source-specific settings (a Prometheus query, a Redis key, ...).
    public var options: [String: String]

    public init(source: String, perContainer: Double? = nil, options: [String: String] = [:]) {
        self.source = source
        self.perContainer = perContainer
        self.options = options
    }
}

/// One entry of the services file (DESIGN.md §6).
public struct ServiceSpec: Sendable, Hashable, Codable {
    public var image: String
    public var command: [String]
    /// 1 is the most important.
    public var priority: Int
    /// Cores reserved per container.
    public var cpu: Double
    /// Bytes reserved per container.
    public var memory: UInt64
    public var min: Int
    public var max: Int
    public var demand: DemandSourceConfig?
    /// Use whatever capacity is left.
    public var fill: Bool
    public var stopTimeoutMilliseconds: Int64

    public init(image: String, command: [String] = [], priority: Int = 1, cpu: Double, memory: UInt64,
                min: Int = 0, max: Int, demand: DemandSourceConfig? = nil, fill: Bool = false,
                stopTimeoutMilliseconds: Int64 = 10_000) {
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

    /// The first thing wrong with the spec of `name`, naming the field.
    public func validationError(name: String) -> ClusterStateError? {
        func bad(_ field: String, _ why: String) -> ClusterStateError { .invalidService(name: name, field: field, reason: why) }
        if name.isEmpty || name.count > 63 { return bad("name", "must be 1-63 characters") }
        if image.isEmpty { return bad("image", "must not be empty") }
        if priority < 1 { return bad("priority", "must be 1 or more (1 is the most important)") }
        if !(cpu > 0) || !cpu.isFinite { return bad("cpu", "must be a positive number of cores") }
        if memory == 0 { return bad("memory", "must be positive") }
        if min < 0 { return bad("min", "must not be negative") }
        if max < min { return bad("max", "must be at least min (\(min))") }
        if stopTimeoutMilliseconds < 0 { return bad("stop_timeout", "must not be negative") }
        if let d = demand, let p = d.perContainer, !(p > 0) || !p.isFinite { return bad("demand.per_container", "must be a positive number") }
        return nil
    }
}

/// The planner's output as data: per node, per service, how many containers.
public struct Plan: Sendable, Hashable, Codable {
    public var assignments: [String: [String: Int]]
    public init(assignments: [String: [String: Int]] = [:]) { self.assignments = assignments }

    public func count(service: String) -> Int { assignments.values.reduce(0) { $0 + ($1[service] ?? 0) } }
}

/// One decision of the leader's planner, with its reasons, for `microscale decisions`.
public struct Decision: Sendable, Hashable, Codable {
    /// The log index that committed it (set on apply).
    public var index: UInt64
    /// Wall-clock milliseconds the leader stamped it with (data, so apply stays deterministic).
    public var timestampMilliseconds: Int64
    public var summary: String
    public var reasons: [String]

    public init(index: UInt64 = 0, timestampMilliseconds: Int64, summary: String, reasons: [String]) {
        self.index = index
        self.timestampMilliseconds = timestampMilliseconds
        self.summary = summary
        self.reasons = reasons
    }
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

public enum ClusterStateError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidService(name: String, field: String, reason: String)
    case unknownService(String)
    case invalidDemand(service: String, value: Double)
    case malformed(String)
    case unsupportedVersion(UInt8)

    public var description: String {
        switch self {
        case .invalidService(let n, let f, let r): return "service \(n): \(f) \(r)"
        case .unknownService(let n): return "no service named \(n)"
        case .invalidDemand(let s, let v): return "demand for \(s): \(v) is not a finite number >= 0"
        case .malformed(let m): return "malformed \(m)"
        case .unsupportedVersion(let v): return "unsupported encoding version \(v)"
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

    /// Bound on the decision history kept (DESIGN.md §4.7).
    public static let maxDecisions = 1000

    public private(set) var services: [String: ServiceSpec] = [:]
    public private(set) var demand: [String: Double] = [:]
    /// Sorted, so encoding is deterministic.
    public private(set) var drainedNodes: [String] = []
    public private(set) var plan = Plan()
    /// Oldest first, at most `maxDecisions`.
    public private(set) var decisions: [Decision] = []
    /// The last log index applied.
    public private(set) var appliedIndex: UInt64 = 0

    public init() {}

    public func isDrained(_ node: String) -> Bool { drainedNodes.contains(node) }

    /// Applies the committed entry at `index`. A command that is invalid (say, demand for a service
    /// that does not exist) changes nothing and returns the error, the same on every server,
    /// so the proposer can report it; a committed entry never stops the state machine. Returns
    /// nil when the command took effect.
    @discardableResult
    public mutating func apply(_ data: [UInt8], index: UInt64) -> ClusterStateError? {
        appliedIndex = max(appliedIndex, index)
        if data.isEmpty { return nil } // a leader's no-op
        let command: ClusterCommand
        do { command = try ClusterCommand.decode(data) } catch { return error }
        return apply(command, index: index)
    }

    public mutating func apply(_ command: ClusterCommand, index: UInt64) -> ClusterStateError? {
        appliedIndex = max(appliedIndex, index)
        switch command {
        case .applyServices(let specs):
            for name in specs.keys.sorted() {
                if let e = specs[name]!.validationError(name: name) { return e }
            }
            services.merge(specs) { _, new in new }
        case .removeService(let name):
            guard services.removeValue(forKey: name) != nil else { return .unknownService(name) }
            demand[name] = nil
        case .setDemand(let service, let value):
            guard services[service] != nil else { return .unknownService(service) }
            guard value.isFinite, value >= 0 else { return .invalidDemand(service: service, value: value) }
            demand[service] = value
        case .setDrain(let node, let drained):
            drainedNodes.removeAll { $0 == node }
            if drained {
                drainedNodes.append(node)
                drainedNodes.sort()
            }
        case .setPlan(let p, var d):
            plan = p
            d.index = index
            decisions.append(d)
            if decisions.count > Self.maxDecisions { decisions.removeFirst(decisions.count - Self.maxDecisions) }
        }
        return nil
    }

    /// The state as bytes for a Raft snapshot (Raft §7); same version byte and JSON as commands.
    /// Cannot fail: apply admits only finite numbers, the one thing JSON cannot encode.
    public func snapshot() -> [UInt8] {
        [Self.formatVersion] + (try! Self.encoder.encode(self))
    }

    public static func restore(_ bytes: [UInt8]) throws(ClusterStateError) -> ClusterState {
        if bytes.isEmpty { return ClusterState() }
        guard bytes[0] == formatVersion else { throw .unsupportedVersion(bytes[0]) }
        do {
            return try JSONDecoder().decode(ClusterState.self, from: Data(bytes.dropFirst()))
        } catch {
            throw .malformed("snapshot: \(error)")
        }
    }
}
