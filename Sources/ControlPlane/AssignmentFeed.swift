import Consensus

/// When assignments go out and which are taken, pure (docs/scheduling.md): the bookkeeping of
/// `AssignmentService`, whose shell sends the frames and decodes the pushes. A server delivers its
/// own share of each newer plan to its executor and pushes each subscriber's share when the
/// subscriber holds an older one; a client takes a push only when it is newer than what it runs.
/// Plan indexes only grow (they are Raft indexes), so "newer" is "greater".
public struct AssignmentFeed: Sendable {
    /// Bound on the subscribers one server serves.
    public static let maxSubscribers = 4096
    /// The node this agent runs as.
    public let node: String
    /// The plan index of the last assignment handed to this node's executor.
    public private(set) var lastIndex: UInt64 = 0
    /// Subscribers (agents following this server), with the last plan index each holds.
    public private(set) var subscribers: [String: UInt64] = [:]

    public init(node: String) {
        self.node = node
    }

    /// What a server sends when `state` is applied (or a subscriber asks).
    public struct Sends: Sendable, Equatable {
        /// This node's share, when the plan is newer than the last one it was handed.
        public var local: NodeAssignment?
        /// Each subscriber whose plan is older, with its share, by name.
        public var pushes: [(peer: String, assignment: NodeAssignment)]

        public static func == (a: Sends, b: Sends) -> Bool {
            a.local == b.local && a.pushes.map(\.peer) == b.pushes.map(\.peer)
                && zip(a.pushes, b.pushes).allSatisfy { $0.assignment == $1.assignment }
        }
    }

    /// The state's plan was applied: this node's share if it is newer (and it is counted as
    /// handed over), and the pushes due. Report each push's fate with `pushed(to:index:delivered:)`.
    public mutating func planApplied(_ state: ClusterState) -> Sends {
        let index = state.planIndex
        var local: NodeAssignment?
        if index > lastIndex {
            lastIndex = index
            local = NodeAssignment.of(state, node: node)
        }
        let pushes = subscribers.filter { index > $0.value }.keys.sorted().map { ($0, NodeAssignment.of(state, node: $0)) }
        return Sends(local: local, pushes: pushes)
    }

    /// A push went out (the subscriber now holds `index`), or could not be sent: a subscriber
    /// that cannot be reached is dropped until it subscribes again (it does every second).
    public mutating func pushed(to peer: String, index: UInt64, delivered: Bool) {
        subscribers[peer] = delivered ? index : nil
    }

    /// `peer` subscribes, holding plan `after`. Refused (false) when this server already serves
    /// `maxSubscribers` others; a subscriber it knows is always taken.
    public mutating func subscribe(_ peer: String, after: UInt64) -> Bool {
        guard subscribers[peer] != nil || subscribers.count < Self.maxSubscribers else { return false }
        subscribers[peer] = after
        return true
    }

    /// What a subscriber is due when it subscribes: its share of `state`'s plan, when that plan is
    /// newer than the one it holds (nil: it is up to date, or not a subscriber). Only this
    /// subscriber is looked at: answering each subscription by looking at every subscriber cost
    /// a server O(subscribers²) per round of subscriptions.
    public func due(for peer: String, in state: ClusterState) -> NodeAssignment? {
        guard let held = subscribers[peer], state.planIndex > held else { return nil }
        return NodeAssignment.of(state, node: peer)
    }

    /// Whether a pushed assignment is one to take: for this node, and of a newer plan.
    public func wants(planIndex: UInt64, for target: String) -> Bool {
        target == node && planIndex > lastIndex
    }

    /// A pushed assignment of plan `index` was taken and handed to the executor.
    public mutating func took(_ index: UInt64) {
        lastIndex = max(lastIndex, index)
    }
}
