import Bounds
import Consensus
import ControlPlane
import Determinism
import Foundation
import Logging
import SecureTransport
import Wire

/// Assignments from the servers to every agent (docs/scheduling.md): an agent subscribes to one server,
/// naming the last plan index it saw; the server answers with the agent's share when it holds a
/// newer plan, and pushes each new plan to its subscribers as soon as it is applied. When it
/// subscribes again is `Subscription`'s (ControlPlane): at once when its server is gone from
/// membership or its connection to it was lost, after a second when a subscription could not be
/// sent, and otherwise every `keepalive`. A server agent reads its own replicated state directly.
/// With no server reachable an agent keeps running its last assignment (static stability).
public actor AssignmentService {
    let name: String
    let raft: RaftService?
    let transport: PeerTransport
    let logger: Logger
    let servers: @Sendable () async -> [String: String]
    let deliver: @Sendable (NodeAssignment) async -> Void
    let refusals: Refusals
    /// When to deliver and push, and which pushes to take (pure, ControlPlane).
    private var feed: AssignmentFeed
    /// The newest deny list index each subscriber named or was sent.
    private var subscriberDenied: [String: UInt64] = [:]
    /// The index of the deny list this agent enforces (`ClusterState.deniedIndex`): on a client,
    /// the newest any server sent; on a server, the last one it sent to every client it knows.
    private var deniedIndex: UInt64 = 0
    /// Every member this agent can reach (name → address), for a server to send a changed deny
    /// list to every client agent, not only its own subscribers (a client subscribed to the very
    /// server that was denied would otherwise never hear of it).
    private let members: @Sendable () async -> [String: String]
    /// Which server this agent follows and when it subscribes again (pure, ControlPlane).
    private var subscription: Subscription
    private var upstream: String? { subscription.upstream }
    private let clock: AgentClock
    private var random: SeededGenerator
    /// Wakes the subscription loop for a check now (a member change, a lost connection); holds at
    /// most one pending wake-up, so a burst of member changes costs one check.
    private let wakeups: AsyncStream<Void>.Continuation
    private let wakeupStream: AsyncStream<Void>
    private var loop: Task<Void, Never>?
    private var timer: Task<Void, Never>?
    /// When the member list was last read, and the wake-up deferred until a `retry` after it:
    /// a join or a suspicion storm changes members many times a second, and each read builds the
    /// list on the membership loop, so member changes wake the loop at most once a `retry`.
    private var lastBookRead: Duration?
    private var deferredWake: Task<Void, Never>?

    public init(
        name: String, raft: RaftService?, transport: PeerTransport, logger: Logger,
        refusals: Refusals? = nil, clock: AgentClock = .system(), seed: UInt64 = 0,
        subscription: Subscription = Subscription(),
        servers: @escaping @Sendable () async -> [String: String],
        members: @escaping @Sendable () async -> [String: String] = { [:] },
        deliver: @escaping @Sendable (NodeAssignment) async -> Void
    ) {
        self.name = name
        self.feed = AssignmentFeed(node: name)
        self.refusals = refusals ?? Refusals(logger: logger)
        self.raft = raft
        self.transport = transport
        self.logger = logger
        self.servers = servers
        self.members = members
        self.deliver = deliver
        self.clock = clock
        self.random = SeededGenerator(seed: seed)
        self.subscription = subscription
        (wakeupStream, wakeups) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func start() {
        let stream = wakeupStream
        loop = Task { [weak self] in
            for await _ in stream {
                guard !Task.isCancelled, let self else { return }
                await self.check()
            }
        }
        wakeups.yield()
    }

    public func stop() {
        loop?.cancel()
        loop = nil
        timer?.cancel()
        timer = nil
        deferredWake?.cancel()
        deferredWake = nil
        wakeups.finish()
    }

    public var lastPlanIndex: UInt64 { feed.lastIndex }

    /// The members changed: the upstream may be gone, or a first server known.
    public func membersChanged() {
        let wait = lastBookRead.map { subscription.retry - (clock.now - $0) } ?? .zero
        guard wait > .zero else {
            wakeups.yield()
            return
        }
        guard deferredWake == nil else { return }
        deferredWake = Task { [weak self] in
            try? await Task.sleep(for: wait)
            await self?.deferredWakeFired()
        }
    }

    private func deferredWakeFired() {
        deferredWake = nil
        wakeups.yield()
    }

    /// A connection to `peer` closed: if it is the upstream, subscribe again at once (it may
    /// have forgotten this agent).
    public func peerConnectionLost(_ peer: String) {
        // The timer, not a check now: a check reads the member list, and connections may close
        // many times a second in a storm; the subscription is due at most once a `retry`.
        if subscription.connectionLost(peer, now: clock.now) { arm(after: subscription.wait(now: clock.now)) }
    }

    /// Subscribes if due, then sleeps until the next check is due (or a wake-up comes first).
    private func check() async {
        if let raft {
            // A server agent follows its own replicated state; now and then it pushes again
            // what a subscriber still lacks (a push that failed keeps nothing in the feed).
            await planApplied(await raft.state)
            arm(after: subscription.keepalive)
            return
        }
        lastBookRead = clock.now
        let book = await servers()
        let now = clock.now
        if let server = subscription.check(servers: Array(book.keys), now: now, pick: { Int.random(in: 0..<$0, using: &random) }) {
            await subscribe(to: server, at: book[server])
        }
        if let wait = subscription.nextCheck(now: clock.now) {
            arm(after: wait)
        } else {
            // No server known: a member change wakes the loop (`membersChanged`).
            timer?.cancel()
            timer = nil
        }
    }

    private func arm(after wait: Duration) {
        timer?.cancel()
        let wakeups = self.wakeups
        timer = Task {
            try? await Task.sleep(for: max(wait, .milliseconds(1)))
            if !Task.isCancelled { wakeups.yield() }
        }
    }

    private func subscribe(to server: String, at address: String?) async {
        var s = Microscale_Control_SubscribeAssignments()
        s.node = name
        s.afterIndex = feed.lastIndex
        s.deniedAfterIndex = deniedIndex
        var m = Microscale_Control_ControlMessage()
        m.subscribe = s
        do {
            guard let address, let hp = AgentConfiguration.HostPort(address) else { throw CLIError("no address for \(server)") }
            try await transport.send(try Frame(kind: .control, message: m), toAddress: hp.host, port: hp.port, expecting: server)
        } catch {
            subscription.sendFailed(now: clock.now)
        }
    }

    /// Called by the local Raft when a plan (or the services) changed.
    public func planApplied(_ state: ClusterState) async {
        let sends = feed.planApplied(state)
        if let mine = sends.local { await deliver(mine) }
        for (peer, assignment) in sends.pushes {
            let delivered = await push(assignment, to: peer)
            feed.pushed(to: peer, index: assignment.planIndex, delivered: delivered)
            if !delivered { subscriberDenied[peer] = nil }
        }
        await sendDenyList(state)
    }

    /// Client agents learn the replicated deny list from the servers (docs/ARCHITECTURE.md,
    /// "Rotating and revoking certificates"). A subscriber whose list is older is sent this one
    /// (which is how an agent that restarted, or missed a change, catches up within a second); and
    /// when the list changed, every member this server knows is sent it at once, so that every
    /// client agent drops the denied node within a second whichever server it follows.
    private func sendDenyList(_ state: ClusterState) async {
        let index = state.deniedIndex
        guard index > 0, let frame = Self.denyListFrame(state) else { return }
        for (peer, after) in subscriberDenied where index > after {
            if await transport.send(frame, toPeer: peer) { subscriberDenied[peer] = index }
        }
        guard index > deniedIndex else { return }
        deniedIndex = index
        let book = await members().filter { $0.key != name && !state.deniedNodes.contains($0.key) }
        let transport = self.transport
        // Off the actor: a member that does not answer must not hold up the plan's pushes. At most
        // 32 dials at a time (members are bounded by --max-members).
        Task {
            await withTaskGroup(of: Void.self) { group in
                var pending = 0
                for (peer, address) in book.sorted(by: { $0.key < $1.key }) {
                    guard let hp = AgentConfiguration.HostPort(address) else { continue }
                    if pending >= 32 {
                        await group.next()
                        pending -= 1
                    }
                    group.addTask { try? await transport.send(frame, toAddress: hp.host, port: hp.port, expecting: peer) }
                    pending += 1
                }
            }
        }
    }

    static func denyListFrame(_ state: ClusterState) -> Frame? {
        var d = Microscale_Control_DenyList()
        d.index = state.deniedIndex
        d.names = state.deniedNodes
        var m = Microscale_Control_ControlMessage()
        m.denyList = d
        return try? Frame(kind: .control, message: m)
    }

    /// The deny list this agent enforces (its index; 0 when it holds none).
    public var denyListIndex: UInt64 { deniedIndex }

    private func push(_ a: NodeAssignment, to peer: String) async -> Bool {
        var p = Microscale_Control_Assignment()
        p.planIndex = a.planIndex
        p.node = peer
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        for (service, (count, spec)) in a.services.sorted(by: { $0.key < $1.key }) {
            var s = Microscale_Control_ServiceAssignment()
            s.service = service
            s.count = UInt32(clamping: count)
            s.specHash = a.specHashes[service] ?? spec.containerHash
            s.spec = (try? e.encode(spec)) ?? Data()
            if let k = a.keep[service], let first = k.specs.first {
                s.keepSpecHash = first
                s.keepAlsoSpecHashes = Array(k.specs.dropFirst())
                s.keepCount = UInt32(clamping: k.count)
            }
            p.services.append(s)
        }
        var m = Microscale_Control_ControlMessage()
        m.assignment = p
        guard let frame = try? Frame(kind: .control, message: m) else { return false }
        return await transport.send(frame, toPeer: peer)
    }

    /// Control frames about assignments (forwarded API requests go to `ClusterAPI`).
    public func receive(_ message: Microscale_Control_ControlMessage, from peer: AuthenticatedPeer) async {
        switch message.body {
        case .subscribe(let s):
            guard let raft else { return }  // a client agent has nothing to serve
            // A node subscribes for itself only: its certificate names it.
            if let rule = PeerAdmission.subscription(for: s.node, peer: peer.name) {
                refusals.refuse(rule, peer: peer.name, "a subscription for \(clipped(s.node))")
                return
            }
            guard feed.subscribe(peer.name, after: s.afterIndex) else { return }
            subscriberDenied[peer.name] = s.deniedAfterIndex
            // Answered on its own: this subscriber's share if it lacks the plan, and the deny
            // list if it holds an older one (not a look at every subscriber, `AssignmentFeed.due`).
            let state = await raft.state
            if let a = feed.due(for: peer.name, in: state) {
                let delivered = await push(a, to: peer.name)
                feed.pushed(to: peer.name, index: a.planIndex, delivered: delivered)
                if !delivered {
                    subscriberDenied[peer.name] = nil
                    return
                }
            }
            if state.deniedIndex > s.deniedAfterIndex, let frame = Self.denyListFrame(state),
                await transport.send(frame, toPeer: peer.name)
            {
                subscriberDenied[peer.name] = state.deniedIndex
            }
        case .assignment(let a):
            // Only from the server this agent subscribed to (`PeerAdmission.assignment`); the
            // upstream re-sends whatever is newer than `feed.lastIndex` on the next subscription.
            switch PeerAdmission.assignment(peer: peer.name, peerIsServer: peer.identity.isServer, meIsServer: raft != nil, upstream: upstream) {
            case nil: break
            case .assignmentNeedsServerCertificate?:
                refusals.refuse(.assignmentNeedsServerCertificate, peer: peer.name, "an assignment push from a client certificate")
                return
            case let rule?:
                refusals.refuse(
                    rule, peer: peer.name,
                    "an assignment push; this agent subscribed to \(raft == nil ? upstream ?? "no server" : "no server (it is one)")")
                return
            }
            guard feed.wants(planIndex: a.planIndex, for: a.node) else { return }
            var services: [String: (Int, Consensus.ServiceSpec)] = [:]
            var keep: [String: NodeAssignment.Kept] = [:]
            for s in a.services {
                guard let spec = try? JSONDecoder().decode(Consensus.ServiceSpec.self, from: s.spec) else {
                    logger.warning("assignment with an unreadable spec", metadata: ["service": "\(s.service)", "from": "\(peer.name)"])
                    return
                }
                // Bounded on receipt like every value from a peer (Limits, docs/limits.md): the
                // executor turns these into containers.
                if let e = spec.validationError(name: s.service) {
                    logger.warning("assignment refused", metadata: ["from": "\(peer.name)", "error": "\(e)"])
                    return
                }
                guard s.count <= Limits.maxContainersPerService, services.count < ClusterState.maxServices else {
                    logger.warning(
                        "assignment refused",
                        metadata: ["from": "\(peer.name)", "error": "\(s.count) containers of \(s.service), or too many services"])
                    return
                }
                services[s.service] = (Int(s.count), spec)
                if !s.keepSpecHash.isEmpty {
                    let hashes = [s.keepSpecHash] + s.keepAlsoSpecHashes
                    guard s.keepCount <= Limits.maxContainersPerService, hashes.count <= ServiceRollout.maxAlsoFrom + 1,
                        hashes.allSatisfy({ $0.utf8.count <= 64 })
                    else {
                        logger.warning(
                            "assignment refused",
                            metadata: ["from": "\(peer.name)", "error": "keeps \(s.keepCount) containers of \(s.service) of \(hashes.count) specs"])
                        return
                    }
                    keep[s.service] = NodeAssignment.Kept(specs: hashes, count: Int(s.keepCount))
                }
            }
            feed.took(a.planIndex)
            await deliver(NodeAssignment(planIndex: a.planIndex, services: services, keep: keep))
        case .denyList(let d):
            // Like an assignment, only from a server certificate; unlike one, from any server,
            // not only the upstream: the upstream may be the node denied, or lag. The newest list
            // by its Raft index wins, so a lagging server's older one changes nothing. A server
            // agent enforces the list it applies itself.
            guard peer.identity.isServer else {
                refusals.refuse(.assignmentNeedsServerCertificate, peer: peer.name, "a deny list from a client certificate")
                return
            }
            guard raft == nil, d.index > deniedIndex else { return }
            // Bounded on receipt as the state machine bounds it (docs/limits.md).
            guard d.names.count <= Limits.defaultMaxMembers,
                d.names.allSatisfy({ !$0.isEmpty && $0.utf8.count <= ClusterState.maxNodeNameBytes })
            else {
                logger.warning(
                    "deny list refused",
                    metadata: [
                        "from": "\(peer.name)",
                        "error": "more than \(Limits.defaultMaxMembers) names, or a name not of 1-\(ClusterState.maxNodeNameBytes) bytes",
                    ])
                return
            }
            deniedIndex = d.index
            transport.setDenied(Set(d.names))
            logger.info("deny list from the servers", metadata: ["from": "\(peer.name)", "index": "\(d.index)", "denied": "\(d.names.prefix(16))"])
        default:
            break
        }
    }
}
