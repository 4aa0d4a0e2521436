import COpenSSL
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecureTransport
import Wire

/// What a flood of unauthenticated handshakes does to a listener's event loop, on loopback.
///
/// The listener runs on one loop of its own, as an agent's peer loop, and an authenticated peer
/// pings it over one connection every `pingInterval`; the reply is written from the listener's
/// loop, inline, as the membership protocol answers a probe. Meanwhile `attackers` tasks, each
/// from its own source address (127.0.0.10, .11, ...), open TCP connections and send a
/// ClientHello, the one message that makes a TLS 1.3 server generate a key share and sign
/// (no certificate needed): half abandon the connection at once, half stall with it open (up to
/// `stalledPerAttacker` each, the oldest closed to make room). The ClientHello is recorded once
/// and replayed, so the attacker spends almost nothing per connection.
///
/// Reported: round trips and how late a 10 ms timer on the listener's loop fires, before and
/// during the flood, and how many round trips exceeded the membership protocol's probe timeout
/// (100 ms by default). Figures, never assertions.
public struct HandshakeFloodBenchmark: Sendable {
    public struct Phase: Codable, Sendable {
        public var seconds: Double
        public var pings: Int
        public var pingsUnanswered: Int
        public var rttP50Milliseconds: Double
        public var rttP99Milliseconds: Double
        public var rttMaxMilliseconds: Double
        public var rttOverProbeTimeout: Int
        public var timerLateP50Milliseconds: Double
        public var timerLateP99Milliseconds: Double
        public var timerLateMaxMilliseconds: Double
        public var attackerConnections: Int
        /// CPU time the listener's loop thread used, per second of the phase: what the flood
        /// costs the loop itself, whatever else competes for the cores.
        public var listenerLoopCPUMillisecondsPerSecond: Double
        /// Fresh authenticated connections a legitimate peer opened (one every 200 ms, during
        /// the flood only), how many failed, and how long the rest took (TCP, TLS and Hello).
        public var legitimateConnects: Int
        public var legitimateConnectFailures: Int
        public var legitimateConnectP50Milliseconds: Double
        public var legitimateConnectMaxMilliseconds: Double
    }

    public struct Report: Codable, Sendable {
        public var offloadHandshakes: Bool
        public var admissionBounds: Bool
        public var attackers: Int
        public var baseline: Phase
        public var flood: Phase
    }

    public var attackers = 8
    public var seconds = 10.0
    public var baselineSeconds = 3.0
    public var stalledPerAttacker = 16
    public var pingInterval: Duration = .milliseconds(10)
    public var probeTimeout: Duration = .milliseconds(100)
    public var offloadHandshakes = true
    /// The listener's admission bounds at their defaults (loopback not exempt, since the
    /// attackers are on 127.0.0.x) and its accept loop; off, effectively unbounded and
    /// accepting on the listener's loop, as before they existed.
    public var admissionBounds = true
    public var certificateDirectory: String

    public init(certificateDirectory: String) { self.certificateDirectory = certificateDirectory }

    public func run() async throws -> Report {
        let dir = certificateDirectory
        if !FileManager.default.fileExists(atPath: "\(dir)/ca/ca.pem") {
            try CertificateIssuer.createCA(in: "\(dir)/ca")
            for n in ["bench-a", "bench-b"] {
                try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: n, server: true, in: "\(dir)/certs")
            }
        }
        func context(_ n: String) throws -> TLSContext {
            try TLSContext(
                configuration: .init(caFile: "\(dir)/ca/ca.pem", certificateFile: "\(dir)/certs/\(n).pem", keyFile: "\(dir)/certs/\(n)-key.pem"))
        }
        let listenerLoop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let others = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        do {
            let report = try await measure(listenerLoop: listenerLoop, others: others, a: try context("bench-a"), b: try context("bench-b"))
            try? await listenerLoop.shutdownGracefully()
            try? await others.shutdownGracefully()
            return report
        } catch {
            try? await listenerLoop.shutdownGracefully()
            try? await others.shutdownGracefully()
            throw error
        }
    }

    /// Round trips (ns) and timer lateness (ns) recorded as they happen.
    private final class Samples: Sendable {
        private struct State {
            var rtts: [Int64] = []
            var late: [Int64] = []
            var sent = 0
        }
        private let state = NIOLockedValueBox(State())
        func rtt(_ ns: Int64) { state.withLockedValue { $0.rtts.append(ns) } }
        func late(_ ns: Int64) { state.withLockedValue { $0.late.append(ns) } }
        func sent() { state.withLockedValue { $0.sent += 1 } }
        func take() -> (rtts: [Int64], late: [Int64], sent: Int) {
            state.withLockedValue { s in
                defer { s = State() }
                return (s.rtts, s.late, s.sent)
            }
        }
    }

    private func measure(
        listenerLoop: MultiThreadedEventLoopGroup, others: MultiThreadedEventLoopGroup,
        a: TLSContext, b: TLSContext
    ) async throws -> Report {
        let samples = Samples()
        let epoch = NIODeadline.now()
        let serverBox = NIOLockedValueBox<PeerTransport?>(nil)
        var options = PeerTransport.Options(exemptLoopbackFromPerSourceBounds: false, offloadHandshakes: offloadHandshakes)
        if !admissionBounds {
            // As before this work: no accept loop either.
            options.acceptOnOwnLoop = false
            options.maxHandshakes = 1 << 20
            options.maxHandshakesPerSource = 1 << 20
            options.handshakeRatePerSource = .infinity
        }
        let server = PeerTransport(
            group: listenerLoop.next(), tls: b, options: options,
            onFrame: { peer, frame in
                // Echo, written from the listener's loop as a probe's ack is.
                let transport = serverBox.withLockedValue { $0 }
                transport?.openChannel(toPeer: peer.name, address: nil)?.writeAndFlush(frame, promise: nil)
            })
        serverBox.withLockedValue { $0 = server }
        let port = try await server.listen(host: "127.0.0.1", port: 0).port!
        let client = PeerTransport(
            group: others.next(), tls: a,
            onFrame: { _, frame in
                var payload = frame.payload
                guard let sentAt = payload.readInteger(as: Int64.self) else { return }
                samples.rtt((NIODeadline.now() - epoch).nanoseconds - sentAt)
            })
        let channel = try await client.connection(toAddress: "127.0.0.1", port: port, expecting: "bench-b")

        // A timer on the listener's loop, as the membership protocol's next deadline.
        let tick = TimeAmount.milliseconds(10)
        let running = NIOLockedValueBox(true)
        let loop = listenerLoop.next()
        @Sendable func arm(_ due: NIODeadline) {
            loop.scheduleTask(deadline: due) {
                samples.late(max(0, (NIODeadline.now() - due).nanoseconds))
                if running.withLockedValue({ $0 }) { arm(due + tick) }
            }
        }
        loop.execute { arm(.now() + tick) }

        let pinger = Task {
            while !Task.isCancelled {
                var payload = ByteBuffer()
                payload.writeInteger((NIODeadline.now() - epoch).nanoseconds)
                channel.writeAndFlush(Frame(kind: .membership, payload: payload), promise: nil)
                samples.sent()
                try? await Task.sleep(for: pingInterval)
            }
        }

        @Sendable func loopCPU() async throws -> Double { try await loop.submit { Self.threadCPUMilliseconds() }.get() }
        let cpu0 = try await loopCPU()
        try await Task.sleep(for: .seconds(baselineSeconds))
        let cpu1 = try await loopCPU()
        let baseline = phase(samples.take(), seconds: baselineSeconds, connections: 0, loopCPU: cpu1 - cpu0)

        let hello = try Self.recordedClientHello(tls: a)
        let opened = NIOLockedValueBox(0)
        let deadline = ContinuousClock.now + .seconds(seconds)
        let legitHello = SecureChannel.hello(for: a, cluster: "", agentVersion: "bench")
        let legit = Task { () -> [Int64?] in
            var out: [Int64?] = []
            while ContinuousClock.now < deadline {
                let t0 = NIODeadline.now()
                do {
                    let (ch, auth) = try await ClientBootstrap(group: others)
                        .connectTimeout(.seconds(10))
                        .connect(host: "127.0.0.1", port: port) { ch in
                            ch.eventLoop.makeCompletedFuture {
                                (
                                    ch,
                                    try SecureChannel.configure(
                                        ch, tls: a, role: .client, expectedPeer: "bench-b", hello: legitHello,
                                        logger: .init(label: "bench"))
                                )
                            }
                        }
                    _ = try await auth.get()
                    out.append((NIODeadline.now() - t0).nanoseconds)
                    try? await ch.close()
                } catch {
                    out.append(nil)
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return out
        }
        opened.withLockedValue { $0 = 0 }
        let count = await Self.flood(
            port: port, hello: hello, attackers: attackers, until: deadline,
            stalledPerAttacker: stalledPerAttacker, group: others)
        opened.withLockedValue { $0 = count }
        let cpu2 = try await loopCPU()
        var flood = phase(samples.take(), seconds: seconds, connections: opened.withLockedValue { $0 }, loopCPU: cpu2 - cpu1)
        let connects = await legit.value
        flood.legitimateConnects = connects.count
        flood.legitimateConnectFailures = connects.filter { $0 == nil }.count
        let times = connects.compactMap { $0 }.sorted()
        flood.legitimateConnectP50Milliseconds = times.isEmpty ? 0 : Double(times[times.count / 2]) / 1e6
        flood.legitimateConnectMaxMilliseconds = times.isEmpty ? 0 : Double(times.last!) / 1e6

        pinger.cancel()
        running.withLockedValue { $0 = false }
        await client.shutdown()
        await server.shutdown()
        return Report(
            offloadHandshakes: offloadHandshakes, admissionBounds: admissionBounds, attackers: attackers,
            baseline: baseline, flood: flood)
    }

    static func threadCPUMilliseconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
    }

    private func phase(_ s: (rtts: [Int64], late: [Int64], sent: Int), seconds: Double, connections: Int, loopCPU: Double) -> Phase {
        func pct(_ xs: [Int64], _ p: Double) -> Double {
            guard !xs.isEmpty else { return 0 }
            let sorted = xs.sorted()
            return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]) / 1e6
        }
        let timeout = probeTimeout.nanosecondsClamped
        return Phase(
            seconds: seconds, pings: s.sent, pingsUnanswered: max(0, s.sent - s.rtts.count),
            rttP50Milliseconds: pct(s.rtts, 0.5), rttP99Milliseconds: pct(s.rtts, 0.99), rttMaxMilliseconds: pct(s.rtts, 1),
            rttOverProbeTimeout: s.rtts.filter { $0 > timeout }.count,
            timerLateP50Milliseconds: pct(s.late, 0.5), timerLateP99Milliseconds: pct(s.late, 0.99),
            timerLateMaxMilliseconds: pct(s.late, 1), attackerConnections: connections,
            listenerLoopCPUMillisecondsPerSecond: loopCPU / seconds,
            legitimateConnects: 0, legitimateConnectFailures: 0, legitimateConnectP50Milliseconds: 0, legitimateConnectMaxMilliseconds: 0)
    }

    /// A client's first flight (its ClientHello), from a session on memory BIOs. Replayed as is,
    /// it still makes the server do all its first-flight work: a key share of its own and a
    /// signature over the transcript.
    /// The flood itself: `attackers` tasks, each from its own source address (127.0.0.10, .11,
    /// ...), open TCP connections to `port` on loopback and send `hello` until `deadline`; half
    /// hang up at once, half stall (up to `stalledPerAttacker` each, the oldest closed to make
    /// room). Returns the connections opened. Used by the benchmark and by the agent's tests.
    public static func flood(
        port: Int, hello: ByteBuffer, attackers: Int, until deadline: ContinuousClock.Instant,
        stalledPerAttacker: Int, group: any EventLoopGroup
    ) async -> Int {
        let opened = NIOLockedValueBox(0)
        await withTaskGroup(of: Void.self) { tasks in
            for i in 0..<attackers {
                let source = "127.0.0.\(10 + i)"
                let keep = stalledPerAttacker
                tasks.addTask {
                    var stalled: [Channel] = []
                    var n = 0
                    while ContinuousClock.now < deadline {
                        n += 1
                        guard let local = try? SocketAddress(ipAddress: source, port: 0),
                            let ch = try? await ClientBootstrap(group: group).bind(to: local)
                                .connect(host: "127.0.0.1", port: port).get()
                        else {
                            try? await Task.sleep(for: .milliseconds(1))
                            continue
                        }
                        opened.withLockedValue { $0 += 1 }
                        ch.writeAndFlush(hello, promise: nil)
                        if n % 2 == 0 {
                            ch.close(promise: nil)
                        } else {
                            stalled.append(ch)
                            if stalled.count > keep { stalled.removeFirst().close(promise: nil) }
                        }
                    }
                    for ch in stalled { ch.close(promise: nil) }
                }
            }
        }
        return opened.withLockedValue { $0 }
    }

    /// The first flight of a TLS 1.3 client under `tls`: what makes a server generate a key share
    /// and sign, recorded once so a flood replays it for nothing.
    public static func recordedClientHello(tls: TLSContext) throws -> ByteBuffer {
        guard let ssl = SSL_new(tls.ctx), let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else {
            throw TLSError.contextSetup("cannot allocate a TLS session")
        }
        defer { SSL_free(ssl) }
        SSL_set_bio(ssl, r, w)
        SSL_set_connect_state(ssl)
        _ = SSL_do_handshake(ssl)
        let available = Int(ms_BIO_pending(w))
        guard available > 0 else { throw TLSError.contextSetup("no ClientHello produced") }
        var out = ByteBuffer()
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: available) { ptr in
            Int(max(0, BIO_read(w, ptr.baseAddress, Int32(available))))
        }
        return out
    }
}
