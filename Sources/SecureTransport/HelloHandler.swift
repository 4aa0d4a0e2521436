import Logging
import NIOCore
import Wire

/// A peer that has completed the TLS handshake AND named itself in a `Hello` that matches its
/// certificate. Only such a peer's frames reach the rest of the agent.
public struct AuthenticatedPeer: Sendable, Hashable, CustomStringConvertible {
    /// Who the certificate says it is; the only name the agent trusts.
    public var identity: PeerIdentity
    public var cluster: String
    public var agentVersion: String
    public var protocolVersion: UInt32

    public var name: String { identity.name }
    public var description: String { identity.description }
}

/// Fired down the pipeline once the peer is authenticated, before its first frame.
public struct PeerAuthenticated: Sendable {
    public var peer: AuthenticatedPeer
}

/// After TLS, each side sends a `Hello` naming itself; the receiver compares that name with the
/// certificate's (docs/contracts.md, "The wire": refuse a peer whose certificate does not name the node it claims
/// to be). Frames from the application wait (bounded) until the exchange is done, and no
/// inbound frame passes before it.
final class HelloHandler: ChannelDuplexHandler {
    typealias InboundIn = Frame
    typealias InboundOut = Frame
    typealias OutboundIn = Frame
    typealias OutboundOut = Frame

    /// Frames the application may queue before the peer is authenticated.
    static let maxQueuedFrames = 1024

    private let localHello: Microscale_Wire_Hello
    private let authenticated: EventLoopPromise<AuthenticatedPeer>
    private let logger: Logger
    private var identity: PeerIdentity?
    private var peer: AuthenticatedPeer?
    private var queued: [(Frame, EventLoopPromise<Void>?)] = []
    private var done = false

    init(localHello: Microscale_Wire_Hello, authenticated: EventLoopPromise<AuthenticatedPeer>, logger: Logger) {
        self.localHello = localHello
        self.authenticated = authenticated
        self.logger = logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let done = event as? TLSHandshakeCompleted {
            identity = done.peer
            do {
                context.writeAndFlush(wrapOutboundOut(try Frame(kind: .hello, message: localHello)), promise: nil)
            } catch {
                refuse(context: context, .protocolViolation("cannot encode hello: \(error)"))
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if peer != nil {
            context.fireChannelRead(data)
            return
        }
        guard let identity else {
            refuse(context: context, .protocolViolation("frame before the TLS handshake completed"))
            return
        }
        if frame.kind == .goodbye, let bye = try? frame.decode(Microscale_Wire_Goodbye.self) {
            // The peer refused us first (another protocol version, another cluster): say why.
            refuse(context: context, .protocolViolation("\(identity.name) refused this agent: \(bye.reason.prefix(300))"))
            return
        }
        guard frame.kind == .hello else {
            refuse(context: context, .protocolViolation("expected hello, got a \(frame.kind) frame"))
            return
        }
        let hello: Microscale_Wire_Hello
        do { hello = try frame.decode(Microscale_Wire_Hello.self) } catch {
            refuse(context: context, .protocolViolation("\(error)"))
            return
        }
        guard hello.nodeName == identity.name else {
            refuse(context: context, .helloMismatch(certificate: identity.name, claimed: hello.nodeName))
            return
        }
        // One protocol version per cluster (docs/operations.md, "Upgrades"): agents of another
        // version would misread each other's frames, so they refuse each other at the hello and
        // say why in words an operator acts on.
        guard hello.protocolVersion == localHello.protocolVersion else {
            let theirs = hello.agentVersion.isEmpty ? "" : " (agent \(hello.agentVersion.prefix(32)))"
            let ours = localHello.agentVersion.isEmpty ? "" : " (agent \(localHello.agentVersion))"
            refuse(
                context: context,
                .protocolViolation(
                    "incompatible protocol version: \(identity.name)\(theirs) speaks protocol \(hello.protocolVersion), "
                        + "\(localHello.nodeName)\(ours) speaks protocol \(localHello.protocolVersion); "
                        + "run one protocol version in a cluster (see 'microscale version')"))
            return
        }
        if !hello.cluster.isEmpty, !localHello.cluster.isEmpty, hello.cluster != localHello.cluster {
            refuse(context: context, .protocolViolation("peer belongs to cluster \"\(hello.cluster)\", this agent to \"\(localHello.cluster)\""))
            return
        }
        let authenticatedPeer = AuthenticatedPeer(
            identity: identity, cluster: hello.cluster,
            agentVersion: hello.agentVersion, protocolVersion: hello.protocolVersion)
        peer = authenticatedPeer
        done = true
        authenticated.succeed(authenticatedPeer)
        context.fireUserInboundEventTriggered(PeerAuthenticated(peer: authenticatedPeer))
        let pending = queued
        queued = []
        for (f, p) in pending { context.write(wrapOutboundOut(f), promise: p) }
        if !pending.isEmpty { context.flush() }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if peer != nil {
            context.write(data, promise: promise)
            return
        }
        guard queued.count < Self.maxQueuedFrames else {
            promise?.fail(TLSError.protocolViolation("more than \(Self.maxQueuedFrames) frames queued before the peer authenticated"))
            return
        }
        queued.append((unwrapOutboundIn(data), promise))
    }

    func flush(context: ChannelHandlerContext) {
        if peer != nil { context.flush() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(failing: error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(failing: TLSError.handshakeFailed("connection closed before the peer authenticated"))
        context.fireChannelInactive()
    }

    /// A connection that never became active (refused, timed out) never sees channelInactive;
    /// its promise must still be completed, or its waiter would hang.
    func handlerRemoved(context: ChannelHandlerContext) {
        finish(failing: TLSError.handshakeFailed("connection closed before the peer authenticated"))
    }

    private func refuse(context: ChannelHandlerContext, _ error: TLSError) {
        logger.warning(
            "refused peer",
            metadata: [
                "address": "\(context.channel.remoteAddress.map { "\($0)" } ?? "unknown")", "reason": "\(error)",
            ])
        var bye = Microscale_Wire_Goodbye()
        bye.reason = error.description
        if let frame = try? Frame(kind: .goodbye, message: bye) {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        }
        finish(failing: error)
        context.close(promise: nil)
    }

    private func finish(failing error: Error) {
        for (_, p) in queued { p?.fail(error) }
        queued = []
        guard !done else { return }
        done = true
        authenticated.fail(error)
    }
}
