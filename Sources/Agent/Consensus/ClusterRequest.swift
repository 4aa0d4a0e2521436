import Bounds
import Consensus
import Foundation
import Wire

/// One cluster API request (docs/contracts.md), parsed once where it enters an agent and carried
/// typed from there. The HTTP API of the agent the operator spoke to parses the method, path and
/// body (`init(method:path:body:)`); an agent that cannot answer forwards the request to the
/// leader as a `Microscale_Control_ApiRequest`, one protobuf message per command, and the agent
/// that receives it bounds every field again (`init(wire:)`) before serving it, refusing a bad
/// one with the field's name. Before, a follower sent the HTTP method, path and body inside a
/// control frame, and the leader split whatever path string another agent sent.
public enum ClusterRequest: Sendable, Equatable {
    /// What a read asks for: one per GET endpoint of the cluster state.
    public enum View: Sendable, Equatable {
        case leader
        case status
        /// `GET /v1/report/utilization?window=D`: 1 s to `Limits.maxUtilizationWindow`.
        case utilization(window: Duration)
        /// `GET /v1/decisions?limit=N`: 1 to `ClusterState.maxDecisions`.
        case decisions(limit: Int)
        case services
        case demand
        case drainedNodes
        case deniedNodes
        case snapshot
        case raftPeers
    }

    /// A read; `stale` (`?stale`, Consul's consistency mode of that name) lets any server answer
    /// from what it applied instead of asking the leader.
    case read(View, stale: Bool)
    /// `PUT /v1/services`: a services file, parsed by the leader with its own limits.
    case applyServices(document: [UInt8])
    case removeService(String)
    case rollbackService(String)
    case setDemand(service: String, value: Double)
    case setDrain(node: String, drained: Bool)
    case setDenied(node: String, denied: Bool)
    /// `DELETE /v1/operator/raft/peers/NAME`; `leaving`: the server itself is leaving (`?leaving`).
    case removeRaftPeer(String, leaving: Bool)
    /// `PUT /v1/operator/snapshot`: a snapshot file (docs/consensus.md, "Backup and restore").
    case restoreSnapshot(file: [UInt8])

    public var isRead: Bool {
        if case .read = self { return true }
        return false
    }

    public var isStaleRead: Bool {
        if case .read(_, stale: true) = self { return true }
        return false
    }

    /// The request as the HTTP API names it, for logs.
    public var summary: String {
        switch self {
        case .read(let v, let stale):
            let path: String
            switch v {
            case .leader: path = "/v1/leader"
            case .status: path = "/v1/status"
            case .utilization: path = "/v1/report/utilization"
            case .decisions: path = "/v1/decisions"
            case .services: path = "/v1/services"
            case .demand: path = "/v1/demand"
            case .drainedNodes: path = "/v1/nodes/drained"
            case .deniedNodes: path = "/v1/nodes/denied"
            case .snapshot: path = "/v1/operator/snapshot"
            case .raftPeers: path = "/v1/operator/raft/peers"
            }
            return "GET \(path)\(stale ? "?stale" : "")"
        case .applyServices: return "PUT /v1/services"
        case .removeService(let s): return "DELETE /v1/services/\(clipped(s))"
        case .rollbackService(let s): return "POST /v1/services/\(clipped(s))/rollback"
        case .setDemand(let s, _): return "PUT /v1/demand/\(clipped(s))"
        case .setDrain(let n, let d): return "POST /v1/nodes/\(clipped(n))/\(d ? "drain" : "undrain")"
        case .setDenied(let n, let d): return "POST /v1/nodes/\(clipped(n))/\(d ? "deny" : "undeny")"
        case .removeRaftPeer(let n, let leaving): return "DELETE /v1/operator/raft/peers/\(clipped(n))\(leaving ? "?leaving" : "")"
        case .restoreSnapshot: return "PUT /v1/operator/snapshot"
        }
    }

    // MARK: From the HTTP API

    /// An answer given where the request entered, without asking the leader: no such endpoint, or
    /// a parameter or value out of bounds (the same answers the leader gave when it parsed them).
    public struct Answered: Error, Sendable {
        public var response: APIResponse
    }

    /// Parses a request to the local HTTP API. The answers for what does not parse are those the
    /// leader gave when followers forwarded the method and path (docs/contracts.md).
    public init(method: String, path: String, body: [UInt8]) throws(Answered) {
        let p = ClusterAPI.pathSegments(path)
        let notFound = Answered(response: .error(404, "no such endpoint: \(method) \(path)"))
        guard p.count >= 2, p[0] == "v1" else { throw notFound }
        let stale = method == "GET" && ClusterAPI.isStale(path)
        switch (method, p[1], p.count) {
        case ("GET", "leader", 2): self = .read(.leader, stale: stale)
        case ("GET", "status", 2): self = .read(.status, stale: stale)
        case ("GET", "report", 3) where p[2] == "utilization":
            let (window, refused) = ClusterAPI.utilizationWindow(path)
            guard let window else { throw Answered(response: refused ?? .error(400, "window")) }
            self = .read(.utilization(window: window), stale: stale)
        case ("GET", "decisions", 2):
            var limit = 20
            if let q = path.split(separator: "?", maxSplits: 1).dropFirst().first {
                for pair in q.split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2, kv[0] == "limit" {
                        guard let n = Int(kv[1]), n >= 1 else {
                            throw Answered(response: .error(400, "limit: \"\(kv[1].prefix(32))\" is not a number >= 1"))
                        }
                        limit = min(n, ClusterState.maxDecisions)
                    }
                }
            }
            self = .read(.decisions(limit: limit), stale: stale)
        case ("GET", "services", 2): self = .read(.services, stale: stale)
        case ("PUT", "services", 2), ("POST", "services", 2): self = .applyServices(document: body)
        case ("DELETE", "services", 3): self = .removeService(p[2])
        case ("POST", "services", 4) where p[3] == "rollback": self = .rollbackService(p[2])
        case ("GET", "demand", 2): self = .read(.demand, stale: stale)
        case ("PUT", "demand", 3):
            struct Value: Decodable { var value: Double }
            guard let v = try? JSONDecoder().decode(Value.self, from: Data(body)) else {
                throw Answered(response: .error(400, "body: expected {\"value\": NUMBER}"))
            }
            self = .setDemand(service: p[2], value: v.value)
        case ("GET", "nodes", 3) where p[2] == "drained": self = .read(.drainedNodes, stale: stale)
        case ("GET", "nodes", 3) where p[2] == "denied": self = .read(.deniedNodes, stale: stale)
        case ("POST", "nodes", 4) where p[3] == "deny" || p[3] == "undeny": self = .setDenied(node: p[2], denied: p[3] == "deny")
        case ("POST", "nodes", 4) where p[3] == "drain" || p[3] == "undrain": self = .setDrain(node: p[2], drained: p[3] == "drain")
        case ("GET", "operator", 3) where p[2] == "snapshot": self = .read(.snapshot, stale: stale)
        case ("GET", "operator", 4) where p[2] == "raft" && p[3] == "peers": self = .read(.raftPeers, stale: stale)
        case ("DELETE", "operator", 5) where p[2] == "raft" && p[3] == "peers":
            self = .removeRaftPeer(p[4], leaving: path.contains("?leaving"))
        case ("PUT", "operator", 3) where p[2] == "snapshot": self = .restoreSnapshot(file: body)
        default: throw notFound
        }
        // Values the state machine would refuse are refused here, with its answer, so that a
        // request forwarded to the leader is always within the bounds `init(wire:)` checks.
        if let command = clusterCommand, let refused = command.validationError() {
            if case .unknownService = refused { throw Answered(response: .error(404, refused.description)) }
            throw Answered(response: .error(400, refused.description))
        }
        if case .removeRaftPeer(let peer, _) = self, peer.utf8.count > ClusterState.maxNodeNameBytes {
            throw Answered(response: .error(404, "\(clipped(peer)) is not a Raft server of this cluster"))
        }
        if case .applyServices(let d) = self, d.count > HTTPAPI.maxBodyBytes {
            throw Answered(response: .error(413, "body: \(d.count) bytes; a services file is at most \(HTTPAPI.maxBodyBytes)"))
        }
        if case .restoreSnapshot(let f) = self, f.count > SnapshotFile.maxBytes {
            throw Answered(response: .error(413, "body: \(f.count) bytes; a snapshot file is at most \(SnapshotFile.maxBytes)"))
        }
    }

    /// The command these requests propose, for those whose values the state machine bounds.
    var clusterCommand: ClusterCommand? {
        switch self {
        case .removeService(let s): .removeService(s)
        case .rollbackService(let s): .rollbackService(s)
        case .setDemand(let s, let v): .setDemand(service: s, value: v)
        case .setDrain(let n, let d): .setDrain(node: n, drained: d)
        case .setDenied(let n, let d): .setDenied(node: n, denied: d)
        case .read, .applyServices, .removeRaftPeer, .restoreSnapshot: nil
        }
    }

    // MARK: On the wire

    /// A forwarded request that breaks a bound: the field (its protobuf path under `api_request`)
    /// and why. Only an agent that does not follow this code sends one: the HTTP API refuses the
    /// same values before forwarding.
    public struct Malformed: Error, Sendable, Equatable, CustomStringConvertible {
        public var field: String
        public var reason: String
        public var description: String { "api_request.\(field): \(reason)" }
    }

    /// The message that carries this request to another agent (id, hops and token are the
    /// forwarder's to set).
    public var wire: Microscale_Control_ApiRequest {
        var r = Microscale_Control_ApiRequest()
        switch self {
        case .read(let view, let stale):
            var v = Microscale_Control_ReadView()
            v.stale = stale
            switch view {
            case .leader: v.view = .leader
            case .status: v.view = .status
            case .utilization(let window):
                v.view = .utilization
                let (s, atto) = window.components
                v.windowMilliseconds = UInt64(clamping: s) &* 1000 &+ UInt64(clamping: atto / 1_000_000_000_000_000)
            case .decisions(let limit):
                v.view = .decisions
                v.limit = UInt32(clamping: limit)
            case .services: v.view = .services
            case .demand: v.view = .demand
            case .drainedNodes: v.view = .drainedNodes
            case .deniedNodes: v.view = .deniedNodes
            case .snapshot: v.view = .snapshot
            case .raftPeers: v.view = .raftPeers
            }
            r.read = v
        case .applyServices(let d): r.applyServices = .with { $0.document = Data(d) }
        case .removeService(let s): r.removeService = .with { $0.service = s }
        case .rollbackService(let s): r.rollbackService = .with { $0.service = s }
        case .setDemand(let s, let value):
            r.setDemand = .with {
                $0.service = s
                $0.value = value
            }
        case .setDrain(let n, let d):
            r.setDrain = .with {
                $0.node = n
                $0.drained = d
            }
        case .setDenied(let n, let d):
            r.setDenied = .with {
                $0.node = n
                $0.denied = d
            }
        case .removeRaftPeer(let n, let leaving):
            r.removeRaftPeer = .with {
                $0.node = n
                $0.leaving = leaving
            }
        case .restoreSnapshot(let f): r.restoreSnapshot = .with { $0.file = Data(f) }
        }
        return r
    }

    /// A request another agent forwarded, every field within its bound (docs/limits.md).
    public init(wire r: Microscale_Control_ApiRequest) throws(Malformed) {
        guard r.hops <= UInt32(ClusterAPI.maxHops + 1) else {
            throw Malformed(field: "hops", reason: "\(r.hops); a request is relayed at most \(ClusterAPI.maxHops + 1) times")
        }
        guard r.token.utf8.count <= APIToken.maxBytes else {
            throw Malformed(field: "token", reason: "\(r.token.utf8.count) bytes; a token is at most \(APIToken.maxBytes)")
        }
        switch r.command {
        case nil:
            throw Malformed(field: "command", reason: "none this agent knows (the sender may run a newer version)")
        case .read(let v):
            let view: View
            switch v.view {
            case .leader: view = .leader
            case .status: view = .status
            case .utilization:
                let maxMilliseconds = UInt64(Limits.maxUtilizationWindow.components.seconds) * 1000
                guard v.windowMilliseconds >= 1000, v.windowMilliseconds <= maxMilliseconds else {
                    throw Malformed(field: "read.window_milliseconds", reason: "\(v.windowMilliseconds); a window is 1000 to \(maxMilliseconds)")
                }
                view = .utilization(window: .milliseconds(Int64(v.windowMilliseconds)))
            case .decisions:
                guard v.limit >= 1, v.limit <= UInt32(ClusterState.maxDecisions) else {
                    throw Malformed(field: "read.limit", reason: "\(v.limit); a limit is 1 to \(ClusterState.maxDecisions)")
                }
                view = .decisions(limit: Int(v.limit))
            case .services: view = .services
            case .demand: view = .demand
            case .drainedNodes: view = .drainedNodes
            case .deniedNodes: view = .deniedNodes
            case .snapshot: view = .snapshot
            case .raftPeers: view = .raftPeers
            case .unspecified:
                throw Malformed(field: "read.view", reason: "not set")
            case .UNRECOGNIZED(let n):
                throw Malformed(field: "read.view", reason: "\(n) is no view this agent serves (the sender may run a newer version)")
            }
            self = .read(view, stale: v.stale)
        case .applyServices(let a):
            guard a.document.count <= HTTPAPI.maxBodyBytes else {
                throw Malformed(
                    field: "apply_services.document", reason: "\(a.document.count) bytes; a services file is at most \(HTTPAPI.maxBodyBytes)")
            }
            self = .applyServices(document: Array(a.document))
        case .removeService(let s):
            self = .removeService(try Self.serviceName(s.service, "remove_service.service"))
        case .rollbackService(let s):
            self = .rollbackService(try Self.serviceName(s.service, "rollback_service.service"))
        case .setDemand(let d):
            let service = try Self.serviceName(d.service, "set_demand.service")
            guard d.value.isFinite, d.value >= 0, d.value <= Limits.maxDemand else {
                throw Malformed(field: "set_demand.value", reason: "\(d.value) is not a number from 0 to \(Limits.text(Limits.maxDemand))")
            }
            self = .setDemand(service: service, value: d.value)
        case .setDrain(let d):
            self = .setDrain(node: try Self.nodeName(d.node, "set_drain.node"), drained: d.drained)
        case .setDenied(let d):
            self = .setDenied(node: try Self.nodeName(d.node, "set_denied.node"), denied: d.denied)
        case .removeRaftPeer(let p):
            self = .removeRaftPeer(try Self.nodeName(p.node, "remove_raft_peer.node"), leaving: p.leaving)
        case .restoreSnapshot(let s):
            guard s.file.count <= SnapshotFile.maxBytes else {
                throw Malformed(field: "restore_snapshot.file", reason: "\(s.file.count) bytes; a snapshot file is at most \(SnapshotFile.maxBytes)")
            }
            self = .restoreSnapshot(file: Array(s.file))
        }
    }

    static func serviceName(_ name: String, _ field: String) throws(Malformed) -> String {
        guard !name.isEmpty, name.utf8.count <= Limits.maxServiceNameBytes else {
            throw Malformed(field: field, reason: "\(name.utf8.count) bytes; a service name is 1 to \(Limits.maxServiceNameBytes)")
        }
        return name
    }

    static func nodeName(_ name: String, _ field: String) throws(Malformed) -> String {
        guard !name.isEmpty, name.utf8.count <= ClusterState.maxNodeNameBytes else {
            throw Malformed(field: field, reason: "\(name.utf8.count) bytes; a node name is 1 to \(ClusterState.maxNodeNameBytes)")
        }
        return name
    }
}
