import Foundation
import Hummingbird
import Logging
import Membership
import NIOCore
import NIOPosix
import SecureTransport
import Wire

/// The composition root of one agent: TLS identity, the peer transport, membership, the HTTP
/// API. `start` returns once everything listens; `stop` leaves the cluster gracefully.
public final class AgentRuntime: AgentState, @unchecked Sendable {
    public let configuration: AgentConfiguration
    public let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let tls: TLSContext
    let transport: PeerTransport
    public let membership: MembershipService
    private var httpTask: Task<Void, Error>?
    /// The address the HTTP API listens on (port 0 in the configuration picks a free one).
    public private(set) var httpAddress: SocketAddress?
    public private(set) var peerAddress: SocketAddress?
    private let startedAt = ContinuousClock.now

    /// Builds the agent; throws `ConfigurationError` for anything an operator must fix.
    public init(configuration c: AgentConfiguration, logger: Logger) throws {
        configuration = c
        self.logger = logger
        do {
            tls = try TLSContext(configuration: TLSConfiguration(caFile: c.tlsCA, certificateFile: c.tlsCert, keyFile: c.tlsKey))
        } catch let e as TLSError {
            throw ConfigurationError("\(e)")
        }
        guard tls.identity.name == c.name else {
            throw ConfigurationError("--tls-cert: certificate \(c.tlsCert) names node \(tls.identity.name), but --name is \(c.name)")
        }
        if c.server, !tls.identity.isServer {
            throw ConfigurationError("--tls-cert: certificate \(c.tlsCert) is not a server certificate; make one with 'microscale tls cert create --server'")
        }
        do {
            try FileManager.default.createDirectory(atPath: c.dataDir, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError("--data-dir: cannot create \(c.dataDir): \(error.localizedDescription)")
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(2, System.coreCount)))
        let box = MembershipBox()
        transport = PeerTransport(
            group: group, tls: tls,
            options: .init(cluster: c.cluster, agentVersion: MicroscaleVersion.current),
            logger: logger,
            onFrame: { peer, frame in
                switch frame.kind {
                case .membership:
                    if let m = box.service { Task { await m.receive(frame, from: peer) } }
                default:
                    break
                }
            })
        let record = NodeRecord(
            name: c.name, address: c.advertise.description, role: c.server ? .server : .client,
            capacity: Membership.Resources(cpuMillicores: c.capacityCPUMillis ?? Int64(System.coreCount) * 1000,
                                           memoryBytes: c.capacityMemoryBytes ?? Int64(ProcessInfo.processInfo.physicalMemory)),
            agentVersion: MicroscaleVersion.current)
        var seed = SystemRandomNumberGenerator()
        do {
            membership = try MembershipService(record: record, seed: seed.next(), transport: transport, logger: logger)
        } catch {
            throw ConfigurationError("node record: \(error)")
        }
        box.service = membership
        let service = membership
        transport.onConnectionLost { address in Task { await service.connectionLost(address) } }
        transport.onPeerConnectionLost { name in Task { await service.peerConnectionLost(name) } }
    }

    /// Listens on the peer and HTTP addresses and joins the cluster.
    public func start() async throws {
        let c = configuration
        do {
            peerAddress = try await transport.listen(host: c.bind.host, port: c.bind.port)
        } catch {
            throw ConfigurationError("--bind: cannot listen on \(c.bind): \(error)")
        }
        let bound = AsyncStream.makeStream(of: SocketAddress?.self)
        let app = Application(
            router: HTTPAPI.router(state: self, token: c.apiToken),
            configuration: .init(address: .hostname(c.http.host, port: c.http.port), serverName: "microscale"),
            onServerRunning: { channel in bound.continuation.yield(channel.localAddress) },
            eventLoopGroupProvider: .shared(group),
            logger: logger)
        httpTask = Task {
            // If the server cannot bind, run() throws before anything was yielded.
            defer { bound.continuation.yield(nil) }
            try await app.run()
        }
        var first: SocketAddress?
        for await a in bound.stream {
            first = a
            break
        }
        guard let address = first else {
            await transport.shutdown()
            throw ConfigurationError("--http: cannot listen on \(c.http)")
        }
        httpAddress = address
        logger.info("agent running", metadata: [
            "name": "\(c.name)", "bind": "\(peerAddress.map { "\($0)" } ?? "")", "http": "\(address)",
            "role": "\(c.server ? "server" : "client")",
        ])
        await membership.start(join: c.join.map(\.description))
    }

    /// Leaves the cluster gracefully and stops everything.
    public func stop() async {
        await membership.leave()
        await shutdown()
    }

    /// Stops without telling anyone (as a crash would, but closing sockets cleanly).
    public func shutdown() async {
        await membership.stop()
        httpTask?.cancel()
        _ = try? await httpTask?.value
        await transport.shutdown()
        try? await group.shutdownGracefully()
    }

    public func members() async -> [MemberView] { await membership.members() }

    public func selfView() async -> AgentSelfView {
        let (messages, bytes) = await membership.traffic()
        return AgentSelfView(name: configuration.name, version: MicroscaleVersion.current, server: configuration.server,
                             uptimeSeconds: Double((ContinuousClock.now - startedAt).nanosecondsSinceZero) / 1e9,
                             gossipMessagesSent: messages, gossipBytesSent: bytes)
    }
}

/// Lets the transport's frame handler, made before the membership service, reach it.
private final class MembershipBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _service: MembershipService?
    var service: MembershipService? {
        get { lock.withLock { _service } }
        set { lock.withLock { _service = newValue } }
    }
}

extension Duration {
    var nanosecondsSinceZero: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
