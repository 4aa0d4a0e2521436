/// Withdraw before stopping (docs/endpoints.md, "Planned stops withdraw first"): a container the
/// node stops for a planned reason (a scale-down, a rollout's old container, a drain, a service
/// removed) first leaves the node's endpoints, which gossip carries to every load balancer, and
/// is stopped only `stop_delay` later. A load balancer that still routed to it until it heard of
/// the change would otherwise send requests to a container that no longer answers. Nomad's
/// `shutdown_delay`, an AWS target group's deregistration delay and Kubernetes' removal of a
/// terminating pod from its endpoints before the kubelet signals it do the same.
///
/// Deaths are not delayed: an unhealthy container is stopped at once (it is no endpoint already),
/// an exited one is removed, a dead host's containers are gone.
///
/// Pure: which containers are withdrawn, and from when each may be stopped, on the reconciler's
/// clock (`now` as passed to `Reconciler.decide`). A withdrawn container is never brought back,
/// even if the count it was stopped for rises again before its stop (a new one is started
/// instead), as a terminating pod is never reused: the load balancers have already been told it
/// is gone.
public struct Withdrawals: Sendable, Hashable {
    /// Withdrawn containers, by id: the earliest time each may be stopped.
    public private(set) var stopAt: [String: Duration] = [:]

    public init() {}

    /// Whether container `id`, which the node wants to stop, may be stopped at `now`. The first
    /// time it is asked about a container with a positive `delay`, the container is withdrawn
    /// until `now + delay` and the answer is false; a container already withdrawn keeps its
    /// deadline whatever `delay` says now (a changed `stop_delay` applies to later stops).
    public mutating func stopDue(_ id: String, delay: Duration, now: Duration) -> Bool {
        if let at = stopAt[id] { return now >= at }
        guard delay > .zero else { return true }
        stopAt[id] = now + delay
        return false
    }

    public func contains(_ id: String) -> Bool { stopAt[id] != nil }

    /// The withdrawn containers: not endpoints, not counted as running.
    public var ids: Set<String> { Set(stopAt.keys) }

    public var isEmpty: Bool { stopAt.isEmpty }

    /// Forgets every container not in `running` (stopped, exited, removed): the table holds at
    /// most the node's running containers.
    public mutating func keepOnly(_ running: Set<String>) {
        stopAt = stopAt.filter { running.contains($0.key) }
    }

    /// The earliest deadline still ahead of `now`, when the node should look again; nil when no
    /// withdrawn container is waiting.
    public func nextStop(after now: Duration) -> Duration? {
        stopAt.values.filter { $0 > now }.min()
    }
}
