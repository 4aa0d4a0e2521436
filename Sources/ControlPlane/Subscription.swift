/// A client agent's subscription to one server's assignments, pure (docs/scheduling.md,
/// "Subscriptions"): which server it follows and when it subscribes again. `AssignmentService`
/// runs it on the agent's clock, the whole-cluster simulation on its own.
///
/// A subscription is long-lived, like Consul's blocking queries: the server pushes each newer
/// plan as soon as it applies it, so nothing needs asking in between. The agent subscribes again
///
/// - at once when it follows no server and one is known, or when the server it follows is no
///   longer among those it can reach (membership found it dead, or it left);
/// - at once when its connection to that server was lost: the server may have forgotten it (a
///   push that cannot be delivered drops the subscriber; a restarted server knows no one);
/// - "at once" being never sooner than `retry` after the last subscription: connections that
///   close again and again (a join storm) must not become a subscription and a dial each time;
/// - `retry` after a subscription that could not be sent, to a server chosen again;
/// - every `keepalive` otherwise. That bounds how long a subscription lost without a sign (a
///   push lost in flight on a connection that stayed up) goes unnoticed.
///
/// Before this, every agent subscribed every second, and a server looked at every subscriber on
/// each subscription: O(agents²) a second on the servers, and a wake-up a second on every idle agent.
public struct Subscription: Sendable, Equatable {
    /// Subscribe again after this long without a reason to (a bound on a silent loss).
    public var keepalive: Duration
    /// After a subscription that could not be sent: try again (another server) this much later.
    public var retry: Duration
    /// The server this agent follows (nil: none yet, or the last one was lost).
    public private(set) var upstream: String?
    /// When the next subscription is due.
    public private(set) var due: Duration = .zero
    /// When the last subscription went out: "at once" means at most one a `retry` after it, so
    /// that connections closing again and again (a join storm, a flapping link) cannot turn into
    /// a subscription, and a dial, each time.
    public private(set) var lastSent: Duration?

    public init(keepalive: Duration = .seconds(10), retry: Duration = .seconds(1)) {
        self.keepalive = keepalive
        self.retry = retry
    }

    /// What to do at `now`, given the servers this agent can reach: the server to send a
    /// subscription to now, if one is due (the caller sends it, then reports a failure with
    /// `sendFailed`). `pick(n)` chooses a new upstream among the `n` servers, sorted by name (the
    /// caller's seeded random source); it is called only when one is needed.
    public mutating func check(servers: [String], now: Duration, pick: (Int) -> Int) -> String? {
        if let u = upstream, !servers.contains(u) {
            upstream = nil
            due = soon(now)
        }
        if upstream == nil {
            guard !servers.isEmpty else { return nil }
            let sorted = servers.sorted()
            let i = pick(sorted.count)
            upstream = sorted[sorted.indices.contains(i) ? i : 0]
        }
        guard now >= due else { return nil }
        due = now + keepalive
        lastSent = now
        return upstream
    }

    /// "At once", but not sooner than a `retry` after the last subscription sent.
    private func soon(_ now: Duration) -> Duration {
        let earliest = lastSent.map { $0 + retry } ?? now
        return max(min(due, now), earliest)
    }

    /// The subscription sent at `now` could not be: choose a server again, `retry` from now.
    public mutating func sendFailed(now: Duration) {
        upstream = nil
        due = now + retry
    }

    /// A connection to `peer` was lost at `now`: if it is the upstream, subscribe again at once
    /// (at most one a `retry`). Whether the upstream's was lost: the caller then checks again
    /// after `wait(now:)`.
    @discardableResult
    public mutating func connectionLost(_ peer: String, now: Duration) -> Bool {
        guard peer == upstream else { return false }
        due = soon(now)
        return true
    }

    /// How long from `now` until the next check is due (zero: now).
    public func wait(now: Duration) -> Duration { max(.zero, due - now) }

    /// When to check again, from `now`: nil when only a server appearing can make a subscription
    /// possible (none is followed and nothing is pending), so that the caller waits for a member
    /// change instead of checking again and again.
    public func nextCheck(now: Duration) -> Duration? {
        upstream == nil && due <= now ? nil : wait(now: now)
    }
}
