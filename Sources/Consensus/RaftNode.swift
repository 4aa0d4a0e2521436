import Bounds
import Determinism

/// A pure Raft server (Raft §5, thesis chapters 3-6, 9): the shell feeds it time (`tick`),
/// messages (`step`) and client requests (`propose`, `readIndex`, ...), and takes its effects from
/// `ready()`, which orders them: persist, then send, then apply (see `Ready`). It never reads a
/// clock, touches a file or a socket, or draws randomness other than from its own seeded generator.
///
/// The log after the latest snapshot is kept in memory (bounded by compaction): the node is
/// rebuilt from storage after a restart, and storage only ever receives what a Ready hands out.
public struct RaftNode: Sendable {
    public let config: RaftConfig
    public var id: NodeID { config.id }

    // Persistent state (Raft Figure 2).
    public private(set) var term: UInt64 = 0
    public private(set) var vote: NodeID?
    public private(set) var commit: UInt64 = 0

    public private(set) var role: Role = .follower
    public private(set) var leader: NodeID?

    /// The latest snapshot; index 0 with the bootstrap configuration until the first compaction.
    public private(set) var snapshot: Snapshot
    private var log: [Entry] = []
    /// Configurations set by entries still in the log, oldest first. A server uses the latest
    /// configuration in its log, committed or not (thesis §4.1), so truncation may revert one.
    private var configurations: [(index: UInt64, configuration: Configuration)] = []

    // What has been handed to the shell, and what it reported done.
    private var unstableFrom: UInt64 = 1
    /// Entries known durable locally; a leader counts itself only up to here (Raft §5.4.2
    /// counts replicas, and an unsynced local entry is not one).
    public private(set) var persisted: UInt64 = 0
    public private(set) var applied: UInt64 = 0
    private var appliedHanded: UInt64 = 0
    private var installedSnapshot: Snapshot?
    private var lastHardState: HardState
    private var lastSoftState: SoftState
    private var outbox: [RaftMessage] = []
    private var readStates: [ReadState] = []

    // Timers (Raft §5.2), in Durations so that the election timeout is randomized finely:
    // whole-tick randomization caused etcd's split votes.
    private var electionElapsed: Duration = .zero
    private var heartbeatElapsed: Duration = .zero
    private var randomizedElectionTimeout: Duration
    private var rng: SeededGenerator

    // Candidate state.
    private var votes: [NodeID: Bool] = [:]

    // Leader state.
    private var progress: [NodeID: Progress] = [:]
    public private(set) var leadTransferee: NodeID?
    private var needsBroadcast = false
    private var needsCommitBroadcast = false
    private var needsHeartbeat = false
    private var readRound: UInt64 = 0
    private struct PendingRead: Sendable {
        var round: UInt64
        var index: UInt64
        var requester: NodeID
        var context: [UInt8]
        var acks: Set<NodeID>
    }
    private var pendingReads: [PendingRead] = []
    private var readsAwaitingCommit: [(requester: NodeID, context: [UInt8])] = []

    /// Rebuilds a server from what its storage recovered. `bootstrap` is the initial voter set,
    /// used only until a snapshot carries a configuration (a joining server passes an empty one
    /// and waits for the leader to add it).
    public init(
        config: RaftConfig, bootstrap: Configuration, recovered: RecoveredState = RecoveredState(),
        seed: UInt64
    ) {
        self.config = config
        self.rng = SeededGenerator(seed: seed)
        let snap = recovered.snapshot ?? Snapshot(index: 0, term: 0, configuration: bootstrap, data: [])
        self.snapshot = snap
        let entries = recovered.entries.filter { $0.index > snap.index }
        self.log = entries
        var confs: [(index: UInt64, configuration: Configuration)] = []
        for e in entries where e.kind == .configuration {
            if let cc = ConfChange(encoded: e.data) {
                confs.append((e.index, (confs.last?.configuration ?? snap.configuration).applying(cc)))
            }
        }
        self.configurations = confs
        self.term = recovered.hardState.term
        self.vote = recovered.hardState.vote
        let last = entries.last?.index ?? snap.index
        self.commit = min(max(recovered.hardState.commit, snap.index), last)
        self.applied = snap.index
        self.appliedHanded = snap.index
        self.persisted = last
        self.unstableFrom = last + 1
        self.lastHardState = recovered.hardState
        self.randomizedElectionTimeout = config.electionTimeout
        self.lastSoftState = SoftState(role: .follower, leader: nil, term: recovered.hardState.term)
        resetRandomizedElectionTimeout()
    }

    // MARK: Log access

    public var lastIndex: UInt64 { log.last?.index ?? snapshot.index }
    public var lastTerm: UInt64 { log.last?.term ?? snapshot.term }
    public var configuration: Configuration { configurations.last?.configuration ?? snapshot.configuration }

    /// The term of the entry at `index`, or nil if it is compacted away or not there.
    public func term(at index: UInt64) -> UInt64? {
        if index == snapshot.index { return snapshot.term }
        if index < snapshot.index || index > lastIndex { return nil }
        return log[Int(index - snapshot.index - 1)].term
    }

    public func entry(at index: UInt64) -> Entry? {
        if index <= snapshot.index || index > lastIndex { return nil }
        return log[Int(index - snapshot.index - 1)]
    }

    /// The entries after the snapshot (for checkers and debugging).
    public var entries: [Entry] { log }

    private func entries(from lo: UInt64, maxCount: Int, maxBytes: Int) -> [Entry] {
        guard lo > snapshot.index, lo <= lastIndex else { return [] }
        let start = Int(lo - snapshot.index - 1)
        var out: [Entry] = []
        var bytes = 0
        for i in start..<log.count {
            let e = log[i]
            // Always send at least one entry, however large, or replication would stall.
            if !out.isEmpty && (out.count >= maxCount || bytes + e.data.count > maxBytes) { break }
            out.append(e)
            bytes += e.data.count
        }
        return out
    }

    private func configuration(at index: UInt64) -> Configuration {
        configurations.last(where: { $0.index <= index })?.configuration ?? snapshot.configuration
    }

    /// Appends `new`, whose first entry replaces whatever is at its index and after (Raft §5.3).
    private mutating func appendToLog(_ new: [Entry]) {
        guard let first = new.first?.index else { return }
        let before = configuration
        if first <= lastIndex {
            log.removeLast(Int(lastIndex - first + 1))
            configurations.removeAll { $0.index >= first }
            unstableFrom = min(unstableFrom, first)
            persisted = min(persisted, first - 1)
        }
        for e in new {
            log.append(e)
            if e.kind == .configuration, let cc = ConfChange(encoded: e.data) {
                configurations.append((e.index, configuration.applying(cc)))
            }
        }
        if configuration != before { configurationChanged() }
    }

    // MARK: Time

    /// Advances the node's clock by `elapsed` (the shell's tick interval, or the exact time since
    /// the last call: the node has no clock of its own).
    public mutating func tick(by elapsed: Duration) {
        electionElapsed += elapsed
        if role == .leader {
            heartbeatElapsed += elapsed
            if electionElapsed >= config.electionTimeout {
                electionElapsed = .zero
                // Thesis §6.2: a leader that cannot reach a quorum steps down, so that clients
                // stop talking to a leader that can commit nothing.
                if config.checkQuorum {
                    let active = configuration.voters.filter { $0 == id || progress[$0]?.recentActive == true }
                    if active.count < configuration.quorum {
                        becomeFollower(term: term, leader: nil)
                        return
                    }
                    for k in progress.keys { progress[k]?.recentActive = false }
                }
                // Thesis §3.10: a transfer that did not finish in an election timeout is abandoned,
                // so that the leader accepts proposals again.
                leadTransferee = nil
            }
            if heartbeatElapsed >= config.heartbeatInterval {
                heartbeatElapsed = .zero
                needsHeartbeat = true
            }
        } else if isPromotable && electionElapsed >= randomizedElectionTimeout {
            campaign(transfer: false)
        }
    }

    /// How long until the node would act on its own (campaign, heartbeat, check quorum), so a
    /// shell can arm one timer for exactly then instead of ticking at a coarse interval.
    public var timeUntilNextTimeout: Duration? {
        if role == .leader {
            return max(.zero, min(config.heartbeatInterval - heartbeatElapsed, config.electionTimeout - electionElapsed))
        }
        guard isPromotable else { return nil }
        return max(.zero, randomizedElectionTimeout - electionElapsed)
    }

    private var isPromotable: Bool { configuration.voters.contains(id) }

    /// On a leader, how much of `peer`'s log is known to match (Raft §5.3 matchIndex); nil on a
    /// follower or for a server outside the configuration. The leader's own is `persisted`.
    public func match(of peer: NodeID) -> UInt64? {
        guard role == .leader else { return nil }
        return peer == id ? persisted : progress[peer]?.match
    }

    /// Whether a configuration entry in the log is not yet committed (thesis §4.1: one at a time).
    public var hasPendingConfigurationChange: Bool { (configurations.last?.index ?? 0) > commit }

    /// Whether this leader may propose a configuration change now: it committed an entry of its
    /// own term and no other change is pending (see `proposeConfChange`).
    public var canChangeConfiguration: Bool {
        role == .leader && leadTransferee == nil && term(at: commit) == term && !hasPendingConfigurationChange
    }

    /// A hint from the shell that its connection to `peer` broke: a killed process resets its
    /// sockets at once, long before any election timeout. If `peer` is this follower's leader, the
    /// follower forgets it (ending its lease, thesis §4.2.3, so that it grants the other followers'
    /// pre-votes) and campaigns after a fresh random delay in [0, T/2) instead of waiting out the
    /// rest of [T, 2T). Only timing changes: a campaign still needs a majority of pre-votes (thesis
    /// §9.6), and a follower that still hears from a live leader refuses them, so a false hint cannot
    /// depose a working leader.
    public mutating func leaderUnreachable(_ peer: NodeID) {
        guard role == .follower, leader == peer, isPromotable else { return }
        leader = nil
        let (sec, atto) = config.electionTimeout.components
        let half = max((sec * 1_000_000_000 + atto / 1_000_000_000) / 2, 1)
        let remaining = Duration.nanoseconds(Int64.random(in: 0..<half, using: &rng))
        electionElapsed = max(electionElapsed, randomizedElectionTimeout - remaining)
    }

    /// Thesis §4.2.3: a server that heard from a leader within the minimum election timeout
    /// ignores vote requests, so a removed or partitioned server cannot depose a working leader.
    private var inLease: Bool {
        config.checkQuorum && leader != nil && electionElapsed < config.electionTimeout
    }

    private mutating func resetRandomizedElectionTimeout() {
        // [T, 2T) at nanosecond resolution (Raft §5.2).
        let (sec, atto) = config.electionTimeout.components
        let t = sec * 1_000_000_000 + atto / 1_000_000_000
        randomizedElectionTimeout = .nanoseconds(t + Int64.random(in: 0..<max(t, 1), using: &rng))
    }

    // MARK: Roles

    private mutating func reset(term newTerm: UInt64) {
        if newTerm != term {
            term = newTerm
            vote = nil
        }
        leader = nil
        electionElapsed = .zero
        heartbeatElapsed = .zero
        resetRandomizedElectionTimeout()
        votes = [:]
        progress = [:]
        leadTransferee = nil
        needsBroadcast = false
        needsCommitBroadcast = false
        needsHeartbeat = false
        pendingReads = []
        readsAwaitingCommit = []
    }

    private mutating func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        reset(term: newTerm)
        role = .follower
        leader = newLeader
    }

    private mutating func campaign(transfer: Bool) {
        campaign(preVote: config.preVote && !transfer, transfer: transfer)
    }

    private mutating func campaign(preVote: Bool, transfer: Bool) {
        // A term of 2^64-1 (persisted by an older version that adopted a forged one) cannot be
        // raised: this server stays a follower rather than trap at every election timeout.
        guard term < .max else { return }
        if preVote {
            // Thesis §9.6: find out first whether a majority would vote, without raising the term.
            reset(term: term)
            role = .preCandidate
            votes[id] = true
            requestVotes(kind: .preVote, term: term + 1, transfer: false)
        } else {
            // `campaign` is never entered at UInt64.max (see its callers' guard).
            reset(term: term + 1)
            role = .candidate
            vote = id
            votes[id] = true
            requestVotes(kind: .vote, term: term, transfer: transfer)
        }
        tallyVotes()
    }

    private mutating func requestVotes(kind: RaftMessage.Kind, term: UInt64, transfer: Bool) {
        for peer in configuration.voters.sorted() where peer != id {
            var m = RaftMessage(kind: kind, from: id, to: peer, term: term)
            m.index = lastIndex
            m.logTerm = lastTerm
            m.transfer = transfer
            outbox.append(m)
        }
    }

    private mutating func tallyVotes() {
        let voters = configuration.voters
        let granted = votes.filter { voters.contains($0.key) && $0.value }.count
        let rejected = votes.filter { voters.contains($0.key) && !$0.value }.count
        if granted >= configuration.quorum {
            if role == .preCandidate { campaign(preVote: false, transfer: false) } else { becomeLeader() }
        } else if rejected >= configuration.quorum {
            becomeFollower(term: term, leader: nil)
        }
    }

    private mutating func becomeLeader() {
        reset(term: term)
        role = .leader
        leader = id
        for peer in configuration.members where peer != id {
            var p = Progress(next: lastIndex + 1)
            p.recentActive = true
            progress[peer] = p
        }
        // Raft §5.4.2 / §8: a leader commits entries of earlier terms only by committing one of
        // its own, so it appends an empty entry at once.
        appendToLog([Entry(term: term, index: lastIndex + 1)])
        needsBroadcast = true
        _ = maybeCommit()
    }

    // MARK: Client requests

    /// Appends `data` to the leader's log. Returns where it went: the write took effect once an
    /// applied entry at that index carries that term.
    @discardableResult
    public mutating func propose(_ data: [UInt8]) throws(RaftError) -> (index: UInt64, term: UInt64) {
        try checkCanPropose(bytes: data.count)
        let e = Entry(term: term, index: lastIndex + 1, kind: .normal, data: data)
        appendToLog([e])
        needsBroadcast = true
        return (e.index, e.term)
    }

    private func checkCanPropose(bytes: Int) throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        if let t = leadTransferee { throw .transferInProgress(to: t) }
        guard bytes <= config.maxProposalBytes else {
            throw .proposalTooLarge(bytes: bytes, limit: config.maxProposalBytes)
        }
    }

    /// Proposes a single-server membership change (thesis §4.1). Refused while another change is
    /// uncommitted, and until the leader has committed an entry of its own term: without that
    /// rule single-server changes are unsafe across leader changes (Ongaro, raft-dev, 2015; the
    /// thesis errata).
    @discardableResult
    public mutating func proposeConfChange(_ change: ConfChange) throws(RaftError) -> (index: UInt64, term: UInt64) {
        try checkCanPropose(bytes: 0)
        guard term(at: commit) == term else { throw .noEntryCommittedInTerm }
        if let pending = configurations.last?.index, pending > commit {
            throw .configurationChangePending(index: pending)
        }
        let c = configuration
        switch change {
        case .addLearner:
            // The first voters were agreed at bootstrap and are in no log entry: a new server
            // that copied the log from index 1 would build its configuration on nothing, and once
            // promoted count a majority of itself. After a compaction a new server is sent the
            // snapshot first (its entries are gone), and the snapshot carries the configuration
            // (thesis §5.1).
            guard snapshot.index > 0 else { throw .snapshotRequired }
        case .promote(let node):
            guard c.learners.contains(node) else { throw .notAMember(node) }
            // Thesis §4.2.1: a new server votes only once it has caught up, so that adding it
            // does not leave the cluster unable to commit while it copies the log.
            let match = progress[node]?.match ?? 0
            guard match + config.promotionLagLimit >= lastIndex else {
                throw .learnerNotCaughtUp(node, match: match, lastIndex: lastIndex)
            }
        case .remove(let node):
            guard c.members.contains(node) else { throw .notAMember(node) }
            guard node != id else { throw .cannotRemoveLeader }
        }
        let e = Entry(term: term, index: lastIndex + 1, kind: .configuration, data: change.encoded)
        appendToLog([e])
        needsBroadcast = true
        return (e.index, e.term)
    }

    /// Thesis §3.10: the leader brings `target` up to date, then tells it to campaign at once.
    /// Proposals are refused meanwhile so the target can catch up.
    public mutating func transferLeadership(to target: NodeID) throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard target != id else { return }
        guard configuration.voters.contains(target) else { throw .notAMember(target) }
        leadTransferee = target
        electionElapsed = .zero
        if progress[target]?.match == lastIndex {
            outbox.append(RaftMessage(kind: .timeoutNow, from: id, to: target, term: term))
        } else {
            sendAppend(to: target, sendIfEmpty: true)
        }
    }

    /// Thesis §6.4 ReadIndex: a read identified by `context` comes back as a ReadState once the
    /// leader has confirmed, with a round of heartbeats, that it was still leader when it noted
    /// its commit index. A follower forwards the request to its leader (thesis §6.4.1).
    public mutating func readIndex(context: [UInt8]) throws(RaftError) {
        if role == .leader {
            try leaderRead(requester: id, context: context)
        } else if let l = leader {
            var m = RaftMessage(kind: .readIndex, from: id, to: l, term: term)
            m.context = context
            outbox.append(m)
        } else {
            throw .notLeader(leader: nil)
        }
    }

    private mutating func leaderRead(requester: NodeID, context: [UInt8]) throws(RaftError) {
        guard pendingReads.count + readsAwaitingCommit.count < config.maxPendingReads else {
            throw .tooManyPendingReads(limit: config.maxPendingReads)
        }
        // Thesis §6.4 step 1: until an entry of its term commits, the leader's commit index may be
        // behind what an earlier leader committed.
        guard term(at: commit) == term else {
            readsAwaitingCommit.append((requester, context))
            return
        }
        if configuration.voters == [id] {
            releaseRead(index: commit, requester: requester, context: context)
            return
        }
        readRound += 1
        pendingReads.append(
            PendingRead(
                round: readRound, index: commit, requester: requester,
                context: context, acks: [id]))
        needsHeartbeat = true
    }

    private mutating func releaseRead(index: UInt64, requester: NodeID, context: [UInt8]) {
        if requester == id {
            readStates.append(ReadState(index: index, context: context))
        } else {
            var m = RaftMessage(kind: .readIndexResponse, from: id, to: requester, term: term)
            m.index = index
            m.context = context
            outbox.append(m)
        }
    }

    /// Log compaction (Raft §7): the state machine at `index` (applied already) is `data`; the
    /// entries up to there are dropped. Returns the snapshot for the shell to store.
    public mutating func compact(upTo index: UInt64, data: [UInt8]) throws(RaftError) -> Snapshot {
        guard index <= applied else { throw .compactionBeyondApplied(index: index, applied: applied) }
        guard index > snapshot.index, let t = term(at: index) else { return snapshot }
        let s = Snapshot(index: index, term: t, configuration: configuration(at: index), data: data)
        log.removeFirst(Int(index - snapshot.index))
        configurations.removeAll { $0.index <= index }
        snapshot = s
        return s
    }

    // MARK: Messages

    public mutating func step(_ m: RaftMessage) {
        // Counters from a peer are checked before anything uses them, so that no arithmetic on
        // them can trap (a committed value from a peer must never stop a server).
        guard isSane(m) else { return }
        if m.term > term {
            if (m.kind == .vote || m.kind == .preVote) && !m.transfer && inLease {
                return
            }
            switch m.kind {
            case .preVote:
                break  // a pre-vote never changes anyone's term (thesis §9.6)
            case .preVoteResponse where !m.reject:
                break  // granted pre-votes carry the term the candidate will campaign at
            case .append, .heartbeat, .installSnapshot:
                becomeFollower(term: m.term, leader: m.from)
            default:
                becomeFollower(term: m.term, leader: nil)
            }
        } else if m.term < term {
            if (config.checkQuorum || config.preVote) && (m.kind == .append || m.kind == .heartbeat) {
                // A stale leader (say, back from a partition) learns the newer term and steps
                // down; without this, with pre-vote, it could go on forever (etcd-raft #8501).
                outbox.append(RaftMessage(kind: .appendResponse, from: id, to: m.from, term: term))
            } else if m.kind == .preVote {
                var r = RaftMessage(kind: .preVoteResponse, from: id, to: m.from, term: term)
                r.reject = true
                outbox.append(r)
            }
            return
        }

        switch m.kind {
        case .preVote, .vote:
            handleVoteRequest(m)
        case .preVoteResponse:
            if role == .preCandidate {
                votes[m.from] = !m.reject
                tallyVotes()
            }
        case .voteResponse:
            if role == .candidate {
                votes[m.from] = !m.reject
                tallyVotes()
            }
        case .append, .heartbeat, .installSnapshot:
            guard role != .leader else { return }  // two leaders in one term cannot happen (§5.2)
            if role != .follower || leader != m.from {
                becomeFollower(term: term, leader: m.from)
            }
            electionElapsed = .zero
            switch m.kind {
            case .append: handleAppend(m)
            case .heartbeat: handleHeartbeat(m)
            default: handleSnapshot(m)
            }
        case .appendResponse:
            if role == .leader { handleAppendResponse(m) }
        case .heartbeatResponse:
            if role == .leader { handleHeartbeatResponse(m) }
        case .timeoutNow:
            if role != .leader && isPromotable { campaign(transfer: true) }
        case .readIndex:
            if role == .leader { try? leaderRead(requester: m.from, context: m.context) }
        case .readIndexResponse:
            if role != .leader { readStates.append(ReadState(index: m.index, context: m.context)) }
        }
    }

    /// A message a correct server could have sent: its term within `maxTermJump` of ours, and
    /// its indexes such that `index + entries.count` and the entries' own indexes line up without
    /// overflow. Anything else is dropped, as a lost message would be.
    func isSane(_ m: RaftMessage) -> Bool {
        guard Limits.isSaneJump(m.term, from: term, limit: config.maxTermJump) else { return false }
        guard m.term < .max, m.index < .max - UInt64(m.entries.count), m.rejectHint < .max, m.commit < .max else { return false }
        for (k, e) in m.entries.enumerated() where e.index != m.index + 1 + UInt64(k) || e.term > m.term {
            return false
        }
        if let s = m.snapshot, s.term > m.term || s.index == .max { return false }
        return true
    }

    private mutating func handleVoteRequest(_ m: RaftMessage) {
        // Raft §5.2: one vote per term (a repeat request from the same candidate is granted
        // again); a pre-vote for a future term promises nothing, so it may be granted freely.
        let canVote = vote == m.from || (vote == nil && leader == nil) || (m.kind == .preVote && m.term > term)
        // Raft §5.4.1: only for a candidate whose log is at least as up to date.
        let upToDate = m.logTerm > lastTerm || (m.logTerm == lastTerm && m.index >= lastIndex)
        let kind: RaftMessage.Kind = m.kind == .vote ? .voteResponse : .preVoteResponse
        if canVote && upToDate {
            outbox.append(RaftMessage(kind: kind, from: id, to: m.from, term: m.term))
            if m.kind == .vote {
                vote = m.from
                electionElapsed = .zero
            }
        } else {
            var r = RaftMessage(kind: kind, from: id, to: m.from, term: term)
            r.reject = true
            outbox.append(r)
        }
    }

    private mutating func handleAppend(_ m: RaftMessage) {
        // A server that has never known a configuration (it joined empty and has had no
        // snapshot) cannot tell what the configuration was before entries that start at index
        // 1; it waits for a snapshot rather than build one on nothing. No answer: the leader's
        // probe is retried at heartbeat pace, not in a loop of rejections, until it has
        // compacted and sends the snapshot. (Entries after index 1 fail the consistency check
        // below as usual, and the rejection walks the leader back to its snapshot.)
        if m.index == 0, snapshot.index == 0, configuration.members.isEmpty, !m.entries.isEmpty { return }
        var r = RaftMessage(kind: .appendResponse, from: id, to: m.from, term: term)
        if m.index < commit {
            // Already committed here; say so, so the leader skips ahead.
            r.index = commit
            outbox.append(r)
            return
        }
        guard let t = term(at: m.index), t == m.logTerm else {
            // Raft §5.3: consistency check failed. Hint at the first index of the conflicting
            // term (or our end), so the leader skips a whole term per round trip.
            r.reject = true
            r.index = m.index
            var hint = min(m.index, lastIndex)
            if let ct = term(at: hint) {
                while hint > commit, hint > snapshot.index, term(at: hint - 1) == ct { hint -= 1 }
                if hint > commit { hint -= 1 }
            }
            r.rejectHint = max(hint, commit)
            outbox.append(r)
            return
        }
        // Skip what we already have; truncate only from the first real conflict (Raft §5.3
        // step 3: a stale, reordered append must not cut off entries a later one added).
        var firstNew = m.entries.count
        for (i, e) in m.entries.enumerated() where term(at: e.index) != e.term {
            firstNew = i
            break
        }
        if firstNew < m.entries.count {
            let conflict = m.entries[firstNew].index
            guard conflict > commit else {
                // A committed entry never changes (Raft §5.4); ignore a message that says otherwise.
                return
            }
            appendToLog(Array(m.entries[firstNew...]))
        }
        let lastNew = m.index + UInt64(m.entries.count)
        // Raft Figure 2, AppendEntries step 5.
        commit = max(commit, min(m.commit, lastNew))
        r.index = lastNew
        outbox.append(r)
    }

    private mutating func handleHeartbeat(_ m: RaftMessage) {
        // The leader sends min(match, commit), so this is within what we agreed on with it.
        commit = max(commit, min(m.commit, lastIndex))
        var r = RaftMessage(kind: .heartbeatResponse, from: id, to: m.from, term: term)
        r.readRound = m.readRound
        outbox.append(r)
    }

    private mutating func handleSnapshot(_ m: RaftMessage) {
        guard let s = m.snapshot else { return }
        var r = RaftMessage(kind: .appendResponse, from: id, to: m.from, term: term)
        if s.index <= commit {
            r.index = commit
        } else if term(at: s.index) == s.term {
            // Raft §7: our log already holds the snapshot's last entry; keep what follows it.
            commit = s.index
            r.index = s.index
        } else {
            // Raft §7: otherwise the whole log is replaced by the snapshot.
            let before = configuration
            snapshot = s
            log = []
            configurations = []
            commit = s.index
            unstableFrom = s.index + 1
            persisted = min(persisted, s.index)
            installedSnapshot = s
            r.index = s.index
            if configuration != before { configurationChanged() }
        }
        outbox.append(r)
    }

    private mutating func handleAppendResponse(_ m: RaftMessage) {
        // A follower cannot have matched (or been sent) more than the leader has.
        guard m.index <= lastIndex, var pr = progress[m.from] else { return }
        pr.recentActive = true
        if m.reject {
            if pr.maybeDecrease(rejected: m.index, hint: m.rejectHint) {
                if pr.state == .replicate { pr.becomeProbe() }
                progress[m.from] = pr
                sendAppend(to: m.from, sendIfEmpty: true)
            } else {
                progress[m.from] = pr
            }
            return
        }
        let wasPaused = pr.isPaused(maxInflight: config.maxInflightMessages)
        if pr.maybeUpdate(m.index) {
            switch pr.state {
            case .probe: pr.becomeReplicate()
            case .snapshot where pr.match >= pr.pendingSnapshot: pr.becomeProbe()
            default: break
            }
            progress[m.from] = pr
            if maybeCommit() {
                needsCommitBroadcast = true
            } else if wasPaused {
                sendAppend(to: m.from, sendIfEmpty: false)
            }
            // Keep the pipe full while more entries wait.
            sendAppend(to: m.from, sendIfEmpty: false)
            if m.from == leadTransferee, progress[m.from]?.match == lastIndex {
                outbox.append(RaftMessage(kind: .timeoutNow, from: id, to: m.from, term: term))
            }
        } else {
            if pr.state == .snapshot && pr.match >= pr.pendingSnapshot { pr.becomeProbe() }
            progress[m.from] = pr
        }
    }

    private mutating func handleHeartbeatResponse(_ m: RaftMessage) {
        guard var pr = progress[m.from] else { return }
        pr.recentActive = true
        pr.probeSent = false
        switch pr.state {
        case .replicate where pr.inflight.count >= config.maxInflightMessages:
            // An append in the window may be lost; free a slot so a new one finds the gap.
            pr.inflight.removeFirst()
        case .snapshot:
            // The snapshot may be lost: after a few heartbeats without its acknowledgement,
            // probe again (which resends it if still needed).
            pr.heartbeatsInSnapshot += 1
            if pr.heartbeatsInSnapshot >= 4 { pr.becomeProbe() }
        default:
            break
        }
        progress[m.from] = pr
        // An empty append past a lost one is rejected, which starts the repair (Raft §5.3).
        if pr.match < lastIndex { sendAppend(to: m.from, sendIfEmpty: true) }
        guard m.readRound > 0, !pendingReads.isEmpty else { return }
        for i in pendingReads.indices where pendingReads[i].round <= m.readRound {
            pendingReads[i].acks.insert(m.from)
        }
        // A quorum for a later round confirms every earlier one too.
        let voters = configuration.voters
        if let last = pendingReads.lastIndex(where: { $0.acks.intersection(voters).count >= configuration.quorum }) {
            let done = pendingReads[...last]
            pendingReads.removeFirst(last + 1)
            for r in done { releaseRead(index: r.index, requester: r.requester, context: r.context) }
        }
    }

    /// Raft §5.3, §5.4.2: the highest index stored on a quorum, if it is of the current term.
    private mutating func maybeCommit() -> Bool {
        let voters = configuration.voters
        guard !voters.isEmpty else { return false }
        let matches = voters.map { $0 == id ? persisted : (progress[$0]?.match ?? 0) }.sorted(by: >)
        let q = matches[configuration.quorum - 1]
        guard q > commit, term(at: q) == term else { return false }
        commit = q
        if !readsAwaitingCommit.isEmpty {
            let waiting = readsAwaitingCommit
            readsAwaitingCommit = []
            for r in waiting { try? leaderRead(requester: r.requester, context: r.context) }
        }
        return true
    }

    private mutating func configurationChanged() {
        guard role == .leader else { return }
        let members = configuration.members
        for peer in members where peer != id && progress[peer] == nil {
            progress[peer] = Progress(next: lastIndex + 1)
            progress[peer]?.recentActive = true
        }
        for peer in progress.keys where !members.contains(peer) { progress[peer] = nil }
        if let t = leadTransferee, !configuration.voters.contains(t) { leadTransferee = nil }
        if maybeCommit() { needsCommitBroadcast = true }
    }

    private mutating func sendAppend(to peer: NodeID, sendIfEmpty: Bool) {
        guard var pr = progress[peer], !pr.isPaused(maxInflight: config.maxInflightMessages) else { return }
        let prevIndex = pr.next - 1
        guard let prevTerm = term(at: prevIndex) else {
            // Raft §7: the entries this follower needs are compacted; send the snapshot.
            pr.becomeSnapshot(snapshot.index)
            progress[peer] = pr
            var m = RaftMessage(kind: .installSnapshot, from: id, to: peer, term: term)
            m.snapshot = snapshot
            outbox.append(m)
            return
        }
        let ents = entries(from: pr.next, maxCount: config.maxEntriesPerMessage, maxBytes: config.maxBytesPerMessage)
        if ents.isEmpty && !sendIfEmpty { return }
        var m = RaftMessage(kind: .append, from: id, to: peer, term: term)
        m.index = prevIndex
        m.logTerm = prevTerm
        m.entries = ents
        m.commit = commit
        outbox.append(m)
        switch pr.state {
        case .replicate:
            if let last = ents.last?.index {
                pr.next = last + 1
                pr.inflight.append(last)
            }
        case .probe:
            pr.probeSent = true
        case .snapshot:
            break
        }
        progress[peer] = pr
    }

    // MARK: Ready

    /// Whether `ready()` would hand out anything.
    public var hasReady: Bool {
        needsBroadcast || needsCommitBroadcast || needsHeartbeat || !outbox.isEmpty || unstableFrom <= lastIndex
            || installedSnapshot != nil || hardState != lastHardState || min(commit, persistedOrPending) > appliedHanded
            || !readStates.isEmpty || softState != lastSoftState
    }

    private var persistedOrPending: UInt64 { lastIndex }

    public var hardState: HardState { HardState(term: term, vote: vote, commit: commit) }
    public var softState: SoftState { SoftState(role: role, leader: leader, term: term) }

    /// Collects what the shell must do; see `Ready` for the order. Call `advance` when done.
    public mutating func ready(maxCommittedEntries: Int = 4096) -> Ready {
        flushLeaderMessages()
        var rd = Ready()
        let hs = hardState
        if hs != lastHardState { rd.hardState = hs }
        rd.snapshot = installedSnapshot
        if unstableFrom <= lastIndex {
            rd.entries = Array(log[Int(unstableFrom - snapshot.index - 1)...])
        }
        rd.messages = outbox
        if let s = installedSnapshot { appliedHanded = max(appliedHanded, s.index) }
        let upTo = min(commit, lastIndex, appliedHanded + UInt64(maxCommittedEntries))
        if upTo > appliedHanded {
            rd.committedEntries = Array(log[Int(appliedHanded - snapshot.index)..<Int(upTo - snapshot.index)])
            appliedHanded = upTo
        }
        rd.readStates = readStates
        let ss = softState
        if ss != lastSoftState { rd.softState = ss }

        installedSnapshot = nil
        unstableFrom = lastIndex + 1
        outbox = []
        readStates = []
        lastHardState = hs
        lastSoftState = ss
        return rd
    }

    private mutating func flushLeaderMessages() {
        guard role == .leader else { return }
        let peers = progress.keys.sorted()
        if needsBroadcast || needsCommitBroadcast {
            for p in peers { sendAppend(to: p, sendIfEmpty: needsCommitBroadcast) }
        }
        if needsHeartbeat {
            for p in peers {
                var m = RaftMessage(kind: .heartbeat, from: id, to: p, term: term)
                m.commit = min(progress[p]?.match ?? 0, commit)
                m.readRound = readRound
                outbox.append(m)
            }
        }
        needsBroadcast = false
        needsCommitBroadcast = false
        needsHeartbeat = false
    }

    /// The shell persisted, sent and applied what `rd` listed.
    public mutating func advance(_ rd: Ready) {
        if let s = rd.snapshot, s.index == snapshot.index {
            persisted = max(persisted, s.index)
            applied = max(applied, s.index)
        }
        if let last = rd.entries.last, term(at: last.index) == last.term {
            persisted = max(persisted, last.index)
        }
        if let last = rd.committedEntries.last { applied = max(applied, last.index) }
        if role == .leader, maybeCommit() { needsCommitBroadcast = true }
    }
}
