import Consensus
import Foundation
import Testing

@testable import Agent

/// `operator snapshot save | restore` (docs/consensus.md, "Backup and restore").
@Suite(.serialized) struct SnapshotRestoreTests {
    static let backup = ClusterBackup(
        index: 42, takenAtMilliseconds: 1_700_000_000_000,
        services: [
            "web": ServiceSpec(image: "nginx:1", cpu: 0.5, memory: 64 << 20, max: 8),
            "batch": ServiceSpec(image: "busybox", priority: 2, cpu: 1, memory: 32 << 20, max: 4),
        ],
        demand: ["web": 12.5], drainedNodes: ["h2"])

    @Test func aSavedFileReadsBackAsTheSameStateWithItsHeader() throws {
        let bytes = try SnapshotFile.encode(Self.backup, cluster: "prod")
        #expect(String(decoding: bytes.prefix(22), as: UTF8.self) == "microscale-snapshot 1\n")
        let (header, backup) = try SnapshotFile.decode(bytes)
        #expect(backup == Self.backup)
        #expect(header.cluster == "prod" && header.index == 42 && header.sha256.count == 64)
    }

    @Test func aFileWithOneByteChangedIsRefusedAsDamaged() throws {
        var bytes = try SnapshotFile.encode(Self.backup, cluster: "prod")
        let i = bytes.lastIndex(of: UInt8(ascii: "5"))!  // the demand value's last digit
        bytes[i] = UInt8(ascii: "6")
        #expect(throws: SnapshotFile.Failure.self) { try SnapshotFile.decode(bytes) }
        do { _ = try SnapshotFile.decode(bytes) } catch { #expect(error.description.contains("SHA-256"), "\(error)") }
    }

    @Test func aTruncatedFileIsRefusedAsDamaged() throws {
        let bytes = try SnapshotFile.encode(Self.backup, cluster: "prod")
        do {
            _ = try SnapshotFile.decode(Array(bytes.dropLast(10)))
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("truncated"), "\(error)")
        }
    }

    @Test func aForeignFileOrAnotherFormatVersionIsRefusedSayingSo() throws {
        do {
            _ = try SnapshotFile.decode(Array("services:\n  web: {}\n".utf8))
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("not a Microscale snapshot"), "\(error)")
        }
        do {
            _ = try SnapshotFile.decode(Array("{\"raft\": 1}".utf8))
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("not a Microscale snapshot"), "\(error)")
        }
        var future = try SnapshotFile.encode(Self.backup, cluster: "prod")
        future[20] = UInt8(ascii: "9")
        do {
            _ = try SnapshotFile.decode(future)
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("version 9"), "\(error)")
        }
    }

    @Test func aFileWhoseStateBreaksALimitIsRefusedNamingTheField() throws {
        var bad = Self.backup
        bad.demand["web"] = 1e30
        do {
            _ = try SnapshotFile.decode(try SnapshotFile.encode(bad, cluster: "prod"))
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains("demand for web"), "\(error)")
        }
        #expect(ClusterCommand.restore(bad).validationError() != nil)
    }

    /// The Must-show of issue 19 item 6: save, lose every server's disk, start fresh servers,
    /// restore: every service, demand value and drain flag is back, on every server.
    @Test func saveThenWipeEveryServerThenRestoreGivesBackEveryServiceDemandAndDrainFlag() async throws {
        let names = ["s1", "s2", "s3"]
        var cluster = try ServerCluster(label: "snapshot-restore", names: names)
        for n in names { try await cluster.start(n) }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        let any = cluster.agents["s2"]!
        let file = """
            services:
              web: { image: "nginx:1", cpu: 0.5, memory: 64MiB, min: 1, max: 8, demand: { source: static, per_container: 10 } }
              api: { image: "mini:2", priority: 2, cpu: 0.25, memory: 32MiB, max: 4 }
              batch: { image: "busybox", priority: 3, cpu: 1, memory: 16MiB, max: 2, fill: true }
            """
        #expect(try await callRetryingUnavailable(any, "PUT", "/v1/services", file, for: 10).status == 200)
        #expect(try await callRetryingUnavailable(any, "PUT", "/v1/demand/web", #"{"value": 37.5}"#, for: 10).status == 200)
        #expect(try await callRetryingUnavailable(any, "PUT", "/v1/demand/api", #"{"value": 3}"#, for: 10).status == 200)
        #expect(try await callRetryingUnavailable(any, "POST", "/v1/nodes/h7/drain", for: 10).status == 200)
        let before = try decodeBody(try await callRetryingUnavailable(any, "GET", "/v1/services", for: 10), [String: ServiceSpec].self)

        // Saved through a follower or the leader alike (the leader answers).
        let saved = try await callRetryingUnavailable(cluster.agents["s3"]!, "GET", "/v1/operator/snapshot", for: 10)
        #expect(saved.status == 200)
        let path = "\(cluster.dir)/backup.snap"
        try SnapshotCommand.writeAtomically(Data(saved.body), to: path)

        // Every server's disk is lost; fresh servers bootstrap an empty cluster.
        for n in names { await cluster.stop(n) }
        for n in names { try FileManager.default.removeItem(atPath: cluster.dataDir(n)) }
        for n in names { try await cluster.start(n, generation: 1) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        let empty = try decodeBody(
            try await callRetryingUnavailable(cluster.agents["s1"]!, "GET", "/v1/services", for: 10), [String: ServiceSpec].self)
        #expect(empty.isEmpty)

        let restored = try await callRetryingUnavailable(
            cluster.agents["s1"]!, "PUT", "/v1/operator/snapshot",
            String(decoding: try SnapshotCommand.read(path), as: UTF8.self), for: 10)
        #expect(restored.status == 200, "\(String(decoding: restored.body, as: UTF8.self))")
        let view = try decodeBody(restored, RestoreView.self)
        #expect(view.services == 3 && view.demand == 2 && view.drainedNodes == 1)

        // Every server applied it (one committed entry), not only the one that answered.
        #expect(
            try await pollUntil(10) {
                var ok = true
                for a in cluster.running {
                    let s = await a.raft!.state
                    ok = ok && s.services == before && s.demand == ["web": 37.5, "api": 3] && s.drainedNodes == ["h7"]
                }
                return ok
            })
        for a in cluster.running {
            let d = try decodeBody(try await callRetryingUnavailable(a, "GET", "/v1/demand", for: 10), [String: Double].self)
            #expect(d == ["web": 37.5, "api": 3])
        }
    }

    @Test func aDamagedFileIsRefusedByTheAPIAndChangesNothing() async throws {
        var cluster = try ServerCluster(label: "snapshot-refuse", names: ["s1"])
        try await cluster.start("s1", bootstrapExpect: 1)
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        let s1 = cluster.agents["s1"]!
        #expect(try await pollUntil(20) { await s1.raft?.isLeader == true })
        #expect(
            try await callRetryingUnavailable(s1, "PUT", "/v1/services", "services: { web: { image: a, cpu: 1, memory: 1MiB, max: 1 } }", for: 10)
                .status == 200)
        var bytes = try SnapshotFile.encode(Self.backup, cluster: "microscale")
        bytes[bytes.count - 3] ^= 0x01
        let r = await s1.cluster(method: "PUT", path: "/v1/operator/snapshot", body: bytes)
        #expect(r.status == 400)
        #expect(String(decoding: r.body, as: UTF8.self).contains("damaged"))
        #expect(await s1.raft!.state.services.keys.sorted() == ["web"])
    }
}
