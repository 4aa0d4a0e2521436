import Logging
import NIOCore
import NIOPosix
import Wire

/// The pipeline every agent-to-agent connection runs, in one place:
///
///     socket ⇄ OpenSSLHandler ⇄ FrameDecoder/FrameEncoder ⇄ HelloHandler ⇄ application
///
/// TLS first, so nothing is parsed from an unauthenticated peer; then framing with its size
/// limits; then the name check. The returned future succeeds once the peer is authenticated
/// and fails, with the reason, if it never is.
public enum SecureChannel {
    public static func configure(
        _ channel: Channel, tls: TLSContext, role: TLSRole, expectedPeer: String? = nil,
        hello: Microscale_Wire_Hello, limits: FrameLimits = .default, handshakeOffload: NIOThreadPool? = nil,
        logger: Logger
    ) throws -> EventLoopFuture<AuthenticatedPeer> {
        try configure(
            channel, tls: tls, role: role, expectedPeer: expectedPeer, hello: hello, limits: limits,
            handshakeOffload: handshakeOffload, refusalLog: nil, logger: logger)
    }

    static func configure(
        _ channel: Channel, tls: TLSContext, role: TLSRole, expectedPeer: String?, hello: Microscale_Wire_Hello,
        limits: FrameLimits, handshakeOffload: NIOThreadPool?, refusalLog: RateLimitedSources?, logger: Logger
    ) throws -> EventLoopFuture<AuthenticatedPeer> {
        let authenticated = channel.eventLoop.makePromise(of: AuthenticatedPeer.self)
        let ops = channel.pipeline.syncOperations
        try ops.addHandler(
            OpenSSLHandler(
                context: tls, role: role, expectedPeer: expectedPeer,
                handshakeOffload: handshakeOffload, refusalLog: refusalLog, logger: logger))
        try ops.addHandler(ByteToMessageHandler(FrameDecoder(limits: limits)))
        try ops.addHandler(MessageToByteHandler(FrameEncoder(limits: limits)))
        try ops.addHandler(HelloHandler(localHello: hello, authenticated: authenticated, logger: logger))
        return authenticated.futureResult
    }

    /// The Hello this node sends, built from its own certificate so it cannot claim another name.
    public static func hello(
        for tls: TLSContext, cluster: String, agentVersion: String,
        protocolVersion: UInt32 = WireProtocol.version
    ) -> Microscale_Wire_Hello {
        var h = Microscale_Wire_Hello()
        h.nodeName = tls.identity.name
        h.server = tls.identity.isServer
        h.cluster = cluster
        h.agentVersion = agentVersion
        h.protocolVersion = protocolVersion
        return h
    }
}
