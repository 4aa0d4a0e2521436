import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Wire

#if canImport(Glibc)
    import Glibc
#endif

/// Message transport between agents: one TLS listener, and a bounded pool of authenticated
/// connections to peers, keyed by node name. Frames from every connection, dialed or
/// accepted, go to one handler together with the peer that sent them.
///
/// Connections are symmetric: a reply can travel over whichever connection a peer has open to
/// us. Bounds: `maxConnections` in all (the least recently dialed is closed to make room),
/// `maxConnectionsPerPeer`, an idle timeout per connection, a connect timeout and the TLS
/// handshake timeout.
///
/// Before a peer is authenticated it is anyone who can reach the port, so the listener accepts
/// on a loop of its own (`acceptOnOwnLoop`) and admits at most `maxHandshakes` handshakes in
/// progress, `maxHandshakesPerSource` from one IP address, started at no more than
/// `handshakeRatePerSource` a second; a connection over a bound is closed as it is accepted,
/// before it is registered on the group and before any crypto. The crypto of admitted
/// handshakes runs on a low-priority thread of the transport's own (`offloadHandshakes`), not
/// on the event loop the connections and the membership protocol share: a flood of handshakes
/// then costs that loop a close per refused connection and the I/O of admitted ones, not
/// signatures. docs/transport-flood.md has the figures.
public final class PeerTransport: Sendable {
    public struct Options: Sendable {
        public var cluster: String
        public var agentVersion: String
        /// The wire protocol this agent speaks (in its hello); a peer speaking another is refused.
        /// Only tests set it: an agent speaks `WireProtocol.version`.
        public var protocolVersion: UInt32 = WireProtocol.version
        public var maxConnections: Int
        public var idleTimeout: Duration
        public var connectTimeout: Duration
        public var limits: FrameLimits
        /// Accepted connections whose TLS handshake and Hello are not done yet, at most, from
        /// anyone. SWIM spreads its probes, so one agent sees a few new dials a second whatever
        /// the cluster's size, each done in milliseconds; a burst beyond 64 (more agents than
        /// that joining through one seed at the same moment) is refused at once and the dialers
        /// retry. An attacker holding handshakes open (each up to the handshake timeout) can
        /// fill it, so the per-source bounds below keep one address from doing that alone.
        public var maxHandshakes: Int
        /// Accepted connections from one IP address whose handshake is not done yet, at most. An
        /// agent dials another once (concurrent senders share the dial), so 8 leaves room for a
        /// few agents behind one NAT address.
        public var maxHandshakesPerSource: Int
        /// New handshakes per second one IP address may start, on average (bursts of up to
        /// `maxHandshakesPerSource`). The concurrency bounds alone do not bound the rate: a
        /// client that sends a ClientHello and hangs up at once frees its slot at once, and each
        /// admitted connection costs the loop a pipeline and a TLS session. An agent dials
        /// another once per connection's life, so 20 a second is far above any honest need.
        public var handshakeRatePerSource: Double
        /// Exempt loopback sources (127/8, ::1) from the per-source bounds; the total bound still
        /// applies. Agents of a local cluster all dial from 127.0.0.1 (the kernel's source for
        /// any 127/8 destination), so a per-address bound would throttle their start-up, and a
        /// process on the host has cheaper ways to hurt the agent than a handshake flood.
        public var exemptLoopbackFromPerSourceBounds: Bool
        /// Open authenticated connections with one peer, at most. Two is the norm (each side
        /// dialed once); the oldest is closed beyond the bound, see `ConnectionTable.add`.
        public var maxConnectionsPerPeer: Int
        /// Bytes queued for the socket on one connection above which further frames to it are
        /// dropped (the write fails) until it drains below half. SWIM and Raft both tolerate loss
        /// and resend; a peer that stops reading must not make us buffer without bound.
        public var maxQueuedBytesPerConnection: Int
        /// Run the handshakes of accepted connections on a dedicated thread rather than on the
        /// event loop. Off, they run inline, as dialed connections' always do (those are ours).
        public var offloadHandshakes: Bool
        /// Accept connections, and apply the admission bounds, on an event loop of the
        /// transport's own: a connection refused there is never registered on the transport's
        /// group (it costs that loop one close), and the accept system calls of a flood do not
        /// run on it either. Admitted connections live on the group as before.
        public var acceptOnOwnLoop: Bool
        /// A connection refused before authentication (over an admission bound, or a failed
        /// handshake on the listener) is logged at most once per source address and rule in this
        /// long; the line counts those left out. A flood would otherwise write a line per
        /// connection, from the loop.
        public var refusalLogInterval: Duration
        /// TCP_USER_TIMEOUT: a connection whose sent data stays unacknowledged this long is
        /// aborted, and the next frame dials afresh. Without it, a lossy link can leave a
        /// connection in TCP's exponential retransmission back-off (0.2 s doubling per loss) for
        /// tens of seconds after the link is fine again; the chaos suite's link-loss scenario saw
        /// a cluster take 19 s to converge after the heal for that reason. 0 keeps the kernel's.
        public var userTimeout: Duration

        public init(
            cluster: String = "", agentVersion: String = "", maxConnections: Int = 512,
            idleTimeout: Duration = .seconds(60), connectTimeout: Duration = .seconds(2),
            limits: FrameLimits = .default, userTimeout: Duration = .seconds(5),
            maxHandshakes: Int = 64, maxHandshakesPerSource: Int = 8, handshakeRatePerSource: Double = 20,
            exemptLoopbackFromPerSourceBounds: Bool = true, maxConnectionsPerPeer: Int = 4,
            maxQueuedBytesPerConnection: Int = 16 << 20, offloadHandshakes: Bool = true, acceptOnOwnLoop: Bool = true,
            refusalLogInterval: Duration = .seconds(10)
        ) {
            self.userTimeout = userTimeout
            self.maxHandshakes = maxHandshakes
            self.maxHandshakesPerSource = maxHandshakesPerSource
            self.handshakeRatePerSource = handshakeRatePerSource
            self.exemptLoopbackFromPerSourceBounds = exemptLoopbackFromPerSourceBounds
            self.maxConnectionsPerPeer = maxConnectionsPerPeer
            self.maxQueuedBytesPerConnection = maxQueuedBytesPerConnection
            self.offloadHandshakes = offloadHandshakes
            self.acceptOnOwnLoop = acceptOnOwnLoop
            self.refusalLogInterval = refusalLogInterval
            self.cluster = cluster
            self.agentVersion = agentVersion
            self.maxConnections = maxConnections
            self.idleTimeout = idleTimeout
            self.connectTimeout = connectTimeout
            self.limits = limits
        }
    }

    public typealias FrameHandler = @Sendable (AuthenticatedPeer, Frame) -> Void

    let group: any EventLoopGroup
    /// The TLS context new connections use; `reload` replaces it (open connections keep theirs).
    private let currentTLS: NIOLockedValueBox<TLSContext>
    var tls: TLSContext { currentTLS.withLockedValue { $0 } }
    /// Certificate names refused at the handshake (the replicated deny list).
    private let deniedNames = NIOLockedValueBox<Set<String>>([])
    let options: Options
    let logger: Logger
    let onFrame: FrameHandler
    private let table: ConnectionTable
    private let admission: HandshakeAdmission
    private let refusals: RateLimitedSources
    /// The thread accepted connections' handshakes run on; started by `listen`, stopped by
    /// `shutdown`.
    private let handshakeThread = NIOLockedValueBox<NIOThreadPool?>(nil)
    /// The loop the listener accepts on, with `acceptOnOwnLoop`; stopped by `shutdown`.
    private let acceptLoop = NIOLockedValueBox<MultiThreadedEventLoopGroup?>(nil)
    /// Slots taken by the accept loop's gate, for the child initializer to tie to the
    /// handshake's outcome (at most `maxHandshakes` entries: one per admitted connection, taken
    /// out by its initializer or its close).
    private let gateSlots = NIOLockedValueBox<[ObjectIdentifier: AdmissionSlot]>([:])
    /// Refused connections whose close has not run yet (see `AdmissionGate`).
    private let pendingRefusedCloses = NIOLockedValueBox(0)
    private let server = NIOLockedValueBox<Channel?>(nil)
    private let lostHandler = CallbackSlot<String>()
    private let peerLostHandler = CallbackSlot<String>()
    private let shuttingDown = NIOLockedValueBox(false)
    /// Every accepted connection until it closes, authenticated or not: `shutdown` closes them
    /// all. The table holds a connection only once its handshake is done, and with TLS 1.3 the
    /// dialer finishes first, so a peer can have sent a frame over a connection this side has
    /// not registered yet; left open by a shutdown, the peer would hear of it only at the idle
    /// timeout.
    private let accepted = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    /// Called with the address ("host:port") of a dialed connection that closed while the
    /// transport was running: a killed peer resets its connections at once, a hint failure
    /// detectors can use long before any timeout (memberlist and Lifeguard treat it the same way).
    public func onConnectionLost(_ handler: @escaping @Sendable (String) -> Void) {
        lostHandler.set(handler)
    }

    /// Called with the peer's node name when any of its connections, dialed or accepted, closes
    /// while the transport is running. With replies sent over whichever connection is open
    /// (`send(_:toPeer:)`), a pair of agents often shares one connection that only one side
    /// dialed; the other side hears of the peer's death through this.
    public func onPeerConnectionLost(_ handler: @escaping @Sendable (String) -> Void) {
        peerLostHandler.set(handler)
    }

    public init(
        group: any EventLoopGroup, tls: TLSContext, options: Options = Options(),
        logger: Logger = Logger(label: "microscale.transport"), onFrame: @escaping FrameHandler
    ) {
        self.group = group
        self.currentTLS = NIOLockedValueBox(tls)
        self.options = options
        self.logger = logger
        self.onFrame = onFrame
        self.table = ConnectionTable(maxConnections: options.maxConnections, maxPerPeer: options.maxConnectionsPerPeer)
        self.admission = HandshakeAdmission(
            maxTotal: options.maxHandshakes, maxPerSource: options.maxHandshakesPerSource,
            ratePerSource: options.handshakeRatePerSource)
        self.refusals = RateLimitedSources(interval: options.refusalLogInterval)
    }

    private var hello: Microscale_Wire_Hello {
        SecureChannel.hello(for: tls, cluster: options.cluster, agentVersion: options.agentVersion, protocolVersion: options.protocolVersion)
    }

    /// The TLS context in use for new connections.
    public var tlsContext: TLSContext { tls }

    /// Makes new connections, dialed and accepted, use `new` (a reloaded certificate, key or CA
    /// bundle); connections already open keep the session they have until the certificate they
    /// were made with expires (`closeAtExpiry`); those whose certificate has expired already are
    /// closed now. Refused when `new` names another node or another role: a node's name and role
    /// are what every peer knows it by.
    public func reload(_ new: TLSContext) throws {
        let old = tls
        guard new.identity == old.identity else {
            throw TLSError.badFile(
                role: "certificate", path: new.configuration.certificateFile,
                reason: "names \(new.identity), but this agent is \(old.identity); a reload cannot change them")
        }
        currentTLS.withLockedValue { $0 = new }
        let now = Date().timeIntervalSince1970
        let expired = openedWith.withLockedValue { open in
            open.values.filter { $0.tls !== new && $0.tls.notAfter > 0 && $0.tls.notAfter <= now }.map(\.channel)
        }
        for c in expired { c.close(promise: nil) }
    }

    /// Connections by the TLS context they were made with (at most one entry per open
    /// connection, removed as it closes), for the sweep at a reload.
    private let openedWith = NIOLockedValueBox<[ObjectIdentifier: (channel: Channel, tls: TLSContext)]>([:])

    /// Connections opened with the TLS context of a certificate that has since been replaced
    /// (and not yet expired).
    public var connectionsWithAnEarlierCertificate: Int {
        let current = tls
        return openedWith.withLockedValue { $0.values.filter { $0.tls !== current }.count }
    }

    /// A session made with `ctx` lasts no longer than `ctx`'s certificate (docs/operations.md, issue
    /// 19: after a rotation, old connections close at the old certificate's expiry). One timer per
    /// connection, on its own loop, cancelled when it closes: bounded as connections are. When it
    /// fires and a reload has replaced `ctx`, the connection is closed (the peer dials again and
    /// gets the new certificate); when `ctx` is still the one in use, nothing is closed: there is
    /// no newer certificate to move to, and new connections fail at the peers' checks anyway
    /// (the expiry metric is how an operator sees it coming). A reload after that expiry closes
    /// such connections at once (`reload`).
    private func closeAtExpiry(_ channel: Channel, madeWith ctx: TLSContext) {
        guard ctx.notAfter > 0 else { return }  // an expiry OpenSSL could not read: no timer
        let id = ObjectIdentifier(channel)
        openedWith.withLockedValue { $0[id] = (channel, ctx) }
        let delay = Self.nanoseconds(until: ctx.notAfter, now: Date().timeIntervalSince1970)
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(delay)) { [weak self] in
            guard let self, self.tls !== ctx else { return }
            self.logger.info(
                "closing a connection made with a certificate that has expired since a reload replaced it",
                metadata: ["serial": "\(ctx.serial)"])
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { [weak self] _ in
            timer.cancel()
            self?.openedWith.withLockedValue { $0[id] = nil }
        }
    }

    /// Nanoseconds from `now` to `time` (both seconds since 1970), 0 if past, at most ten years
    /// (a timer that fires early finds the context still valid or still current and does nothing
    /// harmful: it closes a connection only once its certificate is replaced).
    static func nanoseconds(until time: Double, now: Double) -> Int64 {
        let seconds = time - now
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return Int64(min(seconds, 10 * 365 * 86_400) * 1e9)
    }

    /// Certificate names this transport refuses: a connection from or to one of them is closed as
    /// soon as its certificate is known, and open ones are closed now.
    public func setDenied(_ names: Set<String>) {
        let added = deniedNames.withLockedValue { current -> Set<String> in
            let added = names.subtracting(current)
            current = names
            return added
        }
        for name in added {
            for c in table.removeAll(peer: name) { c.close(promise: nil) }
        }
    }

    func isDenied(_ name: String) -> Bool { deniedNames.withLockedValue { $0.contains(name) } }

    /// Starts accepting connections; returns the bound address (port 0 picks a free port).
    public func listen(host: String, port: Int) async throws -> SocketAddress {
        let hello = self.hello
        let offload: NIOThreadPool? =
            options.offloadHandshakes
            ? handshakeThread.withLockedValue { pool in
                if let pool { return pool }
                let started = NIOThreadPool(numberOfThreads: 1)
                started.start()
                started.submit { _ in Self.lowerThreadPriority() }
                pool = started
                return started
            } : nil
        let acceptor: (any EventLoopGroup)? =
            options.acceptOnOwnLoop
            ? acceptLoop.withLockedValue { loop in
                if let loop { return loop }
                let started = MultiThreadedEventLoopGroup(numberOfThreads: 1)
                loop = started
                return started
            } : nil
        let bootstrap =
            if let acceptor {
                ServerBootstrap(group: acceptor, childGroup: group)
                    .serverChannelInitializer { [self] server in
                        server.eventLoop.makeCompletedFuture {
                            try server.pipeline.syncOperations.addHandler(
                                AdmissionGate(pendingCloses: pendingRefusedCloses, admit: { [self] child in gate(child) }))
                        }
                    }
            } else {
                ServerBootstrap(group: group)
            }
        let channel =
            try await bootstrap
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(Self.userTimeoutOption, value: Self.milliseconds(options.userTimeout))
            .childChannelOption(.writeBufferWaterMark, value: Self.waterMark(options.maxQueuedBytesPerConnection))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Admission first, before any handler or TLS session exists: a refused
                    // connection costs an accept and a close. With an accept loop its gate has
                    // already admitted the connection and left the slot here.
                    let slot: AdmissionSlot
                    if acceptor != nil {
                        guard let s = gateSlots.withLockedValue({ $0.removeValue(forKey: ObjectIdentifier(channel)) }) else {
                            channel.close(promise: nil)
                            return
                        }
                        slot = s
                    } else {
                        guard let s = admit(channel) else {
                            channel.close(promise: nil)
                            return
                        }
                        slot = s
                    }
                    self.trackAccepted(channel)
                    let authenticated: EventLoopFuture<AuthenticatedPeer>
                    let ctx = tls
                    do {
                        authenticated = try SecureChannel.configure(
                            channel, tls: ctx, role: .server, expectedPeer: nil, hello: self.hello, limits: options.limits,
                            handshakeOffload: offload, refusalLog: refusals, logger: logger)
                        try self.addApplicationHandlers(channel)
                    } catch {
                        slot.release()
                        throw error
                    }
                    self.closeAtExpiry(channel, madeWith: ctx)
                    // The slot is held until the peer is authenticated or the attempt ends
                    // (refusal, handshake timeout, close): the future completes exactly once.
                    authenticated.whenComplete { _ in slot.release() }
                    authenticated.whenSuccess { peer in
                        // The deny list is checked once the certificate is known: at the handshake.
                        guard !self.isDenied(peer.name) else {
                            self.logger.info("refused a connection from a denied node", metadata: ["peer": "\(peer.name)"])
                            channel.close(promise: nil)
                            return
                        }
                        self.register(key: nil, peer: peer.name, channel: channel)
                    }
                }
            }
            .bind(host: host, port: port).get()
        server.withLockedValue { $0 = channel }
        return channel.localAddress!
    }

    /// Sends a frame to the agent listening at `host:port`, dialing it if no connection is
    /// open. With `expecting`, the server's certificate must name that node. Returns once the
    /// frame is handed to an open connection (it does not wait for the socket); fails with the
    /// reason if the address cannot be reached or does not authenticate.
    public func send(_ frame: Frame, toAddress host: String, port: Int, expecting peer: String? = nil) async throws {
        let channel = try await connection(toAddress: host, port: port, expecting: peer)
        channel.writeAndFlush(frame, promise: nil)
    }

    /// Sends over any open connection with `peer`, dialed or accepted; false if there is none.
    @discardableResult
    public func send(_ frame: Frame, toPeer peer: String) async -> Bool {
        guard let channel = table.channel(forPeer: peer) else { return false }
        channel.writeAndFlush(frame, promise: nil)
        return true
    }

    /// An open connection with `peer` (dialed or accepted), else one dialed to `address`
    /// ("host:port"), without waiting: nil when neither is open.
    /// A sender on an event loop writes straight to it, with no hop through another executor.
    public func openChannel(toPeer peer: String?, address: String?) -> Channel? {
        if let peer, let c = table.channel(forPeer: peer) { return c }
        if let address, let c = table.channel(forKey: address) { return c }
        return nil
    }

    /// The open connection to `host:port`, or a new one.
    public func connection(toAddress host: String, port: Int, expecting peer: String? = nil) async throws -> Channel {
        let key = Self.key(host, port)
        // Addresses come from gossip: a connection open to this address is reused only if its
        // certificate named the node we mean (another node may hold the address now).
        if let open = table.channel(forKey: key, peer: peer) { return open }
        // Once shut down nothing dials: the event loops go next, and NIO refuses work on them.
        guard !shuttingDown.withLockedValue({ $0 }) else { throw EventLoopError.shutdown }
        return try await table.dial(key) { [self] in
            let (channel, authenticated) = try await dial(peer: peer, host: host, port: port)
            // A dial that completes once shutdown has begun is closed, not kept: `shutdown` waits
            // for dials in flight, so this close still has its loop.
            if shuttingDown.withLockedValue({ $0 }) {
                try? await channel.close()
                throw EventLoopError.shutdown
            }
            register(key: key, peer: authenticated.name, channel: channel)
            return channel
        }
    }

    /// TCP_USER_TIMEOUT (linux/tcp.h: 18), which NIO has no name for.
    static let userTimeoutOption = ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: 18))
    static func milliseconds(_ d: Duration) -> SocketOptionValue { SocketOptionValue(clamping: d.nanosecondsClamped / 1_000_000) }

    /// Moving the crypto off the loop is not enough on a machine with few cores: the handshake
    /// thread and the loop thread then compete for a core, and a busy handshake thread still
    /// delays probes. At nice 10 the kernel gives it about a tenth of a contended core's time
    /// against the loop's nice 0 (CFS weights 110 : 1024), and all of an idle one. On Linux the
    /// nice value is per thread, and `who` 0 names the calling thread. Failure is harmless.
    static func lowerThreadPriority() {
        #if os(Linux)
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        #endif
    }

    static func isLoopback(_ ip: String) -> Bool {
        ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    /// Writability turns off above `bytes` queued and back on below half of it.
    static func waterMark(_ bytes: Int) -> ChannelOptions.Types.WriteBufferWaterMark {
        let high = max(2, bytes)
        return .init(low: high / 2, high: high)
    }

    private func logRefusal(_ refusal: HandshakeAdmission.Refusal, source: String) {
        let rule =
            switch refusal {
            case .total(let n): "at most \(n) TLS handshakes in progress in total (maxHandshakes)"
            case .perSource(let n): "at most \(n) TLS handshakes in progress per source address (maxHandshakesPerSource)"
            case .rate(let r): "at most \(r) new TLS handshakes a second per source address (handshakeRatePerSource)"
            }
        guard let suppressed = refusals.shouldLog("\(source) \(rule)") else { return }
        logger.warning(
            "refused connection before the TLS handshake",
            metadata: [
                "address": "\(source)", "rule": "\(rule)", "refusedSinceLastLog": "\(suppressed)",
            ])
    }

    /// Takes an admission slot for an accepted connection, or logs why not.
    private func admit(_ child: Channel) -> AdmissionSlot? {
        let source = child.remoteAddress?.ipAddress ?? "unknown"
        let perSource = !(options.exemptLoopbackFromPerSourceBounds && Self.isLoopback(source))
        if let refusal = admission.admit(source, perSource: perSource) {
            logRefusal(refusal, source: source)
            return nil
        }
        return AdmissionSlot(admission: admission, source: source)
    }

    /// On the accept loop, before the connection is registered on the group: admit it, and
    /// leave its slot for the child initializer; released on close too, in case the
    /// initializer never runs (registration failed).
    private func gate(_ child: Channel) -> Bool {
        guard let slot = admit(child) else { return false }
        let id = ObjectIdentifier(child)
        gateSlots.withLockedValue { $0[id] = slot }
        child.closeFuture.whenComplete { _ in
            self.gateSlots.withLockedValue { $0.removeValue(forKey: id) }?.release()
        }
        return true
    }

    /// Handshakes admitted and not yet done (for tests and metrics).
    public var handshakesInProgress: Int { admission.inProgress }

    /// Connections refused by the accept loop's gate whose close has not run yet.
    var refusedConnectionsAwaitingClose: Int { pendingRefusedCloses.withLockedValue { $0 } }

    public static func key(_ host: String, _ port: Int) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    private func dial(peer: String?, host: String, port: Int) async throws -> (Channel, AuthenticatedPeer) {
        let hello = self.hello
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(options.connectTimeout.nanosecondsClamped))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.writeBufferWaterMark, value: Self.waterMark(options.maxQueuedBytesPerConnection))
            .channelOption(Self.userTimeoutOption, value: Self.milliseconds(options.userTimeout))
        let initialize: @Sendable (Channel) -> EventLoopFuture<(Channel, EventLoopFuture<AuthenticatedPeer>)> = { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                let ctx = tls
                let authenticated = try SecureChannel.configure(
                    channel, tls: ctx, role: .client, expectedPeer: peer, hello: hello,
                    limits: options.limits, logger: logger)
                // A connection whose handshake or hello fails is closed from its own loop. Closed
                // from the dialer's task instead, the close hopped onto the loop, which during a
                // shutdown may be gone: NIO drops such work and will make it a crash.
                authenticated.whenFailure { _ in channel.close(promise: nil) }
                try self.addApplicationHandlers(channel)
                self.closeAtExpiry(channel, madeWith: ctx)
                return (channel, authenticated)
            }
        }
        // Members advertise IP addresses: connect to one directly. By name, NIO resolves with
        // getaddrinfo on a thread and races the results (Happy Eyeballs), for every dial.
        let (channel, authenticated) =
            if let address = try? SocketAddress(ipAddress: host, port: port) {
                try await bootstrap.connect(to: address, channelInitializer: initialize)
            } else {
                try await bootstrap.connect(host: host, port: port, channelInitializer: initialize)
            }
        let peer = try await authenticated.get()
        guard !isDenied(peer.name) else {
            try? await channel.close()
            throw TLSError.peerVerificationFailed("\(peer.name) is on the deny list (microscale node deny)")
        }
        return (channel, peer)
    }

    private func addApplicationHandlers(_ channel: Channel) throws {
        let ops = channel.pipeline.syncOperations
        let idle = TimeAmount.nanoseconds(options.idleTimeout.nanosecondsClamped)
        try ops.addHandler(IdleStateHandler(allTimeout: idle))
        let deliver = onFrame
        try ops.addHandler(
            FrameDispatchHandler(
                onFrame: { [self] peer, frame in
                    // Frames already read when a peer is denied are dropped with its connection.
                    guard !isDenied(peer.name) else { return }
                    deliver(peer, frame)
                }, logger: logger))
        try ops.addHandler(OutboundQueueBound())
    }

    /// Inserted before the flag is read, and `shutdown` sets the flag before it reads the set:
    /// either this sees the shutdown or the shutdown sees the connection.
    private func trackAccepted(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        accepted.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { _ in self.accepted.withLockedValue { $0[id] = nil } }
        if shuttingDown.withLockedValue({ $0 }) { channel.close(promise: nil) }
    }

    private func register(key: String?, peer: String, channel: Channel) {
        for evicted in table.add(key: key, peer: peer, channel: channel) {
            logger.debug(
                "closing the oldest connection to stay within a connection bound",
                metadata: [
                    "peer": "\(evicted.peer)", "bound": "\(evicted.bound)",
                ])
            evicted.channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
            // A connection we closed for a bound says nothing about the peer: no hint.
            let evicted = self.table.remove(channel: channel)
            guard !evicted, !self.shuttingDown.withLockedValue({ $0 }) else { return }
            if let key, let lost = self.lostHandler.current {
                lost(key)
            } else if key == nil, let lost = self.peerLostHandler.current {
                lost(peer)
            }
        }
    }

    /// Peers with at least one open connection.
    public func connectedPeers() async -> [String] { table.peers() }

    /// Number of open connections (for the pool bound and metrics).
    public func connectionCount() async -> Int { table.count }

    /// Closes one peer's connections, e.g. after membership declares it dead.
    public func disconnect(peer: String) async {
        for c in table.removeAll(peer: peer) { try? await c.close() }
    }

    /// Whether a connection to `host:port` is open (a dead peer's was reset, say).
    public func isConnected(toAddress host: String, port: Int) async -> Bool {
        table.channel(forKey: Self.key(host, port)) != nil
    }

    /// Stops listening and closes every connection.
    public func shutdown() async {
        shuttingDown.withLockedValue { $0 = true }
        if let s = server.withLockedValue({ $0 }) { try? await s.close() }
        // Dials in flight finish first, while the loops are up. One that connected after the
        // flag was read registered its channel and handed its close callback to the channel's
        // loop; once the caller shut the loops down, that was work on a dead loop, a crash under
        // SWIFTNIO_STRICT (AgentRuntimeTests in CI, 1 Dec 2026). Bounded by the dial's own
        // timeouts: the connect's and the handshake's.
        let dialDeadline = ContinuousClock.now + options.connectTimeout + tls.configuration.handshakeTimeout + .seconds(1)
        while ContinuousClock.now < dialDeadline, table.dialsInFlight > 0 {
            try? await Task.sleep(for: .milliseconds(5))
        }
        for c in table.removeEverything() { try? await c.close() }
        for c in accepted.withLockedValue({ Array($0.values) }) { try? await c.close() }
        // After the connections: a step still running returns to its loop, which is still up.
        if let pool = handshakeThread.withLockedValue({ p -> NIOThreadPool? in
            defer { p = nil }
            return p
        }) {
            // On a serial queue of our own. NIO fails the handshakes still queued (each failure
            // hops to its channel's loop) in a block it puts on the given queue before the one
            // that says the pool is down; on the global queue, its default, the two ran in either
            // order, so the accept loop below could shut down before a failure hopped onto it: a
            // crash ("Cannot schedule tasks on an EventLoop that has already shut down",
            // HandshakeFloodTests in make test, 2 Dec 2026).
            let queue = DispatchQueue(label: "microscale.handshake-pool.shutdown")
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                pool.shutdownGracefully(queue: queue) { _ in done.resume() }
            }
        }
        if let loop = acceptLoop.withLockedValue({ l -> MultiThreadedEventLoopGroup? in
            defer { l = nil }
            return l
        }) {
            // Connections the gate passed on, and refused ones, finish on the group and then hop
            // back to the accept loop (NIO's acceptor; the gate's resume). A hop onto a loop
            // that has shut down is dropped, and a crash under SWIFTNIO_STRICT. So wait for them
            // (bounded: the group may be wedged), then let each of the group's loops finish the
            // task it is in, which enqueues any hop, before the accept loop goes.
            let deadline = ContinuousClock.now + .seconds(2)
            while ContinuousClock.now < deadline,
                gateSlots.withLockedValue({ !$0.isEmpty }) || pendingRefusedCloses.withLockedValue({ $0 }) > 0
            {
                try? await Task.sleep(for: .milliseconds(5))
            }
            for l in group.makeIterator() { try? await l.submit {}.get() }
            try? await loop.shutdownGracefully()
        }
    }
}

/// Hands every authenticated frame to the transport's handler, and closes idle connections.
final class FrameDispatchHandler: ChannelInboundHandler {
    typealias InboundIn = Frame

    private let onFrame: PeerTransport.FrameHandler
    private let logger: Logger
    private var peer: AuthenticatedPeer?

    init(onFrame: @escaping PeerTransport.FrameHandler, logger: Logger) {
        self.onFrame = onFrame
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer else { return }
        onFrame(peer, unwrapInboundIn(data))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? PeerAuthenticated {
            peer = event.peer
        } else if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Refusals are logged where they happen; here only the connection ends.
        context.close(promise: nil)
    }
}

/// Which connections are open, to which peer and (for dialed ones) which address, within a
/// bound; and which dials are in progress, so concurrent senders to one address share one dial.
///
/// Behind a lock rather than in an actor: senders on an event loop look up a channel
/// synchronously (`openChannel`), and a connection is registered on its loop as it authenticates.
final class ConnectionTable: Sendable {
    private struct Entry {
        var key: String?
        var peer: String
        var channel: Channel
    }

    private struct State {
        /// Oldest first: the bound evicts from the front.
        var entries: [Entry] = []
        var dialing: [String: Task<Channel, Error>] = [:]
        var running = 0
        /// Connections closed for a bound whose close has not been seen yet (at most one per
        /// connection closed, and removed as it closes).
        var evicted: Set<ObjectIdentifier> = []
    }

    enum Bound: Sendable, CustomStringConvertible {
        case pool, perPeer
        var description: String { self == .pool ? "maxConnections" : "maxConnectionsPerPeer" }
    }

    private let maxConnections: Int
    private let maxPerPeer: Int
    private let state = NIOLockedValueBox(State())

    init(maxConnections: Int, maxPerPeer: Int = .max) {
        self.maxConnections = max(1, maxConnections)
        self.maxPerPeer = max(1, maxPerPeer)
    }

    var count: Int { state.withLockedValue { $0.entries.count } }

    func peers() -> [String] { state.withLockedValue { Array(Set($0.entries.map(\.peer))).sorted() } }

    func channel(forKey key: String) -> Channel? {
        state.withLockedValue { $0.entries.last(where: { $0.key == key && $0.channel.isActive })?.channel }
    }

    /// The open connection to `key` whose certificate named `peer` (any, when nil).
    func channel(forKey key: String, peer: String?) -> Channel? {
        guard let peer else { return channel(forKey: key) }
        return state.withLockedValue { $0.entries.last(where: { $0.key == key && $0.peer == peer && $0.channel.isActive })?.channel }
    }

    func channel(forPeer peer: String) -> Channel? {
        state.withLockedValue { $0.entries.last(where: { $0.peer == peer && $0.channel.isActive })?.channel }
    }

    /// Concurrent dials to one key share the first one.
    func dial(_ key: String, _ make: @escaping @Sendable () async throws -> Channel) async throws -> Channel {
        let (task, mine) = state.withLockedValue { s -> (Task<Channel, Error>, Bool) in
            if let inFlight = s.dialing[key] { return (inFlight, false) }
            s.running += 1
            let task = Task { [state] in
                defer { state.withLockedValue { $0.running -= 1 } }
                return try await make()
            }
            s.dialing[key] = task
            return (task, true)
        }
        defer { if mine { state.withLockedValue { $0.dialing[key] = nil } } }
        return try await task.value
    }

    /// Dials started whose task has not finished.
    var dialsInFlight: Int { state.withLockedValue { $0.running } }

    /// Adds a connection; returns those to close because a bound was reached.
    ///
    /// Over the per-peer bound the peer's OLDEST connection goes, not the new one: an agent that
    /// restarted, or whose old connection died without a FIN (a half-open socket after a
    /// partition), reconnects while we still hold the dead one. Refusing the newest would shut
    /// out that legitimate peer until the idle timeout (60 s), long enough for suspicion; closing
    /// the oldest lets the newest win, and a peer that churns connections on purpose holds a
    /// valid certificate and pays a full handshake for each one anyway.
    func add(key: String?, peer: String, channel: Channel) -> [(peer: String, bound: Bound, channel: Channel)] {
        guard channel.isActive else { return [] }
        return state.withLockedValue { s in
            s.entries.append(Entry(key: key, peer: peer, channel: channel))
            var out: [(peer: String, bound: Bound, channel: Channel)] = []
            if s.entries.lazy.filter({ $0.peer == peer }).count > maxPerPeer,
                let oldest = s.entries.firstIndex(where: { $0.peer == peer })
            {
                let e = s.entries.remove(at: oldest)
                out.append((e.peer, .perPeer, e.channel))
            }
            if s.entries.count > maxConnections {
                let e = s.entries.removeFirst()
                out.append((e.peer, .pool, e.channel))
            }
            for e in out { s.evicted.insert(ObjectIdentifier(e.channel)) }
            return out
        }
    }

    /// Forgets a closed connection; true if it was closed for a bound.
    @discardableResult
    func remove(channel: Channel) -> Bool {
        state.withLockedValue { s in
            s.entries.removeAll { $0.channel === channel }
            return s.evicted.remove(ObjectIdentifier(channel)) != nil
        }
    }

    func removeAll(peer: String) -> [Channel] {
        state.withLockedValue { s in
            let chans = s.entries.filter { $0.peer == peer }.map(\.channel)
            s.entries.removeAll { $0.peer == peer }
            return chans
        }
    }

    func removeEverything() -> [Channel] {
        state.withLockedValue { s in
            let all = s.entries.map(\.channel)
            s.entries = []
            return all
        }
    }
}

extension Duration {
    /// Nanoseconds, saturating instead of trapping for absurdly long durations.
    public var nanosecondsClamped: Int64 {
        let (s, atto) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? Int64.max : ns + atto / 1_000_000_000
    }
}

/// Handshakes in progress on a listener, in total and per source address, and the rate at
/// which each source starts them, within bounds.
///
/// Behind a lock: accepted connections may initialize on any loop of the transport's group.
/// Memory is bounded too: a source's count is recorded only while it has a handshake in
/// progress (at most `maxTotal` sources), and its rate bucket only until the bucket is full
/// again, in a table of at most `maxBuckets` (when full, buckets already refilled are dropped,
/// then the least recently used; a forgotten source starts with a full burst, so forgetting
/// errs towards admitting).
final class HandshakeAdmission: Sendable {
    enum Refusal: Sendable, Equatable {
        case total(Int)
        case perSource(Int)
        case rate(Double)
    }

    private struct Bucket {
        var tokens: Double
        var at: ContinuousClock.Instant
    }

    private struct State {
        var total = 0
        var bySource: [String: Int] = [:]
        var buckets: [String: Bucket] = [:]
    }

    let maxTotal: Int
    let maxPerSource: Int
    let ratePerSource: Double
    let maxBuckets: Int
    private let state = NIOLockedValueBox(State())

    init(maxTotal: Int, maxPerSource: Int, ratePerSource: Double = .infinity, maxBuckets: Int = 4096) {
        self.maxTotal = max(1, maxTotal)
        self.maxPerSource = max(1, maxPerSource)
        // NaN or a negative rate would refuse everyone for ever; read them as "no rate bound".
        self.ratePerSource = ratePerSource > 0 ? ratePerSource : .infinity
        self.maxBuckets = max(1, maxBuckets)
    }

    /// Takes a slot for `source`, or says which bound refuses it. With `perSource` false only
    /// the total bound applies (the slot still counts for the source, for `release`).
    func admit(_ source: String, perSource: Bool = true, now: ContinuousClock.Instant = .now) -> Refusal? {
        state.withLockedValue { s in
            if s.total >= maxTotal { return .total(maxTotal) }
            let mine = s.bySource[source, default: 0]
            if perSource, mine >= maxPerSource { return .perSource(maxPerSource) }
            if perSource, ratePerSource.isFinite {
                let burst = Double(maxPerSource)
                var bucket = s.buckets[source] ?? Bucket(tokens: burst, at: now)
                let elapsed = Double((now - bucket.at).nanosecondsClamped) / 1e9
                bucket.tokens = min(burst, bucket.tokens + max(0, elapsed) * ratePerSource)
                bucket.at = now
                guard bucket.tokens >= 1 else {
                    s.buckets[source] = bucket
                    return .rate(ratePerSource)
                }
                bucket.tokens -= 1
                if s.buckets[source] == nil, s.buckets.count >= maxBuckets { makeRoom(&s, now: now, burst: burst) }
                s.buckets[source] = bucket
            }
            s.total += 1
            s.bySource[source] = mine + 1
            return nil
        }
    }

    private func makeRoom(_ s: inout State, now: ContinuousClock.Instant, burst: Double) {
        let rate = ratePerSource
        s.buckets = s.buckets.filter { _, b in b.tokens + Double((now - b.at).nanosecondsClamped) / 1e9 * rate < burst }
        if s.buckets.count >= maxBuckets, let oldest = s.buckets.min(by: { $0.value.at < $1.value.at })?.key {
            s.buckets[oldest] = nil
        }
    }

    func release(_ source: String) {
        state.withLockedValue { s in
            guard let mine = s.bySource[source] else { return }
            s.total = max(0, s.total - 1)
            s.bySource[source] = mine > 1 ? mine - 1 : nil
        }
    }

    var inProgress: Int { state.withLockedValue { $0.total } }
}

/// One admitted handshake's slot, released once whichever way the attempt ends.
final class AdmissionSlot: Sendable {
    private let admission: HandshakeAdmission
    private let source: String
    private let held = NIOLockedValueBox(true)

    init(admission: HandshakeAdmission, source: String) {
        self.admission = admission
        self.source = source
    }

    func release() {
        guard
            held.withLockedValue({ h in
                defer { h = false }
                return h
            })
        else { return }
        admission.release(source)
    }
}

/// In front of NIO's acceptor on the accept loop: an accepted connection the admission refuses
/// is closed before it is registered anywhere; the rest go on to be set up on the group.
///
/// A refused connection's close still runs on the loop NIO picked for it (the group's), and
/// its descriptor stays open until then. Accepting is far cheaper than that loop's work, so
/// under a flood the closes could queue there without bound and the process run out of
/// descriptors (seen in the flood benchmark without admission bounds: the runtime's own
/// /proc reads then fail and it traps). So at most `maxPendingCloses` refusals may wait for
/// their close; beyond that the gate stops accepting (autoRead off) until half have closed,
/// and the excess waits in, or is refused by, the kernel's backlog at no cost to us.
final class AdmissionGate: ChannelInboundHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    static let maxPendingCloses = 256

    private let admit: @Sendable (Channel) -> Bool
    /// Refused connections not yet closed; decremented from the closing loop.
    private let pendingCloses: NIOLockedValueBox<Int>
    /// Accept loop only.
    private var paused = false

    init(pendingCloses: NIOLockedValueBox<Int>, admit: @escaping @Sendable (Channel) -> Bool) {
        self.pendingCloses = pendingCloses
        self.admit = admit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        if admit(child) {
            context.fireChannelRead(data)
            return
        }
        let pending = pendingCloses.withLockedValue { n in
            n += 1
            return n
        }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let counter = pendingCloses
        let resumeAt = Self.maxPendingCloses / 2
        child.close().whenComplete { _ in
            let left = counter.withLockedValue { n in
                n -= 1
                return n
            }
            guard left == resumeAt else { return }
            loopBound.eventLoop.execute {
                let (gate, context) = loopBound.value
                gate.resumeIfDrained(context: context)
            }
        }
        if pending >= Self.maxPendingCloses, !paused {
            paused = true
            context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
        }
    }

    private func resumeIfDrained(context: ChannelHandlerContext) {
        guard paused, pendingCloses.withLockedValue({ $0 }) <= Self.maxPendingCloses / 2 else { return }
        paused = false
        context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
    }
}

/// Says whether to log an event for a key (a source address and rule) now: at most once per
/// interval per key, with the number of events not logged since. A flood produces one line per
/// source every interval rather than one per connection. Bounded: at most `maxKeys` keys are
/// remembered; past that, keys whose interval has passed are dropped, and if none has, the
/// event is counted in an overflow tally and reported with the next line logged.
final class RateLimitedSources: Sendable {
    private struct State {
        var last: [String: (at: ContinuousClock.Instant, suppressed: Int)] = [:]
        var overflow = 0
    }

    let interval: Duration
    let maxKeys: Int
    private let state = NIOLockedValueBox(State())

    init(interval: Duration, maxKeys: Int = 1024) {
        self.interval = interval
        self.maxKeys = max(1, maxKeys)
    }

    /// nil: stay quiet. Otherwise the number of events for this key left unlogged since its
    /// last line (plus any overflow).
    func shouldLog(_ key: String, now: ContinuousClock.Instant = .now) -> Int? {
        state.withLockedValue { s in
            if let seen = s.last[key], now - seen.at < interval {
                s.last[key] = (seen.at, seen.suppressed + 1)
                return nil
            }
            let suppressed = s.last[key]?.suppressed ?? 0
            if s.last[key] == nil, s.last.count >= maxKeys {
                s.last = s.last.filter { now - $0.value.at < interval }
                if s.last.count >= maxKeys {
                    s.overflow += 1
                    return nil
                }
            }
            s.last[key] = (now, 0)
            defer { s.overflow = 0 }
            return suppressed + s.overflow
        }
    }
}

/// Fails writes to a connection whose socket queue is over its high water mark, until it drains
/// (NIO turns writability back on below the low mark). At the application end of the pipeline,
/// so a dropped frame costs neither encoding nor encryption. A peer that stops reading then
/// costs at most the high water mark per connection, and `maxConnectionsPerPeer` of those.
final class OutboundQueueBound: ChannelOutboundHandler {
    typealias OutboundIn = Frame
    typealias OutboundOut = Frame

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard context.channel.isWritable else {
            promise?.fail(PeerTransportError.sendQueueFull)
            return
        }
        context.write(data, promise: promise)
    }
}

public enum PeerTransportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The connection's send queue is over `maxQueuedBytesPerConnection`: the peer reads slower
    /// than we send. The frame was dropped.
    case sendQueueFull

    public var description: String {
        switch self {
        case .sendQueueFull: "the connection's send queue is full (the peer is not reading); frame dropped"
        }
    }
}
