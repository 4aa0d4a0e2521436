/// Server membership at runtime, decided by the leader (docs/consensus.md, "Server membership"),
/// in the manner of Consul's autopilot: from the Raft configuration, how far each member's log
/// matches the leader's, and what gossip says of each server, it picks the next single-server
/// change (thesis §4.1) to propose:
///
/// 1. a member that left (gossip says so) is removed at once, a member dead for
///    `deadServerCleanup` is removed then (Consul's CleanupDeadServers), in both cases only if the
///    voters that remain keep a quorum of healthy servers;
/// 2. a server alive in gossip and not in the configuration is added as a learner (thesis §4.2.1:
///    it copies the log without counting toward commitment);
/// 3. a learner is promoted to voter once its log is within `maxLag` entries of the leader's and it
///    has been healthy for `stabilizationTime` (Consul's ServerStabilizationTime).
///
/// Pure: the shell calls `step` every few hundred milliseconds on the leader with `now` (any
/// monotonic origin) and proposes what it returns; a change the node refuses (another one is
/// pending, the leader has not committed in its term yet) is simply proposed again later.
public struct Autopilot: Sendable {
    public struct Settings: Sendable, Hashable {
        /// A learner is promoted only after being healthy and caught up for this long.
        public var stabilizationTime: Duration = .seconds(5)
        /// A member dead in gossip for this long is removed (nil: never automatically).
        public var deadServerCleanup: Duration? = .seconds(30)
        /// A learner is caught up when its match index is within this many entries of the
        /// leader's last index (`RaftConfig.promotionLagLimit`, which the node checks again).
        public var maxLag: UInt64 = 64
        /// A server removed on purpose (`leave`, `remove-peer`) is not added back while it stays
        /// alive for up to this long, so that it can finish leaving.
        public var departedHold: Duration = .seconds(120)

        public init() {}
    }

    /// What gossip says of a server.
    public enum Health: String, Sendable, Hashable {
        case alive, suspect, dead, left
    }

    /// One round's view, all taken by the shell at the same moment.
    public struct Input: Sendable {
        public var leader: NodeID
        public var configuration: Configuration
        /// The leader's last log index, and each member's match index (thesis §3.5 matchIndex).
        public var lastIndex: UInt64
        public var match: [NodeID: UInt64]
        /// Every member gossip knows, by name; a name missing counts as dead.
        public var health: [NodeID: Health]
        /// Members whose certificate says they are servers: only they may be added.
        public var servers: Set<NodeID>

        public init(
            leader: NodeID, configuration: Configuration, lastIndex: UInt64, match: [NodeID: UInt64],
            health: [NodeID: Health], servers: Set<NodeID>
        ) {
            self.leader = leader
            self.configuration = configuration
            self.lastIndex = lastIndex
            self.match = match
            self.health = health
            self.servers = servers
        }
    }

    /// A change to propose, and why (for the log and the decisions).
    public struct Action: Sendable, Hashable {
        public var change: ConfChange
        public var reason: String
    }

    /// Changed at runtime by a configuration reload (SIGHUP); takes effect at the next `step`.
    public var settings: Settings
    private var healthySince: [NodeID: Duration] = [:]
    private var deadSince: [NodeID: Duration] = [:]
    private var departed: [NodeID: Duration] = [:]

    public init(settings: Settings = Settings()) { self.settings = settings }

    /// `name` was removed on purpose at `now`: do not add it back while it is still leaving.
    public mutating func departing(_ name: NodeID, now: Duration) {
        departed[name] = now
    }

    /// Whether the voters other than `removed` keep a quorum of healthy (alive or suspect) servers
    /// among themselves: removing a member must never leave the cluster unable to commit.
    public static func keepsQuorum(removing removed: NodeID, from input: Input) -> Bool {
        let remaining = input.configuration.voters.subtracting([removed])
        guard !remaining.isEmpty else { return false }
        let healthy = remaining.filter { $0 == input.leader || input.health[$0] == .alive || input.health[$0] == .suspect }
        return healthy.count >= remaining.count / 2 + 1
    }

    /// The next change to propose, if any.
    public mutating func step(_ input: Input, now: Duration) -> Action? {
        let members = input.configuration.members
        // Timers first, so that they run whether or not a change is proposed this round.
        for name in members where name != input.leader {
            let h = input.health[name] ?? .dead
            if h == .dead {
                if deadSince[name] == nil { deadSince[name] = now }
            } else {
                deadSince[name] = nil
            }
            let caughtUp = (input.match[name] ?? 0) + settings.maxLag >= input.lastIndex
            if h == .alive && caughtUp {
                if healthySince[name] == nil { healthySince[name] = now }
            } else {
                healthySince[name] = nil
            }
        }
        for name in Array(deadSince.keys) where !members.contains(name) { deadSince[name] = nil }
        for name in Array(healthySince.keys) where !members.contains(name) { healthySince[name] = nil }
        for (name, since) in departed where now - since >= settings.departedHold || (input.health[name] ?? .dead) != .alive {
            departed[name] = nil
        }

        // 1. Removals: learners first (they never count toward a quorum), then voters.
        let ordered = input.configuration.learners.sorted() + input.configuration.voters.sorted()
        for name in ordered where name != input.leader {
            let h = input.health[name] ?? .dead
            let why: String
            if h == .left {
                why = "\(name) left the cluster"
            } else if h == .dead, let cleanup = settings.deadServerCleanup, let since = deadSince[name], now - since >= cleanup {
                why = "\(name) has been dead for \(cleanup) (--dead-server-cleanup)"
            } else {
                continue
            }
            if input.configuration.learners.contains(name) || Self.keepsQuorum(removing: name, from: input) {
                return Action(change: .remove(name), reason: why)
            }
        }
        // 2. New servers join as learners.
        for name in input.servers.sorted() where !members.contains(name) && input.health[name] == .alive && departed[name] == nil {
            return Action(change: .addLearner(name), reason: "\(name) is a server, alive, and not in the configuration")
        }
        // 3. Caught-up, stable learners become voters.
        for name in input.configuration.learners.sorted() {
            guard let since = healthySince[name], now - since >= settings.stabilizationTime else { continue }
            return Action(
                change: .promote(name),
                reason: "\(name) has been healthy and within \(settings.maxLag) entries of the leader for \(settings.stabilizationTime)")
        }
        return nil
    }
}
