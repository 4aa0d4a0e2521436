import COpenSSL
import Logging
import NIOCore
import NIOPosix

/// Fired down the pipeline once the TLS handshake has completed and the peer's chain has been
/// verified against the cluster CA.
public struct TLSHandshakeCompleted: Sendable {
    public var peer: PeerIdentity
}

/// TLS over system OpenSSL for a SwiftNIO channel, using a pair of memory BIOs: ciphertext from
/// the socket is written into the read BIO, OpenSSL's output is drained from the write BIO
/// onto the socket. OpenSSL never touches the file descriptor, so the event loop stays in
/// charge of all I/O.
///
/// Guarantees, in order of importance:
/// - No application byte is passed on, in either direction, before the handshake completes
///   and the peer's certificate has verified. Outbound writes wait in a bounded queue.
/// - TLS 1.3 only, mutual authentication (enforced by `TLSContext`).
/// - A client that dials a named node refuses a certificate that does not name it.
/// - A handshake that takes longer than the configured timeout closes the connection.
/// - Every refusal is logged once, with the peer's address and a readable reason, and fired as
///   an error down the pipeline before the channel closes.
///
/// With a `handshakeOffload` pool, each handshake step (`SSL_do_handshake`: key exchange, the
/// ECDSA signature and the chain verification) runs on that pool's thread, not on the channel's
/// event loop. A listener's handshakes are started by whoever can reach its port, and the loop
/// they would otherwise run on is the one the membership protocol's timers and probes share;
/// I/O stays on the loop, only the crypto moves. While a step is out, the session and its BIOs
/// belong to the pool thread alone: ciphertext that arrives meanwhile waits in a bounded buffer,
/// and nothing else touches the session until the step's result is back on the loop.
public final class OpenSSLHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        case idle, handshaking, established, closing, closed
    }

    /// Plaintext is sealed into records of up to this many bytes: small writes are coalesced
    /// (a record per 1 KiB frame would cost a MAC and a header each), large ones split.
    private static let recordPlaintextBytes = 16 * 1024
    /// Outbound bytes buffered before the handshake completes, at most. Beyond it the write
    /// fails: a peer that never finishes its handshake cannot make us hold unbounded memory.
    public static let maxPendingBytes = 4 * 1024 * 1024
    /// Ciphertext held while an offloaded handshake step runs, at most. A client's whole first
    /// flight with a certificate chain is a few KiB; more before our answer is not a handshake.
    public static let maxHeldCiphertextBytes = 256 * 1024

    private let tls: TLSContext
    private let role: TLSRole
    private let expectedPeer: String?
    private let offload: NIOThreadPool?
    private let refusalLog: RateLimitedSources?
    private let logger: Logger
    private var ssl: OpaquePointer?
    private var readBIO: OpaquePointer?
    private var writeBIO: OpaquePointer?
    private var state: State = .idle
    private var pending: [(ByteBuffer, EventLoopPromise<Void>?)] = []
    private var pendingBytes = 0
    private var flushRequested = false
    private var handshakeTimer: Scheduled<Void>?
    private var remoteDescription = "unknown peer"
    private var remoteIP = "unknown"
    /// An offloaded handshake step is running: the session is the pool thread's until it returns.
    private var stepInFlight = false
    /// Ciphertext read while a step was out, fed to the session when it returns.
    private var heldCiphertext: ByteBuffer?
    /// The session of a handler removed from the pipeline while a step was out: the returning
    /// step frees it.
    private var orphanedSSL: OpaquePointer?
    public private(set) var peer: PeerIdentity?

    /// - Parameters:
    ///   - expectedPeer: for a client, the node name the server's certificate must carry.
    ///   - handshakeOffload: a started thread pool to run handshake steps on; nil runs them inline.
    ///   - refusalLog: with it, refused handshakes are logged at most once per source address
    ///     per its interval (a listener's, where a flood would otherwise write a line per
    ///     connection from the loop); without it, every refusal is.
    init(
        context: TLSContext, role: TLSRole, expectedPeer: String? = nil, handshakeOffload: NIOThreadPool? = nil,
        refusalLog: RateLimitedSources?, logger: Logger = Logger(label: "microscale.tls")
    ) {
        self.tls = context
        self.role = role
        self.expectedPeer = expectedPeer
        self.offload = handshakeOffload
        self.refusalLog = refusalLog
        self.logger = logger
    }

    ///   - expectedPeer: for a client, the node name the server's certificate must carry.
    ///   - handshakeOffload: a started thread pool to run handshake steps on; nil runs them inline.
    public convenience init(
        context: TLSContext, role: TLSRole, expectedPeer: String? = nil, handshakeOffload: NIOThreadPool? = nil,
        logger: Logger = Logger(label: "microscale.tls")
    ) {
        self.init(
            context: context, role: role, expectedPeer: expectedPeer, handshakeOffload: handshakeOffload,
            refusalLog: nil, logger: logger)
    }

    // MARK: Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        guard let ssl = SSL_new(tls.ctx), let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else {
            fail(context: context, TLSError.contextSetup(openSSLErrors("cannot allocate a TLS session")))
            return
        }
        // SSL_set_bio hands ownership of both BIOs to the SSL object; SSL_free frees them.
        SSL_set_bio(ssl, r, w)
        self.ssl = ssl
        readBIO = r
        writeBIO = w
        switch role {
        case .server:
            SSL_set_accept_state(ssl)
        case .client:
            SSL_set_connect_state(ssl)
            if let expectedPeer {
                // Checked by OpenSSL inside the handshake against the certificate's DNS names,
                // so a wrong server is refused before it can read a byte.
                SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT))
                _ = SSL_set1_host(ssl, expectedPeer)
                // A service outside the cluster may host several names on one address: say which
                // (SNI, RFC 6066 §3; never for an address literal, which SNI does not allow).
                if tls.isExternalClient, !expectedPeer.contains(":"), expectedPeer.contains(where: { $0.isLetter }) {
                    _ = ms_SSL_set_tlsext_host_name(ssl, expectedPeer)
                }
            }
        }
        if context.channel.isActive { start(context: context) }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        // Freed under a running step, the session would be used after free on the pool thread.
        if stepInFlight {
            orphanedSSL = ssl
        } else if let ssl {
            SSL_free(ssl)
        }
        ssl = nil
        readBIO = nil
        writeBIO = nil
        failPending(ChannelError.ioOnClosedChannel)
    }

    public func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if state == .handshaking {
            logRefusal("connection closed during the TLS handshake")
        }
        state = .closed
        handshakeTimer?.cancel()
        failPending(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    private func start(context: ChannelHandlerContext) {
        guard state == .idle, ssl != nil else { return }
        state = .handshaking
        if let remote = context.channel.remoteAddress {
            remoteDescription = "\(remote)"
            remoteIP = remote.ipAddress ?? remoteDescription
        }
        let timeout = tls.configuration.handshakeTimeout
        let nanos = timeout.nanosecondsClamped
        let seconds = Double(nanos) / 1e9
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        handshakeTimer = context.eventLoop.scheduleTask(in: .nanoseconds(nanos)) {
            let (handler, context) = loopBound.value
            if handler.state == .handshaking {
                handler.fail(context: context, TLSError.handshakeTimeout(seconds: seconds))
            }
        }
        if role == .client { driveHandshake(context: context) }
    }

    // MARK: Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var cipher = unwrapInboundIn(data)
        guard state == .handshaking || state == .established, let readBIO else { return }
        if stepInFlight {
            guard (heldCiphertext?.readableBytes ?? 0) + cipher.readableBytes <= Self.maxHeldCiphertextBytes else {
                fail(context: context, .protocolViolation("more than \(Self.maxHeldCiphertextBytes) bytes sent during the TLS handshake"))
                return
            }
            if heldCiphertext == nil { heldCiphertext = context.channel.allocator.buffer(capacity: cipher.readableBytes) }
            heldCiphertext!.writeBuffer(&cipher)
            return
        }
        // Memory BIOs grow as needed, so the write always takes every byte.
        _ = cipher.withUnsafeReadableBytes { BIO_write(readBIO, $0.baseAddress, Int32($0.count)) }
        if state == .handshaking { driveHandshake(context: context) }
        if state == .established { readPlaintext(context: context) }
        flushCiphertext(context: context)
    }

    /// What one `SSL_do_handshake` call came to. Worked out on the thread that made the call:
    /// OpenSSL's error queue is per thread.
    private enum HandshakeStep: Sendable {
        case completed, wantsMore
        case failed(TLSError)
    }

    /// The session, lent to the pool thread for one step. Sound because the loop does not touch
    /// the session, its BIOs or its error queue until the step's future is back on the loop
    /// (`stepInFlight`), and the session is not freed under it (`orphanedSSL`).
    private struct LentSession: @unchecked Sendable {
        let ssl: OpaquePointer
    }

    private func driveHandshake(context: ChannelHandlerContext) {
        guard let ssl, !stepInFlight else { return }
        guard let offload else {
            apply(Self.handshakeStep(ssl: ssl, expectedPeer: expectedPeer), context: context)
            return
        }
        stepInFlight = true
        let lent = LentSession(ssl: ssl)
        let expected = expectedPeer
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        offload.runIfActive(eventLoop: context.eventLoop) {
            Self.handshakeStep(ssl: lent.ssl, expectedPeer: expected)
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            handler.stepReturned(result, context: context)
        }
    }

    private func stepReturned(_ result: Result<HandshakeStep, Error>, context: ChannelHandlerContext) {
        stepInFlight = false
        if let orphan = orphanedSSL {
            // The pipeline let go of this handler while the step ran; the session is ours to free.
            orphanedSSL = nil
            SSL_free(orphan)
            return
        }
        guard state == .handshaking, let readBIO else { return }
        let held = heldCiphertext
        heldCiphertext = nil
        if let held {
            _ = held.withUnsafeReadableBytes { BIO_write(readBIO, $0.baseAddress, Int32($0.count)) }
        }
        let step: HandshakeStep
        switch result {
        case .success(let s): step = s
        case .failure(let error): step = .failed(.handshakeFailed("the handshake thread is not running (\(error))"))
        }
        apply(step, context: context)
        if state == .handshaking, held != nil {
            // Bytes came in while the step ran: they may hold the next flight. (Only new bytes
            // call for another step; a partial record left in the BIO would just spin.)
            driveHandshake(context: context)
        } else if state == .established {
            // The client's Finished is often followed, in the same read, by its first records.
            readPlaintext(context: context)
            flushCiphertext(context: context)
        }
    }

    private func apply(_ step: HandshakeStep, context: ChannelHandlerContext) {
        switch step {
        case .completed:
            handshakeCompleted(context: context)
        case .wantsMore:
            flushCiphertext(context: context)
        case .failed(let error):
            // Send whatever alert OpenSSL queued, so the peer learns why, then close.
            flushCiphertext(context: context)
            fail(context: context, error)
        }
    }

    private static func handshakeStep(ssl: OpaquePointer, expectedPeer: String?) -> HandshakeStep {
        ERR_clear_error()
        let r = SSL_do_handshake(ssl)
        if r == 1 { return .completed }
        let err = SSL_get_error(ssl, r)
        if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { return .wantsMore }
        return .failed(handshakeError(ssl: ssl, expectedPeer: expectedPeer))
    }

    private static func handshakeError(ssl: OpaquePointer, expectedPeer: String?) -> TLSError {
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            ERR_clear_error()
            if verify == X509_V_ERR_HOSTNAME_MISMATCH, let expectedPeer {
                // The session has no verified peer yet, but the chain it received is kept.
                let actual = ms_SSL_peer_leaf_from_chain(ssl).flatMap { PeerIdentity(certificate: $0)?.name } ?? ""
                return .peerNameMismatch(expected: expectedPeer, actual: actual)
            }
            return .peerVerificationFailed(String(cString: X509_verify_cert_error_string(verify)))
        }
        let code = ERR_peek_error()
        if ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE {
            ERR_clear_error()
            return .noPeerCertificate
        }
        return .handshakeFailed(openSSLErrors("the peer closed the handshake"))
    }

    private func handshakeCompleted(context: ChannelHandlerContext) {
        guard let ssl else { return }
        handshakeTimer?.cancel()
        handshakeTimer = nil
        // A service outside the cluster has been checked against its CA and the host name; its
        // certificate need not carry a common name (node certificates must: it is the node name).
        guard let cert = SSL_get0_peer_certificate(ssl),
            let identity = PeerIdentity(certificate: cert) ?? (tls.isExternalClient ? PeerIdentity(name: expectedPeer ?? "", isServer: false) : nil)
        else {
            fail(context: context, .noPeerCertificate)
            return
        }
        state = .established
        peer = identity
        logger.debug("TLS established", metadata: ["peer": "\(identity)", "address": "\(remoteDescription)"])
        context.fireUserInboundEventTriggered(TLSHandshakeCompleted(peer: identity))
        if state == .established { sealPending(context: context) }
    }

    private func readPlaintext(context: ChannelHandlerContext) {
        while state == .established, let ssl {
            var buffer = context.channel.allocator.buffer(capacity: Self.recordPlaintextBytes)
            var result: Int32 = 0
            ERR_clear_error()
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.recordPlaintextBytes) { ptr in
                var n = 0
                result = SSL_read_ex(ssl, ptr.baseAddress, ptr.count, &n)
                return result == 1 ? n : 0
            }
            if result == 1 {
                context.fireChannelRead(wrapInboundOut(buffer))
                continue
            }
            let err = SSL_get_error(ssl, result)
            switch err {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return
            case SSL_ERROR_ZERO_RETURN:
                // close_notify: the peer finished cleanly.
                state = .closing
                context.close(promise: nil)
                return
            default:
                fail(context: context, .protocolViolation(openSSLErrors("TLS record error")))
                return
            }
        }
    }

    // MARK: Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let plain = unwrapOutboundIn(data)
        switch state {
        case .closing, .closed:
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        case .idle, .handshaking:
            guard pendingBytes + plain.readableBytes <= Self.maxPendingBytes else {
                promise?.fail(TLSError.protocolViolation("more than \(Self.maxPendingBytes) bytes queued before the TLS handshake completed"))
                return
            }
        case .established:
            break
        }
        pending.append((plain, promise))
        pendingBytes += plain.readableBytes
    }

    public func flush(context: ChannelHandlerContext) {
        flushRequested = true
        if state == .established { sealPending(context: context) }
    }

    /// Encrypts queued plaintext (coalesced into full records) and writes the ciphertext.
    private func sealPending(context: ChannelHandlerContext) {
        guard flushRequested, !pending.isEmpty, let ssl else {
            flushCiphertext(context: context)
            return
        }
        flushRequested = false
        let queued = pending
        pending = []
        pendingBytes = 0
        var staging = context.channel.allocator.buffer(capacity: Self.recordPlaintextBytes)
        var promises: [EventLoopPromise<Void>] = []

        func seal(_ bytes: ByteBuffer) -> Bool {
            bytes.withUnsafeReadableBytes { raw in
                var offset = 0
                while offset < raw.count {
                    var written = 0
                    ERR_clear_error()
                    let r = SSL_write_ex(ssl, raw.baseAddress! + offset, raw.count - offset, &written)
                    if r != 1 { return false }
                    offset += written
                }
                return true
            }
        }

        for (var buffer, promise) in queued {
            if let promise { promises.append(promise) }
            while buffer.readableBytes > 0 {
                let room = Self.recordPlaintextBytes - staging.readableBytes
                let chunk = buffer.readSlice(length: min(room, buffer.readableBytes))!
                staging.writeImmutableBuffer(chunk)
                if staging.readableBytes == Self.recordPlaintextBytes {
                    guard seal(staging) else { return failSeal(context: context, promises: promises) }
                    staging.clear()
                }
            }
        }
        if staging.readableBytes > 0 {
            guard seal(staging) else { return failSeal(context: context, promises: promises) }
        }
        let done: EventLoopPromise<Void>? = promises.isEmpty ? nil : context.eventLoop.makePromise()
        if let done {
            for p in promises { done.futureResult.cascade(to: p) }
        }
        flushCiphertext(context: context, promise: done)
    }

    private func failSeal(context: ChannelHandlerContext, promises: [EventLoopPromise<Void>]) {
        let error = TLSError.protocolViolation(openSSLErrors("cannot encrypt"))
        for p in promises { p.fail(error) }
        fail(context: context, error)
    }

    /// Moves whatever OpenSSL produced (handshake messages, records, alerts) onto the socket.
    private func flushCiphertext(context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        guard let writeBIO else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        // A running step owns the BIO; its return flushes what it wrote. (Only handshake bytes
        // can be produced then: records wait for `.established`.)
        guard !stepInFlight else {
            promise?.succeed()
            return
        }
        let available = Int(ms_BIO_pending(writeBIO))
        guard available > 0 else {
            promise?.succeed()
            return
        }
        var out = context.channel.allocator.buffer(capacity: available)
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: available) { ptr in
            Int(max(0, BIO_read(writeBIO, ptr.baseAddress, Int32(available))))
        }
        context.writeAndFlush(wrapOutboundOut(out), promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if state == .established, mode == .all, let ssl {
            // Tell the peer this is a clean end (close_notify), not a truncation.
            state = .closing
            ERR_clear_error()
            _ = SSL_shutdown(ssl)
            flushCiphertext(context: context)
        }
        failPending(ChannelError.ioOnClosedChannel)
        context.close(mode: mode, promise: promise)
    }

    // MARK: Failure

    private func fail(context: ChannelHandlerContext, _ error: TLSError) {
        guard state != .closed else { return }
        let wasHandshaking = state == .handshaking || state == .idle
        state = .closing
        handshakeTimer?.cancel()
        handshakeTimer = nil
        if wasHandshaking {
            logRefusal(error.description)
        } else {
            logger.warning("TLS connection failed", metadata: ["address": "\(remoteDescription)", "reason": "\(error)"])
        }
        failPending(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func logRefusal(_ reason: String) {
        var suppressed = 0
        if let refusalLog {
            guard let n = refusalLog.shouldLog("\(remoteIP) handshake") else { return }
            suppressed = n
        }
        logger.warning(
            "refused connection",
            metadata: [
                "address": "\(remoteDescription)", "role": "\(role)", "reason": "\(reason)",
                "refusedSinceLastLog": "\(suppressed)",
            ])
    }

    private func failPending(_ error: Error) {
        let queued = pending
        pending = []
        pendingBytes = 0
        for (_, p) in queued { p?.fail(error) }
    }
}
