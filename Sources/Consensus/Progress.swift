/// The leader's view of one follower's log (Raft §5.3 nextIndex/matchIndex), plus etcd-raft's
/// flow control: probe while the match point is unknown, replicate (pipelined, with a bounded
/// number of appends in flight) once it is known, snapshot while an InstallSnapshot is out.
struct Progress: Sendable, Hashable {
    enum State: Sendable, Hashable { case probe, replicate, snapshot }

    var match: UInt64 = 0
    var next: UInt64
    var state: State = .probe
    /// In probe state: one append is out and unanswered; wait for its answer or a heartbeat.
    var probeSent = false
    /// In snapshot state: the index of the snapshot sent.
    var pendingSnapshot: UInt64 = 0
    /// Last index of each append in flight, oldest first (bounded by maxInflightMessages).
    var inflight: [UInt64] = []
    /// Heard from since the last check-quorum round (thesis §6.2).
    var recentActive = false
    /// In snapshot state: heartbeats answered since the snapshot went out.
    var heartbeatsInSnapshot = 0

    init(next: UInt64) { self.next = next }

    func isPaused(maxInflight: Int) -> Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflight.count >= maxInflight
        case .snapshot: return true
        }
    }

    mutating func becomeProbe() {
        if state == .snapshot {
            next = max(match + 1, pendingSnapshot + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        pendingSnapshot = 0
        inflight.removeAll()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        probeSent = false
        pendingSnapshot = 0
        inflight.removeAll()
    }

    mutating func becomeSnapshot(_ index: UInt64) {
        state = .snapshot
        pendingSnapshot = index
        heartbeatsInSnapshot = 0
        probeSent = false
        inflight.removeAll()
    }

    /// An acknowledgement up to `index`; false if it tells nothing new (a duplicate or reordered ack).
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if index > match {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        while let first = inflight.first, first <= index { inflight.removeFirst() }
        return updated
    }

    /// A rejection of the append at `rejected`; false if it is stale.
    mutating func maybeDecrease(rejected: UInt64, hint: UInt64) -> Bool {
        if state == .replicate {
            // Only the rejection of what we sent after `match` says anything new.
            if rejected <= match { return false }
            next = match + 1
            return true
        }
        if next == 0 || next - 1 != rejected { return false }
        next = max(min(rejected, hint + 1), match + 1, 1)
        probeSent = false
        return true
    }
}
