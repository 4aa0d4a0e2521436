import Consensus
import Foundation
import Synchronization
import Testing

@testable import Agent

/// A log storage whose writes fail once `failing` is set (a disk that is full or gone).
final class FailingStorage: LogStorage, @unchecked Sendable {
    private var inner = MemoryStorage()
    let failing = Atomic<Bool>(false)
    struct DiskError: Error, CustomStringConvertible { var description: String { "disk I/O error (injected)" } }

    init(recovered: MemoryStorage = MemoryStorage()) { inner = recovered }

    func recover() throws -> RecoveredState { inner.recover() }

    func persist(snapshot: Snapshot?, entries: [Entry], hardState: HardState?) throws {
        if failing.load(ordering: .acquiring) { throw DiskError() }
        inner.persist(snapshot: snapshot, entries: entries, hardState: hardState)
    }

    func compact(to snapshot: Snapshot) throws {
        if failing.load(ordering: .acquiring) { throw DiskError() }
        inner.compact(to: snapshot)
    }
}

/// docs/consensus.md, "A disk that fails": a server that cannot write its Raft log stops the
/// agent (fail-stop) rather than run on serving the state it last applied.
@Suite struct RaftFailStopTests {
    @Test func aServerWhoseLogWriteFailsStopsTheAgentAndSaysWhy() async throws {
        var cluster = try ServerCluster(label: "failstop", names: ["s1"])
        try await cluster.start("s1", bootstrapExpect: 1)
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        let s1 = cluster.agents["s1"]!
        #expect(try await pollUntil(20) { await s1.raft?.isLeader == true })
        #expect(s1.failStopReason == nil)
        let disk = FailingStorage()
        await s1.raft!.replaceStorage(disk)
        disk.failing.store(true, ordering: .releasing)
        // A write the leader must append to its log: the append fails.
        _ = await s1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 3}"#.utf8))
        let stopped = Atomic<Bool>(false)
        Task {
            await s1.stopped()
            stopped.store(true, ordering: .releasing)
        }
        #expect(try await pollUntil(20) { stopped.load(ordering: .acquiring) }, "the agent stopped itself")
        #expect(s1.failStopReason?.contains("cannot persist the Raft log") == true, "\(s1.failStopReason ?? "none")")
        #expect(s1.failStopReason?.contains("injected") == true)
        #expect(await s1.raft!.isLeader == false, "Raft stopped on this server")
    }
}
