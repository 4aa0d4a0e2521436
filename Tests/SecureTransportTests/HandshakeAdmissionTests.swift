import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing
import Wire

@testable import SecureTransport

/// Pre-authentication bounds of the listener: handshakes in progress in total and per source
/// address, connections per authenticated peer. Attackers connect from other loopback addresses
/// (127.0.0.2, ...; Linux routes all of 127/8 to lo) so a legitimate peer on 127.0.0.1 is a
/// different source; the servers here do not exempt loopback from the per-source bounds, as
/// agents do by default.
@Suite(.serialized) struct HandshakeAdmissionTests {
    /// A server whose handshake timeout is far longer than any test, so a held connection is
    /// closed only by an admission bound, never by the timer.
    func server(_ inbox: Inbox, _ options: PeerTransport.Options) throws -> PeerTransport {
        var options = options
        options.exemptLoopbackFromPerSourceBounds = false
        return PeerTransport(
            group: Fixtures.group, tls: try Fixtures.context("node-b", handshakeTimeout: .seconds(120)),
            options: options, logger: Fixtures.logger, onFrame: inbox.handler)
    }

    func client(_ node: String = "node-a", inbox: Inbox = Inbox()) throws -> PeerTransport {
        PeerTransport(
            group: Fixtures.group, tls: try Fixtures.context(node), options: .init(cluster: "test"),
            logger: Fixtures.logger, onFrame: inbox.handler)
    }

    func frame(_ s: String) -> Frame { Frame(kind: .membership, payload: ByteBuffer(string: s)) }

    /// TCP connections from `source` that never send a byte: each holds a handshake slot on the
    /// server until the server closes it. Counts how many the server has closed.
    final class StalledConnections: Sendable {
        let channels: [Channel]
        private let closedCount = NIOLockedValueBox(0)

        init(count: Int, to port: Int, from source: String) async throws {
            var chans: [Channel] = []
            for _ in 0..<count {
                // One at a time, so they reach the server's accept queue in order.
                let ch = try await ClientBootstrap(group: Fixtures.group)
                    .bind(to: try SocketAddress(ipAddress: source, port: 0))
                    .connect(host: "127.0.0.1", port: port).get()
                chans.append(ch)
            }
            channels = chans
            for ch in chans {
                ch.closeFuture.whenComplete { [closedCount] _ in closedCount.withLockedValue { $0 += 1 } }
            }
        }

        var closed: Int { closedCount.withLockedValue { $0 } }
        var open: Int { channels.filter(\.isActive).count }

        func close() async {
            for ch in channels { try? await ch.close() }
        }
    }

    @Test func connectionsBeyondThePerSourceLimitAreClosedAtOnceWhileAPeerWithAValidCertificateStillConnects() async throws {
        let inboxA = Inbox(), inboxB = Inbox()
        let b = try server(inboxB, .init(cluster: "test", maxHandshakes: 64, maxHandshakesPerSource: 3))
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let stalled = try await StalledConnections(count: 5, to: port, from: "127.0.0.2")
        // The two over the bound are closed by the server; the three admitted stay open, each
        // holding a handshake that will not finish within the test.
        try await waitUntil { stalled.closed == 2 }
        try await waitUntil { b.handshakesInProgress == 3 }
        #expect(stalled.closed == 2)
        #expect(b.handshakesInProgress == 3)

        let a = try client(inbox: inboxA)
        try await a.send(frame("ping"), toAddress: "127.0.0.1", port: port, expecting: "node-b")
        try await waitUntil { inboxB.texts == ["node-a:ping"] }
        #expect(inboxB.texts == ["node-a:ping"])
        #expect(await b.send(frame("pong"), toPeer: "node-a"))
        try await waitUntil { inboxA.texts == ["node-b:pong"] }
        #expect(inboxA.texts == ["node-b:pong"])
        #expect(stalled.open == 3)
        // A's handshake is done, so it no longer counts.
        #expect(b.handshakesInProgress == 3)

        await stalled.close()
        try await waitUntil { b.handshakesInProgress == 0 }
        #expect(b.handshakesInProgress == 0)
        await a.shutdown()
        await b.shutdown()
    }

    @Test func withoutItsOwnAcceptLoopTheListenerAppliesTheSameBoundsAsConnectionsAreSetUp() async throws {
        let inboxB = Inbox()
        let b = try server(inboxB, .init(cluster: "test", maxHandshakes: 64, maxHandshakesPerSource: 2, acceptOnOwnLoop: false))
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let stalled = try await StalledConnections(count: 4, to: port, from: "127.0.0.2")
        try await waitUntil { stalled.closed == 2 }
        try await waitUntil { b.handshakesInProgress == 2 }
        #expect(stalled.closed == 2)
        #expect(b.handshakesInProgress == 2)
        let a = try client()
        try await a.send(frame("ping"), toAddress: "127.0.0.1", port: port, expecting: "node-b")
        try await waitUntil { inboxB.texts == ["node-a:ping"] }
        #expect(inboxB.texts == ["node-a:ping"])
        await stalled.close()
        try await waitUntil { b.handshakesInProgress == 0 }
        #expect(b.handshakesInProgress == 0)
        await a.shutdown()
        await b.shutdown()
    }

    @Test func whenTheTotalLimitIsReachedNewConnectionsAreClosedUntilAHandshakeEnds() async throws {
        let inboxB = Inbox()
        let b = try server(inboxB, .init(cluster: "test", maxHandshakes: 4, maxHandshakesPerSource: 8))
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let first = try await StalledConnections(count: 2, to: port, from: "127.0.0.2")
        let second = try await StalledConnections(count: 2, to: port, from: "127.0.0.3")
        try await waitUntil { b.handshakesInProgress == 4 }
        #expect(b.handshakesInProgress == 4)

        // Any source, however few connections it has, is refused while the table is full:
        let late = try await StalledConnections(count: 2, to: port, from: "127.0.0.4")
        try await waitUntil { late.closed == 2 }
        #expect(late.closed == 2)
        // a legitimate peer too (the price of the total bound; the per-source bound keeps a
        // single address from filling it).
        let a = try client()
        await #expect(throws: (any Error).self) {
            try await a.send(frame("too early"), toAddress: "127.0.0.1", port: port, expecting: "node-b")
        }
        #expect(first.open == 2 && second.open == 2)

        await first.close()
        try await waitUntil { b.handshakesInProgress == 2 }
        try await a.send(frame("now"), toAddress: "127.0.0.1", port: port, expecting: "node-b")
        try await waitUntil { inboxB.texts == ["node-a:now"] }
        #expect(inboxB.texts == ["node-a:now"])

        await second.close()
        await a.shutdown()
        await b.shutdown()
    }

    @Test func whileTheConnectionsLoopIsBusyAtMost256RefusedConnectionsWaitForTheirCloseAndAcceptingResumesAfter() async throws {
        // The group the listener's connections live on, blocked on purpose: a refused
        // connection's close waits for it, as it would behind a loop busy with a flood.
        let busy = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let inboxB = Inbox()
        var options = PeerTransport.Options(cluster: "test", maxHandshakes: 1, maxHandshakesPerSource: 1)
        options.exemptLoopbackFromPerSourceBounds = false
        let b = PeerTransport(
            group: busy.next(), tls: try Fixtures.context("node-b", handshakeTimeout: .seconds(120)),
            options: options, logger: Fixtures.logger, onFrame: inboxB.handler)
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let release = DispatchSemaphore(value: 0)
        busy.next().execute { release.wait() }

        // 300 from one address: one is admitted, the rest are refused, but none can be
        // closed while the loop is blocked. The kernel completes the TCP handshakes regardless
        // (backlog 256), so every connect succeeds.
        let flood = try await StalledConnections(count: 300, to: port, from: "127.0.0.2")
        try await waitUntil { b.refusedConnectionsAwaitingClose >= AdmissionGate.maxPendingCloses }
        // The gate stopped accepting there: what is left waits in the kernel's backlog, not in
        // our descriptors. (A read in progress may still deliver a few more.)
        try await Task.sleep(for: .milliseconds(300))
        #expect(b.refusedConnectionsAwaitingClose >= AdmissionGate.maxPendingCloses)
        #expect(b.refusedConnectionsAwaitingClose <= AdmissionGate.maxPendingCloses + 16)

        release.signal()
        // Once the loop runs, the refusals close, accepting resumes, and the rest are refused in turn.
        try await waitUntil { flood.closed == 299 }
        #expect(flood.closed == 299)
        try await waitUntil { b.refusedConnectionsAwaitingClose == 0 }
        #expect(b.refusedConnectionsAwaitingClose == 0)

        await flood.close()
        try await waitUntil { b.handshakesInProgress == 0 }
        let a = try client()
        try await a.send(frame("after"), toAddress: "127.0.0.1", port: port, expecting: "node-b")
        try await waitUntil { inboxB.texts == ["node-a:after"] }
        #expect(inboxB.texts == ["node-a:after"])
        await a.shutdown()
        await b.shutdown()
        try await busy.shutdownGracefully()
    }

    @Test func aPeerOverItsConnectionLimitLosesItsOldestConnectionAndNoLossIsReported() async throws {
        let inboxB = Inbox()
        let b = try server(inboxB, .init(cluster: "test", maxConnectionsPerPeer: 2))
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let lost = NIOLockedValueBox<[String]>([])
        b.onPeerConnectionLost { name in lost.withLockedValue { $0.append(name) } }

        // Three separate authenticated connections from node-a, one after another.
        let tls = try Fixtures.context("node-a")
        let hello = SecureChannel.hello(for: tls, cluster: "test", agentVersion: "x")
        var channels: [Channel] = []
        for n in 1...3 {
            let (channel, authenticated) = try await ClientBootstrap(group: Fixtures.group)
                .connect(host: "127.0.0.1", port: port) { ch in
                    ch.eventLoop.makeCompletedFuture {
                        (ch, try SecureChannel.configure(ch, tls: tls, role: .client, expectedPeer: "node-b", hello: hello, logger: Fixtures.logger))
                    }
                }
            _ = try await authenticated.get()
            channels.append(channel)
            try await waitUntilAsync { await b.connectionCount() == min(n, 2) }
        }
        // The oldest was closed by B; the two newest are open and count against the bound.
        try await channels[0].closeFuture.get()
        #expect(await b.connectionCount() == 2)
        #expect(channels[1].isActive && channels[2].isActive)
        // Closing for a bound is not news about the peer: membership must not hear of a loss.
        #expect(lost.withLockedValue { $0 }.isEmpty)

        try await channels[2].writeAndFlush(frame("newest")).get()
        try await waitUntil { inboxB.texts == ["node-a:newest"] }
        #expect(inboxB.texts == ["node-a:newest"])

        for ch in channels { try? await ch.close() }
        await b.shutdown()
    }

    @Test func aStrangerWithAnotherCAsCertificateGetsNoFrameThroughAndFreesItsHandshakeSlot() async throws {
        let inboxB = Inbox()
        let b = try server(inboxB, .init(cluster: "test"))
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        let stranger = PeerTransport(
            group: Fixtures.group, tls: try Fixtures.context("node-a", in: "other", ca: "other-ca"),
            options: .init(cluster: "test"), logger: Fixtures.logger, onFrame: Inbox().handler)
        await #expect(throws: (any Error).self) {
            try await stranger.send(frame("let me in"), toAddress: "127.0.0.1", port: port)
        }
        try await waitUntil { b.handshakesInProgress == 0 }
        #expect(b.handshakesInProgress == 0)
        #expect(inboxB.received.isEmpty)
        #expect(await b.connectionCount() == 0)
        await stranger.shutdown()
        await b.shutdown()
    }

    @Test func admissionCountsHandshakesPerSourceAndInTotalAndFreesThemOnRelease() {
        let admission = HandshakeAdmission(maxTotal: 3, maxPerSource: 2)
        #expect(admission.admit("10.0.0.1") == nil)
        #expect(admission.admit("10.0.0.1") == nil)
        #expect(admission.admit("10.0.0.1") == .perSource(2))
        #expect(admission.admit("10.0.0.2") == nil)
        #expect(admission.admit("10.0.0.3") == .total(3))
        #expect(admission.inProgress == 3)
        admission.release("10.0.0.1")
        #expect(admission.admit("10.0.0.3") == nil)
        // A release for a source with nothing in progress changes nothing.
        admission.release("10.9.9.9")
        #expect(admission.inProgress == 3)
    }

    @Test func loopbackPeersAreExemptFromThePerSourceBoundsByDefaultButNotFromTheTotal() async throws {
        let b = PeerTransport(
            group: Fixtures.group, tls: try Fixtures.context("node-b", handshakeTimeout: .seconds(120)),
            options: .init(cluster: "test", maxHandshakes: 6, maxHandshakesPerSource: 2),
            logger: Fixtures.logger, onFrame: Inbox().handler)
        let port = try await b.listen(host: "127.0.0.1", port: 0).port!
        // As agents of a local cluster: many from one loopback address, all admitted...
        let local = try await StalledConnections(count: 5, to: port, from: "127.0.0.1")
        try await waitUntil { b.handshakesInProgress == 5 }
        #expect(b.handshakesInProgress == 5)
        #expect(local.closed == 0)
        // ...up to the total.
        let more = try await StalledConnections(count: 2, to: port, from: "127.0.0.1")
        try await waitUntil { more.closed == 1 }
        #expect(more.closed == 1)
        #expect(b.handshakesInProgress == 6)
        await local.close()
        await more.close()
        await b.shutdown()
    }

    @Test func eachSourceStartsHandshakesNoFasterThanItsRateAfterABurst() {
        let admission = HandshakeAdmission(maxTotal: 64, maxPerSource: 3, ratePerSource: 10)
        let t0 = ContinuousClock.now
        // A burst of three, each hung up at once (released), then the fourth is one too many.
        for _ in 0..<3 {
            #expect(admission.admit("10.0.0.1", now: t0) == nil)
            admission.release("10.0.0.1")
        }
        #expect(admission.admit("10.0.0.1", now: t0) == .rate(10))
        // Another source has its own bucket.
        #expect(admission.admit("10.0.0.2", now: t0) == nil)
        // A tenth of a second later, one more token.
        #expect(admission.admit("10.0.0.1", now: t0 + .milliseconds(100)) == nil)
        #expect(admission.admit("10.0.0.1", now: t0 + .milliseconds(100)) == .rate(10))
    }

    @Test func theRateTableForgetsRefilledSourcesFirstAndStaysBounded() {
        let admission = HandshakeAdmission(maxTotal: 64, maxPerSource: 2, ratePerSource: 1, maxBuckets: 2)
        let t0 = ContinuousClock.now
        for (source, at) in [("a", t0), ("b", t0 + .microseconds(500))] {
            #expect(admission.admit(source, now: at) == nil)
            #expect(admission.admit(source, now: at) == nil)
            admission.release(source)
            admission.release(source)
        }
        // "c" needs room: neither bucket has refilled, so the least recently used goes ("a"),
        // which then starts afresh with a full burst: forgetting errs towards admitting.
        #expect(admission.admit("c", now: t0 + .milliseconds(1)) == nil)
        #expect(admission.admit("b", now: t0 + .milliseconds(2)) == .rate(1))
    }

    @Test func refusalsAreLoggedOncePerSourceAndIntervalWithACountOfThoseLeftOut() {
        let log = RateLimitedSources(interval: .seconds(10), maxKeys: 2)
        let t0 = ContinuousClock.now
        #expect(log.shouldLog("10.0.0.1 per-source", now: t0) == 0)
        #expect(log.shouldLog("10.0.0.1 per-source", now: t0 + .seconds(1)) == nil)
        #expect(log.shouldLog("10.0.0.1 per-source", now: t0 + .seconds(2)) == nil)
        #expect(log.shouldLog("10.0.0.2 per-source", now: t0 + .seconds(2)) == 0)
        // Memory is bounded: a third source while both remembered are recent is not logged...
        #expect(log.shouldLog("10.0.0.3 per-source", now: t0 + .seconds(3)) == nil)
        // ...and once the interval has passed, the first source's line carries what was left out.
        #expect(log.shouldLog("10.0.0.1 per-source", now: t0 + .seconds(11)) == 3)
    }

    @Test func framesToAConnectionWhoseSendQueueIsFullAreDropped() throws {
        let channel = EmbeddedChannel(handler: OutboundQueueBound())
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(Frame(kind: .raft, payload: ByteBuffer(string: "fits")))
        #expect(try channel.readOutbound(as: Frame.self) != nil)
        channel.isWritable = false
        #expect(throws: PeerTransportError.sendQueueFull) {
            try channel.writeOutbound(Frame(kind: .raft, payload: ByteBuffer(string: "dropped")))
        }
        #expect(try channel.readOutbound(as: Frame.self) == nil)
    }
}

@Suite struct InFlightFramesTests {
    @Test func aPeerHasAtMostItsBoundOfFramesInFlightAndAReleaseMakesRoom() {
        let inFlight = InFlightFrames(maxFrames: 2, maxBytes: 1 << 20)
        let first = inFlight.acquire(peer: "node-a", bytes: 10)
        let second = inFlight.acquire(peer: "node-a", bytes: 10)
        #expect(first != nil && second != nil)
        #expect(inFlight.acquire(peer: "node-a", bytes: 10) == nil)
        // Another peer is not held back by this one.
        #expect(inFlight.acquire(peer: "node-b", bytes: 10) != nil)
        first?.release()
        first?.release()  // a second release changes nothing
        #expect(inFlight.count(peer: "node-a") == 1)
        #expect(inFlight.acquire(peer: "node-a", bytes: 10) != nil)
        #expect(inFlight.acquire(peer: "node-a", bytes: 10) == nil)
    }

    @Test func bytesInFlightAreBoundedButALoneLargeFrameStillPasses() {
        let inFlight = InFlightFrames(maxFrames: 100, maxBytes: 1000)
        let big = inFlight.acquire(peer: "node-a", bytes: 5000)
        #expect(big != nil)
        #expect(inFlight.acquire(peer: "node-a", bytes: 1) == nil)
        big?.release()
        let p = inFlight.acquire(peer: "node-a", bytes: 600)
        #expect(p != nil)
        #expect(inFlight.acquire(peer: "node-a", bytes: 600) == nil)
        #expect(inFlight.acquire(peer: "node-a", bytes: 400) != nil)
    }
}
