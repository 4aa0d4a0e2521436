import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import SecureTransport

@Suite(.serialized) struct OpenSSLHandlerTests {
    @Test func twoPeersHandshakeAndLearnEachOthersNamesFromCertificates() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), echo: true)
        defer { Task { await server.close() } }
        let (client, rec) = try await rawConnect(port: server.port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a")
        let serverSide = try await server.nextConnection()
        #expect(try await rec.handshake.futureResult.get() == PeerIdentity(name: "node-a", isServer: true))
        #expect(try await serverSide.handshake.futureResult.get() == PeerIdentity(name: "node-b", isServer: false))
        try await client.writeAndFlush(ByteBuffer(string: "ping"))
        try await waitUntil { rec.text == "ping" }
        #expect(rec.text == "ping")
        try await client.close()
    }

    @Test func largeWritesArriveIntactAcrossManyRecords() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"))
        defer { Task { await server.close() } }
        let (client, _) = try await rawConnect(port: server.port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a")
        let serverSide = try await server.nextConnection()
        var expected = ""
        for i in 0..<200 {
            let chunk = String(repeating: Character(UnicodeScalar(UInt8(65 + i % 26))), count: 700 + i)
            expected += chunk
            client.write(ByteBuffer(string: chunk), promise: nil)
        }
        try await client.writeAndFlush(ByteBuffer(string: "."))
        expected += "."
        let total = expected.count
        try await waitUntil { serverSide.text.count == total }
        #expect(serverSide.text == expected)
        try await client.close()
    }

    @Test func writesBeforeTheHandshakeWaitAndAreNotLost() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"))
        defer { Task { await server.close() } }
        let tls = try Fixtures.context("node-b")
        let client = try await ClientBootstrap(group: Fixtures.group)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(
                        OpenSSLHandler(context: tls, role: .client, expectedPeer: "node-a", logger: Fixtures.logger))
                }
            }
            .connect(host: "127.0.0.1", port: server.port).get()
        // Written at once: the handler must hold it until the peer is verified.
        client.writeAndFlush(ByteBuffer(string: "early"), promise: nil)
        let serverSide = try await server.nextConnection()
        try await waitUntil { serverSide.text == "early" }
        #expect(serverSide.text == "early")
        try await client.close()
    }

    @Test func aClientRefusesAServerWhoseCertificateNamesAnotherNode() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-c"))
        defer { Task { await server.close() } }
        let (_, rec) = try await rawConnect(port: server.port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a")
        let error = try await rec.firstError.futureResult.get()
        #expect(error as? TLSError == .peerNameMismatch(expected: "node-a", actual: "node-c"))
        #expect("\(error)" == "peer certificate names node-c, expected node-a")
    }

    @Test func aServerRefusesACertificateFromAnotherCA() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"))
        defer { Task { await server.close() } }
        // The intruder trusts our CA (so it would accept us) but its own certificate is foreign.
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

    @Test func aServerRefusesAnExpiredCertificate() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"))
        defer { Task { await server.close() } }
        // An expired certificate cannot even be loaded as our own identity, so the test builds
        // the client through the handler with a context that skips that self-check: the raw
        // OpenSSL context below.
        let expired = try ExpiredClient.connect(port: server.port)
        defer { expired.stop() }
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        #expect(error as? TLSError == .peerVerificationFailed("certificate has expired"))
    }

    @Test func ourOwnExpiredCertificateIsRefusedAtStartWithItsPath() throws {
        #expect {
            _ = try Fixtures.context("node-a", in: "expired")
        } throws: { error in
            guard case .badFile(let role, let path, let reason)? = error as? TLSError else { return false }
            return role == "certificate" && path.hasSuffix("expired/node-a.pem") && reason.contains("expired")
        }
    }

    @Test func aServerRefusesAClientWithoutACertificate() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"))
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

    @Test func aServerRefusesATLS12OnlyClient() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"))
        defer { Task { await server.close() } }
        let paths = Fixtures.paths("node-a")
        let client = try OpenSSLProcess([
            "s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_2",
            "-cert", paths.certificateFile, "-key", paths.keyFile, "-CAfile", paths.caFile, "-quiet",
        ])
        defer { client.stop() }
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        guard case .handshakeFailed(let reason)? = error as? TLSError else {
            Issue.record("expected a handshake failure, got \(error)")
            return
        }
        #expect(reason.contains("unsupported protocol"), "\(reason)")
    }

    @Test func aServerRefusesPlaintextAndPassesNoByteOn() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b"))
        defer { Task { await server.close() } }
        let plain = try await ClientBootstrap(group: Fixtures.group).connect(host: "127.0.0.1", port: server.port).get()
        try await plain.writeAndFlush(ByteBuffer(string: "GET /v1/members HTTP/1.1\r\nHost: x\r\n\r\n"))
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        guard case .handshakeFailed(let reason)? = error as? TLSError else {
            Issue.record("expected a handshake failure, got \(error)")
            return
        }
        #expect(reason.contains("http request") || reason.contains("wrong version number") || reason.contains("record"), "\(reason)")
        #expect(serverSide.text.isEmpty)
        try? await plain.close()
    }

    @Test func aSilentPeerIsDroppedWhenTheHandshakeTimesOut() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-b", handshakeTimeout: .milliseconds(200)))
        defer { Task { await server.close() } }
        let silent = try await ClientBootstrap(group: Fixtures.group).connect(host: "127.0.0.1", port: server.port).get()
        let serverSide = try await server.nextConnection()
        let error = try await serverSide.firstError.futureResult.get()
        #expect(error as? TLSError == .handshakeTimeout(seconds: 0.2))
        try await silent.closeFuture.get()
    }

    // MARK: Interoperation with the openssl program

    @Test func ourClientTalksToOpenSSLServer() async throws {
        let port = try freePort()
        let paths = Fixtures.paths("node-a")
        let server = try OpenSSLProcess([
            "s_server", "-accept", "127.0.0.1:\(port)", "-tls1_3", "-rev",
            "-cert", paths.certificateFile, "-key", paths.keyFile,
            "-CAfile", paths.caFile, "-Verify", "1", "-verify_return_error", "-naccept", "1",
        ])
        defer { server.stop() }
        #expect(await server.waitFor("ACCEPT"))
        let (client, rec) = try await rawConnect(port: port, tls: try Fixtures.context("node-b"), expectedPeer: "node-a")
        #expect(try await rec.handshake.futureResult.get().name == "node-a")
        try await client.writeAndFlush(ByteBuffer(string: "microscale\n"))
        // s_server -rev answers each line reversed.
        try await waitUntil { rec.text.contains("elacsorcim") }
        #expect(rec.text.contains("elacsorcim"))
        try await client.close()
    }

    @Test func openSSLClientTalksToOurServer() async throws {
        let server = try await RawTLSServer(tls: try Fixtures.context("node-a"), echo: true)
        defer { Task { await server.close() } }
        let paths = Fixtures.paths("node-b")
        let client = try OpenSSLProcess([
            "s_client", "-connect", "127.0.0.1:\(server.port)", "-tls1_3",
            "-cert", paths.certificateFile, "-key", paths.keyFile, "-CAfile", paths.caFile,
            "-verify_return_error", "-verify_hostname", "node-a", "-quiet",
        ])
        defer { client.stop() }
        let serverSide = try await server.nextConnection()
        #expect(try await serverSide.handshake.futureResult.get().name == "node-b")
        client.send("hello from openssl\n")
        #expect(await client.waitFor("hello from openssl"))
        try await waitUntil { serverSide.text == "hello from openssl\n" }
        #expect(serverSide.text == "hello from openssl\n")
    }

    @Test func openSSLVerifyAcceptsTheCertificatesWeMake() throws {
        let paths = Fixtures.paths("node-a")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = ["verify", "-CAfile", paths.caFile, paths.certificateFile, Fixtures.paths("node-b").certificateFile]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(text)")
        #expect(text.contains("node-a.pem: OK") && text.contains("node-b.pem: OK"), "\(text)")
    }
}

/// A client made directly with OpenSSL (not through TLSContext, which rightly refuses to load
/// an expired identity) presenting the expired certificate.
struct ExpiredClient {
    let process: OpenSSLProcess
    static func connect(port: Int) throws -> ExpiredClient {
        let d = Fixtures.dir
        return ExpiredClient(
            process: try OpenSSLProcess([
                "s_client", "-connect", "127.0.0.1:\(port)", "-tls1_3", "-cert", "\(d)/expired/node-a.pem",
                "-key", "\(d)/expired/node-a-key.pem", "-CAfile", "\(d)/ca/ca.pem", "-quiet",
            ]))
    }
    func stop() { process.stop() }
}

func waitUntil(seconds: Double = 10, _ condition: @Sendable () -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition(), Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
}
