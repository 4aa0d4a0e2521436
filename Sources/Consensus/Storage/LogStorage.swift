/// What a server's storage held when it started: its hard state, its latest snapshot and the
/// log entries after it.
public struct RecoveredState: Sendable, Hashable {
    public var hardState: HardState
    public var snapshot: Snapshot?
    public var entries: [Entry]

    public init(hardState: HardState = HardState(), snapshot: Snapshot? = nil, entries: [Entry] = []) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }
}

/// Where a server keeps what Raft requires to survive a crash (Raft Figure 2): the log, the hard
/// state and the latest snapshot. Each call is atomic and durable when it returns: a crash
/// leaves either all of it or none of it.
public protocol LogStorage {
    /// Everything stored, for rebuilding a RaftNode after a restart.
    func recover() throws -> RecoveredState

    /// Persists the first part of a Ready in one atomic write: `snapshot` (if any) replaces the
    /// whole log, then `entries` replace anything stored from the first one's index on, then
    /// `hardState` (if any).
    mutating func persist(snapshot: Snapshot?, entries: [Entry], hardState: HardState?) throws

    /// Log compaction (Raft §7): stores `snapshot` and drops the entries it covers; later
    /// entries stay.
    mutating func compact(to snapshot: Snapshot) throws
}

extension LogStorage {
    /// Persists what `ready` says must be durable before its messages are sent.
    public mutating func persist(_ ready: Ready) throws {
        if ready.snapshot == nil && ready.entries.isEmpty && ready.hardState == nil { return }
        try persist(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
    }
}

/// Storage in memory, for simulation and tests: what a simulated crash keeps is what was
/// persisted here; what a pending Ready held but had not persisted is lost.
public struct MemoryStorage: LogStorage, Sendable, Hashable {
    public private(set) var hardState = HardState()
    public private(set) var snapshot: Snapshot?
    public private(set) var entries: [Entry] = []

    public init() {}

    public func recover() -> RecoveredState {
        RecoveredState(hardState: hardState, snapshot: snapshot, entries: entries)
    }

    public mutating func persist(snapshot s: Snapshot?, entries new: [Entry], hardState hs: HardState?) {
        if let s {
            snapshot = s
            entries = []
        }
        if let first = new.first?.index {
            entries.removeAll { $0.index >= first }
            entries.append(contentsOf: new)
        }
        if let hs { hardState = hs }
    }

    public mutating func compact(to s: Snapshot) {
        if let old = snapshot, old.index >= s.index { return }
        snapshot = s
        entries.removeAll { $0.index <= s.index }
    }
}
