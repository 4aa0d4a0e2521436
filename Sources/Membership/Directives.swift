/// What the instance knows about one other member.
public struct Member: Sendable, Hashable {
    public internal(set) var record: NodeRecord
    public internal(set) var incarnation: UInt64
    public internal(set) var status: MemberStatus
    /// When this instance last saw the status change (its own time base).
    public internal(set) var statusSince: Duration
    /// When this instance last heard from the member itself (a message it sent us).
    public internal(set) var lastHeard: Duration? = nil
    /// When a probe of this instance's own (a probe round, or a verification) last went
    /// unanswered; with `saidLeft`, the first-hand evidence that the member is gone.
    public internal(set) var ownProbeFailedAt: Duration? = nil
    /// The member itself said it left (its own `left`, not a relay of it).
    public internal(set) var saidLeft = false

    public var name: String { record.name }
    public var address: String { record.address }

    public var state: MemberState { MemberState(incarnation: incarnation, status: status, record: record) }
}

public struct MemberChange: Sendable, Hashable {
    public var name: String
    public var address: String
    /// nil when the member is new to this instance.
    public var previous: MemberStatus?
    public var status: MemberStatus
    public var incarnation: UInt64
}

/// Things the shell logs, counts and exposes (GET /v1/members); none needs an action.
public enum MembershipEvent: Sendable, Hashable {
    case memberChanged(MemberChange)
    case recordUpdated(name: String, version: UInt64)
    /// Input refused, with the reason (a record over its bounds, say); `from` names the sender.
    case rejected(from: String, reason: String)
}

/// Send `message` to the member listening on `to` (an address as in the records: host:port).
public struct Outbound: Sendable, Hashable {
    public var to: String
    public var message: Message
}

/// The effect of every entry point of `SWIMInstance`. The shell sends `messages` in order (order
/// matters only in that an ack forwarded by a relay follows nothing it depends on; there are no
/// durability rules in membership), reports `events`, and calls `tick(now:)` again no later than
/// `nextDeadline`. Ticking early is harmless; ticking late only delays timeouts.
public struct Directives: Sendable {
    public var messages: [Outbound] = []
    public var events: [MembershipEvent] = []
    /// nil: nothing is scheduled until the next input.
    public var nextDeadline: Duration?

    public init() {}
}
