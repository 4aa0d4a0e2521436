import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SecureTransport
import Wire

/// Measures the transport on loopback: authenticated connections per second (TCP + TLS 1.3
/// mutual handshake + Hello), frame throughput over one connection, and LZ4 on a realistic
/// push-pull payload. Used by `microscale-bench transport`; figures, never assertions.
public struct TransportBenchmark: Sendable {
    public struct Report: Codable, Sendable {
        public var handshakes: Int
        public var handshakeConcurrency: Int
        public var handshakesPerSecond: Double
        public var frameBytes: Int
        public var frames: Int
        public var megabytesPerSecond: Double
        public var framesPerSecond: Double
        public var nodeStatePayloadBytes: Int
        public var nodeStateCompressedBytes: Int
        public var lz4Ratio: Double
        /// Records signed by their owners (docs/ARCHITECTURE.md, "Records are signed"): one
        /// ECDSA P-256 signature of a record, one check of it at another node (certificate
        /// cached, as after the first record from a member), the proof's bytes in a record, and
        /// the push-pull above with every record carrying its owner's certificate and signatures.
        public var recordSignMicroseconds: Double
        public var recordVerifyMicroseconds: Double
        public var recordProofBytes: Int
        public var nodeStateSignedPayloadBytes: Int
        public var nodeStateSignedCompressedBytes: Int
    }

    public var handshakes = 2000
    public var concurrency = 16
    /// Dials in flight at most (the listener's per-peer bound is set one above it).
    public static let maxConcurrency = 1024
    public var frames = 400_000
    public var frameBytes = 1024
    public var members = 50
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
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        do {
            let report = try await measure(group: group, a: try context("bench-a"), b: try context("bench-b"))
            try? await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func measure(group: MultiThreadedEventLoopGroup, a: TLSContext, b: TLSContext) async throws -> Report {

        let received = NIOLockedValueBox(0)
        // Every dial comes from the one client certificate: the agent's bound of 4 connections
        // per peer closed the 5th of 16 in flight ("Already closed"). The benchmark measures
        // handshakes, not that bound, and the per-source bounds stay as the agent has them.
        let server = PeerTransport(
            group: group, tls: b, options: PeerTransport.Options(maxConnectionsPerPeer: max(4, min(concurrency, Self.maxConcurrency) + 1)),
            onFrame: { _, f in
                received.withLockedValue { $0 += f.payload.readableBytes }
            })
        let port = try await server.listen(host: "127.0.0.1", port: 0).port!

        // Handshakes: fresh authenticated connections, `concurrency` at a time.
        let hello = SecureChannel.hello(for: a, cluster: "", agentVersion: "bench")
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            var issued = 0
            func connectOnce() async throws {
                let (ch, auth) = try await ClientBootstrap(group: group)
                    .connect(host: "127.0.0.1", port: port) { ch in
                        ch.eventLoop.makeCompletedFuture {
                            (
                                ch,
                                try SecureChannel.configure(
                                    ch, tls: a, role: .client, expectedPeer: "bench-b", hello: hello, logger: .init(label: "bench"))
                            )
                        }
                    }
                _ = try await auth.get()
                try await ch.close()
            }
            while issued < min(concurrency, handshakes) {
                tasks.addTask { try await connectOnce() }
                issued += 1
            }
            while try await tasks.next() != nil {
                if issued < handshakes {
                    tasks.addTask { try await connectOnce() }
                    issued += 1
                }
            }
        }
        let handshakeSeconds = Double((ContinuousClock.now - start).nanosecondsClamped) / 1e9

        // Throughput: 1 KiB frames of incompressible bytes over one connection.
        let client = PeerTransport(group: group, tls: a, onFrame: { _, _ in })
        let channel = try await client.connection(toAddress: "127.0.0.1", port: port, expecting: "bench-b")
        var rng = SystemRandomNumberGenerator()
        let payload = ByteBuffer(bytes: (0..<frameBytes).map { _ in UInt8.random(in: 0...255, using: &rng) })
        let frame = Frame(kind: .raft, payload: payload)
        received.withLockedValue { $0 = 0 }
        let total = frames * frameBytes
        let t0 = ContinuousClock.now
        let batch = 256
        var sent = 0
        while sent < frames {
            let n = min(batch, frames - sent)
            // One future per batch keeps memory bounded: the next batch waits for the socket.
            let done = channel.eventLoop.makePromise(of: Void.self)
            channel.eventLoop.execute {
                for i in 0..<n { channel.write(frame, promise: i == n - 1 ? done : nil) }
                channel.flush()
            }
            try await done.futureResult.get()
            sent += n
        }
        while received.withLockedValue({ $0 }) < total {
            try await Task.sleep(for: .milliseconds(1))
        }
        let seconds = Double((ContinuousClock.now - t0).nanosecondsClamped) / 1e9
        await client.shutdown()
        await server.shutdown()

        let (raw, compressed) = try Self.nodeStatePayload(members: members)
        let signatures = try Self.signatureFigures(
            signer: NodeSignatures(context: a), checker: NodeSignatures(context: b),
            name: a.identity.name)
        let (signedRaw, signedCompressed) = try Self.nodeStatePayload(members: members, proofOf: NodeSignatures(context: a))
        return Report(
            handshakes: handshakes, handshakeConcurrency: concurrency,
            handshakesPerSecond: Double(handshakes) / handshakeSeconds,
            frameBytes: frameBytes, frames: frames,
            megabytesPerSecond: Double(total) / seconds / 1_000_000,
            framesPerSecond: Double(frames) / seconds,
            nodeStatePayloadBytes: raw, nodeStateCompressedBytes: compressed,
            lz4Ratio: Double(raw) / Double(compressed),
            recordSignMicroseconds: signatures.sign, recordVerifyMicroseconds: signatures.verify,
            recordProofBytes: signatures.proofBytes,
            nodeStateSignedPayloadBytes: signedRaw, nodeStateSignedCompressedBytes: signedCompressed)
    }

    /// Median of 2,000 signatures and 2,000 checks of a 300-byte record (after one check that
    /// verifies and caches the certificate).
    static func signatureFigures(signer: NodeSignatures, checker: NodeSignatures, name: String) throws
        -> (sign: Double, verify: Double, proofBytes: Int)
    {
        let message = [UInt8](repeating: 0x5a, count: 300)
        var signs: [Double] = [], checks: [Double] = []
        var signature = signer.sign(message)
        guard checker.refusal(name: name, certificate: signer.certificate, signature: signature, message: message) == nil else {
            throw TLSError.contextSetup("a benchmark signature did not verify")
        }
        for i in 0..<2000 {
            var m = message
            m[0] = UInt8(truncatingIfNeeded: i)
            let t0 = ContinuousClock.now
            signature = signer.sign(m)
            let t1 = ContinuousClock.now
            let refused = checker.refusal(name: name, certificate: signer.certificate, signature: signature, message: m)
            let t2 = ContinuousClock.now
            if refused != nil { throw TLSError.contextSetup("a benchmark signature did not verify: \(refused!)") }
            signs.append(Double((t1 - t0).nanosecondsClamped) / 1000)
            checks.append(Double((t2 - t1).nanosecondsClamped) / 1000)
        }
        signs.sort()
        checks.sort()
        // Certificate, record signature and incarnation signature, with their protobuf tags.
        return (signs[signs.count / 2], checks[checks.count / 2], signer.certificate.count + 2 * signature.count + 9)
    }

    /// A push-pull as a 50-node cluster sends it: every member's record with ~20 services.
    public static func nodeStatePayload(members: Int, proofOf signer: NodeSignatures? = nil) throws -> (raw: Int, compressed: Int) {
        var pp = Microscale_Membership_PushPull()
        let services = [
            "web", "api", "checkout", "search", "batch-orders", "video-encode", "thumbnails", "reports",
            "mailer", "etl", "cache-warm", "indexer", "ml-train", "billing", "auth", "gateway",
            "recommend", "inventory", "notify", "audit",
        ]
        for i in 0..<members {
            var r = Microscale_Membership_NodeRecord()
            r.name = "node-\(i)"
            r.address = "10.0.\(i / 250).\(i % 250 + 1):7480"
            r.role = i < 3 ? .server : .client
            r.capacity.cpuMillicores = 16_000
            r.capacity.memoryBytes = 64 << 30
            r.reserved.cpuMillicores = Int64(8_000 + (i * 337) % 7_000)
            r.reserved.memoryBytes = Int64(20 + i % 30) << 30
            for (j, svc) in services.enumerated() where (i + j) % 3 != 0 { r.running[svc] = Int64((i * 7 + j * 3) % 12) }
            r.agentVersion = "0.1.0"
            r.version = UInt64(1000 + i * 13)
            if let signer {
                // Each record's own bytes signed: the signatures differ per record, as they do.
                r.certificate = Data(signer.certificate)
                r.signature = Data(signer.sign(try r.serializedBytes()))
                r.provenIncarnation = UInt64(i % 4)
                r.incarnationSignature = Data(signer.sign(Array(r.name.utf8)))
            }
            var m = Microscale_Membership_MemberState()
            m.incarnation = UInt64(i % 4)
            m.status = .alive
            m.record = r
            pp.states.append(m)
        }
        let bytes: [UInt8] = try pp.serializedBytes()
        let compressed = LZ4.compress(ByteBuffer(bytes: bytes))?.readableBytes ?? bytes.count
        return (bytes.count, compressed + 4)
    }
}
