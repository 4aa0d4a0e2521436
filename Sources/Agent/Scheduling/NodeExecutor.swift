import Bounds
import ControlPlane
import DockerEngine
import Foundation
import Logging
import Membership

/// Carries this node's assignment out on the local Docker Engine with the reconciler (stops before
/// starts, adoption after a restart, crash-loop back-off) and reports what runs into the node's
/// gossiped record, which is what the leader's planner reads back.
///
/// Nothing happens before the first assignment arrives: an agent that restarts while the servers are
/// unreachable keeps its containers running (static stability) instead of stopping what it cannot
/// yet account for.
public actor NodeExecutor {
    let node: String
    let dockerHost: String
    let registryAuth: RegistryAuth
    let logger: Logger
    let report: @Sendable (Serving) async -> Void
    /// Tells the others which images fail to pull here, with the registry's reason (the node's
    /// record): the leader then places those services elsewhere until a retry works.
    let reportImageFailures: @Sendable ([String: String]) async -> Void
    private var lastImageFailures: [String: String] = [:]
    /// Tells the others how many of each service's running containers are starting and unhealthy.
    let reportHealth: @Sendable (_ starting: [String: Int], _ unhealthy: [String: Int]) async -> Void
    private var lastHealthCounts: [[String: Int]] = [[:], [:]]

    /// What this node tells the cluster it serves: healthy running containers per service, and
    /// where they listen (the endpoints, issue 17 item 5).
    public struct Serving: Sendable, Equatable {
        public var running: [String: Int] = [:]
        public var endpoints: [String: [Endpoint]] = [:]
        /// During a rolling update the leader steps on what each node reports of the new
        /// containers: how many serve, how many failed (docs/rollouts.md).
        public var rollouts: [String: RolloutProgress] = [:]
    }
    /// The node advertises an IPv6 address: its endpoints are the ports Docker published for IPv6.
    public let advertisesIPv6: Bool
    /// Rounds run on a new assignment, on the Engine's events for this node's containers (an exit,
    /// a removal, a health change: `watchEngine`), at the times the executor knows of (a planned
    /// stop's delay, a crash loop's retry, the adoption grace's end), and otherwise every
    /// `interval`, a backstop for what no event tells (an event stream that stayed down, an
    /// image pull's retry). It was a 2 s poll, which was also how exits were noticed (issue 16
    /// item 5).
    public var interval: Duration = .seconds(10)
    /// Standby containers per priority-1 service (`--standby`, docs/scheduling.md, "Standby containers").
    public private(set) var standby = 0
    public func setStandby(_ n: Int) { standby = max(0, n) }
    /// Memory for warm standbys (`--warm-standby-memory`, docs/scheduling.md, "Warm standbys").
    public private(set) var warmStandbyMemory: Int64 = 0
    public func setWarmStandbyMemory(_ bytes: Int64) { warmStandbyMemory = max(0, bytes) }
    private var watcher: Task<Void, Never>?
    let clock: AgentClock
    /// When to carry the assignment out, and what the reconciler is to make true (pure,
    /// ControlPlane): the adoption grace after a start is its `adoptionGrace`.
    private var policy: ExecutorPolicy
    public var adoptionGrace: Duration { policy.adoptionGrace }

    private var shell: ReconcilerShell?
    private var client: DockerClient?
    private var assignment: NodeAssignment?
    private var loop: WakeLoop?
    private var lastReported: Serving?
    private var lastError: String?
    public private(set) var rounds = 0
    /// Containers started and stopped, and Docker calls that failed, since the agent started.
    public private(set) var totals = (started: 0, stopped: 0, errors: 0)

    /// Images being pulled or whose pull failed: services held back on this node, with why.
    private var puller: ImagePuller?
    /// Services whose image could not be pulled here, with the registry's reason (docs/contracts.md, "The services file").
    public private(set) var pullFailures: [String: String] = [:]

    public init(
        node: String, dockerHost: String, registryAuth: RegistryAuth = RegistryAuth(), advertisesIPv6: Bool = false, logger: Logger,
        report: @escaping @Sendable (Serving) async -> Void,
        reportImageFailures: @escaping @Sendable ([String: String]) async -> Void = { _ in },
        reportHealth: @escaping @Sendable ([String: Int], [String: Int]) async -> Void = { _, _ in },
        clock: AgentClock = .system()
    ) {
        self.clock = clock
        self.policy = ExecutorPolicy(startedAt: clock.now, startedAtWallMilliseconds: clock.wallMilliseconds)
        self.reportHealth = reportHealth
        self.reportImageFailures = reportImageFailures
        self.node = node
        self.dockerHost = dockerHost
        self.registryAuth = registryAuth
        self.advertisesIPv6 = advertisesIPv6
        self.logger = logger
        self.report = report
    }

    public func start() {
        // A round runs on a new assignment at once, on the Engine's events, and otherwise every
        // `interval` (see there).
        loop = WakeLoop(every: interval) { [weak self] in
            guard let self else { return false }
            await self.round()
            return true
        }
        watchEngine()
    }

    /// Wakes the loop on the Engine's events for this node's containers that change what the
    /// reconciler would decide and that no round of ours is waiting for: an exit (`die`, `oom`),
    /// a removal by someone else (`destroy`), a health check's change (`health_status: ...`),
    /// and the stream's reconnection (events may have been missed while it was down). Our own
    /// stops' exits wake it too: one more round, which finds nothing to do.
    private func watchEngine() {
        guard watcher == nil, let client = try? DockerClient(host: dockerHost) else { return }
        let labels = ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.node)=\(node)"]
        watcher = Task { [weak self] in
            for await e in client.events(labels: labels) {
                guard Self.wakes(e.Action) else { continue }
                guard let self else { return }
                await self.wake()
            }
        }
    }

    /// Whether an Engine event's action calls for a round (`watchEngine`).
    static func wakes(_ action: String) -> Bool {
        ["die", "oom", "destroy", "microscale.reconnected"].contains(action) || action.hasPrefix("health_status")
    }

    /// Stops the rounds and waits for one in progress: a container it was creating exists by the
    /// time this returns, so whoever stops the agent and then cleans up sees it (a create that
    /// finished after a test's clean-up left a container of a stopped node behind).
    public func stop() async {
        let running = loop
        loop = nil
        watcher?.cancel()
        watcher = nil
        stopWake?.cancel()
        stopWake = nil
        await running?.stopAndWait()
    }

    public func assign(_ a: NodeAssignment) {
        assignment = a
        policy.assigned(a)
        logger.info(
            "assignment",
            metadata: [
                "plan": "\(a.planIndex)",
                "services": "\(a.services.filter { $0.value.count > 0 }.mapValues(\.count))",
            ])
        loop?.wake()
    }

    public var current: NodeAssignment? { assignment }

    public func setAdoptionGrace(_ d: Duration) { policy.adoptionGrace = d }

    private func wake() { loop?.wake() }

    /// A round at a time the executor knows something is due (the next withdrawn container's stop,
    /// docs/endpoints.md; a crash loop's retry; the adoption grace's end), rather than at the next
    /// tick, up to `interval` later.
    private var stopWake: Task<Void, Never>?
    private var stopWakeAt: Duration?
    private func wake(after d: Duration) {
        let now = clock.now
        let at = now + d
        if let pending = stopWakeAt, pending <= at, pending > now { return }
        stopWake?.cancel()
        stopWakeAt = at
        stopWake = Task { [weak self] in
            try? await Task.sleep(for: d)
            guard !Task.isCancelled else { return }
            await self?.wake()
        }
    }

    /// The policy's name for where the puller says an image stands.
    static func image(_ state: ImagePuller.State) -> ExecutorPolicy.Image {
        switch state {
        case .ready: .ready
        case .pulling: .pending
        case .failed(let reason, _, _): .failed(reason: reason)
        }
    }

    /// What the record may carry (docs/limits.md): at most `Limits.maxImageFailures` images (by
    /// name), each reason cut to `Limits.maxImageFailureReasonBytes`; an image name longer than
    /// the record takes is left out (the leader would not match it anyway).
    static func boundedFailures(_ failures: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (image, reason) in failures.sorted(by: { $0.key < $1.key }) where image.utf8.count <= Limits.maxImageFailureImageBytes {
            guard out.count < Limits.maxImageFailures else { break }
            out[image] = clip(reason, bytes: Limits.maxImageFailureReasonBytes)
        }
        return out
    }

    /// `text` cut to at most `bytes` UTF-8 bytes, on a character boundary.
    static func clip(_ text: String, bytes: Int) -> String {
        guard text.utf8.count > bytes else { return text }
        var out = ""
        var n = 0
        for ch in text {
            let w = ch.utf8.count
            if n + w > bytes - 3 { break }
            out.append(ch)
            n += w
        }
        return out + "..."
    }

    private func healthChanged() async {
        try? await publishServing()
        loop?.wake()
    }

    /// Lists this node's containers and reports those that serve, if that changed. Only serving
    /// containers count (docs/contracts.md, "The services file"): one whose health check has not passed yet, or that Docker
    /// reports unhealthy, is not running for demand met, and is no endpoint.
    private func publishServing() async throws {
        guard let client, let shell, let a = assignment else { return }
        publishing &+= 1
        let mine = publishing
        // Running containers only (`all: false`): a cold standby is created and never started, and
        // a warm one is listed but paused (its State is "paused", not "running"), so neither is
        // counted nor an endpoint (docs/scheduling.md, "Standby containers", "Warm standbys").
        let running = try await client.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.node)=\(node)"], all: false)
        let health = await shell.currentHealth()
        let withdrawn = await shell.withdrawn
        let specs = Dictionary(
            a.services.map { ($0.key, Specs.container($0.key, $0.value.spec, hash: a.specHashes[$0.key], node: node)) },
            uniquingKeysWith: { x, _ in x })
        // Services under a rolling update, with the hash of their new spec.
        let rolling = Dictionary(
            a.keep.keys.compactMap { name in a.specHashes[name].map { (name, $0) } },
            uniquingKeysWith: { x, _ in x })
        var serving = Self.serving(running, health: health, specs: specs, rolling: rolling, ipv6: advertisesIPv6, withdrawn: withdrawn)
        let failed = await shell.failures
        for (s, hash) in rolling { if let f = failed[s], f.spec == hash { serving.rollouts[s]?.failed = f.count } }
        // Running containers whose check has not passed yet, and that fail it: what status counts.
        var starting: [String: Int] = [:], unhealthy: [String: Int] = [:]
        for c in running where c.State == "running" && !withdrawn.contains(c.Id) {
            guard let s = c.Labels?[MicroscaleLabel.service] else { continue }
            switch health[c.Id] ?? ObservedContainer.Health.fromEngineStatus(c.Status) {
            case .starting?: starting[s, default: 0] += 1
            case .unhealthy?: unhealthy[s, default: 0] += 1
            default: break
            }
        }
        // A later call may have finished first while this one awaited: the newest list wins.
        guard mine == publishing || published < mine else { return }
        published = mine
        if [starting, unhealthy] != lastHealthCounts {
            lastHealthCounts = [starting, unhealthy]
            await reportHealth(starting, unhealthy)
        }
        if serving != lastReported {
            lastReported = serving
            await report(serving)
        }
    }
    private var publishing: UInt64 = 0
    private var published: UInt64 = 0

    /// Pure: the serving containers among `running`, per service, with their endpoints. A bridge
    /// container's endpoints are its published TCP ports (Docker lists each once per address
    /// family); a host-network container listens on its declared ports themselves; one on no
    /// network has none. A `withdrawn` container (a planned stop waiting for its delay) serves
    /// nothing: it is neither counted nor an endpoint.
    static func serving(
        _ running: [ContainerSummary], health: [String: ObservedContainer.Health],
        specs: [String: ContainerSpec], rolling: [String: String] = [:], ipv6: Bool = false,
        withdrawn: Set<String> = []
    ) -> Serving {
        var out = Serving()
        out.rollouts = rolling.mapValues { RolloutProgress(spec: $0, serving: 0) }
        for c in running where c.State == "running" && !withdrawn.contains(c.Id) {
            guard [nil, .healthy].contains(health[c.Id] ?? ObservedContainer.Health.fromEngineStatus(c.Status)),
                let s = c.Labels?[MicroscaleLabel.service]
            else { continue }
            out.running[s, default: 0] += 1
            if let hash = rolling[s], c.Labels?[MicroscaleLabel.spec] == hash { out.rollouts[s]?.serving += 1 }
            var ports: Set<Endpoint> = []
            switch specs[s]?.network {
            case .host?:
                for p in specs[s]?.ports ?? [] where p.proto == "tcp" && (1...65535).contains(p.container) {
                    ports.insert(Endpoint(containerPort: p.container, hostPort: p.container))
                }
            case .none?:
                break
            default:
                // Docker may publish a container port on one host port for IPv4 and another for
                // IPv6 (seen with the userland proxy: 0.0.0.0:32810 and [::]:32808); an endpoint
                // is the port of the family the node advertises.
                let tcp = (c.Ports ?? []).filter { ($0.Type ?? "tcp") == "tcp" && $0.PublicPort != nil }
                for priv in Set(tcp.map(\.PrivatePort)) where (1...65535).contains(priv) {
                    let bindings = tcp.filter { $0.PrivatePort == priv }
                    let family = bindings.filter { ($0.IP ?? "").contains(":") == ipv6 }
                    guard let pub = (family.first ?? bindings.first)?.PublicPort, (1...65535).contains(pub) else { continue }
                    ports.insert(Endpoint(containerPort: priv, hostPort: pub))
                }
            }
            if !ports.isEmpty { out.endpoints[s, default: []].append(contentsOf: ports) }
        }
        for (s, list) in out.endpoints { out.endpoints[s] = list.sorted() }
        return out
    }

    private func round() async {
        guard let a = assignment else { return }
        rounds += 1
        do {
            if shell == nil {
                let c = try DockerClient(host: dockerHost)
                client = c
                // The reconciler's back-offs and planned stops, and the puller's retries, are
                // measured on the agent's clock like the rest of the executor.
                let now: @Sendable () -> Duration = { [clock] in clock.now }
                let s = ReconcilerShell(client: c, node: node, now: now, logger: logger)
                // A container whose probe starts failing (or passes) is told to the cluster at
                // once, before the round that replaces it: load balancers follow the endpoints.
                await s.setOnHealthChange { [weak self] in await self?.healthChanged() }
                // A container withdrawn before its planned stop leaves the endpoints at once
                // (gossiped as a change of the record), not after the round (docs/endpoints.md).
                await s.setOnWithdraw { [weak self] in try? await self?.publishServing() }
                shell = s
                // A finished pull runs a round at once: the containers waiting for it start now.
                puller = ImagePuller(
                    client: c, auth: registryAuth, logger: logger, now: now, onChange: { [weak self] in await self?.wake() })
            }
            // Images first: a service whose image is not here yet starts nothing this round (its
            // pull runs in the background, once per image, bounded; ImagePuller).
            // An image that failed keeps being retried on its back-off even once the leader has
            // placed its service elsewhere (because of that failure), while some service still
            // uses it: "until a retry succeeds" needs a retry.
            let (used, wanted) = ExecutorPolicy.images(a)
            let pulls = await puller!.prepare(wanted.union(await puller!.failing.keys.filter(used.contains)))
            let decided = policy.round(
                a, images: pulls.mapValues(Self.image), now: clock.now, standby: standby, warmStandbyMemory: warmStandbyMemory)
            let hold = decided.hold
            if decided.startsHolding { logger.info("the plan gives this node nothing yet; keeping its containers while the leader sees it back") }
            let desired = decided.desired
            let failures = desired.pullFailures
            if failures != pullFailures {
                for (name, reason) in failures where pullFailures[name] != reason {
                    logger.warning("service held: its image cannot be pulled", metadata: ["service": "\(name)", "reason": "\(reason)"])
                }
                pullFailures = failures
            }
            let failing = Self.boundedFailures(await puller!.failing.filter { used.contains($0.key) })
            if failing != lastImageFailures {
                lastImageFailures = failing
                await reportImageFailures(failing)
            }
            await shell!.setDesired(
                desired.specs.map { Specs.container($0.key, $0.value, hash: a.specHashes[$0.key], node: node) }, counts: desired.counts,
                held: desired.held,
                keep: desired.keep.mapValues { (Set($0.specs), $0.count) }, stopDelays: desired.stopDelays, standby: desired.standby,
                warmStandby: desired.warmStandby)
            for _ in 0..<(hold ? 0 : 5) {
                let report = try await shell!.reconcileOnce()
                totals.started += report.started.count
                totals.stopped += report.stopped.count
                totals.errors += report.errors.count
                for e in report.errors where e.kind == .imageMissing {
                    if let name = e.service, let image = a.services[name]?.spec.image { await puller!.forget(image) }
                }
                if !report.plan.isEmpty {
                    let ms = { (d: Duration) in "\(d.inMilliseconds.rounded())" }
                    logger.info(
                        "reconciled",
                        metadata: [
                            "plan": "\(a.planIndex)", "stopped": "\(report.stopped.count)", "started": "\(report.started.count)",
                            "standbys_created": "\(report.standbys.count)", "unpaused": "\(report.unpaused.count)",
                            "observe_ms": "\(ms(report.timings.observe))", "unpauses_ms": "\(ms(report.timings.unpauses))",
                            "stops_ms": "\(ms(report.timings.stops))",
                            "starts_ms": "\(ms(report.timings.starts))",
                        ])
                }
                if report.plan.isEmpty { break }
            }
            try await publishServing()
            // What is due later wakes a round then: a planned stop, a crash loop's retry, the end
            // of the adoption grace.
            var due = [await shell!.untilNextStop(), await shell!.untilNextRetry()].compactMap { $0 }
            if hold { due.append(max(.milliseconds(1), policy.adoptionGrace - (clock.now - policy.startedAt))) }
            if let d = due.min() { wake(after: d) }
            if lastError != nil {
                logger.info("docker reachable again")
                lastError = nil
            }
        } catch {
            totals.errors += 1
            let text = "\(error)"
            if text != lastError {
                logger.error("cannot carry out the assignment: \(text)")
                lastError = text
            }
        }
    }
}
