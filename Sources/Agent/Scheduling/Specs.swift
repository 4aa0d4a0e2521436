import Bounds
import Consensus
import ControlPlane
import DockerEngine
import Foundation
import Scaling

/// Translations between the replicated services (Consensus), the planner's view (Scaling) and the
/// containers an agent creates (DockerEngine). The hash is the spec's own (`containerHash`, kept
/// per service by the state) and the planner's view is ControlPlane's (`ServiceSpecs`), so the
/// agent and the simulator never disagree on a hash.
/// Public for the fuzz targets, which plan what they decode as the decision loop would.
public enum Specs {
    // The pure translations live in ControlPlane (`ServiceSpecs`); these names stay for the
    // Agent's callers and the fuzz targets.
    static func difference(_ a: Consensus.ServiceSpec, _ b: Consensus.ServiceSpec) -> String { ServiceSpecs.difference(a, b) }
    public static func planner(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec { ServiceSpecs.planner(name, s) }
    static func sampled(_ name: String, _ s: Consensus.ServiceSpec) -> Scaling.ServiceSpec { ServiceSpecs.sampled(name, s) }
    static func control(_ d: DemandSourceConfig?) -> Scaling.Control { ServiceSpecs.control(d) }

    /// `hash` is the assignment's (`NodeAssignment.specHashes`), computed once where the spec was
    /// applied; nil computes it.
    static func container(_ name: String, _ s: Consensus.ServiceSpec, hash: String? = nil, node: String) -> ContainerSpec {
        ContainerSpec(
            service: name, node: node, specHash: hash ?? s.containerHash, image: s.image, command: s.command,
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
