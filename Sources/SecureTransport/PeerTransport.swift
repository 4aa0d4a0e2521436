import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Wire

/// Message transport between agents: one TLS listener, and a bounded pool of authenticated
/// connections to peers, keyed by node name. Frames from every connection, dialed or
/// accepted, go to one handler together with the peer that sent them.
///
/// Connections are symmetric: a reply can travel over whichever connection a peer has open to
/// us. Bounds: `maxConnections` in all (the least recently dialed is closed to make room),
/// an idle timeout per connection, a connect timeout and the TLS handshake timeout.
public final class PeerTransport: Sendable {
    public struct Options: Sendable {
        public var cluster: String
        public var agentVersion: String
        public var maxConnections: Int
        public var idleTimeout: Duration
        public var connectTimeout: Duration
        public var limits: FrameLimits
        /// TCP_USER_TIMEOUT: a connection whose sent data stays unacknowledged this long is
        /// aborted, and the next frame dials afresh. Without it, a lossy link can leave a
        /// connection in TCP's exponential retransmission back-off (0.2 s doubling per loss) for
        /// tens of seconds after the link is fine again; the chaos suite's link-loss scenario saw
        /// a cluster take 19 s to converge after the heal for that reason. 0 keeps the kernel's.
        public var userTimeout: Duration

        public init(cluster: String = "", agentVersion: String = "", maxConnections: Int = 512,
                    idleTimeout: Duration = .seconds(60), connectTimeout: Duration = .seconds(2),
                    limits: FrameLimits = .default, userTimeout: Duration = .seconds(5)) {
            self.userTimeout = userTimeout
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
    let tls: TLSContext
    let options: Options
    let logger: Logger
    let onFrame: FrameHandler
    private let table: ConnectionTable
    private let server = NIOLockedValueBox<Channel?>(nil)
    private let lostHandler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)
    private let peerLostHandler = NIOLockedValueBox<(@Sendable (String) -> Void)?>(nil)
    private let shuttingDown = NIOLockedValueBox(false)

    /// Called with the address ("host:port") of a dialed connection that closed while the
    /// transport was running: a killed peer resets its connections at once, a hint failure
    /// detectors can use long before any timeout (memberlist and Lifeguard treat it the same way).
    public func onConnectionLost(_ handler: @escaping @Sendable (String) -> Void) {
        lostHandler.withLockedValue { $0 = handler }
    }

    /// Called with the peer's node name when any of its connections, dialed or accepted, closes
    /// while the transport is running. With replies sent over whichever connection is open
    /// (`send(_:toPeer:)`), a pair of agents often shares one connection that only one side
    /// dialed; the other side hears of the peer's death through this.
    public func onPeerConnectionLost(_ handler: @escaping @Sendable (String) -> Void) {
        peerLostHandler.withLockedValue { $0 = handler }
    }

    public init(group: any EventLoopGroup, tls: TLSContext, options: Options = Options(),
                logger: Logger = Logger(label: "microscale.transport"), onFrame: @escaping FrameHandler) {
        self.group = group
        self.tls = tls
        self.options = options
        self.logger = logger
        self.onFrame = onFrame
        self.table = ConnectionTable(maxConnections: options.maxConnections)
    }

    private var hello: Microscale_Wire_Hello {
        SecureChannel.hello(for: tls, cluster: options.cluster, agentVersion: options.agentVersion)
    }

    /// Starts accepting connections; returns the bound address (port 0 picks a free port).
    public func listen(host: String, port: Int) async throws -> SocketAddress {
        let hello = self.hello
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(Self.userTimeoutOption, value: Self.milliseconds(options.userTimeout))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let authenticated = try SecureChannel.configure(
                        channel, tls: tls, role: .server, hello: hello, limits: options.limits, logger: logger)
                    try self.addApplicationHandlers(channel)
                    authenticated.whenSuccess { peer in
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
        if let open = table.channel(forKey: key) { return open }
        // Once shut down nothing dials: the event loops go next, and NIO refuses work on them.
        guard !shuttingDown.withLockedValue({ $0 }) else { throw EventLoopError.shutdown }
        return try await table.dial(key) { [self] in
            let (channel, authenticated) = try await dial(peer: peer, host: host, port: port)
            register(key: key, peer: authenticated.name, channel: channel)
            return channel
        }
    }

    /// TCP_USER_TIMEOUT (linux/tcp.h: 18), which NIO has no name for.
    static let userTimeoutOption = ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: 18))
    static func milliseconds(_ d: Duration) -> SocketOptionValue { SocketOptionValue(clamping: d.nanosecondsClamped / 1_000_000) }

    public static func key(_ host: String, _ port: Int) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    private func dial(peer: String?, host: String, port: Int) async throws -> (Channel, AuthenticatedPeer) {
        let hello = self.hello
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(options.connectTimeout.nanosecondsClamped))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(Self.userTimeoutOption, value: Self.milliseconds(options.userTimeout))
        let initialize: @Sendable (Channel) -> EventLoopFuture<(Channel, EventLoopFuture<AuthenticatedPeer>)> = { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                let authenticated = try SecureChannel.configure(
                    channel, tls: tls, role: .client, expectedPeer: peer, hello: hello,
                    limits: options.limits, logger: logger)
                // A connection whose handshake or hello fails is closed from its own loop. Closed
                // from the dialer's task instead, the close hopped onto the loop, which during a
                // shutdown may be gone: NIO drops such work and will make it a crash.
                authenticated.whenFailure { _ in channel.close(promise: nil) }
                try self.addApplicationHandlers(channel)
                return (channel, authenticated)
            }
        }
        // Members advertise IP addresses: connect to one directly. By name, NIO resolves with
        // getaddrinfo on a thread and races the results (Happy Eyeballs), for every dial.
        let (channel, authenticated) = if let address = try? SocketAddress(ipAddress: host, port: port) {
            try await bootstrap.connect(to: address, channelInitializer: initialize)
        } else {
            try await bootstrap.connect(host: host, port: port, channelInitializer: initialize)
        }
        return (channel, try await authenticated.get())
    }

    private func addApplicationHandlers(_ channel: Channel) throws {
        let ops = channel.pipeline.syncOperations
        let idle = TimeAmount.nanoseconds(options.idleTimeout.nanosecondsClamped)
        try ops.addHandler(IdleStateHandler(allTimeout: idle))
        try ops.addHandler(FrameDispatchHandler(onFrame: onFrame, logger: logger))
    }

    private func register(key: String?, peer: String, channel: Channel) {
        if let evicted = table.add(key: key, peer: peer, channel: channel) {
            logger.debug("closing least recently opened connection to stay within the pool bound", metadata: ["peer": "\(evicted.peer)"])
            evicted.channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
            self.table.remove(channel: channel)
            guard !self.shuttingDown.withLockedValue({ $0 }) else { return }
            if let key, let lost = self.lostHandler.withLockedValue({ $0 }) {
                lost(key)
            } else if key == nil, let lost = self.peerLostHandler.withLockedValue({ $0 }) {
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
        for c in table.removeEverything() { try? await c.close() }
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
    }

    private let maxConnections: Int
    private let state = NIOLockedValueBox(State())

    init(maxConnections: Int) { self.maxConnections = max(1, maxConnections) }

    var count: Int { state.withLockedValue { $0.entries.count } }

    func peers() -> [String] { state.withLockedValue { Array(Set($0.entries.map(\.peer))).sorted() } }

    func channel(forKey key: String) -> Channel? {
        state.withLockedValue { $0.entries.last(where: { $0.key == key && $0.channel.isActive })?.channel }
    }

    func channel(forPeer peer: String) -> Channel? {
        state.withLockedValue { $0.entries.last(where: { $0.peer == peer && $0.channel.isActive })?.channel }
    }

    /// Concurrent dials to one key share the first one.
    func dial(_ key: String, _ make: @escaping @Sendable () async throws -> Channel) async throws -> Channel {
        let (task, mine) = state.withLockedValue { s -> (Task<Channel, Error>, Bool) in
            if let inFlight = s.dialing[key] { return (inFlight, false) }
            let task = Task { try await make() }
            s.dialing[key] = task
            return (task, true)
        }
        defer { if mine { state.withLockedValue { $0.dialing[key] = nil } } }
        return try await task.value
    }

    /// Adds a connection; returns one to close if the bound was reached.
    func add(key: String?, peer: String, channel: Channel) -> (peer: String, channel: Channel)? {
        guard channel.isActive else { return nil }
        return state.withLockedValue { s in
            s.entries.append(Entry(key: key, peer: peer, channel: channel))
            guard s.entries.count > maxConnections else { return nil }
            let evicted = s.entries.removeFirst()
            return (evicted.peer, evicted.channel)
        }
    }

    func remove(channel: Channel) {
        state.withLockedValue { $0.entries.removeAll { $0.channel === channel } }
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
