import Bounds
import DockerEngine
import Foundation
import Yams

/// Everything `microscale agent` is told (docs/contracts.md): flags, or the same keys in a YAML
/// file named by `--config`; a flag given on the command line wins over the file.
public struct AgentConfiguration: Sendable, Equatable {
    public struct HostPort: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        /// "10.0.0.5:7480", "[::1]:7480", "node-a:7480".
        public init?(_ text: String) {
            let t = Units.trimmed(text)
            var hostPart: Substring
            let portPart: Substring
            if t.hasPrefix("[") {
                guard let close = t.firstIndex(of: "]"), t[t.index(after: close)...].hasPrefix(":") else { return nil }
                hostPart = t[t.index(after: t.startIndex)..<close]
                portPart = t[t.index(close, offsetBy: 2)...]
            } else {
                guard let colon = t.lastIndex(of: ":") else { return nil }
                hostPart = t[..<colon]
                portPart = t[t.index(after: colon)...]
                if hostPart.contains(":") { return nil }
            }
            hostPart = hostPart.isEmpty ? "0.0.0.0" : hostPart
            guard let port = Int(portPart), (0...65_535).contains(port) else { return nil }
            host = String(hostPart)
            self.port = port
        }

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var isLoopback: Bool { host == "localhost" || host.hasPrefix("127.") || host == "::1" }
    }

    public var name: String
    public var bind: HostPort
    public var advertise: HostPort
    public var http: HostPort
    public var server: Bool
    public var bootstrapExpect: Int
    /// Members this agent keeps at most; beyond it a new member is refused (docs/limits.md).
    public var maxMembers = Limits.defaultMaxMembers
    public var join: [HostPort]
    public var dataDir: String
    public var tlsCA: String
    public var tlsCert: String
    public var tlsKey: String
    public var dockerSocket: String
    /// Registry credentials for image pulls (`--registry-auth FILE`, Docker config.json format).
    public var registryAuth = RegistryAuth()
    /// nil: detect from the Docker Engine and cgroups.
    public var capacityCPUMillis: Int64?
    public var capacityMemoryBytes: Int64?
    public var cluster: String
    /// Required when the HTTP API listens beyond loopback (docs/ARCHITECTURE.md, "The HTTP API and browsers"); from `--api-token` or
    /// read from `--api-token-file`.
    public var apiToken: String?
    public var logLevel: String
    /// Raft timing (Raft §5.2): a follower campaigns after hearing nothing for a time drawn from
    /// [T, 2T); the leader heartbeats every `raftHeartbeat`.
    public var raftElectionTimeout: Duration = .milliseconds(300)
    public var raftHeartbeat: Duration = .milliseconds(50)
    /// Server membership at runtime (docs/consensus.md, "Server membership"): a server dead in
    /// gossip this long is removed from the Raft configuration (nil: never automatically), and a
    /// new server is promoted to voter after being healthy and caught up this long.
    public var deadServerCleanup: Duration? = .seconds(30)
    public var serverStabilizationTime: Duration = .seconds(5)
    /// SIGTERM leaves the cluster (the leader moves this node's work at once) instead of only
    /// stopping; off by default, as Consul and Nomad do, so a restart or an upgrade moves nothing.
    public var leaveOnTerminate = false
    /// On the leader: a node this long dead (its own probe unanswered) keeps its work as a suspect
    /// would, so an agent restarting (or a host rebooting) in less than failure detection plus
    /// this gets its containers back, adopted, instead of moved (docs/ARCHITECTURE.md, "Restart
    /// is not leave"). A node that said it leaves is not waited for.
    public var deadNodeGrace: Duration = AgentConfiguration.defaultDeadNodeGrace
    public static let defaultDeadNodeGrace: Duration = .seconds(5)
    /// Kept back from the detected capacity for the OS, dockerd and the agent itself
    /// (docs/operations.md, "Capacity"); not applied when --capacity-* are given.
    public var reserveCPUMillis: Int64 = AgentConfiguration.defaultReserveCPUMillis
    public var reserveMemoryBytes: Int64 = AgentConfiguration.defaultReserveMemoryBytes
    public static let defaultReserveCPUMillis: Int64 = 500
    public static let defaultReserveMemoryBytes: Int64 = 512 << 20
    /// "text" (one line per event, for a terminal or journald) or "json" (one object per line).
    public var logFormat = "text"
    /// `--node-label key=value` (repeatable): gossiped in the node's signed record, read by the
    /// services' `constraints:` and `spread:` (docs/scheduling.md).
    public var nodeLabels: [String: String] = [:]
    /// `--standby N`: standby containers (created, not started) kept per priority-1 service on a
    /// node the plan gives work, so a demand step starts them with no create on its critical
    /// path (docs/scheduling.md, "Standby containers").
    public var standby = AgentConfiguration.defaultStandby
    public static let defaultStandby = 2
    public static let maxStandby = 4
    /// `--warm-standby-memory SIZE`: memory for warm standbys on this node, standbys started and
    /// then paused so a demand step unpauses them (docs/scheduling.md, "Warm standbys"). As many
    /// of the pool are warm as the services' memory limits fit in it; the rest stay created. A
    /// paused container holds its memory, so the node advertises its capacity less this, like
    /// `reserve-memory`. 0 (the default): every standby stays created.
    public var warmStandbyMemoryBytes: Int64 = 0
}

/// A configuration problem, naming the flag or key and, for a file, the line.
public struct ConfigurationError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The raw values as given, before defaults and validation. Each field is the flag's name.
public struct AgentSettings: Sendable, Equatable {
    public var values: [String: String] = [:]
    public var lists: [String: [String]] = [:]
    /// Where each value came from, for error messages: "--bind" or "agent.yaml line 4".
    public var origins: [String: String] = [:]

    public init() {}

    public static let keys: Set<String> = [
        "name", "bind", "advertise", "http", "server", "bootstrap-expect", "join", "data-dir",
        "tls-ca", "tls-cert", "tls-key", "docker-socket", "capacity-cpu", "capacity-memory",
        "cluster", "api-token", "api-token-file", "log-level", "raft-election-timeout", "raft-heartbeat-interval",
        "max-members", "dead-server-cleanup", "server-stabilization-time", "leave-on-terminate", "dead-node-grace",
        "reserve-cpu", "reserve-memory", "log-format", "registry-auth", "node-label", "standby",
        "warm-standby-memory",
    ]
    /// Keys given as a bare flag (`--server`), true when present.
    static let booleanKeys: Set<String> = ["server", "leave-on-terminate"]
    static let listKeys: Set<String> = ["join", "node-label"]

    public mutating func set(_ key: String, _ value: String, origin: String) {
        values[key] = value
        origins[key] = origin
    }

    public mutating func append(_ key: String, _ value: String, origin: String) {
        lists[key, default: []].append(value)
        origins[key] = origin
    }

    /// Values from a YAML file; every key must be a known flag name.
    public static func fromYAML(_ text: String, file: String) throws -> AgentSettings {
        var s = AgentSettings()
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw ConfigurationError("\(file): not valid YAML: \(error)")
        }
        guard let root else { return s }
        guard let mapping = root.mapping else {
            throw ConfigurationError("\(file): expected a mapping of flag names to values")
        }
        for (keyNode, valueNode) in mapping {
            let line = (keyNode.mark?.line).map { " line \($0)" } ?? ""
            let origin = "\(file)\(line)"
            guard let key = keyNode.string else { throw ConfigurationError("\(origin): keys must be strings") }
            let normalized = key.replacingOccurrences(of: "_", with: "-")
            guard keys.contains(normalized) else {
                throw ConfigurationError("\(origin): unknown key \"\(key)\"; known keys: \(keys.sorted().joined(separator: ", "))")
            }
            if listKeys.contains(normalized) {
                if let seq = valueNode.sequence {
                    for item in seq {
                        guard let v = item.string else { throw ConfigurationError("\(origin): \(key) entries must be strings") }
                        s.append(normalized, v, origin: origin)
                    }
                } else if let v = valueNode.string {
                    s.append(normalized, v, origin: origin)
                } else if normalized == "node-label", let map = valueNode.mapping {
                    // `node-label: {zone: a, disk: ssd}` reads as the flags would.
                    for (k, v) in map {
                        guard let key = k.string, let value = v.scalar?.string else {
                            throw ConfigurationError("\(origin): \(key) entries must be key: value strings")
                        }
                        s.append(normalized, "\(key)=\(value)", origin: origin)
                    }
                } else {
                    throw ConfigurationError("\(origin): \(key) must be a string or a list of strings")
                }
            } else {
                guard let v = valueNode.scalar?.string else {
                    throw ConfigurationError("\(origin): \(key) must be a single value")
                }
                s.set(normalized, v, origin: origin)
            }
        }
        return s
    }

    /// `other` wins where both have a value (flags over file).
    public func overridden(by other: AgentSettings) -> AgentSettings {
        var merged = self
        for (k, v) in other.values { merged.set(k, v, origin: other.origins[k] ?? "--\(k)") }
        for (k, v) in other.lists where !v.isEmpty {
            merged.lists[k] = v
            merged.origins[k] = other.origins[k] ?? "--\(k)"
        }
        return merged
    }

    /// Applies defaults and checks every value, naming the first problem found.
    public func resolve() throws -> AgentConfiguration {
        func origin(_ k: String) -> String { origins[k] ?? "--\(k)" }
        func required(_ k: String) throws -> String {
            guard let v = values[k], !v.isEmpty else { throw ConfigurationError("--\(k) is required (or \"\(k)\" in the --config file)") }
            return v
        }
        func hostPort(_ k: String, default d: String? = nil) throws -> AgentConfiguration.HostPort {
            guard let raw = values[k] ?? d else { throw ConfigurationError("--\(k) is required (or \"\(k)\" in the --config file)") }
            guard let hp = AgentConfiguration.HostPort(raw) else {
                throw ConfigurationError("\(origin(k)): \(k) \"\(raw)\" is not ADDRESS:PORT")
            }
            return hp
        }
        func bool(_ k: String) throws -> Bool {
            guard let raw = values[k] else { return false }
            switch raw.lowercased() {
            case "true", "yes", "1", "on": return true
            case "false", "no", "0", "off": return false
            default: throw ConfigurationError("\(origin(k)): \(k) \"\(raw)\" is not true or false")
            }
        }

        let name = try required("name")
        if let bad = Self.nameProblem(name) { throw ConfigurationError("\(origin("name")): name \"\(name)\" \(bad)") }
        let bind = try hostPort("bind", default: "0.0.0.0:7480")
        var advertise = try hostPort("advertise", default: values["bind"] ?? "0.0.0.0:7480")
        if advertise.host == "0.0.0.0" || advertise.host == "::" {
            guard values["advertise"] == nil else {
                throw ConfigurationError("\(origin("advertise")): advertise must be an address peers can reach, not \(advertise.host)")
            }
            // Binding to every interface: advertise loopback, which suits a single-host
            // trial; a real cluster names its address with --advertise.
            advertise.host = "127.0.0.1"
        }
        let http = try hostPort("http", default: "127.0.0.1:7481")
        let server = try bool("server")
        var expect = 0
        if let raw = values["bootstrap-expect"] {
            guard let n = Int(raw), n >= 1, n <= 9 else {
                throw ConfigurationError("\(origin("bootstrap-expect")): bootstrap-expect \"\(raw)\" must be a number from 1 to 9")
            }
            guard server else { throw ConfigurationError("\(origin("bootstrap-expect")): bootstrap-expect needs --server") }
            expect = n
        }
        var join: [AgentConfiguration.HostPort] = []
        for raw in lists["join"] ?? [] {
            guard let hp = AgentConfiguration.HostPort(raw), hp.port != 0 else {
                throw ConfigurationError("\(origin("join")): join \"\(raw)\" is not ADDRESS:PORT")
            }
            join.append(hp)
        }
        let dataDir = try required("data-dir")
        let ca = try required("tls-ca"), cert = try required("tls-cert"), key = try required("tls-key")
        var cpu: Int64?
        if let raw = values["capacity-cpu"] {
            guard let m = Units.millicores(raw), m > 0, m <= Limits.maxNodeCPUMillicores else {
                throw ConfigurationError(
                    "\(origin("capacity-cpu")): capacity-cpu \"\(raw)\" is not a number of cores from 0.001 to \(Limits.maxNodeCPUMillicores / 1000)")
            }
            cpu = m
        }
        var memory: Int64?
        if let raw = values["capacity-memory"] {
            guard let b = Units.bytes(raw), b > 0, b <= Limits.maxNodeMemoryBytes else {
                throw ConfigurationError("\(origin("capacity-memory")): capacity-memory \"\(raw)\" is not a size from 1 byte to 64TiB, like 8GiB")
            }
            memory = b
        }
        var token = values["api-token"].flatMap { $0.isEmpty ? nil : $0 }
        if let token, let bad = APIToken.problem(token) {
            throw ConfigurationError("\(origin("api-token")): api-token \(bad)")
        }
        if let file = values["api-token-file"] {
            // Two sources of one secret: which one wins would be a guess.
            guard values["api-token"] == nil else {
                throw ConfigurationError("\(origin("api-token-file")): api-token-file and api-token (\(origin("api-token"))) are both set; use one")
            }
            guard !file.isEmpty else { throw ConfigurationError("\(origin("api-token-file")): api-token-file is empty; name the token's file") }
            token = try APIToken.read(file: file, name: origin("api-token-file"))
        }
        if !http.isLoopback, token == nil {
            throw ConfigurationError("\(origin("http")): the HTTP API on \(http) is reachable beyond this host; set api-token")
        }
        let level = values["log-level"] ?? "info"
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
            throw ConfigurationError(
                "\(origin("log-level")): log-level \"\(level)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
        func duration(_ key: String, default d: Duration) throws -> Duration {
            guard let raw = values[key] else { return d }
            guard let v = Units.duration(raw), v >= .milliseconds(1), v <= .seconds(60) else {
                throw ConfigurationError("\(origin(key)): \(key) \"\(raw)\" is not a duration from 1ms to 60s (like 300ms)")
            }
            return v
        }
        let election = try duration("raft-election-timeout", default: .milliseconds(300))
        let heartbeat = try duration("raft-heartbeat-interval", default: .milliseconds(50))
        guard heartbeat < election else {
            throw ConfigurationError(
                "\(origin("raft-heartbeat-interval")): raft-heartbeat-interval must be shorter than raft-election-timeout (\(election))")
        }
        var configuration = AgentConfiguration(
            name: name, bind: bind, advertise: advertise, http: http, server: server, bootstrapExpect: expect,
            join: join, dataDir: dataDir, tlsCA: ca, tlsCert: cert, tlsKey: key,
            dockerSocket: values["docker-socket"] ?? "/var/run/docker.sock",
            capacityCPUMillis: cpu, capacityMemoryBytes: memory, cluster: values["cluster"] ?? "microscale",
            apiToken: token, logLevel: level)
        configuration.raftElectionTimeout = election
        if let file = values["registry-auth"] {
            do { configuration.registryAuth = try RegistryAuth.load(path: file) } catch {
                throw ConfigurationError(
                    "\(origin("registry-auth")): \(error.description.replacingOccurrences(of: "--registry-auth ", with: "registry-auth "))")
            }
        }
        configuration.raftHeartbeat = heartbeat
        switch NodeLabels.parse(lists["node-label"] ?? []) {
        case .success(let labels): configuration.nodeLabels = labels
        case .failure(let e): throw ConfigurationError("\(origin("node-label")): node-label \(e)")
        }
        if let raw = values["dead-server-cleanup"] {
            if raw == "off" || raw == "0" {
                configuration.deadServerCleanup = nil
            } else {
                guard let v = Units.duration(raw), v >= .seconds(1), v <= .seconds(86_400) else {
                    throw ConfigurationError(
                        "\(origin("dead-server-cleanup")): dead-server-cleanup \"\(raw)\" is not a duration from 1s to 24h (like 30s), or off")
                }
                configuration.deadServerCleanup = v
            }
        }
        if let raw = values["server-stabilization-time"] {
            guard let v = Units.duration(raw), v >= .zero, v <= .seconds(600) else {
                throw ConfigurationError(
                    "\(origin("server-stabilization-time")): server-stabilization-time \"\(raw)\" is not a duration from 0s to 10m (like 5s)")
            }
            configuration.serverStabilizationTime = v
        }
        if let raw = values["max-members"] {
            // Every member's record is held by every member (2 KiB each at most): 100,000 is 200 MB.
            guard let n = Int(raw), n >= 2, n <= 100_000 else {
                throw ConfigurationError("\(origin("max-members")): max-members \"\(raw)\" must be a number from 2 to 100000")
            }
            configuration.maxMembers = n
        }
        if let raw = values["standby"] {
            // Each standby is a container created on the node's disk (its writable layer): a few
            // per service is what a step uses; more is disk for nothing.
            guard let n = Int(raw), n >= 0, n <= AgentConfiguration.maxStandby else {
                throw ConfigurationError(
                    "\(origin("standby")): standby \"\(raw)\" must be a number from 0 to \(AgentConfiguration.maxStandby)")
            }
            configuration.standby = n
        }
        if let raw = values["warm-standby-memory"] {
            guard let b = Units.bytes(raw), b >= 0, b <= Limits.maxNodeMemoryBytes else {
                throw ConfigurationError(
                    "\(origin("warm-standby-memory")): warm-standby-memory \"\(raw)\" is not a size from 0 to 64TiB, like 64MiB")
            }
            configuration.warmStandbyMemoryBytes = b
        }
        configuration.leaveOnTerminate = try bool("leave-on-terminate")
        if let raw = values["dead-node-grace"] {
            guard let v = Units.duration(raw), v >= .zero, v <= Limits.maxDeadNodeGrace else {
                throw ConfigurationError(
                    "\(origin("dead-node-grace")): dead-node-grace \"\(raw)\" is not a duration from 0s to \(Limits.maxDeadNodeGrace) (like 5s)")
            }
            configuration.deadNodeGrace = v
        }
        if let raw = values["reserve-cpu"] {
            guard let m = Units.millicores(raw), m >= 0, m <= Limits.maxNodeCPUMillicores else {
                throw ConfigurationError(
                    "\(origin("reserve-cpu")): reserve-cpu \"\(raw)\" is not a number of cores from 0 to \(Limits.maxNodeCPUMillicores / 1000)")
            }
            configuration.reserveCPUMillis = m
        }
        if let raw = values["reserve-memory"] {
            guard let b = Units.bytes(raw), b >= 0, b <= Limits.maxNodeMemoryBytes else {
                throw ConfigurationError("\(origin("reserve-memory")): reserve-memory \"\(raw)\" is not a size from 0 to 64TiB, like 512MiB")
            }
            configuration.reserveMemoryBytes = b
        }
        let format = values["log-format"] ?? "text"
        guard ["text", "json"].contains(format) else {
            throw ConfigurationError("\(origin("log-format")): log-format \"\(format)\" is not text or json")
        }
        configuration.logFormat = format
        return configuration
    }

    static func nameProblem(_ name: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        if name.count > 63 { return "is longer than 63 characters" }
        if let c = name.first(where: { !allowed.contains($0) }) { return "contains \"\(c)\"; use letters, digits, '-' and '.'" }
        if name.hasPrefix("-") || name.hasSuffix("-") { return "must not start or end with '-'" }
        return nil
    }
}
