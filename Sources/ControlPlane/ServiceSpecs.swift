import Consensus
import Foundation  // JSONEncoder for the spec hash, as Consensus encodes its entries; no clock is read here
import Scaling

/// The pure translations of a replicated service (Consensus) for the control plane: its spec hash,
/// what changed between two specs, and the planner's view of it (Scaling). One place, so every
/// agent and the simulator agree on a hash. The translation to a Docker container (a shell's
/// vocabulary) stays in the Agent (`Specs.container`).
public enum ServiceSpecs {
    /// A stable hash of what a container is made from (image, command, limits, stop timeout): a
    /// change replaces the containers (the reconciler compares it with the `io.microscale.spec`
    /// label). FNV-1a over sorted-key JSON, so every agent and every version computes the same value
    /// (Swift's `Hasher` is seeded per process).
    public static func hash(_ s: Consensus.ServiceSpec) -> String {
        struct Identity: Encodable {
            var image: String
            var command: [String]
            var cpu: Double
            var memory: UInt64
            var stop: Int64
            // The workload keys (docs/contracts.md, "The services file") are left out when undeclared (nil encodes to
            // nothing), so a service written before they existed keeps its hash and its containers.
            var env: [String: String]?
            var network: String?
            var ports: [PortMapping]?
            var health: HealthCheck?
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let bytes =
            (try? e.encode(
                Identity(
                    image: s.image, command: s.command, cpu: s.cpu, memory: s.memory,
                    stop: s.stopTimeoutMilliseconds, env: s.env, network: s.network,
                    ports: s.ports, health: s.health))) ?? Data()
        return String(fnv1a(bytes), radix: 16)
    }

    /// Which of the keys `hash` covers differ, for the decisions: "image busybox:1 → busybox:2", "env, health".
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

    /// FNV-1a, 64 bits: stable across processes and versions, unlike `Hasher`.
    public static func fnv1a<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    /// Sources whose demand is a queue's length: the reasons say "queue", and the band defaults to
    /// microscaling's 0.7 (docs/demand.md); other sources default to no band (1).
    public static let queueSources: Set<String> = ["rabbitmq", "redis", "nats", "sqs"]
    public static let queueScaleDownAt = 0.7

    /// The planner's view of a service.
    public static func planner(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec {
        Scaling.ServiceSpec(
            name: name, priority: s.priority, cpuMillis: s.cpuMillicores,
            memoryBytes: Int(clamping: s.memory), min: s.min, max: s.max,
            perContainer: s.demand?.perContainer ?? 1, fill: s.fill,
            stopTimeout: .milliseconds(s.stopTimeoutMilliseconds), specHash: hash(s),
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
