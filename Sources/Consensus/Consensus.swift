import Bounds

/// Consensus: the pure Raft node (Ongaro & Ousterhout 2014; Ongaro's thesis 2014) in the style of
/// etcd-raft's RawNode: tick, step and propose in; a Ready (persist, then send, then apply) out.
/// The log storage protocol and its SQLite store live in Storage/, the replicated cluster state in
/// ClusterState/.

/// Servers are named by their node name in the product (the same name gossip and TLS use), so a
/// node's Raft identity is that name rather than a number someone has to keep in step with it.
public typealias NodeID = String

/// Log entries: what the leader proposes and every server applies in index order (Raft §5.3).
public struct Entry: Sendable, Hashable, Codable {
    public enum Kind: UInt8, Sendable, Hashable, Codable {
        /// Application data (a cluster-state command), or empty: the no-op a new leader appends
        /// so that it can commit entries of earlier terms (Raft §5.4.2, §8).
        case normal = 0
        /// A single-server membership change (thesis §4.1); data is an encoded ConfChange.
        case configuration = 1
    }
    public var term: UInt64
    public var index: UInt64
    public var kind: Kind
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: Kind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }
}

/// What must be on stable storage before a server answers anyone (Raft Figure 2, "persistent state").
public struct HardState: Sendable, Hashable, Codable {
    public var term: UInt64
    public var vote: NodeID?
    /// Not required by the paper, but persisting it lets a restarted server re-apply its committed
    /// entries at once instead of waiting to hear from a leader (as etcd does).
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID? = nil, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The servers of the cluster (thesis §4): voters count toward elections and commitment,
/// learners only receive the log, so that a new server catches up before it can affect
/// availability (thesis §4.2.1).
public struct Configuration: Sendable, Hashable, Codable {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>

    public init(voters: Set<NodeID> = [], learners: Set<NodeID> = []) {
        self.voters = voters
        self.learners = learners
    }

    public var members: Set<NodeID> { voters.union(learners) }
    public var quorum: Int { voters.count / 2 + 1 }

    /// The configuration after one single-server change (thesis §4.1: one server at a time, so
    /// any majority of the old and any majority of the new configuration overlap).
    public func applying(_ change: ConfChange) -> Configuration {
        var c = self
        switch change {
        case .addLearner(let id):
            if !c.voters.contains(id) { c.learners.insert(id) }
        case .promote(let id):
            if c.learners.remove(id) != nil { c.voters.insert(id) }
        case .remove(let id):
            c.voters.remove(id)
            c.learners.remove(id)
        }
        return c
    }
}

/// A single-server membership change (thesis §4.1-4.2).
public enum ConfChange: Sendable, Hashable, Codable {
    case addLearner(NodeID)
    case promote(NodeID)
    case remove(NodeID)

    /// Compact text encoding ("+L name", "+V name", "-  name"): readable in a log dump and
    /// independent of JSON key order.
    public var encoded: [UInt8] {
        switch self {
        case .addLearner(let id): return Array("L \(id)".utf8)
        case .promote(let id): return Array("V \(id)".utf8)
        case .remove(let id): return Array("R \(id)".utf8)
        }
    }

    public init?(encoded bytes: [UInt8]) {
        guard bytes.count >= 3, bytes[1] == UInt8(ascii: " "),
            let id = String(validating: bytes[2...], as: UTF8.self)
        else { return nil }
        switch bytes[0] {
        case UInt8(ascii: "L"): self = .addLearner(id)
        case UInt8(ascii: "V"): self = .promote(id)
        case UInt8(ascii: "R"): self = .remove(id)
        default: return nil
        }
    }
}

/// A state-machine snapshot and the log position it replaces (Raft §7).
public struct Snapshot: Sendable, Hashable, Codable {
    public var index: UInt64
    public var term: UInt64
    /// The configuration as of `index`, since the entries that set it are gone (thesis §5.1).
    public var configuration: Configuration
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, configuration: Configuration, data: [UInt8]) {
        self.index = index
        self.term = term
        self.configuration = configuration
        self.data = data
    }
}

/// The result of a ReadIndex request (thesis §6.4): the read identified by `context` is
/// linearizable once the local state machine has applied `index`.
public struct ReadState: Sendable, Hashable {
    public var index: UInt64
    public var context: [UInt8]
}

public enum Role: String, Sendable, Hashable, Codable {
    case follower, preCandidate, candidate, leader
}

/// One RPC of Raft Figure 2 and its extensions, as one flat struct (as etcd's raftpb.Message):
/// fields a kind does not use stay at their defaults.
public struct RaftMessage: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable {
        case preVote, preVoteResponse  // thesis §9.6
        case vote, voteResponse  // RequestVote, Raft §5.2
        case append, appendResponse  // AppendEntries, Raft §5.3
        case heartbeat, heartbeatResponse  // empty AppendEntries, Raft §5.2; carries ReadIndex rounds
        case installSnapshot  // Raft §7; answered by appendResponse
        case timeoutNow  // leadership transfer, thesis §3.10
        case readIndex, readIndexResponse  // a follower's read forwarded to the leader, thesis §6.4
    }
    public var kind: Kind
    public var from: NodeID
    public var to: NodeID
    public var term: UInt64
    /// append: prevLogTerm; vote/preVote: lastLogTerm.
    public var logTerm: UInt64 = 0
    /// append: prevLogIndex; vote/preVote: lastLogIndex; appendResponse: the last index matched
    /// (or, rejected, the index that failed); readIndexResponse: the read index.
    public var index: UInt64 = 0
    public var entries: [Entry] = []
    public var commit: UInt64 = 0
    public var reject: Bool = false
    /// On a rejected append: the follower's hint of where the leader should look next (Raft §5.3,
    /// the "conflicting term" optimization).
    public var rejectHint: UInt64 = 0
    public var snapshot: Snapshot? = nil
    /// heartbeat(Response): the ReadIndex round it carries (thesis §6.4).
    public var readRound: UInt64 = 0
    /// readIndex(Response): the caller's opaque request id.
    public var context: [UInt8] = []
    /// vote: the campaign was started by TimeoutNow, so it may override a leader lease (§3.10).
    public var transfer: Bool = false

    public init(kind: Kind, from: NodeID, to: NodeID, term: UInt64) {
        self.kind = kind
        self.from = from
        self.to = to
        self.term = term
    }

    /// A rough encoded size, for batching limits and simulated bandwidth.
    public var approximateSize: Int {
        64 + entries.reduce(0) { $0 + 24 + $1.data.count } + (snapshot?.data.count ?? 0) + context.count
    }
}

/// Everything the shell must do after the node changed, in the order it must do it.
///
/// 1. Persist: `snapshot` (if any; it replaces the whole log), then `entries` (the first one
///    replaces any stored entry at its index and everything after it), then `hardState`, all in
///    one durable write (fsync). Raft's safety rests on a server never answering on the basis of
///    state it could forget in a crash (Raft Figure 2).
/// 2. Send `messages`. They may promise what step 1 persisted (a vote, an acknowledged append),
///    which is why they come after it.
/// 3. Apply: restore the state machine from `snapshot` (if any), then apply `committedEntries` in
///    order; serve `readStates` once the applied index reaches theirs.
/// 4. Call `advance(ready)`.
public struct Ready: Sendable {
    public var hardState: HardState?
    public var snapshot: Snapshot?
    public var entries: [Entry] = []
    public var messages: [RaftMessage] = []
    public var committedEntries: [Entry] = []
    public var readStates: [ReadState] = []
    /// Set when the role or the known leader changed, for the shell's logs and metrics.
    public var softState: SoftState?

    public var isEmpty: Bool {
        hardState == nil && snapshot == nil && entries.isEmpty && messages.isEmpty
            && committedEntries.isEmpty && readStates.isEmpty && softState == nil
    }
}

public struct SoftState: Sendable, Hashable {
    public var role: Role
    public var leader: NodeID?
    public var term: UInt64
}

public enum RaftError: Error, Sendable, Hashable, CustomStringConvertible {
    case notLeader(leader: NodeID?)
    case transferInProgress(to: NodeID)
    case configurationChangePending(index: UInt64)
    case noEntryCommittedInTerm
    case learnerNotCaughtUp(NodeID, match: UInt64, lastIndex: UInt64)
    case notAMember(NodeID)
    case cannotRemoveLeader
    case proposalTooLarge(bytes: Int, limit: Int)
    case tooManyPendingReads(limit: Int)
    case compactionBeyondApplied(index: UInt64, applied: UInt64)
    case snapshotRequired

    public var description: String {
        switch self {
        case .notLeader(let l): return "not the leader (leader: \(l ?? "unknown"))"
        case .transferInProgress(let t): return "leadership transfer to \(t) in progress"
        case .configurationChangePending(let i): return "a configuration change at index \(i) is not yet committed"
        case .noEntryCommittedInTerm: return "the leader has not yet committed an entry in its term"
        case .learnerNotCaughtUp(let id, let m, let l): return "learner \(id) has index \(m) of \(l); not caught up"
        case .notAMember(let id): return "\(id) is not a member"
        case .cannotRemoveLeader: return "the leader cannot remove itself; transfer leadership first"
        case .proposalTooLarge(let b, let l): return "proposal of \(b) bytes exceeds the limit of \(l)"
        case .tooManyPendingReads(let l): return "more than \(l) reads pending"
        case .compactionBeyondApplied(let i, let a): return "cannot compact to \(i): only \(a) applied"
        case .snapshotRequired:
            return "compact first: the first voters are in no log entry, so a new server learns them only from a snapshot"
        }
    }
}

/// Timing and bounds. Times are Durations; the node advances only when its shell ticks it.
public struct RaftConfig: Sendable, Hashable {
    public var id: NodeID
    /// T of Raft §5.2: a follower that hears nothing for a time drawn in [T, 2T) campaigns.
    public var electionTimeout: Duration = .milliseconds(300)
    public var heartbeatInterval: Duration = .milliseconds(50)
    /// Thesis §9.6: ask before disrupting; a partitioned server rejoining does not bump terms.
    public var preVote = true
    /// Thesis §6.2: a leader that has not heard from a quorum in an election timeout steps down.
    public var checkQuorum = true
    /// Batching bounds for one AppendEntries (they keep a message under the wire frame limit).
    public var maxEntriesPerMessage = 256
    public var maxBytesPerMessage = 512 * 1024
    /// Pipelining bound: appends in flight to one follower before waiting for acknowledgements.
    public var maxInflightMessages = 64
    /// Largest single proposal.
    public var maxProposalBytes = 256 * 1024
    /// A learner may be promoted once it is within this many entries of the leader (thesis
    /// §4.2.1 catches up "in rounds"; a small margin is the same idea with one round).
    public var promotionLagLimit: UInt64 = 64
    public var maxPendingReads = 4096
    /// A message whose term is more than this above ours is dropped (Limits.maxTermJump): no
    /// cluster holds four billion elections while one server sleeps, and a forged term of 2^64-1
    /// would otherwise be adopted, persisted, and overflow at the next campaign.
    public var maxTermJump = Limits.maxTermJump

    public init(id: NodeID) { self.id = id }
}
