import Foundation
import SimulationKit
import Testing

@testable import Consensus

@Suite struct SQLiteLogStorageTests {
    static func tempDir() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("raft-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    static func copyFiles(of db: String, to dir: URL) throws {
        for suffix in ["", "-wal", "-shm"] {
            let src = db + suffix
            if FileManager.default.fileExists(atPath: src) {
                try FileManager.default.copyItem(atPath: src, toPath: dir.appendingPathComponent("raft.db" + suffix).path)
            }
        }
    }

    @Test func entriesHardStateAndSnapshotSurviveReopening() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("raft.db").path
        do {
            let s = try SQLiteLogStorage(path: path)
            try s.persist(snapshot: nil, entries: entries([1, 1, 2]), hardState: HardState(term: 2, vote: "b", commit: 2))
            // A conflicting append replaces index 3 and everything after it (Raft §5.3).
            try s.persist(
                snapshot: nil,
                entries: [
                    Entry(term: 3, index: 3, kind: .configuration, data: ConfChange.addLearner("d").encoded),
                    Entry(term: 3, index: 4, data: []),
                ], hardState: nil)
            try s.compact(to: Snapshot(index: 2, term: 1, configuration: Configuration(voters: ["a", "b"], learners: ["c"]), data: [9, 8]))
        }
        let s = try SQLiteLogStorage(path: path)
        let r = try s.recover()
        #expect(r.hardState == HardState(term: 2, vote: "b", commit: 2))
        #expect(r.snapshot == Snapshot(index: 2, term: 1, configuration: Configuration(voters: ["a", "b"], learners: ["c"]), data: [9, 8]))
        #expect(r.entries.map(\.index) == [3, 4])
        #expect(r.entries[0].kind == .configuration)
        #expect(r.entries[1].data == [])
    }

    @Test func anInstalledSnapshotReplacesTheWholeLog() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let s = try SQLiteLogStorage(path: dir.appendingPathComponent("raft.db").path)
        try s.persist(snapshot: nil, entries: entries([1, 1, 1, 1, 1]), hardState: HardState(term: 1))
        try s.persist(
            snapshot: Snapshot(index: 3, term: 2, configuration: Configuration(voters: ["a"]), data: [1]),
            entries: [], hardState: HardState(term: 2, commit: 3))
        let r = try s.recover()
        #expect(r.entries.isEmpty)
        #expect(r.snapshot?.index == 3)
    }

    /// A crash in the middle of a write (the files as they are on disk before COMMIT) recovers
    /// the last committed state: nothing of the half-done transaction, nothing committed lost.
    @Test func aCrashBeforeCommitRecoversTheLastCommittedState() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("raft.db").path
        let crash = dir.appendingPathComponent("crash")
        try FileManager.default.createDirectory(at: crash, withIntermediateDirectories: true)
        let s = try SQLiteLogStorage(path: path)
        try s.persist(snapshot: nil, entries: entries([1, 1]), hardState: HardState(term: 1, vote: "a", commit: 2))
        s.beforeCommit = { try Self.copyFiles(of: path, to: crash) }
        // Large enough to spill pages into the WAL before COMMIT.
        let big = (3...400).map { Entry(term: 2, index: UInt64($0), data: [UInt8](repeating: 7, count: 4000)) }
        try s.persist(snapshot: nil, entries: big, hardState: HardState(term: 2, vote: nil, commit: 2))
        s.beforeCommit = nil
        let recovered = try SQLiteLogStorage(path: crash.appendingPathComponent("raft.db").path).recover()
        #expect(recovered.hardState == HardState(term: 1, vote: "a", commit: 2))
        #expect(recovered.entries == entries([1, 1]))
        #expect(try s.recover().entries.count == 400)
    }

    /// kill -9 at any byte of the write-ahead log: every torn tail recovers to the state after
    /// some whole transaction, in order, never a mixture.
    @Test func aTornWriteAheadLogRecoversAWholeTransactionPrefix() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("raft.db").path
        let s = try SQLiteLogStorage(path: path)
        try s.persist(snapshot: nil, entries: [], hardState: HardState(term: 1))
        for i in 1...12 {
            try s.persist(
                snapshot: nil, entries: [Entry(term: UInt64(i), index: UInt64(i), data: [UInt8](repeating: UInt8(i), count: 900))],
                hardState: HardState(term: UInt64(i), vote: "n\(i)", commit: UInt64(i - 1)))
        }
        let wal = try Data(contentsOf: URL(fileURLWithPath: path + "-wal"))
        var rng = SeededGenerator(seed: 5)
        var cuts = [0, wal.count]
        for _ in 0..<30 { cuts.append(Int.random(in: 0...wal.count, using: &rng)) }
        for cut in cuts {
            let crash = dir.appendingPathComponent("cut-\(cut)")
            try FileManager.default.createDirectory(at: crash, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: path, toPath: crash.appendingPathComponent("raft.db").path)
            try wal.prefix(cut).write(to: crash.appendingPathComponent("raft.db-wal"))
            let r = try SQLiteLogStorage(path: crash.appendingPathComponent("raft.db").path).recover()
            let n = r.entries.count
            #expect(r.entries.map(\.term) == (0..<n).map { UInt64($0 + 1) }, "cut at byte \(cut)")
            if n > 0 {
                #expect(r.hardState == HardState(term: UInt64(n), vote: "n\(n)", commit: UInt64(n - 1)), "cut at byte \(cut)")
            }
        }
    }

    @Test func aClusterRecoversFromSQLiteAfterARestart() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("raft.db").path
        var node = RaftNode(config: RaftConfig(id: "a"), bootstrap: Configuration(voters: ["a"]), seed: 1)
        var store = try SQLiteLogStorage(path: path)
        node.tick(by: .seconds(1))
        var applied: [[UInt8]] = []
        for i in 0..<5 {
            try node.propose([UInt8(i)])
            while node.hasReady {
                let rd = node.ready()
                try store.persist(rd)
                applied += rd.committedEntries.filter { !$0.data.isEmpty }.map(\.data)
                node.advance(rd)
            }
        }
        #expect(applied == [[0], [1], [2], [3], [4]])
        store = try SQLiteLogStorage(path: path)
        var again = RaftNode(
            config: RaftConfig(id: "a"), bootstrap: Configuration(voters: ["a"]),
            recovered: try store.recover(), seed: 2)
        let rd = again.ready()
        #expect(rd.committedEntries.filter { !$0.data.isEmpty }.map(\.data) == applied)
        #expect(again.term == node.term)
    }
}
