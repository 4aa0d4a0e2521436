import Consensus
import Foundation
import Testing

/// `ClusterBackup` and `ClusterCommand.restore` (docs/consensus.md, "Backup and restore").
struct ClusterBackupTests {
    static let backup = ClusterBackup(
        index: 42, takenAtMilliseconds: 1_700_000_000_000,
        services: [
            "web": ServiceSpec(image: "nginx:1", cpu: 0.5, memory: 64 << 20, max: 8),
            "batch": ServiceSpec(image: "busybox", priority: 2, cpu: 1, memory: 32 << 20, max: 4),
        ],
        demand: ["web": 12.5], drainedNodes: ["h2"])

    @Test func restoreReplacesTheDeclaredStateAndKeepsThePlanForTheLeaderToRedo() throws {
        var state = ClusterState()
        _ = state.apply(.applyServices(["old": ServiceSpec(image: "x", cpu: 1, memory: 1, max: 1)]), index: 1)
        _ = state.apply(.setDrain(node: "h9", drained: true), index: 2)
        #expect(state.apply(.restore(Self.backup), index: 3) == nil)
        #expect(state.services == Self.backup.services)
        #expect(state.demand == ["web": 12.5] && state.drainedNodes == ["h2"])
        #expect(state.decisions.last?.summary.contains("restored 2 services") == true)
        // A state round-trips through a backup.
        #expect(state.backup(takenAtMilliseconds: 5).services == Self.backup.services)
    }

    @Test func aBackupWithDemandForAServiceItDoesNotHoldOrADrainedNodeTwiceIsRefusedOnApplyToo() {
        var bad = Self.backup
        bad.demand["ghost"] = 1
        var state = ClusterState()
        #expect(state.apply(.restore(bad), index: 1) != nil)
        #expect(state.services.isEmpty)
        bad = Self.backup
        bad.drainedNodes = ["h1", "h1"]
        #expect(ClusterCommand.restore(bad).validationError() != nil)
    }

    @Test func theDenyListIsReplicatedStateKeptInSnapshotsAndBackups() throws {
        var state = ClusterState()
        #expect(state.apply(.setDenied(node: "lost-laptop", denied: true), index: 1) == nil)
        #expect(state.apply(.setDenied(node: "h2", denied: true), index: 2) == nil)
        #expect(state.apply(.setDenied(node: "h2", denied: false), index: 3) == nil)
        #expect(state.deniedNodes == ["lost-laptop"])
        #expect(try ClusterState.restore(try state.snapshot()).deniedNodes == ["lost-laptop"])
        #expect(state.backup(takenAtMilliseconds: 0).deniedNodes == ["lost-laptop"])
        #expect(ClusterCommand.setDenied(node: String(repeating: "n", count: 65), denied: true).validationError() != nil)
        // A backup from before the deny list existed leaves the list as it is.
        var old = Self.backup
        old.deniedNodes = nil
        #expect(state.apply(.restore(old), index: 4) == nil)
        #expect(state.deniedNodes == ["lost-laptop"])
    }

    /// Client agents keep the newest list they are sent by this index (docs/ARCHITECTURE.md,
    /// "Rotating and revoking certificates"): the entry that last changed the list, the same on
    /// every server, kept in snapshots, and set for a list from a snapshot that predates it.
    @Test func theDenyListCarriesTheIndexOfTheEntryThatLastChangedIt() throws {
        var state = ClusterState()
        #expect(state.deniedIndex == 0)
        #expect(state.apply(.setDenied(node: "h2", denied: true), index: 4) == nil)
        #expect(state.apply(.setDemand(service: "nope", value: 1), index: 5) != nil)
        #expect(state.deniedIndex == 4)
        #expect(state.apply(.setDenied(node: "h2", denied: false), index: 6) == nil)
        #expect(state.deniedIndex == 6)
        #expect(try ClusterState.restore(try state.snapshot()).deniedIndex == 6)
        var restored = Self.backup
        restored.deniedNodes = ["h9"]
        #expect(state.apply(.restore(restored), index: 9) == nil)
        #expect(state.deniedIndex == 9)
        // A snapshot written before the index existed: the list is as old as the snapshot.
        let bytes = try state.snapshot()
        var json = try #require(try JSONSerialization.jsonObject(with: Data(bytes.dropFirst())) as? [String: Any])
        json["deniedIndex"] = nil
        let old = try ClusterState.restore([bytes[0]] + Array(try JSONSerialization.data(withJSONObject: json)))
        #expect(old.deniedNodes == ["h9"] && old.deniedIndex == old.appliedIndex)
    }
}
