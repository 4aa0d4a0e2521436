import Foundation
import Testing

@testable import Consensus

/// A spec is hashed once, where it is applied (docs/ARCHITECTURE.md, "One vocabulary along the
/// data path"): the state keeps each service's `containerHash`, and the snapshot's bytes do not
/// carry it (every server derives the same from the services).
@Suite struct SpecHashTests {
    static let web = ClusterStateTests.web

    static func expectHashesMatchServices(_ s: ClusterState) {
        #expect(s.specHashes == s.services.mapValues(\.containerHash))
    }

    @Test func theStateKeepsEachServicesHashThroughApplyRemoveRollbackAndRestore() throws {
        var s = ClusterState()
        var v2 = Self.web
        v2.image = "web:2"
        _ = s.apply(.applyServices(["web": Self.web, "api": Self.web]), index: 1)
        Self.expectHashesMatchServices(s)
        _ = s.apply(.applyServices(["web": v2]), index: 2)
        #expect(s.specHashes["web"] == v2.containerHash && s.specHashes["web"] != Self.web.containerHash)
        _ = s.apply(.rollbackService("web"), index: 3)
        #expect(s.specHashes["web"] == Self.web.containerHash)
        _ = s.apply(.removeService("api"), index: 4)
        #expect(s.specHashes.keys.sorted() == ["web"])
        let restored = try ClusterState.restore(s.snapshot())
        Self.expectHashesMatchServices(restored)
        #expect(restored == s)
        _ = s.apply(.restore(s.backup(takenAtMilliseconds: 0)), index: 5)
        Self.expectHashesMatchServices(s)
    }

    @Test func theSnapshotsBytesDoNotCarryTheHashes() throws {
        var s = ClusterState()
        _ = s.apply(.applyServices(["web": Self.web]), index: 1)
        let json = String(decoding: try s.snapshot().dropFirst(), as: UTF8.self)
        #expect(!json.contains("specHashes"))
        #expect(!json.contains(Self.web.containerHash))
    }
}
