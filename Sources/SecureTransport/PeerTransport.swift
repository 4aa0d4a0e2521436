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
    /// The open connections again, for a synchronous lookup from an event loop: a sender on
    /// the loop writes straight to the channel instead of hopping through the table's actor.
    private let open = NIOLockedValueBox(OpenChannels())

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
                        Task { await self.register(key: nil, peer: peer.name, channel: channel) }
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
        guard let channel = await table.channel(forPeer: peer) else { return false }
        channel.writeAndFlush(frame, promise: nil)
        return true
    }

    /// An open connection with `peer` (dialed or accepted), else one dialed to `address`
    /// ("host:port"), without waiting: nil when neither is open.
    public func openChannel(toPeer peer: String?, address: String?) -> Channel? {
        open.withLockedValue { o in
            if let peer, let c = o.byPeer[peer]?.last(where: \.isActive) { return c }
            if let address, let c = o.byKey[address]?.last(where: \.isActive) { return c }
            return nil
        }
    }

    /// The open connection to `host:port`, or a new one.
    public func connection(toAddress host: String, port: Int, expecting peer: String? = nil) async throws -> Channel {
        let key = Self.key(host, port)
        if let open = await table.channel(forKey: key) { return open }
        return try await table.dial(key) { [self] in
            let (channel, authenticated) = try await dial(peer: peer, host: host, port: port)
            await register(key: key, peer: authenticated.name, channel: channel)
            return channel
        }
    }

    /// TCP_USER_TIMEOUT (linux/tcp.h: 18), which NIO has no name for.
    static let userTimeoutOption = ChannelOptions.Types.SocketOption(level: .tcp, name: .init(rawValue: 18))
    static func milliseconds(_ d: Duration) -> SocketOptionValue { SocketOptionValue(clamping: d.nanosecondsClamped / 1_000_000) }

    public static func key(_ host: String, _ port: Int) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    private func dial(peer: String?, host: String, port: Int) async throws -> (Channel, AuthenticatedPeer) {
        let hello = self.hello
        let (channel, authenticated) = try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(options.connectTimeout.nanosecondsClamped))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(Self.userTimeoutOption, value: Self.milliseconds(options.userTimeout))
            .connect(host: host, port: port) { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let authenticated = try SecureChannel.configure(
                        channel, tls: tls, role: .client, expectedPeer: peer, hello: hello,
                        limits: options.limits, logger: logger)
                    try self.addApplicationHandlers(channel)
                    return (channel, authenticated)
                }
            }
        do {
            return (channel, try await authenticated.get())
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    private func addApplicationHandlers(_ channel: Channel) throws {
        let ops = channel.pipeline.syncOperations
        let idle = TimeAmount.nanoseconds(options.idleTimeout.nanosecondsClamped)
        try ops.addHandler(IdleStateHandler(allTimeout: idle))
        try ops.addHandler(FrameDispatchHandler(onFrame: onFrame, logger: logger))
    }

    private func register(key: String?, peer: String, channel: Channel) async {
        if let evicted = await table.add(key: key, peer: peer, channel: channel) {
            logger.debug("closing least recently opened connection to stay within the pool bound", metadata: ["peer": "\(evicted.peer)"])
            evicted.channel.close(promise: nil)
        }
        if channel.isActive { open.withLockedValue { $0.add(key: key, peer: peer, channel: channel) } }
        channel.closeFuture.whenComplete { _ in
            self.open.withLockedValue { $0.remove(channel) }
            Task { await self.table.remove(channel: channel) }
            guard !self.shuttingDown.withLockedValue({ $0 }) else { return }
            if let key, let lost = self.lostHandler.withLockedValue({ $0 }) {
                lost(key)
            } else if key == nil, let lost = self.peerLostHandler.withLockedValue({ $0 }) {
                lost(peer)
            }
        }
    }

    /// Peers with at least one open connection.
    public func connectedPeers() async -> [String] { await table.peers() }

    /// Number of open connections (for the pool bound and metrics).
    public func connectionCount() async -> Int { await table.count }

    /// Closes one peer's connections, e.g. after membership declares it dead.
    public func disconnect(peer: String) async {
        for c in await table.removeAll(peer: peer) { try? await c.close() }
    }

    /// Whether a connection to `host:port` is open (a dead peer's was reset, say).
    public func isConnected(toAddress host: String, port: Int) async -> Bool {
        await table.channel(forKey: Self.key(host, port)) != nil
    }

    /// Stops listening and closes every connection.
    public func shutdown() async {
        shuttingDown.withLockedValue { $0 = true }
        if let s = server.withLockedValue({ $0 }) { try? await s.close() }
        for c in await table.removeEverything() { try? await c.close() }
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

/// Open channels by peer name and by dialed address, most recent last.
struct OpenChannels {
    var byPeer: [String: [Channel]] = [:]
    var byKey: [String: [Channel]] = [:]

    mutating func add(key: String?, peer: String, channel: Channel) {
        byPeer[peer, default: []].append(channel)
        if let key { byKey[key, default: []].append(channel) }
    }

    mutating func remove(_ channel: Channel) {
        for (k, v) in byPeer where v.contains(where: { $0 === channel }) {
            let rest = v.filter { $0 !== channel }
            byPeer[k] = rest.isEmpty ? nil : rest
        }
        for (k, v) in byKey where v.contains(where: { $0 === channel }) {
            let rest = v.filter { $0 !== channel }
            byKey[k] = rest.isEmpty ? nil : rest
        }
    }
}

/// Which connections are open, to which peer and (for dialed ones) which address, within a
/// bound; and which dials are in progress, so concurrent senders to one address share one dial.
actor ConnectionTable {
    private struct Entry {
        var key: String?
        var peer: String
        var channel: Channel
    }

    private let maxConnections: Int
    /// Oldest first: the bound evicts from the front.
    private var entries: [Entry] = []
    private var dialing: [String: Task<Channel, Error>] = [:]

    init(maxConnections: Int) { self.maxConnections = max(1, maxConnections) }

    var count: Int { entries.count }

    func peers() -> [String] { Array(Set(entries.map(\.peer))).sorted() }

    func channel(forKey key: String) -> Channel? {
        entries.last(where: { $0.key == key && $0.channel.isActive })?.channel
    }

    func channel(forPeer peer: String) -> Channel? {
        entries.last(where: { $0.peer == peer && $0.channel.isActive })?.channel
    }

    func dial(_ key: String, _ make: @escaping @Sendable () async throws -> Channel) async throws -> Channel {
        if let inFlight = dialing[key] { return try await inFlight.value }
        let task = Task { try await make() }
        dialing[key] = task
        defer { dialing[key] = nil }
        return try await task.value
    }

    /// Adds a connection; returns one to close if the bound was reached.
    func add(key: String?, peer: String, channel: Channel) -> (peer: String, channel: Channel)? {
        guard channel.isActive else { return nil }
        entries.append(Entry(key: key, peer: peer, channel: channel))
        guard entries.count > maxConnections else { return nil }
        let evicted = entries.removeFirst()
        return (evicted.peer, evicted.channel)
    }

    func remove(channel: Channel) {
        entries.removeAll { $0.channel === channel }
    }

    func removeAll(peer: String) -> [Channel] {
        let chans = entries.filter { $0.peer == peer }.map(\.channel)
        entries.removeAll { $0.peer == peer }
        return chans
    }

    func removeEverything() -> [Channel] {
        let all = entries.map(\.channel)
        entries = []
        return all
    }
}

extension Duration {
    /// Nanoseconds, saturating instead of trapping for absurdly long durations.
    var nanosecondsClamped: Int64 {
        let (s, atto) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? Int64.max : ns + atto / 1_000_000_000
    }
}
