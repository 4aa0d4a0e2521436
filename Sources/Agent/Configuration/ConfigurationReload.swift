import Foundation

/// What a configuration reload (SIGHUP re-reading `--config FILE`) does with each key: the keys
/// that can change in a running agent take their new values; the others keep the running value
/// until a restart, and are named (docs/operations.md, "Reloading the configuration").
///
/// Pure: it compares two resolved configurations (the file and the flags, checked by
/// `AgentSettings.resolve` as at start, so a bad file never gets here) and reads nothing.
public struct ConfigurationReload: Sendable, Equatable {
    /// Keys whose new value takes effect now, in `AgentSettings.keys` order (sorted).
    public var applied: [String]
    /// Keys whose value changed but which need a restart; the running value stays.
    public var needRestart: [String]
    /// The running configuration with the applied keys changed.
    public var configuration: AgentConfiguration

    /// Compares `old` (running) and `new` (just read), key by key.
    public init(old: AgentConfiguration, new: AgentConfiguration) {
        var merged = old
        var applied: [String] = [], refused: [String] = []
        for k in Self.table where k.changed(old, new) {
            if let apply = k.apply {
                apply(&merged, new)
                applied.append(k.key)
            } else {
                refused.append(k.key)
            }
        }
        self.applied = applied
        self.needRestart = refused
        self.configuration = merged
    }

    /// Keys a running agent takes from a reload, and why each can change safely:
    /// - log-level, log-format: only how lines are written (the process's log handler reads them
    ///   for every line);
    /// - capacity-cpu, capacity-memory, reserve-cpu, reserve-memory: the capacity is detected
    ///   again and goes out in this node's next record; the leader plans with it as with any
    ///   record change (containers already placed stay, as after a capacity change at restart);
    /// - dead-node-grace (the leader's decision loop), dead-server-cleanup and
    ///   server-stabilization-time (the leader's autopilot): timers read at every round;
    /// - leave-on-terminate: read when the signal arrives;
    /// - node-label: goes out in this node's next record (signed like every change); the leader
    ///   then moves containers whose constraints this node no longer matches (docs/scheduling.md).
    /// Every other key names something the agent has built on (its name, addresses, role, data
    /// directory, Raft timing, TLS file paths, the API token its HTTP routes hold, membership's
    /// bounds, the registry credentials its image puller holds) and needs a restart.
    public static var reloadable: [String] { table.filter { $0.apply != nil }.map(\.key) }

    /// Every key, for a test that none is forgotten (`api-token-file` resolves into api-token).
    static var keys: [String] { table.map(\.key) }

    private struct Key: Sendable {
        var key: String
        var changed: @Sendable (AgentConfiguration, AgentConfiguration) -> Bool
        var apply: (@Sendable (inout AgentConfiguration, AgentConfiguration) -> Void)?
    }

    private static func fixed<T: Equatable>(_ key: String, _ path: KeyPath<AgentConfiguration, T> & Sendable) -> Key {
        Key(key: key, changed: { $0[keyPath: path] != $1[keyPath: path] }, apply: nil)
    }

    private static func live<T: Equatable>(_ key: String, _ path: WritableKeyPath<AgentConfiguration, T> & Sendable) -> Key {
        Key(key: key, changed: { $0[keyPath: path] != $1[keyPath: path] }, apply: { $0[keyPath: path] = $1[keyPath: path] })
    }

    private static let table: [Key] = [
        fixed("advertise", \.advertise),
        fixed("api-token", \.apiToken),
        fixed("bind", \.bind),
        fixed("bootstrap-expect", \.bootstrapExpect),
        live("capacity-cpu", \.capacityCPUMillis),
        live("capacity-memory", \.capacityMemoryBytes),
        fixed("cluster", \.cluster),
        fixed("data-dir", \.dataDir),
        live("dead-node-grace", \.deadNodeGrace),
        live("dead-server-cleanup", \.deadServerCleanup),
        fixed("docker-socket", \.dockerSocket),
        fixed("http", \.http),
        fixed("join", \.join),
        live("leave-on-terminate", \.leaveOnTerminate),
        live("log-format", \.logFormat),
        live("log-level", \.logLevel),
        fixed("max-members", \.maxMembers),
        fixed("name", \.name),
        live("node-label", \.nodeLabels),
        fixed("raft-election-timeout", \.raftElectionTimeout),
        fixed("raft-heartbeat-interval", \.raftHeartbeat),
        fixed("registry-auth", \.registryAuth),
        live("reserve-cpu", \.reserveCPUMillis),
        live("reserve-memory", \.reserveMemoryBytes),
        fixed("server", \.server),
        live("server-stabilization-time", \.serverStabilizationTime),
        fixed("standby", \.standby),
        fixed("tls-ca", \.tlsCA),
        fixed("tls-cert", \.tlsCert),
        fixed("tls-key", \.tlsKey),
        fixed("warm-standby-memory", \.warmStandbyMemoryBytes),
    ]
}
