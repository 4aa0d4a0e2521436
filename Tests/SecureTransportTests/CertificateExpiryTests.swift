import Foundation
import NIOCore
import Testing
import Wire

@testable import SecureTransport

/// Issue 19 item 5: after a reload (SIGHUP) replaced the certificate, connections made with the
/// previous one are closed when it expires (`PeerTransport.closeAtExpiry`); connections made with
/// the one in use are left alone.
@Suite(.serialized) struct CertificateExpiryTests {
    /// A certificate for node-a (a server, as the fixtures' node-a) valid for `seconds` from now.
    func shortLived(_ seconds: Double) throws -> TLSContext {
        _ = Fixtures.paths("node-a")
        let dir = "\(Fixtures.dir)/short-\(UUID().uuidString)"
        try CertificateIssuer.createNodeCertificate(
            caDir: "\(Fixtures.dir)/ca", node: "node-a", server: true, in: dir,
            validity: .init(notBeforeOffset: -300, notAfterOffset: seconds))
        return try Fixtures.context("node-a", in: (dir as NSString).lastPathComponent)
    }

    func transport(_ node: String, tls: TLSContext? = nil) throws -> PeerTransport {
        PeerTransport(
            group: Fixtures.group, tls: try tls ?? Fixtures.context(node), options: .init(cluster: "test"),
            logger: Fixtures.logger, onFrame: Inbox().handler)
    }

    func frame(_ s: String) -> Frame { Frame(kind: .membership, payload: ByteBuffer(string: s)) }

    @Test func afterAReloadConnectionsMadeWithTheOldCertificateCloseWhenItExpires() async throws {
        let short = try shortLived(6)
        let a = try transport("node-a", tls: short)
        let b = try transport("node-b"), c = try transport("node-c")
        let portA = try await a.listen(host: "127.0.0.1", port: 0).port!
        let portB = try await b.listen(host: "127.0.0.1", port: 0).port!
        // One connection a dialed, one it accepted, both made with the short-lived certificate.
        try await a.send(frame("hi"), toAddress: "127.0.0.1", port: portB, expecting: "node-b")
        try await c.send(frame("hi"), toAddress: "127.0.0.1", port: portA, expecting: "node-a")
        try await waitUntilAsync { await a.connectionCount() == 2 }
        #expect(await a.connectionCount() == 2)

        // The operator renews the certificate and reloads: nothing is closed yet (not expired).
        try a.reload(try Fixtures.context("node-a"))
        #expect(a.tlsContext.notAfter > short.notAfter)
        #expect(a.connectionsWithAnEarlierCertificate == 2)
        #expect(await a.connectionCount() == 2)
        // A connection made now uses the new certificate and outlives the old one.
        let d = try transport("node-b")
        try await d.send(frame("hi"), toAddress: "127.0.0.1", port: portA, expecting: "node-a")
        try await waitUntilAsync { await a.connectionCount() == 3 }

        // At the old certificate's expiry both old connections close; the new one stays.
        try await waitUntilAsync(seconds: 20) {
            let open = await a.connectionCount()
            return a.connectionsWithAnEarlierCertificate == 0 && open == 1
        }
        #expect(a.connectionsWithAnEarlierCertificate == 0)
        #expect(Date().timeIntervalSince1970 >= short.notAfter - 1, "closed before the old certificate expired")
        #expect(await a.connectionCount() == 1)
        // c hears of the close when its own loop reads the FIN: on a loaded machine, after a's.
        try? await waitUntilAsync { await c.connectedPeers().isEmpty }
        #expect(await c.connectedPeers() == [])
        #expect(await d.connectedPeers() == ["node-a"])
        for t in [a, b, c, d] { await t.shutdown() }
    }

    @Test func aCertificateStillInUseIsNotCutAtItsExpiryButAReloadAfterItClosesItsConnectionsAtOnce() async throws {
        let short = try shortLived(2)
        let a = try transport("node-a", tls: short)
        let b = try transport("node-b")
        let portB = try await b.listen(host: "127.0.0.1", port: 0).port!
        try await a.send(frame("hi"), toAddress: "127.0.0.1", port: portB, expecting: "node-b")
        try await waitUntilAsync { await a.connectionCount() == 1 }
        // Past its expiry, with nothing to replace it: the connection is left as it is.
        while Date().timeIntervalSince1970 < short.notAfter + 1 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(await a.connectionCount() == 1)
        // The renewed certificate arrives late: the expired session goes at the reload.
        try a.reload(try Fixtures.context("node-a"))
        try await waitUntilAsync { await a.connectionCount() == 0 }
        #expect(await a.connectionCount() == 0)
        await a.shutdown()
        await b.shutdown()
    }

    @Test func theTimerDelayIsBoundedAndNeverNegative() {
        #expect(PeerTransport.nanoseconds(until: 10, now: 20) == 0)
        #expect(PeerTransport.nanoseconds(until: .nan, now: 20) == 0)
        #expect(PeerTransport.nanoseconds(until: 21.5, now: 20) == 1_500_000_000)
        #expect(PeerTransport.nanoseconds(until: .greatestFiniteMagnitude, now: 0) == Int64(10 * 365 * 86_400) * 1_000_000_000)
    }
}
