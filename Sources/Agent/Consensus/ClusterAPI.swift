import Bounds
import Consensus
import ControlPlane
import Foundation
import Logging
import SecureTransport
import Wire

import enum Membership.MemberStatus
import struct Scaling.UtilizationSummary

/// One API answer, whichever agent produced it.
public struct APIResponse: Sendable, Equatable {
    public var status: Int
    public var body: [UInt8]
    /// A blocking query's index, sent as `X-Microscale-Index` (Consul's `X-Consul-Index`).
    public var index: UInt64? = nil

    public init(status: Int, body: [UInt8]) {
        self.status = status
        self.body = body
    }

    static func json<T: Encodable>(_ value: T, status: Int = 200) -> APIResponse {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return APIResponse(status: status, body: Array((try? e.encode(value)) ?? Data("{}".utf8)))
    }

    static func error(_ status: Int, _ message: String) -> APIResponse {
        json(["error": message], status: status)
    }
}

public struct DemandView: Codable, Sendable, Equatable {
    public var service: String
    public var value: Double
}

public struct DrainView: Codable, Sendable, Equatable {
    public var node: String
    public var drained: Bool
}

/// `GET /v1/status`: per service and per node, what is wanted and what runs.
public struct StatusView: Codable, Sendable, Equatable {
    public struct Service: Codable, Sendable, Equatable {
        public var name: String
        public var priority: Int
        /// nil: unknown (the planner holds the count), or a fill service.
        public var demand: Double?
        /// Demand one container absorbs (the chart draws demand in containers).
        public var perContainer: Double?
        public var desired: Int
        public var running: Int
        /// A rolling update under way (docs/rollouts.md): "updating 3/6 (start-first)", or
        /// "paused: 2 new containers failed (health check or exit)"; absent otherwise.
        public var rollout: String?
        /// Running containers whose health check has not passed yet, and that fail it (absent:
        /// none); `running` counts only those that serve (healthy, or without a check).
        public var starting: Int? = nil
        public var unhealthy: Int? = nil
        /// Nodes whose pull of the service's image fails, with the registry's reason (absent: none):
        /// the leader places none of its containers there until a retry works.
        public var pullFailures: [String: String]? = nil
        /// What the demand counts, where the source says ("requests/s" for HAProxy's `req_rate`):
        /// the dashboard shows it beside the containers.
        public var demandUnit: String? = nil
    }
    public struct NodeRow: Codable, Sendable, Equatable {
        public var name: String
        public var status: MemberStatus
        public var role: String
        public var drained: Bool
        public var assigned: [String: Int]
        public var running: [String: Int]
    }
    public var leader: String
    public var term: UInt64
    public var planIndex: UInt64
    public var services: [Service]
    public var nodes: [NodeRow]
}

/// `PUT /v1/operator/snapshot`: what a restore put back.
public struct RestoreView: Codable, Sendable, Equatable {
    /// The log index the snapshot was taken at (in the cluster it came from).
    public var index: UInt64
    public var services: Int
    public var demand: Int
    public var drainedNodes: Int
}

/// `GET /v1/leader`.
public struct LeaderView: Codable, Sendable, Equatable {
    public var name: String
    public var address: String
    public var term: UInt64
    public var commitIndex: UInt64
    public var voters: [String]
}

/// The cluster-state part of the HTTP API (docs/contracts.md): leader, services, demand, drain. Every
/// such request is answered by the Raft leader, so a write returns only once committed and a read
/// that follows it (through any agent) sees it. Another agent forwards the request over the peer
/// transport in a control frame, typed (`ClusterRequest`, one protobuf message per command): a
/// follower to the leader it knows, a client (which runs no Raft) to any alive server, which
/// relays it once more if it is not the leader.
public actor ClusterAPI {
    /// A request is relayed at most this often (client → follower → leader).
    static let maxHops = 2
    /// How long a forwarded request may take: the leader's proposal timeout plus the relays.
    public var forwardTimeout: Duration = .seconds(7)
    /// Bound on forwarded requests waiting for their answer.
    static let maxPending = 4096

    let name: String
    let raft: RaftService?
    let transport: PeerTransport
    let logger: Logger
    /// Alive servers by name, "host:port".
    let servers: @Sendable () async -> [String: String]
    /// The API token configured on this agent (--api-token). A server requires it on writes
    /// forwarded from client certificates; a client agent attaches it to the writes it forwards
    /// for its operator (whose HTTP request carried the same token, or it did not get this far).
    let apiToken: String?
    let refusals: Refusals
    /// Members and the demand the decision loop last used, for `GET /v1/status` (set by the runtime).
    var members: @Sendable () async -> [MemberView] = { [] }
    var demandInUse: @Sendable () async -> [String: Double] = { [:] }
    /// The leader's utilization samples summed over a window, for `GET /v1/report/utilization`.
    var utilization: @Sendable (Duration) async -> UtilizationSummary? = { _ in nil }
    /// The cluster name written into a snapshot file's header (--cluster).
    var clusterName = ""
    private var pending: [UInt64: Pending] = [:]

    struct Pending {
        var address: String
        var peer: String
        var continuation: CheckedContinuation<APIResponse, Never>
        /// Sends the request, then times it out; cancelled when the answer comes first.
        var timer: Task<Void, Never>?
    }
    private var nextID: UInt64 = 1

    /// The agent's clock: a snapshot's time is its wall clock.
    let clock: AgentClock

    public init(
        name: String, raft: RaftService?, transport: PeerTransport, logger: Logger,
        apiToken: String? = nil, refusals: Refusals? = nil, clock: AgentClock = .system(),
        servers: @escaping @Sendable () async -> [String: String]
    ) {
        self.name = name
        self.clock = clock
        self.apiToken = apiToken
        self.refusals = refusals ?? Refusals(logger: logger)
        self.raft = raft
        self.transport = transport
        self.logger = logger
        self.servers = servers
    }

    func setStatusSources(
        members: @escaping @Sendable () async -> [MemberView],
        demand: @escaping @Sendable () async -> [String: Double]
    ) {
        self.members = members
        self.demandInUse = demand
    }

    func setClusterName(_ name: String) { clusterName = name }

    func setUtilizationSource(_ source: @escaping @Sendable (Duration) async -> UtilizationSummary?) {
        utilization = source
    }

    /// `?window=10m`: 1 s to `Limits.maxUtilizationWindow`, an hour by default.
    static func utilizationWindow(_ path: String) -> (window: Duration?, refused: APIResponse?) {
        var window = Limits.maxUtilizationWindow
        if let q = path.split(separator: "?", maxSplits: 1).dropFirst().first {
            for pair in q.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                guard kv.count == 2, kv[0] == "window" else { continue }
                let text = String(kv[1].prefix(32))
                guard let d = Units.duration(text), d >= .seconds(1), d <= Limits.maxUtilizationWindow else {
                    return (nil, .error(400, "window: \"\(text)\" is not a duration from 1s to 1h"))
                }
                window = d
            }
        }
        return (window, nil)
    }

    /// A request to this agent's HTTP API: parsed here, once (an endpoint that does not exist or a
    /// value out of bounds is answered here), then served or forwarded typed.
    public func handle(method: String, path: String, body: [UInt8]) async -> APIResponse {
        let request: ClusterRequest
        do { request = try ClusterRequest(method: method, path: path, body: body) } catch { return error.response }
        return await handle(request)
    }

    public func handle(_ request: ClusterRequest, hops: Int = 0) async -> APIResponse {
        // `?stale` (Consul's consistency mode of that name): any server answers from the state it
        // has applied, without asking anyone; it may be behind the leader, or a deposed leader's.
        if request.isStaleRead, let raft, await raft.status() != nil {
            return await execute(request, raft: raft)
        }
        var moved = false
        if let raft, await raft.isLeader {
            var answer: APIResponse
            if request.isRead {
                // Linearizable by default (thesis §6.4 ReadIndex): the leader confirms it still
                // leads before it answers from its state, so no read returns a value older than
                // a write that completed before the read began (issue 19: a frozen and thawed
                // leader answered such reads from its applied state).
                do {
                    try await raft.readBarrier()
                    answer = await execute(request, raft: raft)
                } catch let e as ProposalError {
                    answer = Self.response(for: e)
                } catch {
                    return .error(500, "\(error)")
                }
            } else {
                answer = await execute(request, raft: raft)
            }
            // Leadership moved while the request was served (a hand-off, thesis §3.10): it goes
            // to the new leader like any request reaching a follower.
            guard answer.status == Self.leadershipMoved else { return answer }
            moved = true
        }
        var book = await servers()
        // A hand-off moves the leader by one server: the request may take one more hop to follow it.
        guard hops < Self.maxHops + (moved ? 1 : 0) else {
            return .error(503, "request relayed \(hops) times without reaching the leader; retry shortly")
        }
        let targets: [String]
        if let raft {
            guard await raft.status() != nil else { return .error(503, await raft.noClusterReason) }
            // During an election (a hand-off's is a round trip) no leader is known for a moment:
            // wait for one rather than fail a request that a few milliseconds later would commit.
            let deadline = clock.now + .seconds(moved ? 2 : 1)
            while clock.now < deadline {
                let (known, leading) = (await raft.leader, await raft.isLeader)
                if leading || (known != nil && known != name) { break }
                try? await Task.sleep(for: .milliseconds(10))
            }
            if await raft.isLeader {
                let again = await execute(request, raft: raft)
                return again.status == Self.leadershipMoved ? APIResponse(status: 503, body: again.body) : again
            }
            guard let leader = await raft.leader, leader != name else { return .error(503, "no leader elected yet; retry shortly") }
            targets = [leader]
            book = await servers()
        } else {
            // A client knows no leader: any server will do, and the next one if it cannot be reached
            // (membership may not yet have noticed that a server died).
            targets = book.keys.shuffled()
        }
        var last = APIResponse.error(503, raft == nil ? "no server is alive to answer" : "the leader is not reachable; retry shortly")
        for target in targets.prefix(3) {
            guard let address = book[target] else { continue }
            let (response, reached) = await forward(request, hops: hops + 1, to: target, address: address)
            if reached { return response }
            last = response
        }
        return last
    }

    // MARK: Forwarding

    /// Sends the request to `peer`; `reached` is false when it could not be delivered at all.
    private func forward(_ command: ClusterRequest, hops: Int, to peer: String, address: String) async -> (APIResponse, reached: Bool) {
        guard pending.count < Self.maxPending else { return (.error(503, "too many forwarded requests in flight"), true) }
        guard let hp = AgentConfiguration.HostPort(address) else { return (.error(503, "bad address \(address) for \(peer)"), false) }
        let id = nextID
        nextID += 1
        var request = command.wire
        request.id = id
        request.hops = UInt32(clamping: hops)
        // Only a client agent sends the token, and only with its own operator's writes (a client
        // serves no forwarded request, so every request it forwards is its operator's; reads need
        // none). A server relaying to the leader vouches with its certificate, and keeps the
        // token to itself.
        if raft == nil, !command.isRead, let apiToken { request.token = apiToken }
        var message = Microscale_Control_ControlMessage()
        message.apiRequest = request
        let frame: Frame
        do { frame = try Frame(kind: .control, message: message) } catch { return (.error(500, "cannot encode: \(error)"), true) }
        let timeout = forwardTimeout
        let response = await withCheckedContinuation { c in
            pending[id] = Pending(address: address, peer: peer, continuation: c)
            pending[id]?.timer = Task {
                do {
                    try await self.transport.send(frame, toAddress: hp.host, port: hp.port, expecting: peer)
                } catch {
                    self.answer(id, .error(Self.unreachable, "cannot reach \(peer) at \(address): \(error); retry shortly"))
                    return
                }
                do { try await Task.sleep(for: timeout) } catch { return }
                self.answer(id, .error(504, "\(peer) did not answer within \(timeout)"))
            }
        }
        if response.status == Self.unreachable { return (APIResponse(status: 503, body: response.body), false) }
        return (response, true)
    }

    /// Internal marker for "never delivered" (a connection refused or lost before the answer).
    static let unreachable = 599
    /// Internal marker for "this server stopped leading while serving it: send it to the leader".
    static let leadershipMoved = 598

    private func answer(_ id: UInt64, _ response: APIResponse) {
        guard let p = pending.removeValue(forKey: id) else { return }
        p.timer?.cancel()
        p.continuation.resume(returning: response)
    }

    /// A dialed connection closed: requests waiting on it will get no answer.
    public func connectionLost(_ address: String) {
        for (id, p) in pending where p.address == address {
            answer(id, .error(Self.unreachable, "the connection to \(address) was lost before it answered; retry"))
        }
    }

    /// The connection with `peer` closed (whoever dialed it).
    public func peerConnectionLost(_ peer: String) {
        for (id, p) in pending where p.peer == peer {
            answer(id, .error(Self.unreachable, "the connection to \(peer) was lost before it answered; retry"))
        }
    }

    /// A control frame from another agent: a request to serve, or the answer to one we sent.
    public func receive(_ message: Microscale_Control_ControlMessage, from peer: AuthenticatedPeer) {
        switch message.body {
        case .apiRequest(let r):
            if let refused = refusal(isRead: { if case .read? = r.command { true } else { false } }(), token: r.token, from: peer) {
                // Answered rather than only dropped: the operator behind a client agent should
                // read why (a hostile peer learns nothing it did not know).
                reply(to: r.id, peer: peer.name, refused)
                return
            }
            let request: ClusterRequest
            do { request = try ClusterRequest(wire: r) } catch {
                // Only an agent that does not run this code sends one: the HTTP API that took the
                // request refused these values before forwarding it.
                refusals.refuse(.malformedForwardedRequest, peer: peer.name, error.description)
                reply(to: r.id, peer: peer.name, .error(400, error.description))
                return
            }
            logger.debug("serving a forwarded request", metadata: ["peer": "\(peer.name)", "request": "\(request.summary)"])
            Task {
                let response = await self.handle(request, hops: Int(r.hops))
                self.reply(to: r.id, peer: peer.name, response)
            }
        case .forwardRequest(let r):
            // An agent of a version before typed requests (docs/ARCHITECTURE.md, "Forwarded API
            // requests"): answered at once, so its operator reads what to do instead of a timeout.
            refusals.refuse(
                .forwardRequestFromOlderAgent, peer: peer.name, "a forwarded \(clipped(r.method)) \(clipped(r.path)) in the form of older versions")
            reply(
                to: r.id, peer: peer.name,
                .error(
                    503,
                    "\(name) runs Microscale \(MicroscaleVersion.current), which takes forwarded requests typed, not as an HTTP method "
                        + "and path: upgrade \(peer.name), or send the request to the leader's HTTP API"))
        case .forwardResponse(let r):
            // Only the peer the request went to answers it: another peer guessing ids could
            // otherwise put words in the leader's mouth (a made-up 200 for a write never made).
            guard let p = pending[r.id], p.peer == peer.name else {
                refusals.refuse(
                    .forwardResponseNotAwaited, peer: peer.name, "a forward response for request \(r.id), not awaited from it (late, or never asked)")
                return
            }
            answer(r.id, APIResponse(status: Int(r.status), body: Array(r.body)))
        default:
            break
        }
    }

    /// Why a forwarded request may not be served here, as the answer to send back; nil to serve
    /// it. Servers serve anything from server certificates; from a client certificate, reads, and
    /// writes carrying this server's API token (docs/ARCHITECTURE.md, "Trust").
    private func refusal(isRead: Bool, token: String, from peer: AuthenticatedPeer) -> APIResponse? {
        let what = isRead ? "read" : "write"
        guard raft != nil else {
            // A client relaying it would send it on under its own certificate, with its token.
            refusals.refuse(.forwardRequestToClientAgent, peer: peer.name, "a forwarded \(what); client agents serve none")
            return .error(403, "\(name) is a client agent and serves no forwarded request")
        }
        guard !peer.identity.isServer, !isRead else { return nil }
        guard let apiToken else {
            refusals.refuse(
                .forwardedWriteNeedsToken, peer: peer.name,
                "a forwarded write from a client certificate, and this server has no --api-token")
            return .error(
                403,
                "\(name) refuses writes relayed by client agents: it has no API token to check them against. "
                    + "Set the same --api-token on servers and clients, or send the write to a server's API")
        }
        guard tokensEqual(token, apiToken) else {
            refusals.refuse(
                .forwardedWriteNeedsToken, peer: peer.name,
                "a forwarded write from a client certificate without the API token")
            return .error(
                403,
                "a write relayed by client agent \(peer.name) needs the API token of the servers. "
                    + "Set the same --api-token on servers and clients, or send the write to a server's API")
        }
        return nil
    }

    private func reply(to id: UInt64, peer: String, _ response: APIResponse) {
        var reply = Microscale_Control_ForwardResponse()
        reply.id = id
        reply.status = UInt32(clamping: response.status)
        reply.body = Data(response.body)
        var m = Microscale_Control_ControlMessage()
        m.forwardResponse = reply
        guard let f = try? Frame(kind: .control, message: m) else { return }
        let transport = self.transport
        Task { await transport.send(f, toPeer: peer) }
    }

    // MARK: Serving (on the leader; any server for a stale read)

    /// The segments of a request path without its query: "/v1/services?x=1" is ["v1", "services"].
    /// The path may come from another agent (a forwarded request), so any string must do.
    public static func pathSegments(_ path: String) -> [String] {
        // Not `split(separator: "?")[0]`: that drops empty pieces, so "" and "?x" gave no first
        // piece and a forwarded request with such a path crashed the leader (found by fuzz-frame).
        let beforeQuery = path.prefix { $0 != "?" }
        return beforeQuery.split(separator: "/").map(String.init)
    }

    private func execute(_ request: ClusterRequest, raft: RaftService) async -> APIResponse {
        switch request {
        case .read(.leader, _):
            // On the leader, itself; on a follower asked for a stale read, the leader it knows.
            guard let s = await raft.status(), let leader = s.role == "leader" ? name : s.leader else {
                return .error(503, await raft.status() == nil ? await raft.noClusterReason : "no leader elected yet; retry shortly")
            }
            let address = await servers()[leader] ?? ""
            return .json(LeaderView(name: leader, address: address, term: s.term, commitIndex: s.commitIndex, voters: s.voters))
        case .read(.status, _):
            guard let s = await raft.status() else { return .error(503, await raft.noClusterReason) }
            let state = await raft.state
            let members = await members()
            let demand = await demandInUse()
            var running: [String: Int] = [:], starting: [String: Int] = [:], unhealthy: [String: Int] = [:]
            var failing: [String: [String: String]] = [:]
            for m in members where m.status == .alive || m.status == .suspect {
                for (svc, n) in m.running { running[svc, default: 0] += n }
                for (svc, n) in m.starting ?? [:] { starting[svc, default: 0] += n }
                for (svc, n) in m.unhealthy ?? [:] { unhealthy[svc, default: 0] += n }
                for (image, reason) in m.imageFailures ?? [:] { failing[image, default: [:]][m.name] = reason }
            }
            let services = state.services.map { name, spec in
                StatusView.Service(
                    name: name, priority: spec.priority, demand: spec.fill ? nil : demand[name],
                    perContainer: spec.demand?.perContainer, desired: state.plan.count(service: name), running: running[name] ?? 0,
                    rollout: state.plan.rollouts?[name].map { Self.rolloutText($0, spec: spec) },
                    starting: starting[name], unhealthy: unhealthy[name], pullFailures: failing[spec.image],
                    demandUnit: spec.demand.flatMap(Self.demandUnit))
            }.sorted { ($0.priority, $0.name) < ($1.priority, $1.name) }
            let nodes = members.map { m in
                StatusView.NodeRow(
                    name: m.name, status: m.status, role: m.role, drained: state.isDrained(m.name),
                    assigned: state.plan.assignments[m.name] ?? [:], running: m.running)
            }
            return .json(
                StatusView(
                    leader: s.role == "leader" ? name : s.leader ?? "", term: s.term, planIndex: state.planIndex,
                    services: services, nodes: nodes))
        case .read(.utilization(let window), _):
            guard let summary = await utilization(window) else { return .error(503, "this server keeps no utilization samples") }
            return .json(summary)
        case .read(.decisions(let limit), _):
            return .json(Array(await raft.state.decisions.suffix(limit)))
        case .read(.services, _):
            return .json(await raft.state.services)
        case .applyServices(let document):
            let specs: [String: ServiceSpec]
            do { specs = try ServicesFile.parse(String(decoding: document, as: UTF8.self), source: "request body") } catch {
                return .error(400, error.description)
            }
            return await commit(.applyServices(specs), raft: raft, ok: .json(["applied": specs.keys.sorted()]))
        case .removeService(let service):
            return await commit(.removeService(service), raft: raft, ok: .json(["removed": service]))
        case .read(.demand, _):
            return .json(await raft.state.demand)
        case .setDemand(let service, let value):
            return await commit(
                .setDemand(service: service, value: value), raft: raft,
                ok: .json(DemandView(service: service, value: value)))
        case .rollbackService(let service):
            // The previous spec comes back, and rolls out like any change (docs/rollouts.md).
            return await commit(.rollbackService(service), raft: raft, ok: .json(["service": service, "rolledBack": "true"]))
        case .read(.drainedNodes, _):
            return .json(await raft.state.drainedNodes)
        case .read(.deniedNodes, _):
            return .json(await raft.state.deniedNodes)
        case .setDenied(let node, let denied):
            guard !denied || node != name else {
                // The leader would cut itself off from the servers that elected it mid-request.
                return .error(400, "\(node) leads the Raft servers: hand leadership off first (or deny it from after a 'leave')")
            }
            return await commit(
                .setDenied(node: node, denied: denied), raft: raft,
                ok: .json(["node": node, "denied": denied ? "true" : "false"]))
        case .setDrain(let node, let drained):
            return await commit(.setDrain(node: node, drained: drained), raft: raft, ok: .json(DrainView(node: node, drained: drained)))
        case .read(.snapshot, _):
            // The leader's applied state, copied in one step on its actor: a consistent point of the log.
            let backup = await raft.state.backup(takenAtMilliseconds: clock.wallMilliseconds)
            let bytes: [UInt8]
            do { bytes = try SnapshotFile.encode(backup, cluster: clusterName) } catch {
                return .error(500, "cannot encode the snapshot: \(error)")
            }
            guard bytes.count <= SnapshotFile.maxBytes else {
                return .error(507, "the state is \(bytes.count) bytes as a snapshot; a snapshot holds at most \(SnapshotFile.maxBytes)")
            }
            return APIResponse(status: 200, body: bytes)
        case .read(.raftPeers, _):
            guard let peers = await raft.peers() else { return .error(503, await raft.noClusterReason) }
            return .json(peers)
        case .removeRaftPeer(let peer, let leaving):
            do { try await raft.removePeer(peer, departing: leaving) } catch let e as ProposalError {
                return Self.response(for: e)
            } catch {
                return .error(500, "\(error)")
            }
            return .json(["removed": peer])
        case .restoreSnapshot(let file):
            let backup: ClusterBackup
            do { (_, backup) = try SnapshotFile.decode(file) } catch { return .error(400, error.description) }
            return await commit(
                .restore(backup), raft: raft,
                ok: .json(
                    RestoreView(
                        index: backup.index, services: backup.services.count,
                        demand: backup.demand.count, drainedNodes: backup.drainedNodes.count)))
        }
    }

    /// "updating 3/6 (start-first)" or "paused: ..." (the rollout's progress as the plan recorded it).
    /// The unit of a source's reading, for people (nil where it is just a number).
    static func demandUnit(_ d: DemandSourceConfig) -> String? {
        switch (d.source, d.options["metric"]) {
        case ("haproxy", "req_rate"): "requests/s"
        case ("haproxy", "rate"): "sessions/s"
        case ("haproxy", "scur"): "sessions"
        case ("haproxy", "qcur"): "queued requests"
        case ("redis", _), ("rabbitmq", _), ("nats", _), ("sqs", _): "messages"
        default: nil
        }
    }

    static func rolloutText(_ r: ServiceRollout, spec: ServiceSpec) -> String {
        if let why = r.paused { return "paused: \(why)" }
        return "updating \(r.done)/\(r.total) (\(spec.updatePolicy.effectiveOrder))"
    }

    private func commit(_ command: ClusterCommand, raft: RaftService, ok: APIResponse) async -> APIResponse {
        do {
            if let refused = try await raft.propose(command) {
                if case .unknownService = refused { return .error(404, refused.description) }
                return .error(400, refused.description)
            }
            return ok
        } catch let e as ProposalError {
            return Self.response(for: e)
        } catch {
            return .error(500, "\(error)")
        }
    }

    static func response(for e: ProposalError) -> APIResponse {
        switch e {
        case .timedOut: return .error(504, e.description)
        case .invalid: return .error(400, e.description)
        case .notFound: return .error(404, e.description)
        case .rejected(let refused):
            if case .unknownService = refused { return .error(404, refused.description) }
            return .error(400, e.description)
        case .notLeader: return .error(leadershipMoved, e.description)
        case .noCluster, .lost: return .error(503, e.description)
        }
    }

    /// Whether the query asks for a stale read: `?stale`, `?stale=true` or `?stale=1` among its
    /// parameters.
    static func isStale(_ path: String) -> Bool {
        guard let q = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).dropFirst().first else { return false }
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.first == "stale" { return kv.count == 1 || kv[1] == "true" || kv[1] == "1" || kv[1] == "" }
        }
        return false
    }
}
