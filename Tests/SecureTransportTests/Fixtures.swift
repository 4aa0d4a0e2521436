import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Wire

@testable import SecureTransport

/// Certificates for the tests, made once per process with the same code `microscale tls` runs.
enum Fixtures {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-tls-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        return d
    }()

    static let made: Void = {
        do {
            try CertificateIssuer.createCA(in: "\(dir)/ca")
            try CertificateIssuer.createCA(in: "\(dir)/other-ca", commonName: "Some Other CA")
            for node in ["node-a", "node-b", "node-c"] {
                try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: node, server: node == "node-a", in: "\(dir)/certs")
            }
            try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/other-ca", node: "node-a", server: false, in: "\(dir)/other")
            // Valid from two days ago until yesterday.
            try CertificateIssuer.createNodeCertificate(
                caDir: "\(dir)/ca", node: "node-a", server: false, in: "\(dir)/expired",
                validity: .init(notBeforeOffset: -2 * 86_400, notAfterOffset: -86_400))
        } catch {
            fatalError("cannot make test certificates: \(error)")
        }
    }()

    static func paths(_ node: String, in sub: String = "certs", ca: String = "ca") -> TLSConfiguration {
        _ = made
        return TLSConfiguration(
            caFile: "\(dir)/\(ca)/ca.pem", certificateFile: "\(dir)/\(sub)/\(node).pem",
            keyFile: "\(dir)/\(sub)/\(node)-key.pem", handshakeTimeout: .seconds(3))
    }

    static func context(_ node: String, in sub: String = "certs", ca: String = "ca", handshakeTimeout: Duration = .seconds(3)) throws -> TLSContext {
        var c = paths(node, in: sub, ca: ca)
        c.handshakeTimeout = handshakeTimeout
        return try TLSContext(configuration: c)
    }

    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    static var logger: Logger {
        var l = Logger(label: "test")
        l.logLevel = .critical
        return l
    }
}

/// Records what reaches the end of a pipeline: plaintext, the handshake event, errors, closure.
final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    let handshake: EventLoopPromise<PeerIdentity>
    let firstError: EventLoopPromise<Error>
    private let received = NIOLockedValueBox(ByteBuffer())
    let echo: Bool

    init(eventLoop: EventLoop, echo: Bool = false) {
        handshake = eventLoop.makePromise()
        firstError = eventLoop.makePromise()
        self.echo = echo
    }

    var text: String { received.withLockedValue { String(buffer: $0) } }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let done = event as? TLSHandshakeCompleted { handshake.succeed(done.peer) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        received.withLockedValue { $0.writeBuffer(&b) }
        if echo {
            b.moveReaderIndex(to: 0)
            context.writeAndFlush(NIOAny(b), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        firstError.succeed(error)
        handshake.fail(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake.fail(ChannelError.ioOnClosedChannel)
        firstError.fail(ChannelError.ioOnClosedChannel)
    }
}

/// A raw TLS server (no framing) whose accepted connections are recorded.
final class RawTLSServer: @unchecked Sendable {
    let channel: Channel
    private let accepted = NIOLockedValueBox<[Recorder]>([])
    private let waiters = NIOLockedValueBox<[EventLoopPromise<Recorder>]>([])

    /// With `offload`, handshakes run on that pool, as `PeerTransport`'s listener runs them.
    init(tls: TLSContext, echo: Bool = false, offload: NIOThreadPool? = nil) async throws {
        let box = accepted
        let waiting = waiters
        channel = try await ServerBootstrap(group: Fixtures.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    let rec = Recorder(eventLoop: ch.eventLoop, echo: echo)
                    try ch.pipeline.syncOperations.addHandler(
                        OpenSSLHandler(context: tls, role: .server, handshakeOffload: offload, logger: Fixtures.logger))
                    try ch.pipeline.syncOperations.addHandler(rec)
                    box.withLockedValue { $0.append(rec) }
                    let w = waiting.withLockedValue { ws -> EventLoopPromise<Recorder>? in ws.isEmpty ? nil : ws.removeFirst() }
                    w?.succeed(rec)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    var port: Int { channel.localAddress!.port! }

    /// The next accepted connection's recorder.
    func nextConnection() async throws -> Recorder {
        if let r = accepted.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() }) { return r }
        let p = Fixtures.group.next().makePromise(of: Recorder.self)
        waiters.withLockedValue { $0.append(p) }
        if let r = accepted.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() }) { p.succeed(r) }
        return try await p.futureResult.get()
    }

    func close() async { try? await channel.close() }
}

/// A raw TLS client connection (no framing).
func rawConnect(port: Int, tls: TLSContext, expectedPeer: String?, offload: NIOThreadPool? = nil) async throws -> (Channel, Recorder) {
    try await ClientBootstrap(group: Fixtures.group)
        .connect(host: "127.0.0.1", port: port) { ch in
            ch.eventLoop.makeCompletedFuture {
                let rec = Recorder(eventLoop: ch.eventLoop)
                try ch.pipeline.syncOperations.addHandler(
                    OpenSSLHandler(
                        context: tls, role: .client, expectedPeer: expectedPeer,
                        handshakeOffload: offload, logger: Fixtures.logger))
                try ch.pipeline.syncOperations.addHandler(rec)
                return (ch, rec)
            }
        }
}

/// Runs the openssl program (the real peer for interoperability tests), bounded in time.
final class OpenSSLProcess: @unchecked Sendable {
    let process = Process()
    let stdin = Pipe()
    let stdout = Pipe()
    private let output = NIOLockedValueBox(Data())

    init(_ args: [String]) throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = args
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stdout
        let out = output
        stdout.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            out.withLockedValue { $0.append(d) }
        }
        try process.run()
    }

    var text: String { output.withLockedValue { String(decoding: $0, as: UTF8.self) } }

    func send(_ s: String) { stdin.fileHandleForWriting.write(Data(s.utf8)) }

    /// Waits until the output contains `needle` or the deadline passes.
    func waitFor(_ needle: String, seconds: Double = 10) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if text.contains(needle) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return text.contains(needle)
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        stdout.fileHandleForReading.readabilityHandler = nil
    }
}

func freePort() throws -> Int {
    let ch = try ServerBootstrap(group: Fixtures.group).bind(host: "127.0.0.1", port: 0).wait()
    let port = ch.localAddress!.port!
    try ch.close().wait()
    return port
}
