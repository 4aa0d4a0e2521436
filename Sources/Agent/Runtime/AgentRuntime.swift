import Bounds
import Consensus
import ControlPlane
import DockerEngine
import Foundation
import Hummingbird
import Logging
import Membership
import NIOCore
import NIOPosix
import SecureTransport
import Synchronization
import Wire

/// The composition root of one agent: TLS identity, the peer transport, membership, the HTTP
/// API. `start` returns once everything listens; `stop` leaves the cluster gracefully.
public final class AgentRuntime: AgentState, @unchecked Sendable {
    /// As resolved at start, with the keys a reload applied since (`reloadConfiguration`).
    public var configuration: AgentConfiguration { configurationLock.withLock { _configuration } }
    private var _configuration: AgentConfiguration
    private let configurationLock = NSLock()
    public let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let tls: TLSContext
    let transport: PeerTransport
    public let membership: MembershipService
    /// Raft, on servers only.
    public let raft: RaftService?
    public let clusterAPI: ClusterAPI
    public let assignments: AssignmentService
    public let executor: NodeExecutor
    /// The leader's decision loop, on servers.
    public let decisions: DecisionLoop?
    public let metrics = AgentMetrics()
    /// Blocking queries on every service's endpoints, from the members' gossiped records.
    public let endpointsWatch: EndpointsWatch
    /// What the trust rules refused (docs/ARCHITECTURE.md, "Trust"), counted and logged.
    public let refusals: Refusals
    /// Each peer's role as its certificate says: the only source of which nodes are servers.
    public let roles: CertifiedRoles
    private var statusHistory: StatusHistory?
    private let historyLock = NSLock()
    private let shutDownStarted = Atomic<Bool>(false)
    private var httpTask: Task<Void, Error>?
    /// The address the HTTP API listens on (port 0 in the configuration picks a free one).
    public private(set) var httpAddress: SocketAddress?
    public private(set) var peerAddress: SocketAddress?
    /// The agent's one clock (docs/ARCHITECTURE.md, "Time"): handed to the scheduling shells,
    /// which pass its readings to the control plane as `now`.
    public let clock: AgentClock
    private let startedAt: Duration
    private let stoppedStream = AsyncStream.makeStream(of: Void.self)
    private let failure = Mutex<String?>(nil)
    private var hangups: (any DispatchSourceSignal)?

    /// Builds the agent; throws `ConfigurationError` for anything an operator must fix.
    public init(configuration c: AgentConfiguration, logger: Logger, clock: AgentClock = .system()) throws {
        _configuration = c
        self.clock = clock
        startedAt = clock.now
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
            throw ConfigurationError(
                "--tls-cert: certificate \(c.tlsCert) is not a server certificate; make one with 'microscale tls cert create --server'")
        }
        do {
            try DataDirectory.prepare(c.dataDir)
        } catch {
            throw ConfigurationError("--data-dir: cannot create \(c.dataDir): \(error.localizedDescription)")
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, min(2, System.coreCount)))
        // Peer connections, dialed or accepted, live on one loop, and the membership actor runs on
        // it too: a probe, its ack and the gossip they carry never cross threads. With connections
        // spread over both loops every message woke the other thread (an eventfd write and a
        // context switch each way), which was most of an idle agent's CPU. The HTTP API keeps the
        // whole group.
        let peerLoop = group.next()
        let box = ServiceBox()
        let refusals = Refusals(logger: logger)
        self.refusals = refusals
        let roles = CertifiedRoles(own: tls.identity)
        self.roles = roles
        // A task per Raft or control frame must not let one peer queue work without bound.
        let inFlight = InFlightFrames()
        transport = PeerTransport(
            group: peerLoop, tls: tls,
            options: .init(cluster: c.cluster, agentVersion: MicroscaleVersion.current),
            logger: logger,
            onFrame: { peer, frame in
                roles.saw(peer)
                switch frame.kind {
                case .membership:
                    // In arrival order, on the membership service's loop (a Task per frame would
                    // let a stale suspicion overtake its refutation).
                    box.membership?.deliver(frame, from: peer)
                case .raft:
                    // Raft tolerates reordering (Raft §5.3), and a Task per frame lets many frames
                    // queue on the actor before its next Ready, which is where batching comes from.
                    if let r = box.raft {
                        guard let permit = inFlight.acquire(peer: peer.name, bytes: frame.payload.readableBytes) else { return }
                        Task {
                            await r.receive(frame, from: peer)
                            permit.release()
                        }
                    } else {
                        refusals.refuse(.raftToClientAgent, peer: peer.name, "a raft frame; client agents run no Raft")
                    }
                case .control:
                    let message: Microscale_Control_ControlMessage
                    do { message = try frame.decode(Microscale_Control_ControlMessage.self) } catch {
                        logger.warning("dropping control frame", metadata: ["peer": "\(peer.name)", "error": "\(error)"])
                        return
                    }
                    guard let permit = inFlight.acquire(peer: peer.name, bytes: frame.payload.readableBytes) else { return }
                    switch message.body {
                    case .apiRequest, .forwardRequest, .forwardResponse:
                        if let a = box.api {
                            Task {
                                await a.receive(message, from: peer)
                                permit.release()
                            }
                        } else {
                            permit.release()
                        }
                    case .bootstrapProposal, .bootstrapReply:
                        if let r = box.raft {
                            Task {
                                await r.receive(bootstrap: message, from: peer)
                                permit.release()
                            }
                        } else {
                            permit.release()
                        }
                    default:
                        if let a = box.assignments {
                            Task {
                                await a.receive(message, from: peer)
                                permit.release()
                            }
                        } else {
                            permit.release()
                        }
                    }
                default:
                    break
                }
            })
        var record = NodeRecord(
            name: c.name, address: c.advertise.description, role: c.server ? .server : .client,
            capacity: Self.fallbackCapacity(c),
            agentVersion: MicroscaleVersion.current)
        record.labels = c.nodeLabels
        var seed = SystemRandomNumberGenerator()
        do {
            var membershipConfiguration = MembershipConfiguration.lan
            membershipConfiguration.maxMembers = c.maxMembers
            membership = try MembershipService(
                configuration: membershipConfiguration, record: record, seed: seed.next(),
                authenticator: CertificateRecordAuthenticator(try NodeSignatures(current: { [transport] in transport.tlsContext })),
                transport: transport, eventLoop: peerLoop, logger: logger, clock: clock)
        } catch {
            throw ConfigurationError("node record: \(error)")
        }
        box.membership = membership
        let service0 = membership
        let watch = EndpointsWatch { await service0.members() }
        endpointsWatch = watch
        let service = membership
        // Alive servers and where to reach them, for Raft (its bootstrap voters, where it sends),
        // for forwarding API requests (with the operator's token, from a client) and for the
        // assignment subscription. Which members are servers is what their certificates said on a
        // connection with this agent, never the role their gossiped record claims: a client's
        // record saying "server" would otherwise make it a bootstrap voter, a forwarding target
        // handed the operator's token, or the upstream whose pushes a client follows.
        let servers: @Sendable () async -> [String: String] = {
            var book: [String: String] = [:]
            for m in await service.members() where roles.isServer(m.name) && (m.status == .alive || m.status == .suspect) {
                book[m.name] = m.address
            }
            return book
        }
        if c.server {
            var options = RaftService.Options()
            options.bootstrapExpect = c.bootstrapExpect
            options.electionTimeout = c.raftElectionTimeout
            options.heartbeatInterval = c.raftHeartbeat
            options.autopilot.deadServerCleanup = c.deadServerCleanup
            options.autopilot.stabilizationTime = c.serverStabilizationTime
            do {
                raft = try RaftService(
                    name: c.name, dataDir: c.dataDir, options: options, transport: transport,
                    logger: logger, seed: seed.next(), refusals: refusals, clock: clock, servers: servers)
            } catch {
                throw ConfigurationError("--data-dir: cannot open the Raft log in \(c.dataDir): \(error)")
            }
        } else {
            raft = nil
        }
        box.raft = raft
        clusterAPI = ClusterAPI(
            name: c.name, raft: raft, transport: transport, logger: logger, apiToken: c.apiToken,
            refusals: refusals, clock: clock, servers: servers)
        box.api = clusterAPI
        executor = NodeExecutor(
            node: c.name, dockerHost: c.dockerSocket, registryAuth: c.registryAuth,
            advertisesIPv6: c.advertise.host.contains(":"), logger: logger,
            report: { [logger] serving in
                do {
                    try await service.updateRecord {
                        $0.running = serving.running
                        $0.rollouts = serving.rollouts
                        $0.endpoints = serving.endpoints
                    }
                } catch {
                    // The record's size bound (2 KiB, gossiped to everyone) holds a few hundred
                    // endpoints; past it the counts still go out, and the endpoints are left out.
                    logger.warning(
                        "this node's endpoints do not fit its record; gossiping its counts without them",
                        metadata: ["reason": "\(error)"])
                    try? await service.updateRecord {
                        $0.running = serving.running
                        $0.rollouts = serving.rollouts
                        $0.endpoints = [:]
                    }
                }
            },
            reportImageFailures: { failures in
                // The record is at most 2 KiB (NodeRecordLimits): failures give way to what runs.
                try? await service.updateRecord { r in
                    r.imageFailures = failures
                    while r.contentSize > NodeRecordLimits.standard.maxEncodedBytes, let k = r.imageFailures.keys.max() {
                        r.imageFailures[k] = nil
                    }
                }
            },
            reportHealth: { starting, unhealthy in
                try? await service.updateRecord {
                    $0.starting = starting
                    $0.unhealthy = unhealthy
                }
            },
            clock: clock)
        let executor = self.executor
        // Where a server sends a changed deny list: every member it sees alive or suspect.
        let reachable: @Sendable () async -> [String: String] = {
            var book: [String: String] = [:]
            for m in await service.members() where m.status == .alive || m.status == .suspect { book[m.name] = m.address }
            return book
        }
        let subscriber = AssignmentService(
            name: c.name, raft: raft, transport: transport, logger: logger, refusals: refusals, clock: clock, seed: seed.next(),
            servers: servers, members: reachable
        ) { a in
            await executor.assign(a)
        }
        assignments = subscriber
        box.assignments = subscriber
        // A member change may take away the server this agent follows, or bring a first one.
        membership.onMembersChanged {
            Task { await watch.changed() }
            Task { await subscriber.membersChanged() }
        }
        let latency = metrics.decisionLatency
        decisions = raft.map {
            DecisionLoop(raft: $0, membership: service, logger: logger, latency: latency, deadNodeGrace: c.deadNodeGrace, clock: clock)
        }
        let api = clusterAPI
        let consensus = raft
        transport.onConnectionLost { address in
            Task { await service.connectionLost(address) }
            Task { await api.connectionLost(address) }
            if let consensus { Task { await consensus.connectionLost(address) } }
        }
        // A connection is shared by both ends (whoever dialed it), so a lost accepted connection is
        // reported by the peer's name.
        transport.onPeerConnectionLost { name in
            Task { await service.peerConnectionLost(name) }
            Task { await subscriber.peerConnectionLost(name) }
            Task { await api.peerConnectionLost(name) }
            if let consensus { Task { await consensus.peerConnectionLost(name) } }
        }
    }

    /// Listens on the peer and HTTP addresses and joins the cluster.
    public func start() async throws {
        let service = membership
        let c = configuration
        do {
            peerAddress = try await transport.listen(host: c.bind.host, port: c.bind.port)
        } catch {
            throw ConfigurationError("--bind: cannot listen on \(c.bind): \(error)")
        }
        let bound = AsyncStream.makeStream(of: SocketAddress?.self)
        let app = Application(
            // Besides loopback and the address a request arrives at, the names this agent is
            // configured under: `--http` (a name as well as an address) and `--advertise`.
            router: HTTPAPI.router(state: self, token: c.apiToken, hosts: AcceptedHosts([c.http.host, c.advertise.host])),
            configuration: .init(address: .hostname(c.http.host, port: c.http.port), serverName: "microscale"),
            onServerRunning: { channel in bound.continuation.yield(channel.localAddress) },
            // NIO's singleton group, never shut down, not the agent's own: Hummingbird's server
            // (its quiescing helper) may be released after `app.run()` returns, when its task is
            // destroyed, and then fails a promise on its loop; on the agent's group, already
            // shut down by `shutdown()`, that was a crash (seen once in CI, BootstrapTogetherTests,
            // starting and stopping four agents fifty times).
            eventLoopGroupProvider: .singleton,
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
        logger.info(
            "agent running",
            metadata: [
                "name": "\(c.name)", "bind": "\(peerAddress.map { "\($0)" } ?? "")", "http": "\(address)",
                "role": "\(c.server ? "server" : "client")",
            ])
        if c.capacityCPUMillis == nil || c.capacityMemoryBytes == nil { await detectCapacity() }
        await membership.start(join: c.join.map(\.description))
        if let raft {
            // What gossip says of every member, with the role its certificate gave it here.
            let roles = self.roles
            await raft.setMemberHealth {
                var out: [String: RaftService.MemberHealth] = [:]
                for m in await service.members() {
                    let health = Autopilot.Health(m.status)
                    out[m.name] = RaftService.MemberHealth(health: health, address: m.address, isServer: roles.isServer(m.name))
                }
                return out
            }
            let a = assignments
            let loop = decisions
            let peers = transport
            // A member's death (or return) changes the plan's nodes: plan now, not at the next look.
            service.onMemberStatusChanged { Task { await loop?.poke() } }
            await raft.onApply { state in
                // The replicated deny list (docs/ARCHITECTURE.md, "Trust"), enforced at once.
                peers.setDenied(Set(state.deniedNodes))
                await a.planApplied(state)
                await loop?.poke()
            }
            // A Raft that cannot write its log stops the agent (RaftService.onFailStop): its peers
            // then see it gone, the leader moves its work, and its clients follow another server.
            await raft.onFailStop { [weak self] reason in
                guard let self else { return }
                self.failure.withLock { $0 = reason }
                Task { await self.shutdown() }
            }
            await raft.start()
        }
        let decisionLoop = decisions
        let roles = self.roles
        await clusterAPI.setClusterName(c.cluster)
        await clusterAPI.setStatusSources(
            members: { Self.certified(await service.members(), roles) },
            demand: { await decisionLoop?.demandInUse ?? [:] })
        await clusterAPI.setUtilizationSource { window in await decisionLoop?.utilizationSummary(window: window) }
        await executor.setStandby(c.standby)
        await executor.setWarmStandbyMemory(c.warmStandbyMemoryBytes)
        await executor.start()
        await assignments.start()
        await decisions?.start()
    }

    /// SIGHUP: reads the certificate, key and CA bundle again; new connections use them, open ones
    /// keep theirs. A certificate for another node or role, or files that do not load, leave the
    /// old ones in place and say why.
    public func reloadTLS() throws {
        let c = configuration
        let fresh: TLSContext
        do {
            fresh = try TLSContext(configuration: TLSConfiguration(caFile: c.tlsCA, certificateFile: c.tlsCert, keyFile: c.tlsKey))
        } catch let e as TLSError {
            throw ConfigurationError("reload: \(e)")
        }
        do { try transport.reload(fresh) } catch { throw ConfigurationError("reload: \(error)") }
        // Our gossiped record carries the certificate and is signed by its key: sign it again.
        Task { [membership] in await membership.refreshRecordProof() }
        logger.info(
            "TLS certificate reloaded",
            metadata: [
                "serial": "\(fresh.serial)",
                "expires": "\(Date(timeIntervalSince1970: fresh.notAfter))",
            ])
    }

    /// On every SIGHUP (`microscale agent` installs this; a SIGHUP no longer ends the agent):
    /// reloads the TLS files, then, with `--config FILE`, reads the configuration again
    /// (`reread`: the file under the flags, checked as at start) and applies its reloadable keys.
    public func reloadOnHangup(configurationFile: String? = nil, reread: (@Sendable () throws -> AgentConfiguration)? = nil) {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { [weak self] in
            guard let self else { return }
            self.logger.info("SIGHUP: reloading the TLS certificate, key and CA bundle")
            do { try self.reloadTLS() } catch { self.logger.error("\(error); the previous certificate stays in use") }
            guard let configurationFile, let reread else { return }
            let fresh: AgentConfiguration
            do { fresh = try reread() } catch {
                // ConfigurationError names the key and its line (AgentSettings.resolve).
                self.logger.error("SIGHUP: configuration not reloaded, nothing changed: \(error)")
                return
            }
            Task { await self.reloadConfiguration(fresh, from: configurationFile) }
        }
        source.resume()
        historyLock.withLock { hangups = source }
    }

    /// Applies what can change at runtime of `fresh` (docs/operations.md, "Reloading the
    /// configuration"; `ConfigurationReload` decides which keys) and names in one line the keys
    /// that changed but need a restart. Returns what it did.
    @discardableResult
    public func reloadConfiguration(_ fresh: AgentConfiguration, from file: String = "--config") async -> ConfigurationReload {
        let reload = configurationLock.withLock {
            let r = ConfigurationReload(old: _configuration, new: fresh)
            _configuration = r.configuration
            return r
        }
        let c = reload.configuration
        let applied = Set(reload.applied)
        if !applied.isDisjoint(with: ["log-level", "log-format"]) {
            LogControl.shared.set(level: Logger.Level(rawValue: c.logLevel) ?? .info, format: c.logFormat)
        }
        if !applied.isDisjoint(with: ["capacity-cpu", "capacity-memory", "reserve-cpu", "reserve-memory"]) {
            await refreshCapacity()
        }
        if applied.contains("dead-node-grace") { await decisions?.setDeadNodeGrace(c.deadNodeGrace) }
        if applied.contains("node-label") {
            let labels = c.nodeLabels
            try? await membership.updateRecord { $0.labels = labels }
        }
        if !applied.isDisjoint(with: ["dead-server-cleanup", "server-stabilization-time"]) {
            await raft?.setAutopilot(deadServerCleanup: c.deadServerCleanup, stabilizationTime: c.serverStabilizationTime)
        }
        if !reload.needRestart.isEmpty {
            logger.warning(
                "configuration reload: \(file) changes \(reload.needRestart.joined(separator: ", ")), which need a restart; their running values stay until then"
            )
        }
        logger.info(
            "configuration reloaded",
            metadata: [
                "file": "\(file)", "applied": "\(reload.applied.isEmpty ? "nothing changed" : reload.applied.joined(separator: ", "))",
            ])
        return reload
    }

    /// Capacity again after a reload changed the overrides or the reserve: detected when an
    /// override is missing, as at start; the new figure goes out in this node's record.
    private func refreshCapacity() async {
        let c = configuration
        if c.capacityCPUMillis == nil || c.capacityMemoryBytes == nil {
            await detectCapacity()
        } else {
            let capacity = Self.resources(NodeCapacity(cpus: 0, memoryBytes: 0), c)
            try? await membership.updateRecord { $0.capacity = capacity }
        }
    }

    /// `POST /v1/agent/leave` (`microscale leave`): leaves the Raft configuration (a server), then
    /// the cluster, and stops; the process exits once `stopped` returns.
    public func leave() async -> APIResponse {
        await leaveRaft()
        Task {
            // After the answer has gone out: stopping closes the HTTP server too.
            try? await Task.sleep(for: .milliseconds(200))
            await self.stop()
        }
        return .json(["left": configuration.name])
    }

    /// `microscale force-leave NODE`: a member this agent sees dead is marked left, and gossip
    /// carries it to every member (docs/consensus.md, "Server membership").
    public func forceLeave(_ member: String) async -> APIResponse {
        switch await membership.forceLeave(member) {
        case nil: return .error(404, "no member named \(member.prefix(64))")
        case "dead": return .json(["node": member, "status": "left"])
        case let status?: return .error(409, "\(member) is \(status) here, not dead: only a failed member can be forced out")
        }
    }

    /// Returns once the agent stopped after a `leave`.
    public func stopped() async {
        for await _ in stoppedStream.stream { return }
    }

    /// A server's part of leaving (docs/consensus.md, "Server membership"): if it leads, it hands
    /// leadership to another voter first (thesis §3.10), so no write waits out an election; then
    /// the leader removes it from the configuration, so the quorum no longer counts it. Bounded:
    /// with no leader to ask it gives up after 10 s, and the autopilot removes it later.
    func leaveRaft() async {
        guard let raft, let status = await raft.status() else { return }
        let others = status.voters.filter { $0 != configuration.name }
        guard !others.isEmpty else { return }  // the only voter: there is no one to hand off to
        let deadline = clock.now + .seconds(10)
        if await raft.isLeader {
            do { try await raft.transferLeadership() } catch {
                logger.warning("could not hand leadership off before leaving: \(error)")
            }
        }
        while clock.now < deadline {
            let r = await clusterAPI.handle(.removeRaftPeer(configuration.name, leaving: true))
            if r.status == 200 {
                logger.info("left the Raft configuration")
                return
            }
            if r.status == 404 { return }  // not a member (any more)
            try? await Task.sleep(for: .milliseconds(100))
        }
        logger.warning("could not leave the Raft configuration within 10 s; the leader's autopilot will remove this server")
    }

    /// Until the Engine has been asked (and if it cannot be): this machine's cores and memory as
    /// this process sees them, lowered by its own cgroup's limits, less the reserve.
    static func fallbackCapacity(_ c: AgentConfiguration) -> Membership.Resources {
        let own = CapacityDetection.readCgroupLimits()
        let offered = CapacityDetection.offered(
            engineCPUs: System.coreCount, engineMemory: Int64(clamping: ProcessInfo.processInfo.physicalMemory),
            cgroupCPUs: own.cpus, cgroupMemory: own.memory,
            reserveCPUs: Double(c.reserveCPUMillis) / 1000, reserveMemory: c.reserveMemoryBytes)
        return resources(offered, c)
    }

    /// Millicores and bytes within the node limits (the Engine's figures come from outside), the
    /// operator's --capacity-* as given, less the warm standbys' memory (--warm-standby-memory):
    /// a paused standby holds its memory though the plan counts it nowhere (docs/scheduling.md,
    /// "Warm standbys"). Its CPU is not taken out: a frozen container uses none.
    static func resources(_ n: NodeCapacity, _ c: AgentConfiguration) -> Membership.Resources {
        let millis = n.cpus * 1000
        let cpu = millis.isFinite && millis > 0 ? Int64(min(millis.rounded(.down), Double(Limits.maxNodeCPUMillicores))) : 0
        let memory = c.capacityMemoryBytes ?? min(max(0, n.memoryBytes), Limits.maxNodeMemoryBytes)
        return Membership.Resources(
            cpuMillicores: c.capacityCPUMillis ?? cpu, memoryBytes: max(0, memory - c.warmStandbyMemoryBytes))
    }

    /// Capacity from the Docker Engine (/info) and dockerd's cgroup limits, less the reserve
    /// (docs/operations.md, "Capacity"), into this node's record before it joins.
    private func detectCapacity() async {
        let c = configuration
        do {
            let client = try DockerClient(host: c.dockerSocket)
            let d = try await CapacityDetection.detect(
                client: client, reserveCPUs: Double(c.reserveCPUMillis) / 1000,
                reserveMemory: c.reserveMemoryBytes)
            let capacity = Self.resources(d.offered, c)
            try await membership.updateRecord { $0.capacity = capacity }
            logger.info(
                "capacity",
                metadata: [
                    "cpu_millicores": "\(capacity.cpuMillicores)", "memory_bytes": "\(capacity.memoryBytes)",
                    "engine_cpus": "\(d.engineCPUs)", "engine_memory": "\(d.engineMemory)",
                    "dockerd_cgroup_cpus": "\(d.cgroupCPUs.map { "\($0)" } ?? "no limit")",
                    "dockerd_cgroup_memory": "\(d.cgroupMemory.map { "\($0)" } ?? "no limit")",
                    "reserved_cpu_millicores": "\(c.reserveCPUMillis)", "reserved_memory_bytes": "\(c.reserveMemoryBytes)",
                ])
            if capacity.cpuMillicores == 0 || capacity.memoryBytes == 0 {
                logger.warning(
                    "the reserve leaves this node no capacity: it gets no containers (lower --reserve-cpu / --reserve-memory, or give --capacity-cpu / --capacity-memory)"
                )
            }
        } catch {
            let fallback = Self.fallbackCapacity(c)
            logger.warning(
                "cannot ask the Docker Engine for this host's capacity; offering what this process sees (\(fallback.cpuMillicores)m CPU, \(fallback.memoryBytes) bytes): \(error)"
            )
        }
    }

    /// Stops everything; with `leave`, leaves the cluster gracefully first.
    ///
    /// Without `leave` (SIGTERM's default, as Consul servers and Nomad clients do) the others see
    /// this node fail and the leader keeps its work where it is for failure detection plus
    /// `--dead-node-grace`: an agent restarted (or upgraded) within that adopts its running
    /// containers and nothing moves. With `leave` the leader re-plans without this node at once.
    public func stop(leave: Bool = true) async {
        if leave { await leaveRaft() }
        // Stop carrying out assignments first: the leave makes the leader re-plan without this
        // node at once, and an executor still running would stop every container here on that
        // plan before the process exits, which a restart would then have to start again.
        await assignments.stop()
        await executor.stop()
        if leave { await membership.leave() } else { await membership.announceRestart() }
        await shutdown()
    }

    /// Why the agent stopped itself (fail-stop), if it did: `microscale agent` then exits 1.
    public var failStopReason: String? { failure.withLock { $0 } }

    /// Stops without telling anyone (as a crash would, but closing sockets cleanly).
    public func shutdown() async {
        // Once: everything below ends with the event loops, and a second call (a second signal,
        // a test's cleanup after it stopped an agent itself) would hop onto the membership
        // actor's loop after it is gone, a job NIO drops (the caller never resumes) and will make
        // a crash. Found with SWIFTNIO_STRICT=1, which makes it one now.
        guard !shutDownStarted.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await historyLock.withLock { statusHistory }?.stop()
        await decisions?.stop()
        await assignments.stop()
        await executor.stop()
        await raft?.stop()
        await membership.stop()
        await endpointsWatch.stop()
        httpTask?.cancel()
        _ = try? await httpTask?.value
        await transport.shutdown()
        try? await group.shutdownGracefully()
        stoppedStream.continuation.finish()
    }

    public func members() async -> [MemberView] { Self.certified(await membership.members(), roles) }

    public func endpoints(_ service: String, query: [(String, String)]) async -> APIResponse {
        await Self.endpoints(service, query: query, watch: endpointsWatch)
    }

    /// `GET /v1/services/NAME/endpoints[?index=N&wait=D]`, answered from this agent's view.
    static func endpoints(_ service: String, query: [(String, String)], watch: EndpointsWatch) async -> APIResponse {
        guard !service.isEmpty, service.utf8.count <= 63 else {
            return .error(400, "service: a name of 1 to 63 bytes (as services names) is required")
        }
        let q: Endpoints.Query
        switch Endpoints.query(query) {
        case .success(let v): q = v
        case .failure(let e): return .error(400, e.description)
        }
        do {
            let view = try await watch.query(service, after: q.index, wait: q.wait)
            var r = APIResponse.json(view)
            r.index = view.index
            return r
        } catch {
            return .error(429, "too many blocking queries wait on this agent (limit \(Limits.maxBlockingQueries)); retry later or ask without index")
        }
    }

    /// The members with the role their certificate gave them where this agent authenticated one;
    /// the gossiped role only for members it has not yet heard from directly (shown, never trusted).
    static func certified(_ members: [MemberView], _ roles: CertifiedRoles) -> [MemberView] {
        members.map { m in
            var m = m
            if let r = roles.role(m.name) { m.role = r }
            return m
        }
    }

    public func metricsText() async -> String { await metrics.render(self) }

    public func history() async -> [StatusHistory.Sample] {
        let h: StatusHistory = historyLock.withLock {
            if let h = statusHistory { return h }
            let h = StatusHistory(clock: clock) { [weak self] in
                guard let self, case let r = await self.cluster(method: "GET", path: "/v1/status", body: []), r.status == 200 else { return nil }
                return try? JSONDecoder().decode(StatusView.self, from: Data(r.body))
            }
            statusHistory = h
            return h
        }
        await h.ensureRunning()
        return await h.all
    }

    public func cluster(method: String, path: String, body: [UInt8]) async -> APIResponse {
        await clusterAPI.handle(method: method, path: path, body: body)
    }

    public func selfView() async -> AgentSelfView {
        let (messages, bytes) = await membership.traffic()
        let assignment = await executor.current
        return AgentSelfView(
            name: configuration.name, version: MicroscaleVersion.current, server: configuration.server,
            uptimeSeconds: Double((clock.now - startedAt).nanosecondsSinceZero) / 1e9,
            gossipMessagesSent: messages, gossipBytesSent: bytes,
            raft: await raft?.status(), assignmentPlan: assignment?.planIndex,
            assigned: assignment?.services.mapValues(\.count).filter { $0.value > 0 })
    }
}

/// Lets the transport's frame handler, made before the services it feeds, reach them.
private final class ServiceBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _membership: MembershipService?
    private var _raft: RaftService?
    private var _api: ClusterAPI?
    private var _assignments: AssignmentService?
    var assignments: AssignmentService? {
        get { lock.withLock { _assignments } }
        set { lock.withLock { _assignments = newValue } }
    }
    var membership: MembershipService? {
        get { lock.withLock { _membership } }
        set { lock.withLock { _membership = newValue } }
    }
    var raft: RaftService? {
        get { lock.withLock { _raft } }
        set { lock.withLock { _raft = newValue } }
    }
    var api: ClusterAPI? {
        get { lock.withLock { _api } }
        set { lock.withLock { _api = newValue } }
    }
}

extension Duration {
    var nanosecondsSinceZero: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
