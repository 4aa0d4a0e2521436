import Bounds
import ControlPlane
import Foundation
import Logging
import Membership
import NIOConcurrencyHelpers
import NIOCore
import SecureTransport
import Wire

/// The shell that runs the pure SWIM instance for real: wall-clock time from a monotonic clock,
/// messages over the TLS transport, timers on an event loop. The instance decides everything;
/// this actor only carries its directives out and feeds it what happens.
///
/// The actor runs on one NIO event loop (its executor). SWIM is a steady trickle of small
/// messages (~10 a second in and out at rest), and what an idle agent spends its CPU on is
/// waking threads, not the messages: with the actor on Swift's global executor, a probe went
/// timer thread → actor → a courier task → the connection table's actor → the channel's loop,
/// each hop a futex wake and a context switch (~110 a second per idle agent). On the loop, a
/// frame read there is handled inline, a timer is the loop's own, and a send to a connection on
/// the same loop is a direct write.
public actor MembershipService {
    private var instance: SWIMInstance
    private let transport: PeerTransport
    private let logger: Logger
    private let eventLoop: any EventLoop
    /// The agent's clock (AgentRuntime's): SWIM's timers run on its monotonic time.
    private let clock: AgentClock
    private var timer: Scheduled<Void>?
    private var timerDeadline: Duration?
    /// Frames waiting for a dial, per destination address, in order: sends to an address being
    /// dialed queue here and go out together once it connects; later ones find the connection.
    private var pending: [String: [Frame]] = [:]
    /// Addresses whose dial `send` began during the current `execute`, told to the instance
    /// after it (at most `maxPendingDials`: a dial begins only below that many in progress).
    private var dialsBegun: [String] = []
    /// What the service showed when `stop()` ran (nil until then), readable off the loop. This
    /// actor runs on the peer event loop, which the agent shuts down after stopping it; a hop
    /// onto it after that is a job enqueued on a shut-down loop, which NIO drops (its caller
    /// never resumes) and will make a crash. So what other components call (the view, the
    /// traffic, connection hints, record updates) and a dial finishing late answer from here
    /// once stopped, without hopping.
    private nonisolated let final = NIOLockedValueBox<Final?>(nil)
    private struct Final {
        var members: [MemberView]
        var messages: Int
        var bytes: Int
    }
    private nonisolated var halted: Bool { final.withLockedValue { $0 != nil } }

    /// Called when a member's status or record changed, this agent's own included (the endpoints
    /// watch recomputes then; docs/endpoints.md). Set once at start-up; a `CallbackSlot`, not a
    /// box of a function value, which grew a thunk chain on every read.
    private nonisolated let changeHandler = CallbackSlot<Void>()
    public nonisolated func onMembersChanged(_ f: @escaping @Sendable () -> Void) {
        changeHandler.set { _ in f() }
    }
    private func membersChanged() { changeHandler.current?(()) }

    /// Called when a member's status changed (alive, suspect, dead, left), not its record: the
    /// leader's decision loop plans at once on a death rather than at its next 100 ms look.
    private nonisolated let statusHandler = CallbackSlot<Void>()
    public nonisolated func onMemberStatusChanged(_ f: @escaping @Sendable () -> Void) {
        statusHandler.set { _ in f() }
    }

    /// Each member address parsed once into where to dial and the transport's connection key:
    /// every message goes to one of a few dozen addresses, several times a second.
    private var routes: [String: Route] = [:]
    public private(set) var bytesSent = 0
    /// Membership inputs the core refused (forged or out-of-bounds records, say), logged or not.
    public private(set) var rejected = 0
    private let rejectionLog = RateLimiter<String>(interval: .seconds(10))
    public private(set) var messagesSent = 0

    /// Dials in progress at once, at most.
    static let maxPendingDials = 4096
    /// Messages queued for one dial, at most: SWIM traffic is periodic, so a backlog only
    /// means the peer is slow to reach, and the newest messages are the useful ones.
    static let pendingQueue = 64
    /// Parsed addresses kept, at most (all are dropped together past it: a cache, not a table).
    static let maxRoutes = 4096

    private struct Route {
        let host: String
        let port: Int
        let key: String
    }

    nonisolated public var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    public init(
        configuration: MembershipConfiguration = .lan, record: NodeRecord, seed: UInt64,
        authenticator: any RecordAuthenticator,
        transport: PeerTransport, eventLoop: any EventLoop, logger: Logger, clock: AgentClock = .system()
    ) throws {
        self.clock = clock
        self.instance = try SWIMInstance(
            configuration: configuration, record: record, seed: seed, now: clock.now,
            authenticator: authenticator)
        self.transport = transport
        self.eventLoop = eventLoop
        self.logger = logger
    }

    private var now: Duration { clock.now }

    // MARK: Inputs

    public func start(join seeds: [String]) {
        logger.info("membership starting", metadata: ["name": "\(instance.name)", "address": "\(instance.address)", "join": "\(seeds)"])
        execute(instance.join(seeds: seeds, now: now))
    }

    /// A membership frame from the transport, on whichever loop read it. Frames of one
    /// connection arrive on its loop in order and keep that order here (a stale suspicion must
    /// not overtake its refutation): inline on our loop, else queued to it in turn.
    public nonisolated func deliver(_ frame: Frame, from peer: AuthenticatedPeer) {
        if halted { return }
        if eventLoop.inEventLoop {
            assumeIsolated { $0.receive(frame, from: peer) }
        } else {
            eventLoop.execute { self.assumeIsolated { $0.receive(frame, from: peer) } }
        }
    }

    /// A membership frame from an authenticated peer.
    public func receive(_ frame: Frame, from peer: AuthenticatedPeer) {
        guard !halted else { return }
        let message: Message
        do { message = try MembershipCodec.message(from: frame) } catch {
            logger.warning("dropping malformed membership message", metadata: ["peer": "\(peer)", "reason": "\(error)"])
            return
        }
        // The transport vouches for the peer's name; a message speaking for another is refused.
        if let sender = message.sender, !PeerAdmission.membership(sender: sender, peer: peer.name) {
            logger.warning(
                "dropping membership message whose sender is not its peer",
                metadata: ["peer": "\(peer.name)", "claims": "\(sender)"])
            return
        }
        execute(instance.receive(message, now: now))
    }

    /// Changes this node's record (its containers, what it reserves); disseminated as a delta.
    public nonisolated func updateRecord(_ change: @Sendable (inout NodeRecord) -> Void) async throws {
        guard !halted else { return }
        try await update(change)
    }

    private func update(_ change: (inout NodeRecord) -> Void) throws {
        var r = instance.record
        change(&r)
        r.version = instance.record.version + 1
        execute(try instance.updateRecord(r, now: now))
        membersChanged()
    }

    /// `force-leave`: marks a dead member left and gossips it; its status before (nil: unknown).
    public func forceLeave(_ member: String) -> String? {
        let (before, directives) = instance.forceLeave(member, now: now)
        execute(directives)
        return before?.rawValue
    }

    /// After a certificate reload: this node's record signed again, with the new certificate.
    public func refreshRecordProof() {
        guard !halted else { return }
        execute(instance.refreshProof(now: now))
    }

    /// Stopping to restart, not leaving: the record says so (signed, like every change of it), and
    /// the gossip that carries it gets a moment on the wire (every 50 ms to 3 members: the whole
    /// of a 50-node cluster within ~0.2 s). The others then see this node dead as for a crash,
    /// but the leader keeps its work in place for --dead-node-grace.
    public func announceRestart() async {
        guard !halted else { return }
        try? update { $0.restarting = true }
        try? await Task.sleep(for: .milliseconds(300))
        execute(instance.tick(now: now))
    }

    /// Graceful leave (SWIM: tell the others, so they mark us left rather than dead).
    public func leave() async {
        execute(instance.leave(now: now))
        // Give the leave a moment on the wire; the instance's own gossip carries it on.
        try? await Task.sleep(for: .milliseconds(300))
        execute(instance.tick(now: now))
        try? await Task.sleep(for: .milliseconds(100))
        stop()
    }

    public func stop() {
        let last = Final(members: currentMembers(), messages: messagesSent, bytes: bytesSent)
        final.withLockedValue { $0 = $0 ?? last }
        timer?.cancel()
        timer = nil
        pending = [:]
    }

    private func tick() {
        guard !halted else { return }
        timerDeadline = nil
        execute(instance.tick(now: now))
    }

    /// The transport saw a dialed connection close: a hint, never a verdict.
    public nonisolated func connectionLost(_ address: String) async {
        guard !halted else { return }
        await unreachableHint(address)
    }

    private func unreachableHint(_ address: String) {
        guard !halted else { return }
        execute(instance.peerUnreachable(address: address, now: now))
    }

    /// A connection with the member `name` closed (it may have been the only one, dialed by
    /// either side): the same hint as `connectionLost`.
    public nonisolated func peerConnectionLost(_ name: String) async {
        guard !halted else { return }
        await unreachableHint(member: name)
    }

    private func unreachableHint(member name: String) {
        guard let address = instance.member(named: name)?.address else { return }
        unreachableHint(address)
    }

    /// A dial to `address` failed: what queued for it is dropped, and the instance hears the hint.
    private func unreachable(_ address: String) {
        pending[address] = nil
        unreachableHint(address)
    }

    // MARK: Effects

    private func execute(_ d: Directives) {
        for out in d.messages { send(out) }
        for e in d.events { report(e) }
        if let deadline = d.nextDeadline { schedule(deadline) }
        // After this input's own effects: a first-contact probe waits for the dials just begun
        // (SWIMInstance.peerDialing); its answer sends nothing, so this does not recurse.
        while let address = dialsBegun.popLast() {
            execute(instance.peerDialing(address: address, now: now))
        }
    }

    private func schedule(_ deadline: Duration) {
        // Moved either way: a probe acked well before its timeout no longer needs the timer set
        // for that timeout, and letting it fire would wake the loop for nothing once a period.
        // Rescheduling on the loop is a heap update; a wake-up is a context switch.
        if let current = timerDeadline, current == deadline, timer != nil { return }
        timer?.cancel()
        timerDeadline = deadline
        let delay = TimeAmount.nanoseconds(max(.zero, deadline - now).nanosecondsClamped)
        timer = eventLoop.scheduleTask(in: delay) { [weak self] in
            self?.assumeIsolated { $0.tick() }
        }
    }

    private func send(_ out: Outbound) {
        let frame: Frame
        do { frame = try MembershipCodec.frame(out.message) } catch {
            logger.error("cannot encode membership message", metadata: ["reason": "\(error)"])
            return
        }
        messagesSent += 1
        bytesSent += frame.payload.readableBytes
        if pending[out.to] != nil {
            // A dial to this address is in progress: wait with the frames before it.
            pending[out.to]?.append(frame)
            if let n = pending[out.to]?.count, n > Self.pendingQueue { pending[out.to]?.removeFirst() }
            return
        }
        guard let route = route(out.to) else { return }
        let expected = memberName(at: out.to)
        // Any open connection with the member will do, whoever dialed it: on TCP + TLS a new
        // connection costs a handshake (~1 ms of CPU on each side), and without reuse every pair
        // of members would hold two connections, one per direction — N(N−1) handshakes when N
        // members join at once instead of N(N−1)/2.
        if let channel = transport.openChannel(toPeer: expected, address: route.key) {
            channel.writeAndFlush(frame, promise: nil)
            return
        }
        guard pending.count < Self.maxPendingDials else { return }
        pending[out.to] = [frame]
        dialsBegun.append(out.to)
        let transport = self.transport
        let address = out.to
        Task { [weak self] in
            let channel = try? await transport.connection(toAddress: route.host, port: route.port, expecting: expected)
            guard let self, !self.halted else { return }
            if let channel { await self.dialed(address, channel) } else { await self.unreachable(address) }
        }
    }

    /// The dial to `address` connected: what queued for it goes out, in order.
    private func dialed(_ address: String, _ channel: Channel) {
        guard let frames = pending.removeValue(forKey: address) else { return }
        for f in frames { channel.write(f, promise: nil) }
        channel.flush()
        execute(instance.peerConnected(address: address, now: now))
    }

    private func report(_ event: MembershipEvent) {
        switch event {
        case .memberChanged, .recordUpdated: membersChanged()
        case .rejected: break
        }
        switch event {
        case let .memberChanged(c):
            statusHandler.current?(())
            let from = c.previous.map { "\($0)" } ?? "new"
            if c.status == .dead || c.status == .suspect {
                logger.warning(
                    "member \(c.name) is \(c.status)", metadata: ["address": "\(c.address)", "was": "\(from)", "incarnation": "\(c.incarnation)"])
                if c.status == .dead { Task { [transport] in await transport.disconnect(peer: c.name) } }
            } else {
                logger.info(
                    "member \(c.name) is \(c.status)", metadata: ["address": "\(c.address)", "was": "\(from)", "incarnation": "\(c.incarnation)"])
            }
        case let .recordUpdated(name, version):
            logger.debug("record updated", metadata: ["member": "\(name)", "version": "\(version)"])
        case let .rejected(from, reason):
            // A member that keeps sending what is refused (a forged record, say, several times a
            // second) is logged once per 10 s, not once per copy.
            rejected &+= 1
            guard rejectionLog.allow(from) else { return }
            logger.warning("membership input refused", metadata: ["from": "\(clipped(from))", "reason": "\(reason)"])
        }
    }

    /// The member at `address`, for the certificate its connection must show. Remembered per
    /// address and checked against the member's current record (an address can change hands), so
    /// a message costs a dictionary lookup, not a scan of every member (10,000 at most).
    private func memberName(at address: String) -> String? {
        if let n = namesByAddress[address], instance.member(named: n)?.address == address { return n }
        guard let n = instance.knownMembers.first(where: { $0.address == address })?.name else { return nil }
        if namesByAddress.count >= Self.maxRoutes { namesByAddress.removeAll(keepingCapacity: true) }
        namesByAddress[address] = n
        return n
    }
    private var namesByAddress: [String: String] = [:]

    private func route(_ address: String) -> Route? {
        if let r = routes[address] { return r }
        guard let hp = AgentConfiguration.HostPort(address), hp.port > 0 else { return nil }
        if routes.count >= Self.maxRoutes { routes.removeAll(keepingCapacity: true) }
        let r = Route(host: hp.host, port: hp.port, key: PeerTransport.key(hp.host, hp.port))
        routes[address] = r
        return r
    }

    // MARK: Queries

    /// Membership messages and payload bytes sent since start; once stopped, as they were then.
    public nonisolated func traffic() async -> (messages: Int, bytes: Int) {
        if let f = final.withLockedValue({ $0 }) { return (f.messages, f.bytes) }
        return await currentTraffic()
    }

    private func currentTraffic() -> (messages: Int, bytes: Int) { (messagesSent, bytesSent) }

    /// This agent's own record, signed, as it gossips it (call while running).
    public func ownRecord() -> NodeRecord { instance.record }

    /// Every member including this one, sorted by name, as the API shows them; once stopped,
    /// as they were then.
    public nonisolated func members() async -> [MemberView] {
        if let f = final.withLockedValue({ $0 }) { return f.members }
        return await currentMembers()
    }

    private func currentMembers() -> [MemberView] { MemberView.members(of: instance) }
}

extension Message {
    /// The member a message says it comes from, where it says so.
    var sender: String? { senderName }
}
