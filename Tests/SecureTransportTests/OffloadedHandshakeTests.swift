import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import SecureTransport

/// The handshake run step by step on a thread pool (`OpenSSLHandler(handshakeOffload:)`), as a
/// listener runs it: the same outcomes and the same refusal reasons as inline, since the reason
/// is read from OpenSSL's per-thread error queue on the thread that ran the step.
@Suite(.serialized) struct OffloadedHandshakeTests {
    static let pool: NIOThreadPool = {
        let p = NIOThreadPool(numberOfThreads: 1)
        p.start()
        return p
    }()

    @Test func twoOffloadedPeersHandshakeAndExchangeBytesBothWays() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), echo: true, offload: Self.pool)
        defer { Task { await server.close() } }
        let (client, rec) = try await rawConnect(port: server.port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a", offload: Self.pool)
        let serverSide = try await server.nextConnection()
        #expect(try await rec.handshake.futureResult.get() == PeerIdentity(name: "node-a", isServer: true))
        #expect(try await serverSide.handshake.futureResult.get() == PeerIdentity(name: "node-b", isServer: false))
        try await client.writeAndFlush(ByteBuffer(string: "ping"))
        try await waitUntil { rec.text == "ping" }
        #expect(rec.text == "ping")
        try await client.close()
    }

    @Test func bytesTheClientSendsRightAfterItsFinishedReachTheOffloadedServer() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), offload: Self.pool)
        defer { Task { await server.close() } }
        let tls = try Fixtures.context("node-b")
        // Written before the handshake: the client seals it with its Finished, so it arrives at
        // the server in the same read as the last handshake flight, while a step may be out.
        let client = try await ClientBootstrap(group: Fixtures.group)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(
                        OpenSSLHandler(context: tls, role: .client, expectedPeer: "node-a", logger: Fixtures.logger))
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        client.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
        let serverSide = try await server.nextConnection()
        try await waitUntil { serverSide.text == "early" }
        #expect(serverSide.text == "early")
        try await client.close()
    }

    @Test func anOffloadedServerRefusesAClientWithoutACertificateWithTheSameReason() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"), offload: Self.pool)
        defer { Task { await server.close() } }
        let client = try OpenSSLProcess([
            "s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_3",
            "-CAfile", Fixtures.paths("node-b").caFile, "-quiet",
        ])
        defer { client.stop() }
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        #expect(error as? TLSError == .noPeerCertificate)
    }

    @Test func anOffloadedServerRefusesACertificateFromAnotherCAWithTheSameReason() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"), offload: Self.pool)
        defer { Task { await server.close() } }
        // The intruder trusts our CA (so it accepts us) but its own certificate is foreign.
        let d = Fixtures.dir
        let intruder = try OpenSSLProcess([
            "s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_3",
            "-cert", "\(d)/other/node-a.pem", "-key", "\(d)/other/node-a-key.pem",
            "-CAfile", "\(d)/ca/ca.pem", "-quiet",
        ])
        defer { intruder.stop() }
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        #expect(error as? TLSError == .peerVerificationFailed("unable to get local issuer certificate"))
    }

    @Test func anOffloadedServerStillTimesOutASilentPeer() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b", handshakeTimeout: .milliseconds(200)), offload: Self.pool)
        defer { Task { await server.close() } }
        let silent = try await ClientBootstrap(group: Fixtures.group).connect(host: "127.0.0.1", port: server.port).get()
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        #expect(error as? TLSError == .handshakeTimeout(seconds: 0.2))
        try await silent.closeFuture.get()
    }

    @Test func clientsThatHangUpMidHandshakeLeaveTheServerServing() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), echo: true, offload: Self.pool)
        defer { Task { await server.close() } }
        let tls = try Fixtures.context("node-b")
        // Each sends its ClientHello and closes at once: the server's step for it is out, or
        // about to be, when the connection goes, and the session must be freed exactly once.
        for _ in 0..<50 {
            let (ch, _) = try await rawConnect(port: server.port, tls: tls, expectedPeer: "node-a")
            try? await ch.close()
        }
        let (client, rec) = try await rawConnect(port: server.port, tls: tls, expectedPeer: "node-a")
        #expect(try await rec.handshake.futureResult.get().name == "node-a")
        try await client.writeAndFlush(ByteBuffer(string: "still here"))
        try await waitUntil { rec.text == "still here" }
        #expect(rec.text == "still here")
        try await client.close()
    }

    @Test func aHandshakeWhoseThreadPoolHasStoppedIsRefusedNotLeftHanging() async throws {
        let stopped = NIOThreadPool(numberOfThreads: 1)
        stopped.start()
        try await stopped.shutdownGracefully()
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), offload: stopped)
        defer { Task { await server.close() } }
        let (_, rec) = try await rawConnect(port: server.port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a")
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        guard case .handshakeFailed(let reason)? = error as? TLSError else {
            Issue.record("expected a handshake failure, got \(error)")
            return
        }
        #expect(reason.contains("handshake thread"), "\(reason)")
        await #expect(throws: (any Error).self) { try await rec.handshake.futureResult.get() }
    }
}
