import Foundation
import Logging

public let reconcilerEpoch = ContinuousClock().now

/// The thin shell around `Reconciler`: lists this node's containers, asks the pure decision what to
/// do, and does it against the Docker Engine, stops before starts, with at most `maxInFlight` Docker
/// calls at a time. One round at a time, so a container being created is never seen half-made by
/// the next decision.
public actor ReconcilerShell {
    public struct RoundReport: Sendable {
        public var plan: ReconcilePlan
        public var started: [String] = []
        /// Of `started`, the warm standbys unpaused (docs/scheduling.md, "Warm standbys").
        public var unpaused: [String] = []
        public var stopped: [String] = []
        /// Standby containers created by the round (the pool's refill).
        public var standbys: [String] = []
        public var errors: [DockerError] = []
        /// Where the round's time went: listing, the stop phase (with the creates beside it), the
        /// starts. Logged by the caller so an operator can see which part of a scale-up is slow.
        public var timings = Timings()
        public struct Timings: Sendable {
            public var observe: Duration = .zero
            /// Pausing the victims and unpausing the warm standbys, before the stops.
            public var unpauses: Duration = .zero
            public var stops: Duration = .zero
            public var starts: Duration = .zero
        }
    }

    private let client: DockerClient
    private var reconciler: Reconciler
    private var specs: [String: ContainerSpec] = [:]
    private let maxInFlight: Int
    private let now: @Sendable () -> Duration
    private let logger: Logger
    private let node: String
    private var nameCounter: UInt64 = 0
    private let namePrefix: String

    public init(
        client: DockerClient, node: String, policy: ReconcilerPolicy = ReconcilerPolicy(), maxInFlight: Int = 8,
        now: @escaping @Sendable () -> Duration = { ContinuousClock().now - reconcilerEpoch },
        logger: Logger = Logger(label: "microscale.reconciler")
    ) {
        self.client = client
        self.reconciler = Reconciler(node: node, policy: policy)
        self.node = node
        self.maxInFlight = max(1, maxInFlight)
        self.now = now
        self.logger = logger
        // Names only need to be unique on this daemon; the time of the shell's birth plus a counter is.
        self.namePrefix = "ms-\(node)-\(String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36))"
    }

    /// Replaces the desired state: the specs (with their count) to run on this node.
    /// `held`: services none of whose containers may start yet (their image is not here).
    /// `keep`: per service, running containers of other spec hashes to keep, and how many at most (a rolling update).
    /// `stopDelays`: per service, how long a serving container is withdrawn before a planned stop (Withdrawals).
    /// `standby`: per service, how many standby containers to keep created here (DesiredService.standby).
    /// `warmStandby`: per service, how many of those are started and paused (DesiredService.warmStandby).
    public func setDesired(
        _ specs: [ContainerSpec], counts: [String: Int], held: Set<String> = [], keep: [String: (specs: Set<String>, count: Int)] = [:],
        stopDelays: [String: Duration] = [:], standby: [String: Int] = [:], warmStandby: [String: Int] = [:]
    ) {
        self.standby = standby
        self.warmStandby = warmStandby
        self.specs = Dictionary(specs.map { ($0.service, $0) }, uniquingKeysWith: { _, new in new })
        self.counts = counts
        self.held = held
        self.keep = keep
        self.stopDelays = stopDelays
    }
    private var stopDelays: [String: Duration] = [:]
    private var standby: [String: Int] = [:]
    private var warmStandby: [String: Int] = [:]
    /// A warm standby's pause failed (a daemon or kernel without the freezer, say): the pool
    /// stays cold until then, rather than creating and removing a container every round.
    private var warmHeldUntil: Duration?
    public static let warmRetryAfter: Duration = .seconds(300)

    /// Containers withdrawn from the endpoints and waiting for their stop: the node publishes
    /// none of them as endpoints, nor counts them as running.
    public var withdrawn: Set<String> { reconciler.withdrawals.ids }

    /// How long until the next withdrawn container may be stopped (the caller runs a round then).
    public func untilNextStop() -> Duration? {
        let t = now()
        return reconciler.withdrawals.nextStop(after: t).map { $0 - t }
    }

    /// How long until the first crash-looping service may start again (the caller runs a round then).
    public func untilNextRetry() -> Duration? {
        let t = now()
        return reconciler.crashLoops.values.map(\.retryAt).filter { $0 > t }.min().map { $0 - t }
    }

    /// Runs when a round withdraws containers, before any Docker call of that round: the node
    /// tells the cluster they are no endpoints as soon as it has decided to stop them.
    public var onWithdraw: @Sendable () async -> Void = {}
    public func setOnWithdraw(_ f: @escaping @Sendable () async -> Void) { onWithdraw = f }
    private var keep: [String: (specs: Set<String>, count: Int)] = [:]

    /// Containers of each service's desired spec that failed here while it was desired (Reconciler.failures).
    public var failures: [String: (spec: String, count: Int)] { reconciler.failures }
    private var held: Set<String> = []
    private var counts: [String: Int] = [:]
    /// Bridge network name → the id containers are created with.
    private var readyNetworks: [String: String] = [:]
    private lazy var prober = HealthProber(client: client, logger: logger, onChange: onHealthChange)
    /// Runs when a probed container's health changes (set before the first round).
    public var onHealthChange: @Sendable () async -> Void = {}
    public func setOnHealthChange(_ f: @escaping @Sendable () async -> Void) { onHealthChange = f }

    /// The health of this node's containers now: the agent's probes as they stand (they change
    /// between rounds), else what the last round observed.
    public func currentHealth() async -> [String: ObservedContainer.Health] {
        lastHealth.merging(await prober.states(), uniquingKeysWith: { _, probed in probed })
    }
    /// The health of this node's containers as last observed (Docker's check or the agent's probe):
    /// what the executor counts as running.
    public private(set) var lastHealth: [String: ObservedContainer.Health] = [:]

    public var crashLoops: [String: CrashLoop] { reconciler.crashLoops }

    /// One round: observe, decide, act. Returns what was done and what failed.
    @discardableResult
    public func reconcileOnce() async throws(DockerError) -> RoundReport {
        let clock = ContinuousClock()
        let began = clock.now
        let observed = try await observe()
        lastHealth = Dictionary(observed.compactMap { c in c.health.map { (c.id, $0) } }, uniquingKeysWith: { a, _ in a })
        let observedAt = clock.now
        var desired: [String: DesiredService] = [:]
        let warmHeld = warmHeldUntil.map { now() < $0 } ?? false
        for (service, spec) in specs {
            desired[service] = DesiredService(
                count: counts[service] ?? 0, specHash: spec.specHash, canStart: !held.contains(service),
                keep: keep[service]?.specs ?? [], keepCount: keep[service]?.count ?? 0,
                stopDelay: stopDelays[service] ?? .zero, hostPorts: spec.fixedHostPorts, standby: standby[service] ?? 0,
                warmStandby: warmHeld ? 0 : warmStandby[service] ?? 0)
        }
        let plan = reconciler.decide(desired: desired, observed: observed, now: now())
        if !plan.withdrawn.isEmpty {
            logger.info(
                "withdrawn from the endpoints; stopped after the service's stop_delay",
                metadata: ["containers": "\(plan.withdrawn.map { String($0.prefix(12)) })"])
            await onWithdraw()
        }
        if plan.unhealthy > 0 {
            logger.warning("replacing unhealthy containers", metadata: ["count": "\(plan.unhealthy)"])
        }
        for (service, loop) in plan.crashLooping {
            logger.warning("service is crash-looping; holding starts", metadata: ["service": "\(service)", "failures": "\(loop.failures)"])
        }
        var report = RoundReport(plan: plan)
        report.timings.observe = observedAt - began
        // Stops before starts (docs/ARCHITECTURE.md, Principles 3): a start needs the room a stop frees. Creating a
        // container needs no room, so the new containers are created while the old ones stop; they
        // are started once every stop is done, and the stopped containers are removed last (removal
        // frees nothing the starts need). Standby containers are started the moment the stops are
        // done, beside the creates still running (docs/scheduling.md, "Standby containers"); the
        // pool is refilled last, after the removals. Each phase keeps at most `maxInFlight` calls
        // in flight, so the first two have at most twice that. Warm standbys are unpaused once the
        // stops are done, like the cold ones started (docs/scheduling.md, "Warm standbys"). They
        // were unpaused before the stops, with the victims paused first; but moby resumes a paused
        // container to deliver its stop's TERM, so each victim ran beside the unpaused standbys
        // for its whole graceful stop, over the node's capacity (the chaos power cut's observer
        // caught it, docs/chaos.md).
        var stops: [Step] = []
        for a in plan.stops {
            switch a {
            case .stop(let id, let service): stops.append(.stop(id: id, service: service))
            case .remove(let id, let service): stops.append(.remove(id: id, service: service, force: true))
            case .start, .startStandby, .unpauseStandby, .createStandby, .createWarmStandby: break
            }
        }
        // A bridge network is made once per shell, before the first container that joins it, and
        // again after a create found it missing (someone removed it).
        var failedNetwork: DockerError?
        for network in Set((plan.starts + plan.standby).compactMap { specs[$0.service]?.network }) {
            guard case .bridge(let name) = network, readyNetworks[name] == nil else { continue }
            do throws(DockerError) {
                readyNetworks[name] = try await client.ensureBridgeNetwork(name)
                logger.info("bridge network ready", metadata: ["network": "\(name)"])
            } catch {
                failedNetwork = error
            }
        }
        if let failedNetwork { report.errors.append(failedNetwork) }
        var creates: [Step] = []
        var standbyStarts: [Step] = []
        var unpauses: [Step] = []
        for a in plan.starts {
            switch a {
            case .start(let service, _): creates.append(.create(service: service, spec: spec(service), name: nextName(service)))
            case .startStandby(let id, let service): standbyStarts.append(.start(id: id, service: service))
            case .unpauseStandby(let id, let service): unpauses.append(.unpause(id: id, service: service))
            case .stop, .remove, .createStandby, .createWarmStandby: break
            }
        }
        async let created = run(creates)
        let stopped = await run(stops)
        async let standbyStarted = run(standbyStarts)
        var unpausedResults: [Result<(Step, String), DockerError>] = []
        if !unpauses.isEmpty {
            let unpausesBegan = clock.now
            unpausedResults = await run(unpauses)
            report.timings.unpauses = clock.now - unpausesBegan
        }
        let createdResults = await created
        let startsBegan = clock.now
        report.timings.stops = startsBegan - observedAt
        var starts: [Step] = []
        for r in createdResults {
            switch r {
            case .success(let (step, id)): starts.append(.start(id: id, service: step.service))
            case .failure(let e):
                if e.operation == "create", e.kind == .notFound { readyNetworks.removeAll() }
                report.errors.append(e)
            }
        }
        let startedResults = unpausedResults + (await run(starts)) + (await standbyStarted)
        report.timings.starts = clock.now - startsBegan
        var removals: [Step] = []
        for r in stopped {
            switch r {
            case .success(let (step, id)):
                if case .stop = step { removals.append(.remove(id: id, service: step.service, force: false)) } else { report.stopped.append(id) }
            case .failure(let e): report.errors.append(e)
            }
        }
        for r in startedResults {
            switch r {
            case .success(let (step, id)):
                report.started.append(id)
                if case .unpause = step { report.unpaused.append(id) }
            case .failure(let e):
                // The network a container was created on can be gone by its start (another agent
                // on this daemon removed a duplicate it had made): find the network again next round.
                if e.kind == .notFound || e.daemonMessage.contains("network") { readyNetworks.removeAll() }
                report.errors.append(e)
            }
        }
        for r in await run(removals) {
            switch r {
            case .success(let (_, id)): report.stopped.append(id)
            case .failure(let e): report.errors.append(e)
            }
        }
        var refills: [Step] = []
        for a in plan.standby {
            let service = a.service
            var s = spec(service)
            s?.extraLabels[MicroscaleLabel.standby] = "true"
            switch a {
            case .createStandby: refills.append(.create(service: service, spec: s, name: nextName(service)))
            case .createWarmStandby: refills.append(.createPaused(service: service, spec: s, name: nextName(service)))
            case .stop, .remove, .start, .startStandby, .unpauseStandby: break
            }
        }
        for r in await run(refills) {
            switch r {
            case .success(let (_, id)): report.standbys.append(id)
            case .failure(let e):
                if e.operation == "create", e.kind == .notFound { readyNetworks.removeAll() }
                if Self.pauseUnsupported(e) {
                    warmHeldUntil = now() + Self.warmRetryAfter
                    logger.warning("a warm standby could not be paused; keeping the standbys cold for \(Self.warmRetryAfter)")
                }
                report.errors.append(e)
            }
        }
        for e in report.errors { logger.error("\(e)") }
        return report
    }

    /// The CFS weight a warm standby is made with: between its start and its pause it runs, and
    /// on a node that batch work fills, at the usual weight it would take CPU from the containers
    /// the plan runs there (the chaos power cut's observer saw such a node over its capacity).
    /// At 2 (the kernel's least) it gets CPU only when they leave some, about 2/1024 of what one
    /// of them gets when all want it. A quota would bound it too, but runc often cannot freeze a
    /// container its quota throttles ("unable to freeze"; docs/scheduling.md, "Warm standbys").
    /// Its weight goes back to `defaultCPUShares` just before its unpause.
    public static let makingCPUShares = 2
    /// Docker's default CFS weight.
    public static let defaultCPUShares = 1024

    /// Whether a warm refill's failure says this daemon cannot pause (then the pool stays cold for
    /// `warmRetryAfter`): a failed pause of a container that was running. A container that stopped
    /// or went away before its pause (someone removed it, its process exited, the daemon took too
    /// long to answer) says nothing about the freezer; such a refill is simply made again.
    public static func pauseUnsupported(_ e: DockerError) -> Bool {
        guard e.operation == "pause", e.kind != .notFound, e.kind != .daemonUnreachable else { return false }
        let m = e.daemonMessage.lowercased()
        return !(m.contains("stopped") || m.contains("not running") || m.contains("no such container"))
    }

    /// The service's spec to create a container with: its bridge network named by the id this
    /// shell made it with.
    private func spec(_ service: String) -> ContainerSpec? {
        var spec = specs[service]
        if case .bridge(let name)? = spec?.network, let id = readyNetworks[name] { spec?.network = .bridge(id) }
        return spec
    }

    /// Rounds until nothing is left to do (or `maxRounds`), e.g. after a change of desired state.
    @discardableResult
    public func converge(maxRounds: Int = 10) async throws(DockerError) -> RoundReport? {
        var last: RoundReport?
        for _ in 0..<maxRounds {
            let r = try await reconcileOnce()
            last = r
            if r.plan.isEmpty { break }
        }
        return last
    }

    private func observe() async throws(DockerError) -> [ObservedContainer] {
        // This node's containers only: another agent's on a shared daemon are none of this
        // round's business, and inspecting their exited ones cost a call each before every
        // decision (docs/scheduling.md, "Where a demand step's time goes").
        let summaries = try await client.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.node)=\(node)"])
        var observed: [ObservedContainer] = []
        var probed: Set<String> = []
        defer {
            let p = prober, keep = probed
            Task { await p.keepOnly(keep) }
        }
        for s in summaries {
            let state = ObservedContainer.state(fromEngine: s.State ?? "exited")
            var ranFor: Duration? = nil
            if state == .exited, let i = try? await client.inspect(s.Id) {
                ranFor = Self.ranFor(started: i.State.StartedAt, finished: i.State.FinishedAt)
            }
            var health = ObservedContainer.Health.fromEngineStatus(s.Status)
            // The agent's own http/tcp probe, for this node's running containers of a service that has one.
            if state == .running, let service = s.Labels?[MicroscaleLabel.service], s.Labels?[MicroscaleLabel.node] == node,
                let probe = specs[service]?.probe
            {
                health = await prober.health(of: s.Id, service: service, probe: probe)
                probed.insert(s.Id)
            }
            observed.append(ObservedContainer(id: s.Id, labels: s.Labels ?? [:], state: state, ranFor: ranFor, health: health))
        }
        return observed
    }

    static func ranFor(started: String?, finished: String?) -> Duration? {
        guard let started, let finished, let a = parseTime(started), let b = parseTime(finished), b >= a else { return nil }
        return .milliseconds(Int64((b - a) * 1000))
    }

    static func parseTime(_ s: String) -> Double? {
        // Docker writes RFC 3339 with nanoseconds: 2026-11-23T05:27:42.906624703Z.
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var trimmed = s
        if let dot = s.firstIndex(of: "."), let z = s.lastIndex(where: { $0 == "Z" || $0 == "+" }), z > dot {
            let frac = s[s.index(after: dot)..<z]
            trimmed = String(s[...dot]) + String(frac.prefix(3)) + String(s[z...])
        }
        if let d = f.date(from: trimmed) { return d.timeIntervalSince1970 }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: s).map { $0.timeIntervalSince1970 }
    }

    private func nextName(_ service: String) -> String {
        nameCounter += 1
        return "\(namePrefix)-\(service)-\(nameCounter)"
    }

    /// One Docker call (or two, for a stop) of a round.
    enum Step: Sendable {
        case create(service: String, spec: ContainerSpec?, name: String)
        case start(id: String, service: String)
        case stop(id: String, service: String)
        case remove(id: String, service: String, force: Bool)
        case unpause(id: String, service: String)
        /// A warm standby's refill: create, start, pause.
        case createPaused(service: String, spec: ContainerSpec?, name: String)

        var service: String {
            switch self {
            case .create(let s, _, _), .start(_, let s), .stop(_, let s), .remove(_, let s, _), .unpause(_, let s),
                .createPaused(let s, _, _):
                return s
            }
        }
    }

    /// Runs the steps with at most `maxInFlight` Docker calls at a time.
    private func run(_ steps: [Step]) async -> [Result<(Step, String), DockerError>] {
        let client = self.client
        let limit = maxInFlight
        return await withTaskGroup(of: Result<(Step, String), DockerError>.self) { group in
            var results: [Result<(Step, String), DockerError>] = []
            var next = 0
            func add() {
                let step = steps[next]
                next += 1
                group.addTask { await Self.execute(step, client: client) }
            }
            while next < steps.count && next < limit { add() }
            while let r = await group.next() {
                results.append(r)
                if next < steps.count { add() }
            }
            return results
        }
    }

    private static func execute(_ step: Step, client: DockerClient) async -> Result<(Step, String), DockerError> {
        do throws(DockerError) {
            switch step {
            case .stop(let id, let service):
                // The container's own StopTimeout applies (set at create), so no t= override here.
                // A SIGTERM that reaches a container in its first milliseconds, before docker-init
                // has blocked signals, is dropped (PID 1 ignores default-action signals), and the
                // stop then waits out the whole timeout. Seen in the benchmark when scaling 0→N→0
                // at once; a second SIGTERM a moment later closes that window.
                let resend = Task {
                    try? await Task.sleep(for: .milliseconds(250))
                    guard !Task.isCancelled else { return }
                    try? await client.kill(id, signal: "TERM", service: service)
                }
                defer { resend.cancel() }
                try await client.stop(id, service: service)
                return .success((step, id))
            case .remove(let id, let service, let force):
                try await client.remove(id, force: force, service: service)
                return .success((step, id))
            case .create(let service, let spec, let name):
                guard let spec else {
                    return .failure(
                        DockerError(kind: .refused, operation: "create", service: service, status: nil, daemonMessage: "no spec for the service"))
                }
                return .success((step, try await client.create(spec, name: name)))
            case .start(let id, let service):
                do throws(DockerError) {
                    try await client.start(id, service: service)
                } catch {
                    // A container that cannot start is removed, so it does not pile up.
                    try? await client.remove(id, force: true, service: service)
                    throw error
                }
                return .success((step, id))
            case .unpause(let id, let service):
                // Made at the least weight (`makingCPUShares`): its share of the CPU back first.
                try await client.update(id, cpuShares: Self.defaultCPUShares, service: service)
                try await client.unpause(id, service: service)
                return .success((step, id))
            case .createPaused(let service, let spec, let name):
                guard let spec else {
                    return .failure(
                        DockerError(kind: .refused, operation: "create", service: service, status: nil, daemonMessage: "no spec for the service"))
                }
                let id = try await client.create(spec, name: name, cpuShares: Self.makingCPUShares)
                do throws(DockerError) {
                    try await client.start(id, service: service)
                    try await client.pause(id, service: service)
                } catch {
                    // Never left half-made: a running container with the standby label would be
                    // an ordinary container of its service (docs/contracts.md), one too many.
                    try? await client.remove(id, force: true, service: service)
                    throw error
                }
                return .success((step, id))
            }
        } catch {
            return .failure(error)
        }
    }
}
