import Bounds

/// The workload keys of a service (docs/contracts.md, "The services file"): how its containers are reached (`network`,
/// `ports`), what they are told (`env`) and how they prove they serve (`health`). Optional in
/// `ServiceSpec`, so a log written before these keys existed decodes unchanged, and a service that
/// declares none of them keeps the spec hash it had (its containers are not replaced on upgrade).

/// One published port: `container` inside, `host` on the node (nil: Docker picks a free one).
public struct PortMapping: Sendable, Hashable, Codable {
    public var container: Int
    public var host: Int?
    /// "tcp" or "udp"; nil is tcp.
    public var proto: String?

    public init(container: Int, host: Int? = nil, proto: String? = nil) {
        self.container = container
        self.host = host
        self.proto = proto
    }

    public var protocolName: String { proto ?? "tcp" }
}

/// How the agent decides that a container serves (docs/contracts.md, "The services file" `health:`). Exactly one of `http`
/// (a path, probed on `port`), `tcp` (a port) or `command` (run inside the container by Docker).
public struct HealthCheck: Sendable, Hashable, Codable {
    public var http: String?
    public var tcp: Int?
    public var command: [String]?
    /// The port `http` probes.
    public var port: Int?
    public var intervalMilliseconds: Int64
    public var timeoutMilliseconds: Int64
    /// Consecutive failures that make a container unhealthy.
    public var retries: Int
    /// Failures in this long after the start do not count.
    public var startPeriodMilliseconds: Int64

    public init(
        http: String? = nil, tcp: Int? = nil, command: [String]? = nil, port: Int? = nil,
        intervalMilliseconds: Int64 = 5000, timeoutMilliseconds: Int64 = 2000, retries: Int = 3,
        startPeriodMilliseconds: Int64 = 0
    ) {
        self.http = http
        self.tcp = tcp
        self.command = command
        self.port = port
        self.intervalMilliseconds = intervalMilliseconds
        self.timeoutMilliseconds = timeoutMilliseconds
        self.retries = retries
        self.startPeriodMilliseconds = startPeriodMilliseconds
    }
}

/// How a change of the service's containers rolls out (docs/contracts.md, "The services file" `update:`; docs/rollouts.md).
/// Not part of what a container is made from: changing it replaces nothing.
public struct UpdatePolicy: Sendable, Hashable, Codable {
    /// Containers replaced at a time across the cluster (Docker Swarm's `parallelism`); nil is 1.
    public var maxParallel: Int?
    /// `start-first` (a new container is healthy before an old one stops) or `stop-first` (an old
    /// one stops, then its replacement starts); nil is stop-first, as Swarm's default.
    public var order: String?

    public init(maxParallel: Int? = nil, order: String? = nil) {
        self.maxParallel = maxParallel
        self.order = order
    }

    public static let startFirst = "start-first"
    public static let stopFirst = "stop-first"
    public static let orders = [startFirst, stopFirst]
    public static let defaultMaxParallel = 1

    public var effectiveMaxParallel: Int { maxParallel ?? Self.defaultMaxParallel }
    public var effectiveOrder: String { order ?? Self.stopFirst }
}

/// `network:` values. `bridge` is the agent's own per-host bridge network (created when missing).
public enum NetworkMode {
    public static let bridge = "bridge"
    public static let host = "host"
    public static let none = "none"
    public static let all: [String] = [bridge, host, none]
}

extension ServiceSpec {
    /// The network a container of this service joins: the declared one, or `bridge`.
    public var networkMode: String { network ?? NetworkMode.bridge }

    /// Host ports the service's containers hold fixed on their node: two containers needing one of
    /// them never share a node (the planner treats them as a resource).
    public var fixedHostPorts: [Int] {
        if networkMode == NetworkMode.host { return (ports ?? []).map { $0.host ?? $0.container }.sorted() }
        return (ports ?? []).compactMap(\.host).sorted()
    }

    /// How long a serving container is withdrawn from the endpoints before a planned stop: the
    /// declared `stop_delay`, else `Limits.defaultStopDelayMilliseconds` when the containers
    /// publish ports (they are endpoints a load balancer may route to) and 0 when they do not.
    public var effectiveStopDelayMilliseconds: Int64 {
        if let d = stopDelayMilliseconds { return d }
        let endpoints = networkMode != NetworkMode.none && !(ports ?? []).isEmpty
        return endpoints ? Limits.defaultStopDelayMilliseconds : 0
    }

    /// The rollout policy in force: the declared one, or Swarm's defaults (1, stop-first).
    public var updatePolicy: UpdatePolicy { update ?? UpdatePolicy() }

    /// Whether `other` makes the same containers: image, command, resources, stop timeout and the
    /// workload keys (what `containerHash` covers). A change of any of them is rolled out and keeps
    /// the spec it replaces for `services rollback`; a change of counts, priority, demand or the
    /// update policy is not.
    public func makesSameContainers(as other: ServiceSpec) -> Bool {
        image == other.image && command == other.command && cpu == other.cpu && memory == other.memory
            && stopTimeoutMilliseconds == other.stopTimeoutMilliseconds && env == other.env && network == other.network
            && ports == other.ports && health == other.health
    }

    /// The parsed `constraints:` (those that parse: validation refuses a spec with any other).
    public var placementConstraints: [PlacementConstraint] {
        (constraints ?? []).compactMap { try? PlacementConstraint.parse($0).get() }
    }

    /// The first placement key out of its limits, as (field, reason).
    func placementValidationError() -> (field: String, reason: String)? {
        if let constraints {
            if constraints.count > Limits.maxConstraints {
                return ("constraints", "has \(constraints.count) entries; at most \(Limits.maxConstraints)")
            }
            for (i, c) in constraints.enumerated() {
                if case .failure(let e) = PlacementConstraint.parse(c) { return ("constraints[\(i)]", e.description) }
            }
        }
        if let spread, let p = NodeLabels.keyProblem(spread) {
            return ("spread", "\"\(spread.prefix(80))\": \(p)")
        }
        return nil
    }

    /// The first workload key out of its limits (Limits, docs/limits.md), as (field, reason).
    func workloadValidationError() -> (field: String, reason: String)? {
        if let u = update {
            if let m = u.maxParallel, !(1...Limits.maxUpdateParallel).contains(m) {
                return ("update.max_parallel", "must be 1 to \(Limits.maxUpdateParallel)")
            }
            if let o = u.order, !UpdatePolicy.orders.contains(o) {
                return ("update.order", "`\(o.prefix(64))` is not one of \(UpdatePolicy.orders.joined(separator: ", "))")
            }
        }
        if let env {
            if env.count > Limits.maxEnvVariables { return ("env", "has \(env.count) variables; at most \(Limits.maxEnvVariables)") }
            for (k, v) in env.sorted(by: { $0.key < $1.key }) {
                if k.isEmpty || k.utf8.count > Limits.maxEnvNameBytes || k.contains("=") || k.utf8.contains(0) {
                    return ("env", "`\(k.prefix(64))`: a name is 1-\(Limits.maxEnvNameBytes) bytes without '=' or NUL")
                }
                if v.utf8.count > Limits.maxEnvValueBytes || v.utf8.contains(0) {
                    return ("env.\(k)", "is longer than \(Limits.maxEnvValueBytes) bytes or holds a NUL")
                }
            }
        }
        if let network, !NetworkMode.all.contains(network) {
            return ("network", "`\(network.prefix(64))` is not one of \(NetworkMode.all.joined(separator: ", "))")
        }
        if let ports {
            if ports.count > Limits.maxPorts { return ("ports", "has \(ports.count) entries; at most \(Limits.maxPorts)") }
            if !ports.isEmpty && networkMode == NetworkMode.none { return ("ports", "cannot be published with network none") }
            var seen: Set<String> = []
            for (i, p) in ports.enumerated() {
                if !(1...65535).contains(p.container) { return ("ports[\(i)].container", "must be a port from 1 to 65535") }
                if let h = p.host, !(1...65535).contains(h) { return ("ports[\(i)].host", "must be a port from 1 to 65535") }
                if let proto = p.proto, proto != "tcp" && proto != "udp" { return ("ports[\(i)].protocol", "must be tcp or udp") }
                if !seen.insert("\(p.container)/\(p.protocolName)").inserted {
                    return ("ports[\(i)].container", "\(p.container)/\(p.protocolName) is published twice")
                }
            }
            let fixed = fixedHostPorts
            if Set(fixed).count != fixed.count { return ("ports", "a host port is used twice") }
        }
        if let h = health {
            let kinds = [h.http != nil, h.tcp != nil, h.command != nil].filter { $0 }.count
            if kinds != 1 { return ("health", "needs exactly one of http, tcp or command") }
            if let path = h.http {
                if !path.hasPrefix("/") || path.utf8.count > Limits.maxHealthPathBytes || path.contains(where: { $0.isWhitespace }) {
                    return ("health.http", "must be a path starting with / of at most \(Limits.maxHealthPathBytes) bytes, without spaces")
                }
                guard let port = h.port else { return ("health.port", "required with http") }
                if !(1...65535).contains(port) { return ("health.port", "must be a port from 1 to 65535") }
            }
            if let port = h.tcp, !(1...65535).contains(port) { return ("health.tcp", "must be a port from 1 to 65535") }
            if (h.http != nil || h.tcp != nil) && networkMode == NetworkMode.none {
                return ("health", "http and tcp checks need network bridge or host (the agent probes the container)")
            }
            if let c = h.command {
                if c.isEmpty || c.count > Limits.maxCommandArguments {
                    return ("health.command", "must have 1 to \(Limits.maxCommandArguments) arguments")
                }
                if c.contains(where: { $0.utf8.count > Limits.maxArgumentBytes }) {
                    return ("health.command", "an argument is longer than \(Limits.maxArgumentBytes) bytes")
                }
            }
            let range = Limits.minHealthIntervalMilliseconds...Limits.maxHealthIntervalMilliseconds
            if !range.contains(h.intervalMilliseconds) { return ("health.interval", "must be 100ms to 1h") }
            if !range.contains(h.timeoutMilliseconds) { return ("health.timeout", "must be 100ms to 1h") }
            if !(1...Limits.maxHealthRetries).contains(h.retries) { return ("health.retries", "must be 1 to \(Limits.maxHealthRetries)") }
            if !(0...Limits.maxHealthIntervalMilliseconds).contains(h.startPeriodMilliseconds) {
                return ("health.start_period", "must be 0 to 1h")
            }
        }
        return nil
    }
}
