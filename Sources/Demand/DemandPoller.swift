import Bounds
import Logging

/// What the planner sees of one source: a number, or unknown. Unknown makes the planner hold the
/// current count: a metric that goes away never scales a service to zero.
public enum DemandReading: Sendable, Hashable {
    case known(Double)
    case unknown
}

/// The staleness rule, pure: a failing source keeps its last good value for `staleness`, then reads
/// unknown. It reports a change of health only when the health changes, so a source failing every
/// poll for an hour is logged once, not once per poll (ok → stale → unknown → ok: one line each).
///
/// It also says when to poll next: every `interval` while the source answers; after `k`
/// consecutive failures, `interval × 2^(k-1)`, at most `maxBackoff` (and never less than
/// `interval`). A broker that is down or overloaded is not hammered by the leader, and one that
/// comes back is noticed within `maxBackoff`. No jitter: one leader polls each source, so there is
/// no herd to spread.
public struct DemandTracker: Sendable, Hashable {
    public enum Health: Sendable, Hashable {
        case healthy
        /// Failing, still serving the last good value.
        case stale(since: Duration, error: String)
        /// Failing for longer than the staleness window (or never succeeded).
        case unknown(error: String)
    }

    public let staleness: Duration
    public let interval: Duration
    public let maxBackoff: Duration
    public private(set) var health: Health = .unknown(error: "no sample yet")
    /// Failed polls since the last good one.
    public private(set) var consecutiveFailures = 0
    /// When the next poll is due (zero: at once).
    public private(set) var nextPollAt: Duration = .zero
    private var lastGood: (value: Double, at: Duration)?
    private var firstFailure: Duration?

    public init(staleness: Duration, interval: Duration = .seconds(1), maxBackoff: Duration = .seconds(30)) {
        self.staleness = staleness
        self.interval = interval
        self.maxBackoff = max(maxBackoff, interval)
    }

    public static func == (a: DemandTracker, b: DemandTracker) -> Bool {
        a.staleness == b.staleness && a.health == b.health && a.lastGood?.value == b.lastGood?.value
            && a.lastGood?.at == b.lastGood?.at && a.firstFailure == b.firstFailure
            && a.interval == b.interval && a.maxBackoff == b.maxBackoff
            && a.consecutiveFailures == b.consecutiveFailures && a.nextPollAt == b.nextPollAt
    }

    /// Whether a poll is due at `now`.
    public func shouldPoll(at now: Duration) -> Bool { now >= nextPollAt }

    /// The wait after `failures` consecutive failures (0: the plain interval).
    public func delay(afterFailures failures: Int) -> Duration {
        var d = interval
        // Doubling stops at the cap, so the count of failures can grow without bound safely.
        for _ in 0..<Swift.max(0, failures - 1) {
            d = d * 2
            if d >= maxBackoff { return maxBackoff }
        }
        return Swift.min(d, maxBackoff)
    }
    public func hash(into h: inout Hasher) {
        h.combine(staleness)
        h.combine(health)
    }

    /// Records a poll's outcome at `now`; returns the new health when it changed.
    public mutating func record(_ outcome: Result<Double, DemandError>, at now: Duration) -> Health? {
        let before = health
        switch outcome {
        case .success(let v):
            lastGood = (v, now)
            firstFailure = nil
            health = .healthy
            consecutiveFailures = 0
        case .failure(let e):
            if firstFailure == nil { firstFailure = now }
            health = classify(error: "\(e)", now: now)
            if consecutiveFailures < Int.max { consecutiveFailures += 1 }
        }
        nextPollAt = now + delay(afterFailures: consecutiveFailures)
        return Self.sameKind(before, health) ? nil : health
    }

    /// Advances time without a poll (the window can run out between polls).
    public mutating func advance(to now: Duration) -> Health? {
        guard case .stale(_, let error) = health else { return nil }
        let before = health
        health = classify(error: error, now: now)
        return Self.sameKind(before, health) ? nil : health
    }

    public func reading(at now: Duration) -> DemandReading {
        switch health {
        case .healthy: return lastGood.map { .known($0.value) } ?? .unknown
        case .stale:
            guard let lastGood, now - lastGood.at <= staleness else { return .unknown }
            return .known(lastGood.value)
        case .unknown: return .unknown
        }
    }

    private func classify(error: String, now: Duration) -> Health {
        guard let lastGood, now - lastGood.at <= staleness else { return .unknown(error: error) }
        return .stale(since: firstFailure ?? now, error: error)
    }

    private static func sameKind(_ a: Health, _ b: Health) -> Bool {
        switch (a, b) {
        case (.healthy, .healthy), (.stale, .stale), (.unknown, .unknown): true
        default: false
        }
    }
}

/// Polls one source on its own interval, each poll bounded by `timeout`. Clock and sleep are
/// injected so tests drive time themselves.
public actor DemandPoller {
    public let source: any DemandSource
    public let interval: Duration
    public let timeout: Duration
    private var tracker: DemandTracker
    private let now: @Sendable () -> Duration
    private let sleep: @Sendable (Duration) async throws -> Void
    private let logger: Logger
    /// Health changes, newest last, bounded.
    public private(set) var transitions: [DemandTracker.Health] = []

    public init(
        source: any DemandSource, interval: Duration, timeout: Duration, staleness: Duration,
        maxBackoff: Duration = .seconds(30),
        now: @escaping @Sendable () -> Duration = { ContinuousClock().now - demandEpoch },
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        logger: Logger = Logger(label: "microscale.demand")
    ) {
        self.source = source
        self.interval = interval
        self.timeout = timeout
        self.tracker = DemandTracker(staleness: staleness, interval: interval, maxBackoff: maxBackoff)
        self.now = now
        self.sleep = sleep
        self.logger = logger
    }

    public var reading: DemandReading { tracker.reading(at: now()) }
    public var health: DemandTracker.Health { tracker.health }

    /// One poll, bounded by `timeout`.
    @discardableResult
    public func pollOnce() async -> DemandReading {
        let outcome = await Self.sample(source, timeout: timeout, sleep: sleep)
        if let change = tracker.record(outcome, at: now()) { note(change) }
        return tracker.reading(at: now())
    }

    /// Polls until cancelled: wakes every `interval` (so the staleness window is noticed when it
    /// runs out), polls when the tracker says a poll is due (every `interval`, backing off while
    /// the source fails).
    public func run() async {
        while !Task.isCancelled {
            if tracker.shouldPoll(at: now()) { await pollOnce() }
            do { try await sleep(interval) } catch { return }
            if let change = tracker.advance(to: now()) { note(change) }
        }
    }

    public var consecutiveFailures: Int { tracker.consecutiveFailures }

    private func note(_ health: DemandTracker.Health) {
        transitions.append(health)
        if transitions.count > 64 { transitions.removeFirst(transitions.count - 64) }
        switch health {
        case .healthy: logger.info("demand source healthy", metadata: ["source": "\(source.name)"])
        case .stale(_, let e):
            logger.warning("demand source failing; keeping its last value", metadata: ["source": "\(source.name)", "error": "\(e)"])
        case .unknown(let e): logger.error("demand source unknown", metadata: ["source": "\(source.name)", "error": "\(e)"])
        }
    }

    /// A reading outside [0, Limits.maxDemand] is no reading: a counter where a rate was meant
    /// (1e19), a negative gauge or NaN makes the source fail (stale, then unknown: the count is
    /// held), never a count the planner would have to convert.
    static func checked(_ value: Double, source: String) -> Result<Double, DemandError> {
        guard value.isFinite, value >= 0, value <= Limits.maxDemand else {
            return .failure(.badAnswer(source: source, reason: "reading \(value) is outside 0 to \(Limits.text(Limits.maxDemand))"))
        }
        return .success(value)
    }

    static func sample(
        _ source: any DemandSource, timeout: Duration, sleep: @escaping @Sendable (Duration) async throws -> Void
    ) async -> Result<Double, DemandError> {
        await withTaskGroup(of: Result<Double, DemandError>?.self) { group in
            group.addTask {
                do { return Self.checked(try await source.sample(), source: source.name) } catch let e as DemandError {
                    return .failure(e)
                } catch {
                    return .failure(.unreachable(source: source.name, reason: "\(error)"))
                }
            }
            group.addTask {
                do { try await sleep(timeout) } catch { return nil }
                return .failure(.timedOut(source: source.name, after: timeout))
            }
            var result: Result<Double, DemandError> = .failure(.timedOut(source: source.name, after: timeout))
            while let r = await group.next() {
                if let r {
                    result = r
                    break
                }
            }
            group.cancelAll()
            return result
        }
    }
}

public let demandEpoch = ContinuousClock().now
