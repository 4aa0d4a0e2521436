import Bounds
import Consensus
import ControlPlane
import DockerEngine
import Foundation
import Scaling

/// Translations between the replicated services (Consensus), the planner's view (Scaling) and the
/// containers an agent creates (DockerEngine). The hash and the planner's view are ControlPlane's
/// (`ServiceSpecs`), so the agent and the simulator never disagree on a hash.
/// Public for the fuzz targets, which plan what they decode as the decision loop would.
public enum Specs {
    // The pure translations live in ControlPlane (`ServiceSpecs`); these names stay for the
    // Agent's callers and the fuzz targets.
    static func hash(_ s: Consensus.ServiceSpec) -> String { ServiceSpecs.hash(s) }
    static func difference(_ a: Consensus.ServiceSpec, _ b: Consensus.ServiceSpec) -> String { ServiceSpecs.difference(a, b) }
    static func fnv1a<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 { ServiceSpecs.fnv1a(bytes) }
    public static func planner(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec { ServiceSpecs.planner(name, s) }
    static func sampled(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec { ServiceSpecs.sampled(name, s) }
    static func control(_ d: DemandSourceConfig?) -> Scaling.Control { ServiceSpecs.control(d) }

    static func container(_ name: String, _ s: Consensus.ServiceSpec, node: String) -> ContainerSpec {
        ContainerSpec(
            service: name, node: node, specHash: hash(s), image: s.image, command: s.command,
            env: (s.env ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
            cpu: s.cpu, memoryBytes: Int64(clamping: s.memory),
            stopTimeoutSeconds: Int((s.stopTimeoutMilliseconds + 999) / 1000),
            network: network(s.networkMode),
            ports: (s.ports ?? []).map { ContainerSpec.Port(container: $0.container, host: $0.host, proto: $0.protocolName) },
            probe: s.health.flatMap { h in
                let kind: ContainerSpec.Probe.Kind
                if let path = h.http, let port = h.port {
                    kind = .http(path: path, port: port)
                } else if let port = h.tcp {
                    kind = .tcp(port: port)
                } else {
                    return nil
                }
                return ContainerSpec.Probe(
                    kind: kind, interval: .milliseconds(h.intervalMilliseconds),
                    timeout: .milliseconds(h.timeoutMilliseconds), retries: h.retries,
                    startPeriod: .milliseconds(h.startPeriodMilliseconds))
            },
            healthCommand: s.health.flatMap { h in
                h.command.map {
                    ContainerSpec.HealthCommand(
                        command: $0, interval: .milliseconds(h.intervalMilliseconds),
                        timeout: .milliseconds(h.timeoutMilliseconds), retries: h.retries,
                        startPeriod: .milliseconds(h.startPeriodMilliseconds))
                }
            })
    }

    /// The Docker network of a `network:` mode: `bridge` is the agent's own bridge network.
    static func network(_ mode: String) -> ContainerSpec.Network {
        switch mode {
        case NetworkMode.host: .host
        case NetworkMode.none: .none
        default: .bridge(ContainerSpec.defaultBridge)
        }
    }
}
