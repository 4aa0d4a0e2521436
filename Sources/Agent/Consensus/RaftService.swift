import Consensus
import ControlPlane
import Foundation
import Logging
import SecureTransport
import Wire

/// Why a proposal did not take effect.
public enum ProposalError: Error, Sendable, Equatable, CustomStringConvertible {
    /// This server is not the leader; `leader` is who it believes is.
    case notLeader(leader: String?)
    /// No Raft cluster yet: waiting for --bootstrap-expect servers, or not a server at all.
    case noCluster(String)
    /// The entry was overwritten by a new leader's log (Raft §5.3) or compacted before we saw it:
    /// it did not take effect, or we cannot tell; the caller retries.
    case lost
    /// Not committed within the deadline (no quorum reachable).
    case timedOut(Duration)
    /// Committed and applied, but the state machine refused it (the same on every server).
    case rejected(ClusterStateError)
    case invalid(String)
    /// What the request names does not exist (a Raft server that is not one).
    case notFound(String)

    public var description: String {
        switch self {
        case .notLeader(let l): return "not the leader (leader: \(l ?? "none yet"))"
        case .noCluster(let why): return why
        case .lost: return "the proposal was lost to a change of leader; retry"
        case .timedOut(let d): return "not committed within \(d) (is a quorum of servers reachable?)"
        case .rejected(let e): return "\(e)"
        case .invalid(let why), .notFound(let why): return why
        }
    }
}

/// One server of `GET /v1/operator/raft/peers` (docs/operations.md).
public struct RaftPeer: Codable, Sendable, Equatable {
    public var name: String
    public var address: String
    public var voter: Bool
    public var leader: Bool
}

/// What `GET /v1/leader` and the dashboard show of the local Raft server.
public struct RaftStatus: Codable, Sendable, Equatable {
    public var name: String
    public var role: String
    public var leader: String?
    public var term: UInt64
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    /// Last index folded into a snapshot (Raft §7); 0 before the first compaction.
    public var snapshotIndex: UInt64
    public var voters: [String]
}

/// The Raft shell of a server agent: drives the pure `RaftNode` with the wall clock, persists each
/// Ready to SQLite before sending its messages (Raft Figure 2: a server answers only from durable
/// state), sends over the peer transport in frames of kind `.raft`, and applies committed entries
/// to the `ClusterState`.
public actor RaftService {
    public struct Options: Sendable {
        public var electionTimeout: Duration = .milliseconds(300)
        public var heartbeatInterval: Duration = .milliseconds(50)
        /// --bootstrap-expect: how many servers form the first configuration (0: never bootstrap).
        public var bootstrapExpect = 0
        /// A proposal not committed by then is reported as timed out (the entry may still commit).
        public var proposalTimeout: Duration = .seconds(5)
        /// The log is compacted into a snapshot once this many applied entries follow the last one.
        public var compactEvery: UInt64 = 2000
        /// Bound on frames queued to one peer; Raft resends what is dropped.
        public var outboxLimit = 1024
        /// Server membership at runtime (docs/consensus.md, "Server membership").
        public var autopilot = Autopilot.Settings()
        public init() {}
    }

    /// What gossip says of one member, for the autopilot and `operator raft list-peers`.
    public struct MemberHealth: Sendable, Equatable {
        public var health: Autopilot.Health
        public var address: String
        /// Its certificate, as this agent authenticated it, is a server's.
        public var isServer: Bool

        public init(health: Autopilot.Health, address: String, isServer: Bool) {
            self.health = health
            self.address = address
            self.isServer = isServer
        }
    }

    public let name: String
    let options: Options
    let transport: PeerTransport
    let logger: Logger
    /// Alive servers by name, "host:port" (from membership).
    let servers: @Sendable () async -> [String: String]
    let dataDir: String
    /// Where refused Raft frames are counted and logged (rate-limited).
    let refusals: Refusals
    private var storage: any LogStorage
    /// Told why, when Raft stops on this server because it cannot make its state durable (the
    /// runtime then stops the agent: fail-stop, `onFailStop`).
    private var failStopHandler: (@Sendable (String) -> Void)?
    private var node: RaftNode?
    public private(set) var state = ClusterState()
    private var waiters: [UInt64: (term: UInt64, continuation: CheckedContinuation<ClusterStateError?, any Error>)] = [:]
    private var outboxes: [String: AsyncStream<(Frame, String, Int, Bool)>.Continuation] = [:]
    private var addresses: [String: (host: String, port: Int)] = [:]
    private var loop: Task<Void, Never>?
    private var lastSoft: SoftState?
    private var seed: UInt64
    private var waitingLogged = false
    private var drainScheduled = false
    /// Changes of known leader, for metrics.
    public private(set) var leaderChanges = 0
    private var observers: [@Sendable (ClusterState) async -> Void] = []
    /// Snapshots arriving in chunks, per leader.
    private var snapshots = SnapshotAssembler()
    /// Agreeing on the first voters with the other servers (no Raft state yet).
    private var agreement: BootstrapAgreement?
    private var agreementBroken = false
    /// The agent's clock (AgentRuntime's): the Ready loop's ticks, the bootstrap agreement, the
    /// autopilot and the wait-until-deadline loops run on its monotonic time (only the sleeps
    /// between them are the host's: docs/ARCHITECTURE.md, "Time in the shells").
    private let clock: AgentClock
    /// Frames of a snapshot waiting in a peer's outbox.
    private var snapshotFramesQueued: [String: Int] = [:]
    /// The leader's driver of server membership; its timers start afresh with each leadership.
    private var autopilot: Autopilot
    /// Every member gossip knows (set by the runtime).
    private var memberHealth: @Sendable () async -> [String: MemberHealth] = { [:] }
    private var lastHello: Duration?
    /// Linearizable reads (thesis §6.4) waiting for their ReadState, by request id; then for the
    /// state machine to reach its index.
    private var reads: [UInt64: (index: UInt64?, continuation: CheckedContinuation<Void, any Error>)] = [:]
    private var nextReadID: UInt64 = 0
    /// The last log index applied to `state` (entries of every kind, and snapshots).
    private var appliedIndex: UInt64 = 0
    /// Reads answered with ReadIndex, for metrics.
    public private(set) var linearizableReads = 0

    /// Called (in order, off the Ready loop) with the state after entries were applied.
    public func onApply(_ observer: @escaping @Sendable (ClusterState) async -> Void) {
        observers.append(observer)
    }

    public init(
        name: String, dataDir: String, options: Options, transport: PeerTransport, logger: Logger,
        seed: UInt64, refusals: Refusals? = nil, clock: AgentClock = .system(),
        servers: @escaping @Sendable () async -> [String: String]
    ) throws {
        self.clock = clock
        self.name = name
        self.refusals = refusals ?? Refusals(logger: logger)
        self.options = options
        self.transport = transport
        self.logger = logger
        self.servers = servers
        self.dataDir = dataDir
        self.seed = seed
        autopilot = Autopilot(settings: options.autopilot)
        storage = try SQLiteLogStorage(path: (dataDir as NSString).appendingPathComponent("raft.sqlite"))
    }

    /// Called once if Raft stops here because a write to its log failed, or a snapshot could not
    /// be restored (docs/consensus.md, "A disk that fails"). Answering from state that is not
    /// durable would break Raft's guarantees; serving the state last applied would keep this
    /// agent and every client subscribed to it on a plan the cluster has moved past.
    public func onFailStop(_ handler: @escaping @Sendable (String) -> Void) {
        failStopHandler = handler
    }

    /// Tests: the log storage, replaced before `start` (a storage that fails on demand).
    func replaceStorage(_ s: any LogStorage) { storage = s }

    /// Where the autopilot and `list-peers` learn what gossip says of each member.
    public func setMemberHealth(_ source: @escaping @Sendable () async -> [String: MemberHealth]) {
        memberHealth = source
    }

    var peersFile: String { (dataDir as NSString).appendingPathComponent("raft-peers.json") }

    public func start() {
        loop = Task { [weak self] in
            guard let start = self?.clock.now else { return }
            var last = start
            var refreshed = start - .seconds(1)
            while !Task.isCancelled, let self {
                let now = self.clock.now
                if now - refreshed >= .milliseconds(250) {
                    refreshed = now
                    await self.refreshAddresses()
                }
                let wait = await self.tick(by: now - last)
                last = now
                try? await Task.sleep(for: max(.milliseconds(1), min(wait, .milliseconds(50))))
            }
        }
    }

    public func stop() {
        loop?.cancel()
        loop = nil
        notifications?.finish()
        for (_, c) in outboxes { c.finish() }
        outboxes = [:]
        for (_, w) in waiters { w.continuation.resume(throwing: ProposalError.noCluster("the agent is stopping")) }
        waiters = [:]
        for (_, r) in reads { r.continuation.resume(throwing: ProposalError.noCluster("the agent is stopping")) }
        reads = [:]
        node = nil
    }

    private func refreshAddresses() async {
        let book = await servers()
        var next: [String: (host: String, port: Int)] = [:]
        for (n, a) in book {
            if let hp = AgentConfiguration.HostPort(a) { next[n] = (hp.host, hp.port) }
        }
        addresses = next
        if node == nil { bootstrapIfReady(alive: Set(book.keys)) }
        if node?.role == .leader { await runAutopilot() }
    }

    /// Recovers from disk, or forms the first configuration once --bootstrap-expect servers are
    /// alive (as Consul does). The voters are written to raft-peers.json before the node starts, so
    /// that a restarted server knows them even before its first snapshot carries them.
    private func bootstrapIfReady(alive: Set<String>) {
        if let data = FileManager.default.contents(atPath: peersFile),
            let saved = try? JSONDecoder().decode([String].self, from: data)
        {
            startNode(voters: Set(saved))
            return
        }
        guard options.bootstrapExpect > 0 else {
            // Not one of the first voters: join a running cluster, whose leader adds this server
            // as a learner and promotes it once it has caught up.
            join()
            return
        }
        if agreement == nil {
            let pledged = FileManager.default.contents(atPath: pledgeFile).flatMap { try? JSONDecoder().decode([String].self, from: $0) }
            agreement = BootstrapAgreement(name: name, expect: options.bootstrapExpect, pledge: pledged)
        }
        if !waitingLogged {
            logger.info("waiting for servers to agree on the voters", metadata: ["expect": "\(options.bootstrapExpect)", "alive": "\(alive.count)"])
            waitingLogged = true
        }
        perform(agreement!.observe(servers: alive, now: clock.now))
        // A server that is not among the first voters (started later, with the same flags as they
        // were) never pledges; it asks the others, once a second, whether a cluster runs already:
        // the answer names its voters, and this server then joins (an empty proposal commits no
        // one to anything).
        if node == nil, agreement?.pledge == nil, lastHello.map({ clock.now - $0 >= .seconds(1) }) ?? true {
            lastHello = clock.now
            var m = Microscale_Control_ControlMessage()
            m.bootstrapProposal = Microscale_Control_BootstrapProposal()
            guard let frame = try? Frame(kind: .control, message: m) else { return }
            for (peer, to) in addresses where peer != name {
                let transport = self.transport
                Task { try? await transport.send(frame, toAddress: to.host, port: to.port, expecting: peer) }
            }
        }
    }

    /// Starts Raft with no configuration of its own: the node never campaigns, and takes the
    /// configuration from the snapshot the leader sends it (docs/consensus.md, "Server membership").
    /// Written down first, so that a restart rejoins instead of bootstrapping.
    private func join() {
        guard node == nil else { return }
        do {
            try JSONEncoder().encode([String]()).write(to: URL(fileURLWithPath: peersFile), options: .atomic)
        } catch {
            logger.error("cannot write \(peersFile): \(error)")
            return
        }
        logger.info("joining the running cluster: the leader adds this server as a learner, then promotes it")
        startNode(voters: [])
    }

    var pledgeFile: String { (dataDir as NSString).appendingPathComponent("raft-pledge.json") }

    /// Carries out what the bootstrap agreement decided, in order: a pledge is on disk before any
    /// message says so (a restart must not pledge anew to another set).
    private func perform(_ effects: [BootstrapAgreement.Effect]) {
        for effect in effects {
            switch effect {
            case .persistPledge(let set):
                do {
                    try DataDirectory.write(try JSONEncoder().encode(set), to: pledgeFile)
                    logger.info("pledged to bootstrap Raft with these voters", metadata: ["voters": "\(set)"])
                } catch {
                    // Nothing may go out on a pledge that is not durable: stop agreeing here.
                    logger.critical("cannot write \(pledgeFile); this server takes no part in bootstrapping: \(error)")
                    agreementBroken = true
                    return
                }
            case .propose(let set, let peers):
                guard !agreementBroken else { return }
                var proposal = Microscale_Control_BootstrapProposal()
                proposal.voters = set
                var m = Microscale_Control_ControlMessage()
                m.bootstrapProposal = proposal
                guard let frame = try? Frame(kind: .control, message: m) else { return }
                for peer in peers {
                    guard let to = addresses[peer] else { continue }
                    let transport = self.transport
                    Task { try? await transport.send(frame, toAddress: to.host, port: to.port, expecting: peer) }
                }
            case .bootstrap(let voters):
                guard !agreementBroken, node == nil else { return }
                do {
                    try DataDirectory.write(try JSONEncoder().encode(voters.sorted()), to: peersFile)
                } catch {
                    logger.error("cannot write \(peersFile): \(error)")
                    return
                }
                startNode(voters: Set(voters))
            }
        }
    }

    /// A bootstrap message from another agent: proposals are answered, replies fed to the agreement.
    public func receive(bootstrap message: Microscale_Control_ControlMessage, from peer: AuthenticatedPeer) {
        guard peer.identity.isServer else {
            refusals.refuse(.bootstrapNeedsServerCertificate, peer: peer.name, "a bootstrap message from a client certificate")
            return
        }
        switch message.body {
        case .bootstrapProposal(let p):
            guard p.voters.count <= 16, p.voters.allSatisfy({ $0.utf8.count <= ClusterState.maxNodeNameBytes }) else { return }
            var reply = Microscale_Control_BootstrapReply()
            let voters = node.map { $0.configuration.voters.sorted() }
            if agreement == nil, options.bootstrapExpect > 0, voters == nil {
                let pledged = FileManager.default.contents(atPath: pledgeFile).flatMap { try? JSONDecoder().decode([String].self, from: $0) }
                agreement = BootstrapAgreement(name: name, expect: options.bootstrapExpect, pledge: pledged)
            }
            if let voters {
                reply.votersWithState = voters
            } else if var a = agreement, !agreementBroken {
                let (answer, effects) = a.receiveProposal(p.voters, hasState: nil)
                agreement = a
                perform(effects)
                guard !agreementBroken else { return }
                switch answer {
                case .pledged(let set): reply.pledged = set
                case .hasState(let v): reply.votersWithState = v
                case .candidate(let c): reply.candidate = c
                }
            } else {
                return
            }
            var m = Microscale_Control_ControlMessage()
            m.bootstrapReply = reply
            guard let frame = try? Frame(kind: .control, message: m) else { return }
            let transport = self.transport
            Task { await transport.send(frame, toPeer: peer.name) }
        case .bootstrapReply(let r):
            guard node == nil, var a = agreement else { return }
            let answer: BootstrapAgreement.Reply =
                !r.pledged.isEmpty ? .pledged(r.pledged) : !r.votersWithState.isEmpty ? .hasState(voters: r.votersWithState) : .candidate(r.candidate)
            let effects = a.receiveReply(answer, from: peer.name)
            agreement = a
            perform(effects)
            // A cluster runs without this server among its voters: join it, unless this server
            // pledged to a set (which can then never start without it) and waits for that.
            if node == nil, a.pledge == nil, case .hasState(let voters) = answer, !voters.contains(name) {
                join()
            }
        default:
            break
        }
    }

    private func startNode(voters: Set<String>) {
        let recovered: RecoveredState
        do { recovered = try storage.recover() } catch {
            logger.critical("cannot recover the Raft log: \(error)")
            return
        }
        var config = RaftConfig(id: name)
        config.electionTimeout = options.electionTimeout
        config.heartbeatInterval = options.heartbeatInterval
        if let snap = recovered.snapshot {
            // Fail-stop, as for a snapshot installed later: an empty state in its place would
            // plan every service away.
            appliedIndex = snap.index
            do { state = try ClusterState.restore(snap.data) } catch {
                logger.critical("cannot restore the stored snapshot \(snap.index); raft does not start on this server: \(error)")
                return
            }
        }
        node = RaftNode(config: config, bootstrap: Configuration(voters: voters), recovered: recovered, seed: seed)
        logger.info(
            "raft started",
            metadata: [
                "voters": "\(voters.sorted())", "term": "\(recovered.hardState.term)",
                "entries": "\(recovered.entries.count)",
            ])
        drain()
    }

    /// Advances Raft's clock; returns how long until it next needs a tick.
    private func tick(by elapsed: Duration) -> Duration {
        guard node != nil else { return .milliseconds(100) }
        node!.tick(by: elapsed)
        drain()
        return node?.timeUntilNextTimeout ?? .milliseconds(50)
    }

    /// A Raft frame from an authenticated peer. Raft believes what it is told (a term adopted on
    /// sight, a snapshot replacing the state and the voters), so who may tell it is decided here,
    /// before decoding: a server certificate, of a member of the configuration this server knows
    /// (the bootstrap voters until a snapshot or a configuration entry says otherwise), speaking
    /// for itself. Anything else is dropped and counted (docs/ARCHITECTURE.md, "Trust").
    public func receive(_ frame: Frame, from peer: AuthenticatedPeer) {
        if let rule = PeerAdmission.raftFrame(peerIsServer: peer.identity.isServer) {
            refusals.refuse(rule, peer: peer.name, "a raft frame from a client certificate")
            return
        }
        guard node != nil else { return }  // not bootstrapped yet: Raft resends
        var m: RaftMessage
        let chunk: RaftCodec.SnapshotChunk?
        do { (m, chunk) = try RaftCodec.decodeChunk(frame) } catch {
            logger.warning("dropping raft frame", metadata: ["peer": "\(peer.name)", "error": "\(error)"])
            return
        }
        // The certificate is the only identity we trust: a member may not speak for another
        // (`PeerAdmission.raftMessage`).
        let members = node!.configuration.members
        switch PeerAdmission.raftMessage(m, peer: peer.name, me: name, members: members) {
        case nil: break
        case .raftSenderIsNotThePeer?:
            refusals.refuse(.raftSenderIsNotThePeer, peer: peer.name, "a raft message from \(clipped(m.from)) to \(clipped(m.to))")
            return
        case let rule?:
            refusals.refuse(
                rule, peer: peer.name, "a raft \(m.kind) from a server outside the configuration \(members.sorted().prefix(16))")
            return
        }
        if let chunk {
            // A snapshot larger than a frame: the core sees it once, whole.
            do {
                guard let whole = try snapshots.add(m, chunk: chunk) else { return }
                m = whole
            } catch {
                logger.warning("dropping a snapshot in assembly", metadata: ["peer": "\(peer.name)", "error": "\(error)"])
                return
            }
        }
        node!.step(m)
        scheduleDrain()
    }

    /// Runs the Ready loop after the jobs already queued on this actor, so that proposals and
    /// messages arriving together share one Ready: one fsync, one append per follower (the batching
    /// of Raft §10.2.1 / thesis §10.2.1, as etcd does between Ready calls).
    private func scheduleDrain() {
        guard !drainScheduled else { return }
        drainScheduled = true
        Task {
            self.drainScheduled = false
            self.drain()
        }
    }

    /// A dialed connection to `address` closed. If it was the leader's, Raft need not wait out a
    /// whole election timeout to find out (`RaftNode.leaderUnreachable`).
    public func connectionLost(_ address: String) {
        guard node != nil, let leader = node!.leader, let a = addresses[leader],
            AgentConfiguration.HostPort(address).map({ $0.host == a.host && $0.port == a.port }) == true
        else { return }
        node!.leaderUnreachable(leader)
        drain()
    }

    /// The connection with `peer` (dialed or accepted) closed: the same hint, by name.
    public func peerConnectionLost(_ peer: String) {
        guard node != nil, node!.leader == peer else { return }
        node!.leaderUnreachable(peer)
        drain()
    }

    /// Proposes `command` and returns once it is committed and applied here: nil when it took
    /// effect, or the state machine's reason for refusing it.
    public func propose(_ command: ClusterCommand) async throws -> ClusterStateError? {
        guard node != nil else { throw ProposalError.noCluster(noClusterReason) }
        let data: [UInt8]
        do { data = try command.encoded() } catch { throw ProposalError.invalid("\(error)") }
        // Values outside the limits never enter the log (every server would refuse them on apply).
        if let refused = command.validationError() { return refused }
        let (index, term): (UInt64, UInt64)
        do { (index, term) = try node!.propose(data) } catch {
            if case .notLeader(let l) = error { throw ProposalError.notLeader(leader: l) }
            if case .transferInProgress = error {
                // Thesis §3.10: the leader takes no proposals while it hands off. Wait for the
                // hand-off to end (an election timeout at most), then propose here again or
                // say who leads now, so that the caller's write goes there instead of failing.
                try await waitForTransfer()
                return try await propose(command)
            }
            throw ProposalError.invalid("\(error)")
        }
        let timeout = options.proposalTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(index: index, term: term)
        }
        return try await withCheckedThrowingContinuation { c in
            waiters[index] = (term, c)
            scheduleDrain()
        }
    }

    /// Returns once no leadership transfer is in progress here; throws `notLeader` if this server
    /// no longer leads.
    private func waitForTransfer() async throws {
        let deadline = clock.now + options.electionTimeout * 3
        while let n = node, n.role == .leader, n.leadTransferee != nil, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let n = node else { throw ProposalError.noCluster("the agent is stopping") }
        if n.role != .leader { throw ProposalError.notLeader(leader: n.leader) }
    }

    // MARK: Server membership (docs/consensus.md, "Server membership")

    /// A configuration reload (SIGHUP) changed --dead-server-cleanup or
    /// --server-stabilization-time: the autopilot's next round uses them.
    public func setAutopilot(deadServerCleanup: Duration?, stabilizationTime: Duration) {
        autopilot.settings.deadServerCleanup = deadServerCleanup
        autopilot.settings.stabilizationTime = stabilizationTime
    }

    /// One round of the autopilot on the leader: propose the change it picks, if the node may
    /// change its configuration now (one change at a time; the node checks again).
    private func runAutopilot() async {
        let gossip = await memberHealth()
        guard let n = node, n.role == .leader else { return }
        var health: [String: Autopilot.Health] = [:]
        var servers = Set<String>()
        for (member, h) in gossip {
            health[member] = h.health
            if h.isServer { servers.insert(member) }
        }
        health[name] = .alive
        var match: [String: UInt64] = [:]
        for m in n.configuration.members { match[m] = n.match(of: m) ?? 0 }
        let input = Autopilot.Input(
            leader: name, configuration: n.configuration, lastIndex: n.lastIndex, match: match,
            health: health, servers: servers)
        guard let action = autopilot.step(input, now: clock.now), n.canChangeConfiguration else { return }
        if case .addLearner = action.change, n.snapshot.index == 0 {
            // The first voters are in no log entry (they were agreed at bootstrap), so a server that
            // copied the log from its start would not know them. After a compaction the leader
            // sends a new server a snapshot first, and the snapshot carries the configuration.
            guard n.applied > 0 else { return }
            compact()
        }
        do { try node!.proposeConfChange(action.change) } catch {
            logger.debug("autopilot change not proposed", metadata: ["change": "\(action.change)", "error": "\(error)"])
            return
        }
        logger.info("server membership change proposed", metadata: ["change": "\(action.change)", "reason": "\(action.reason)"])
        scheduleDrain()
    }

    /// The servers of the current configuration, voters and learners (both apply the log); nil
    /// before this server has a Raft node.
    public var configurationMembers: Set<String>? { node?.configuration.members }

    /// The Raft servers, for `operator raft list-peers` (answered by the leader).
    public func peers() async -> [RaftPeer]? {
        let gossip = await memberHealth()
        guard let n = node else { return nil }
        let c = n.configuration
        return c.members.sorted().map { m in
            RaftPeer(
                name: m, address: gossip[m]?.address ?? addresses[m].map { "\($0.host):\($0.port)" } ?? "",
                voter: c.voters.contains(m), leader: n.leader == m)
        }
    }

    /// Removes `peer` from the configuration and returns once that is committed (`operator raft
    /// remove-peer`, and a leaving server's last request). `departing`: the server is leaving, so
    /// the autopilot must not add it back while it is still alive. Removing the leader itself
    /// hands leadership off first and throws `notLeader` naming the new leader, to which the
    /// caller sends the request again.
    public func removePeer(_ peer: String, departing: Bool) async throws {
        guard let n = node else { throw ProposalError.noCluster(noClusterReason) }
        guard n.role == .leader else { throw ProposalError.notLeader(leader: n.leader) }
        guard n.configuration.members.contains(peer) else {
            throw ProposalError.notFound(
                "\(peer) is not a Raft server of this cluster (servers: \(n.configuration.members.sorted().joined(separator: ", ")))")
        }
        if peer == name {
            let to = try await transferLeadership()
            throw ProposalError.notLeader(leader: to)
        }
        if departing { autopilot.departing(peer, now: clock.now) }
        // The autopilot may have a change of its own in flight: one at a time (thesis §4.1).
        let deadline = clock.now + options.proposalTimeout
        while node?.canChangeConfiguration == false, node?.role == .leader, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        guard node?.role == .leader else { throw ProposalError.notLeader(leader: node?.leader) }
        let (index, term): (UInt64, UInt64)
        do { (index, term) = try node!.proposeConfChange(.remove(peer)) } catch {
            if case .notLeader(let l) = error { throw ProposalError.notLeader(leader: l) }
            throw ProposalError.invalid("\(error)")
        }
        logger.info(
            "server membership change proposed",
            metadata: ["change": "remove \(peer)", "reason": "\(departing ? "it leaves" : "operator raft remove-peer")"])
        let timeout = options.proposalTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expire(index: index, term: term)
        }
        _ = try await withCheckedThrowingContinuation { c in
            waiters[index] = (term, c)
            scheduleDrain()
        }
    }

    /// Thesis §3.10: hands leadership to the most up-to-date other voter that is reachable, and
    /// returns its name once it leads (or once this server no longer does). Proposals arriving
    /// meanwhile wait (see `propose`) rather than fail.
    @discardableResult
    public func transferLeadership() async throws -> String? {
        guard let n = node else { throw ProposalError.noCluster(noClusterReason) }
        guard n.role == .leader else { return n.leader }
        let candidates = n.configuration.voters.filter { $0 != name && addresses[$0] != nil }
            .sorted { (n.match(of: $0) ?? 0, $1) > (n.match(of: $1) ?? 0, $0) }
        guard !candidates.isEmpty else { throw ProposalError.invalid("no other voter is reachable to hand leadership to") }
        for target in candidates.prefix(2) {
            do { try node?.transferLeadership(to: target) } catch { continue }
            logger.info("handing leadership off", metadata: ["to": "\(target)"])
            drain()
            let deadline = clock.now + options.electionTimeout * 3
            while let m = node, clock.now < deadline {
                if m.role != .leader, let l = m.leader, l != name { return l }
                if m.role == .leader, m.leadTransferee == nil { break }  // abandoned: try the next
                try await Task.sleep(for: .milliseconds(10))
            }
            if let m = node, m.role != .leader { return m.leader }
        }
        throw ProposalError.timedOut(options.electionTimeout * 3)
    }

    /// Returns once `state` may be read linearizably: thesis §6.4 ReadIndex. The leader notes its
    /// commit index, confirms with a round of heartbeats that a quorum still follows it, and the
    /// read waits until that index is applied here. A follower's request goes to its leader
    /// (§6.4.1) and is served from its own state once it has applied the index. A leader deposed
    /// without knowing it (frozen, partitioned) gets no quorum for its round, so it answers
    /// nothing stale: the read times out or fails when it learns of the new term.
    public func readBarrier() async throws {
        guard node != nil else { throw ProposalError.noCluster(noClusterReason) }
        nextReadID += 1
        let id = nextReadID
        do { try node!.readIndex(context: Self.readContext(id)) } catch {
            if case .notLeader(let l) = error { throw ProposalError.notLeader(leader: l) }
            throw ProposalError.invalid("\(error)")
        }
        let timeout = options.proposalTimeout
        Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.expireRead(id)
        }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            reads[id] = (nil, c)
            scheduleDrain()
        }
        linearizableReads += 1
    }

    static func readContext(_ id: UInt64) -> [UInt8] { withUnsafeBytes(of: id.bigEndian, Array.init) }

    static func readID(_ context: [UInt8]) -> UInt64? {
        guard context.count == 8 else { return nil }
        return context.reduce(0) { $0 << 8 | UInt64($1) }
    }

    private func expireRead(_ id: UInt64) {
        guard let r = reads.removeValue(forKey: id) else { return }
        r.continuation.resume(throwing: ProposalError.timedOut(options.proposalTimeout))
    }

    /// Reads whose ReadState has come and whose index is now applied go ahead.
    private func releaseReads() {
        for (id, r) in reads {
            if let index = r.index, index <= appliedIndex {
                reads[id] = nil
                r.continuation.resume()
            }
        }
    }

    private func expire(index: UInt64, term: UInt64) {
        guard let w = waiters[index], w.term == term else { return }
        waiters[index] = nil
        w.continuation.resume(throwing: ProposalError.timedOut(options.proposalTimeout))
    }

    var noClusterReason: String {
        options.bootstrapExpect > 0
            ? "no Raft cluster yet: waiting for \(options.bootstrapExpect) servers (--bootstrap-expect)"
            : "this server has no Raft cluster (start servers with --bootstrap-expect N)"
    }

    public func status() -> RaftStatus? {
        guard let n = node else { return nil }
        return RaftStatus(
            name: name, role: n.role.rawValue, leader: n.leader, term: n.term, commitIndex: n.commit,
            appliedIndex: n.applied, snapshotIndex: n.snapshot.index, voters: n.configuration.voters.sorted())
    }

    public var isLeader: Bool { node?.role == .leader }
    public var leader: String? { node?.leader }

    /// The Ready loop (see `Ready`): persist, then send, then apply, then advance.
    private func drain() {
        var rounds = 0
        while let n = node, n.hasReady, rounds < 64 {
            rounds += 1
            let rd = node!.ready()
            do { try storage.persist(rd) } catch {
                // Answering from state we could not make durable would break Raft's guarantees:
                // nothing of this Ready goes out, and the agent stops (fail-stop).
                failStop("cannot persist the Raft log: \(error)")
                return
            }
            for m in rd.messages { send(m) }
            if let snap = rd.snapshot {
                do { state = try ClusterState.restore(snap.data) } catch {
                    // Fail-stop: serving the state from before the snapshot (or an empty one)
                    // would answer reads and plan from what the cluster has moved past.
                    failStop("cannot restore snapshot \(snap.index): \(error)")
                    return
                }
                for (i, w) in waiters where i <= snap.index {
                    waiters[i] = nil
                    w.continuation.resume(throwing: ProposalError.lost)
                }
                appliedIndex = max(appliedIndex, snap.index)
            }
            for e in rd.committedEntries { apply(e) }
            for r in rd.readStates {
                guard let id = Self.readID(r.context), let waiting = reads[id] else { continue }
                reads[id] = (r.index, waiting.continuation)
            }
            if rd.snapshot != nil || !rd.committedEntries.isEmpty { notify() }
            node!.advance(rd)
            if let soft = rd.softState, soft.role != lastSoft?.role || soft.term != lastSoft?.term {
                // A read whose round was in flight is dropped by the core on a change of role or
                // term (its ReadState will never come): the caller retries, at the new leader.
                for (id, r) in reads where r.index == nil {
                    reads[id] = nil
                    r.continuation.resume(throwing: ProposalError.lost)
                }
            }
            releaseReads()
            if let soft = rd.softState, soft != lastSoft {
                if soft.leader != lastSoft?.leader, soft.leader != nil { leaderChanges += 1 }
                // A new leadership starts the autopilot's timers afresh: what an earlier one saw
                // may be long out of date.
                if soft.role == .leader, lastSoft?.role != .leader { autopilot = Autopilot(settings: autopilot.settings) }
                logger.info(
                    "raft role",
                    metadata: [
                        "role": "\(soft.role.rawValue)", "leader": "\(soft.leader ?? "none")",
                        "term": "\(soft.term)",
                    ])
                lastSoft = soft
            }
            compactIfDue()
        }
    }

    private var notifications: AsyncStream<ClusterState>.Continuation?

    private func notify() {
        guard !observers.isEmpty else { return }
        if notifications == nil {
            // One consumer task keeps the observers' calls in apply order.
            let (stream, c) = AsyncStream.makeStream(of: ClusterState.self, bufferingPolicy: .bufferingNewest(1))
            notifications = c
            let observers = self.observers
            Task {
                for await s in stream { for o in observers { await o(s) } }
            }
        }
        notifications!.yield(state)
    }

    private func apply(_ e: Entry) {
        appliedIndex = max(appliedIndex, e.index)
        let result: ClusterStateError? = e.kind == .normal ? state.apply(e.data, index: e.index) : nil
        if let w = waiters.removeValue(forKey: e.index) {
            if w.term == e.term { w.continuation.resume(returning: result) } else { w.continuation.resume(throwing: ProposalError.lost) }
        }
    }

    private func compactIfDue() {
        guard let n = node, n.applied >= n.snapshot.index + options.compactEvery else { return }
        compact()
    }

    /// Raft stops here, and the runtime is told so that it stops the agent (etcd does the same on
    /// a failed WAL write). An agent that ran on with Raft stopped would serve its own executor and
    /// its subscribers the state it last applied, and they would follow it, alive in membership,
    /// for as long as the disk stays broken.
    private func failStop(_ reason: String) {
        logger.critical("\(reason); raft stops on this server, and the agent stops (fail-stop)")
        stop()
        let handler = failStopHandler
        failStopHandler = nil
        handler?(reason)
    }

    private func compact() {
        guard let n = node else { return }
        do {
            let snap = try node!.compact(upTo: n.applied, data: try state.snapshot())
            try storage.compact(to: snap)
        } catch {
            logger.error("log compaction failed: \(error)")
        }
    }

    private func send(_ m: RaftMessage) {
        guard let to = addresses[m.to] else { return }  // not alive in membership: Raft retries
        let frames: [Frame]
        do { frames = try RaftCodec.frames(m) } catch {
            // Raft resends what it does not hear answered; an unencodable message would never be.
            logger.error("cannot encode a raft message", metadata: ["to": "\(m.to)", "kind": "\(m.kind)", "error": "\(error)"])
            return
        }
        // The leader sends a snapshot again when it hears nothing for a few heartbeats; a large one
        // still on its way is not queued a second time (each copy is the whole state).
        let isSnapshot = m.kind == .installSnapshot
        if isSnapshot {
            guard snapshotFramesQueued[m.to, default: 0] == 0 else { return }
            snapshotFramesQueued[m.to] = frames.count
        }
        if outboxes[m.to] == nil {
            // One sender per peer keeps the order of appends (pipelining relies on it, Raft §5.3
            // tolerates reordering but each reorder costs a rejection and a resend).
            let (stream, continuation) = AsyncStream.makeStream(
                of: (Frame, String, Int, Bool).self,
                bufferingPolicy: .bufferingOldest(options.outboxLimit))
            outboxes[m.to] = continuation
            let transport = self.transport
            let peer = m.to
            Task { [weak self] in
                for await (f, host, port, snapshot) in stream {
                    try? await transport.send(f, toAddress: host, port: port, expecting: peer)
                    if snapshot { await self?.snapshotFrameSent(to: peer) }
                }
            }
        }
        for frame in frames {
            if case .dropped = outboxes[m.to]!.yield((frame, to.host, to.port, isSnapshot)), isSnapshot {
                snapshotFrameSent(to: m.to)
            }
        }
    }

    private func snapshotFrameSent(to peer: String) {
        if let n = snapshotFramesQueued[peer] { snapshotFramesQueued[peer] = n > 1 ? n - 1 : nil }
    }
}
