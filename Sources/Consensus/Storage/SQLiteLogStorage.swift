import CSQLite
import Foundation

public struct StorageError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var message: String
    public var description: String { "storage: \(operation) failed: \(message) (sqlite code \(code))" }
}

/// The durable log on the system SQLite: WAL journal, synchronous=FULL, so that a transaction
/// is on disk (fsynced) when COMMIT returns and a crash at any instant leaves the state of the
/// last committed transaction (SQLite's atomic commit; WAL frames are checksummed, a torn tail
/// is ignored on recovery). Every `persist` is one transaction, so a Ready's entries and hard
/// state become durable together, before the shell sends the messages that depend on them.
///
/// Not thread-safe: one owner (the Raft shell's actor) uses it.
public final class SQLiteLogStorage: LogStorage {
    public let path: String
    private var db: OpaquePointer?
    /// Test hook: runs inside the transaction just before COMMIT, to capture the files at a
    /// crash point.
    var beforeCommit: (() throws -> Void)?

    public init(path: String) throws {
        self.path = path
        // Created 0600 before SQLite opens it: the -wal and -shm files it makes take the
        // database file's mode, and the log holds the whole cluster state.
        if path != ":memory:", !FileManager.default.fileExists(atPath: path) {
            let fd = open(path, O_CREAT | O_WRONLY, 0o600)
            if fd >= 0 { close(fd) }
        }
        let rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK else {
            let msg = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            sqlite3_close_v2(db)
            db = nil
            throw StorageError(operation: "open \(path)", code: rc, message: msg)
        }
        try exec("PRAGMA journal_mode=WAL")
        try exec("PRAGMA synchronous=FULL")
        try exec(
            """
            CREATE TABLE IF NOT EXISTS entries(
                idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL, data BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS hard_state(
                id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, vote TEXT, commit_index INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS snapshot(
                id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL,
                voters TEXT NOT NULL, learners TEXT NOT NULL, data BLOB NOT NULL);
            """)
    }

    deinit { sqlite3_close_v2(db) }

    // MARK: LogStorage

    public func recover() throws -> RecoveredState {
        var state = RecoveredState()
        try query("SELECT term, vote, commit_index FROM hard_state WHERE id = 1") { st in
            state.hardState.term = UInt64(bitPattern: sqlite3_column_int64(st, 0))
            if sqlite3_column_type(st, 1) != SQLITE_NULL { state.hardState.vote = String(cString: sqlite3_column_text(st, 1)) }
            state.hardState.commit = UInt64(bitPattern: sqlite3_column_int64(st, 2))
        }
        try query("SELECT idx, term, voters, learners, data FROM snapshot WHERE id = 1") { st in
            state.snapshot = Snapshot(
                index: UInt64(bitPattern: sqlite3_column_int64(st, 0)),
                term: UInt64(bitPattern: sqlite3_column_int64(st, 1)),
                configuration: Configuration(
                    voters: Self.names(String(cString: sqlite3_column_text(st, 2))),
                    learners: Self.names(String(cString: sqlite3_column_text(st, 3)))),
                data: Self.blob(st, 4))
        }
        try query(
            "SELECT idx, term, kind, data FROM entries WHERE idx > ? ORDER BY idx",
            bind: [Int64(bitPattern: state.snapshot?.index ?? 0)]
        ) { st in
            let kind = Entry.Kind(rawValue: UInt8(truncatingIfNeeded: sqlite3_column_int64(st, 2))) ?? .normal
            state.entries.append(
                Entry(
                    term: UInt64(bitPattern: sqlite3_column_int64(st, 1)),
                    index: UInt64(bitPattern: sqlite3_column_int64(st, 0)),
                    kind: kind, data: Self.blob(st, 3)))
        }
        // The log must be contiguous after the snapshot; anything else is a bug or tampering.
        var expected = (state.snapshot?.index ?? 0) + 1
        for e in state.entries {
            if e.index != expected {
                throw StorageError(
                    operation: "recover \(path)", code: SQLITE_CORRUPT,
                    message: "log has a gap: expected index \(expected), found \(e.index)")
            }
            expected += 1
        }
        return state
    }

    public func persist(snapshot: Snapshot?, entries: [Entry], hardState: HardState?) throws {
        try transaction {
            if let s = snapshot {
                try saveSnapshot(s)
                try run("DELETE FROM entries", bind: [])
            }
            if let first = entries.first?.index {
                try run("DELETE FROM entries WHERE idx >= ?", bind: [.int(Int64(bitPattern: first))])
                let st = try prepare("INSERT INTO entries(idx, term, kind, data) VALUES (?, ?, ?, ?)")
                defer { sqlite3_finalize(st) }
                for e in entries {
                    sqlite3_reset(st)
                    sqlite3_bind_int64(st, 1, Int64(bitPattern: e.index))
                    sqlite3_bind_int64(st, 2, Int64(bitPattern: e.term))
                    sqlite3_bind_int64(st, 3, Int64(e.kind.rawValue))
                    bindBlob(st, 4, e.data)
                    try step(st, "insert entry \(e.index)")
                }
            }
            if let hs = hardState {
                try run(
                    "INSERT OR REPLACE INTO hard_state(id, term, vote, commit_index) VALUES (1, ?, ?, ?)",
                    bind: [
                        .int(Int64(bitPattern: hs.term)), hs.vote.map { .text($0) } ?? .null,
                        .int(Int64(bitPattern: hs.commit)),
                    ])
            }
        }
    }

    public func compact(to snapshot: Snapshot) throws {
        try transaction {
            var current: UInt64 = 0
            try query("SELECT idx FROM snapshot WHERE id = 1") { current = UInt64(bitPattern: sqlite3_column_int64($0, 0)) }
            guard snapshot.index > current else { return }
            try saveSnapshot(snapshot)
            try run("DELETE FROM entries WHERE idx <= ?", bind: [.int(Int64(bitPattern: snapshot.index))])
        }
    }

    // MARK: SQLite plumbing

    private enum Value {
        case int(Int64)
        case text(String)
        case blob([UInt8])
        case null
    }

    private func saveSnapshot(_ s: Snapshot) throws {
        try run(
            "INSERT OR REPLACE INTO snapshot(id, idx, term, voters, learners, data) VALUES (1, ?, ?, ?, ?, ?)",
            bind: [
                .int(Int64(bitPattern: s.index)), .int(Int64(bitPattern: s.term)),
                .text(s.configuration.voters.sorted().joined(separator: "\n")),
                .text(s.configuration.learners.sorted().joined(separator: "\n")), .blob(s.data),
            ])
    }

    private static func names(_ text: String) -> Set<NodeID> {
        Set(text.split(separator: "\n").map(String.init))
    }

    private static func blob(_ st: OpaquePointer?, _ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(st, column))
        guard n > 0, let p = sqlite3_column_blob(st, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    private func bindBlob(_ st: OpaquePointer?, _ i: Int32, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { buf in
            // A zero-length blob needs a non-null pointer, or SQLite stores NULL.
            _ = sqlite3_bind_blob(
                st, i, buf.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buf.count),
                ms_sqlite_transient())
        }
    }

    private func error(_ op: String, _ rc: Int32) -> StorageError {
        StorageError(operation: op, code: rc, message: String(cString: sqlite3_errmsg(db)))
    }

    private func exec(_ sql: String) throws {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw error(sql, rc) }
    }

    private func prepare(_ sql: String) throws -> OpaquePointer? {
        var st: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &st, nil)
        guard rc == SQLITE_OK else { throw error("prepare \(sql)", rc) }
        return st
    }

    private func step(_ st: OpaquePointer?, _ op: String) throws {
        let rc = sqlite3_step(st)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw error(op, rc) }
    }

    private func bind(_ st: OpaquePointer?, _ values: [Value]) {
        for (i, v) in values.enumerated() {
            let k = Int32(i + 1)
            switch v {
            case .int(let n): sqlite3_bind_int64(st, k, n)
            case .text(let s): sqlite3_bind_text(st, k, s, -1, ms_sqlite_transient())
            case .blob(let b): bindBlob(st, k, b)
            case .null: sqlite3_bind_null(st, k)
            }
        }
    }

    private func run(_ sql: String, bind values: [Value]) throws {
        let st = try prepare(sql)
        defer { sqlite3_finalize(st) }
        bind(st, values)
        try step(st, sql)
    }

    private func query(_ sql: String, bind values: [Int64] = [], row: (OpaquePointer?) throws -> Void) throws {
        let st = try prepare(sql)
        defer { sqlite3_finalize(st) }
        for (i, v) in values.enumerated() { sqlite3_bind_int64(st, Int32(i + 1), v) }
        while true {
            let rc = sqlite3_step(st)
            if rc == SQLITE_ROW {
                try row(st)
                continue
            }
            if rc == SQLITE_DONE { return }
            throw error(sql, rc)
        }
    }

    private func transaction(_ body: () throws -> Void) throws {
        try exec("BEGIN IMMEDIATE")
        do {
            try body()
            try beforeCommit?()
            try exec("COMMIT")
        } catch {
            try? exec("ROLLBACK")
            throw error
        }
    }
}
