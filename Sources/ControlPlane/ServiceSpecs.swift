import Consensus
import Scaling

/// The pure translations of a replicated service (Consensus) for the control plane: what changed
/// between two specs, and the planner's view of it (Scaling). The spec hash is the spec's own
/// (`ServiceSpec.containerHash`), kept by the state per service once applied
/// (`ClusterState.specHashes`). The translation to a Docker container (a shell's
/// vocabulary) stays in the Agent (`Specs.container`).
public enum ServiceSpecs {
    /// Which of the keys `ServiceSpec.containerHash` covers differ, for the decisions: "image busybox:1 → busybox:2", "env, health".
    public static func difference(_ a: Consensus.ServiceSpec, _ b: Consensus.ServiceSpec) -> String {
        var out: [String] = []
        if a.image != b.image { out.append("image \(a.image.prefix(80)) → \(b.image.prefix(80))") }
        if a.command != b.command { out.append("command") }
        if a.cpu != b.cpu || a.memory != b.memory { out.append("resources") }
        if a.stopTimeoutMilliseconds != b.stopTimeoutMilliseconds { out.append("stop_timeout") }
        if a.env != b.env { out.append("env") }
        if a.network != b.network { out.append("network") }
        if a.ports != b.ports { out.append("ports") }
        if a.health != b.health { out.append("health") }
        return out.isEmpty ? "its spec" : out.joined(separator: ", ")
    }

    /// Sources whose demand is a queue's length: the reasons say "queue", and the band defaults to
    /// microscaling's 0.7 (docs/demand.md); other sources default to no band (1).
    public static let queueSources: Set<String> = ["rabbitmq", "redis", "nats", "sqs"]
    public static let queueScaleDownAt = 0.7

    /// The planner's view of a service; `specHash` is the state's (`ClusterState.specHashes`),
    /// computed here only when the caller has none.
    public static func planner(_ name: String, _ s: Consensus.ServiceSpec, specHash: String? = nil) -> Scaling.ServiceSpec {
        Scaling.ServiceSpec(
            name: name, priority: s.priority, cpuMillis: s.cpuMillicores,
            memoryBytes: Int(clamping: s.memory), min: s.min, max: s.max,
            perContainer: s.demand?.perContainer ?? 1, fill: s.fill,
            stopTimeout: .milliseconds(s.stopTimeoutMilliseconds), specHash: specHash ?? s.containerHash,
            control: control(s.demand), hostPorts: s.fixedHostPorts,
            constraints: s.placementConstraints, spread: s.spread)
    }

    /// What a utilization sample needs of a service (no spec hash: sampled every second on every server).
    public static func sampled(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec {
        Scaling.ServiceSpec(
            name: name, priority: s.priority, cpuMillis: s.cpuMillicores,
            memoryBytes: Int(clamping: s.memory), min: s.min, max: s.max,
            perContainer: s.demand?.perContainer ?? 1, fill: s.fill)
    }

    /// The planner's control settings of a demand source (docs/demand.md).
    public static func control(_ d: DemandSourceConfig?) -> Scaling.Control {
        guard let d else { return Scaling.Control() }
        let queue = queueSources.contains(d.source)
        return Scaling.Control(
            scaleDownAt: d.scaleDownAt ?? (queue ? queueScaleDownAt : 1), maxChange: d.maxChange,
            gains: d.controller.map { Gains(kp: $0.kp, kd: $0.kd) }, queue: queue)
    }
}
