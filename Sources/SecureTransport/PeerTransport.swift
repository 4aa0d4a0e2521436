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

        public init(cluster: String = "", agentVersion: String = "", maxConnections: Int = 512,
                    idleTimeout: Duration = .seconds(60), connectTimeout: Duration = .seconds(2),
                    limits: FrameLimits = .default) {
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
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let authenticated = try SecureChannel.configure(
                        channel, tls: tls, role: .server, hello: hello, limits: options.limits, logger: logger)
                    try self.addApplicationHandlers(channel)
                    authenticated.whenSuccess { peer in
                        Task { await self.register(peer: peer.name, channel: channel) }
                    }
                }
            }
            .bind(host: host, port: port).get()
        server.withLockedValue { $0 = channel }
        return channel.localAddress!
    }

    /// Sends a frame to `peer`, dialing `host:port` if no connection to it is open. Fails with
    /// the reason if the peer cannot be reached or does not authenticate as `peer`.
    public func send(_ frame: Frame, to peer: String, host: String, port: Int) async throws {
        let channel = try await connection(to: peer, host: host, port: port)
        try await channel.writeAndFlush(frame)
    }

    /// The open connection to `peer`, or a new one.
    public func connection(to peer: String, host: String, port: Int) async throws -> Channel {
        if let open = await table.channel(for: peer) { return open }
        return try await table.dial(peer) { [self] in
            let channel = try await dial(peer: peer, host: host, port: port)
            await register(peer: peer, channel: channel)
            return channel
        }
    }

    private func dial(peer: String, host: String, port: Int) async throws -> Channel {
        let hello = self.hello
        let (channel, authenticated) = try await ClientBootstrap(group: group)
            .connectTimeout(.nanoseconds(options.connectTimeout.nanosecondsClamped))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
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
            _ = try await authenticated.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return channel
    }

    private func addApplicationHandlers(_ channel: Channel) throws {
        let ops = channel.pipeline.syncOperations
        let idle = TimeAmount.nanoseconds(options.idleTimeout.nanosecondsClamped)
        try ops.addHandler(IdleStateHandler(allTimeout: idle))
        try ops.addHandler(FrameDispatchHandler(onFrame: onFrame, logger: logger))
    }

    private func register(peer: String, channel: Channel) async {
        if let evicted = await table.add(peer: peer, channel: channel) {
            logger.debug("closing least recently opened connection to stay within the pool bound", metadata: ["peer": "\(evicted.peer)"])
            evicted.channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in
            Task { await self.table.remove(peer: peer, channel: channel) }
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

    /// Stops listening and closes every connection.
    public func shutdown() async {
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

/// Which connections are open to which peer, within a bound, and which dials are in progress
/// (so concurrent senders to one peer share one dial).
actor ConnectionTable {
    private let maxConnections: Int
    private var byPeer: [String: [Channel]] = [:]
    private var order: [(peer: String, channel: Channel)] = []
    private var dialing: [String: Task<Channel, Error>] = [:]

    init(maxConnections: Int) { self.maxConnections = max(1, maxConnections) }

    var count: Int { order.count }

    func peers() -> [String] { byPeer.keys.sorted() }

    func channel(for peer: String) -> Channel? {
        byPeer[peer]?.last(where: { $0.isActive })
    }

    func dial(_ peer: String, _ make: @escaping @Sendable () async throws -> Channel) async throws -> Channel {
        if let inFlight = dialing[peer] { return try await inFlight.value }
        let task = Task { try await make() }
        dialing[peer] = task
        defer { dialing[peer] = nil }
        return try await task.value
    }

    /// Adds a connection; returns one to close if the bound was reached.
    func add(peer: String, channel: Channel) -> (peer: String, channel: Channel)? {
        guard channel.isActive else { return nil }
        byPeer[peer, default: []].append(channel)
        order.append((peer, channel))
        guard order.count > maxConnections else { return nil }
        let evicted = order.removeFirst()
        byPeer[evicted.peer]?.removeAll { $0 === evicted.channel }
        if byPeer[evicted.peer]?.isEmpty == true { byPeer[evicted.peer] = nil }
        return evicted
    }

    func remove(peer: String, channel: Channel) {
        byPeer[peer]?.removeAll { $0 === channel }
        if byPeer[peer]?.isEmpty == true { byPeer[peer] = nil }
        order.removeAll { $0.channel === channel }
    }

    func removeAll(peer: String) -> [Channel] {
        let chans = byPeer.removeValue(forKey: peer) ?? []
        order.removeAll { $0.peer == peer }
        return chans
    }

    func removeEverything() -> [Channel] {
        let all = order.map(\.channel)
        byPeer = [:]
        order = []
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
