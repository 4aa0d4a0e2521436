import Bounds
import Membership
import Testing

/// Labels and image failures in a node's record (issue 17 items 6 and 2): bounded, carried by
/// deltas, and covered by the owner's signature.
@Suite struct NodeLabelRecordTests {
    @Test func labelsAndImageFailuresOverTheirBoundsAreRefusedWithTheirNames() {
        var r = Harness.record("a")
        for i in 0...Limits.maxNodeLabels { r.labels["k\(i)"] = "v" }
        #expect(throws: NodeRecordError.tooMany(field: "labels", count: Limits.maxNodeLabels + 1, limit: Limits.maxNodeLabels)) { try r.validate() }
        var long = Harness.record("a")
        long.labels = ["zone": String(repeating: "a", count: 64)]
        #expect(throws: NodeRecordError.fieldTooLong(field: "labels[zone]", bytes: 64, limit: 63)) { try long.validate() }
        var failing = Harness.record("a")
        for i in 0...Limits.maxImageFailures { failing.imageFailures["img\(i)"] = "manifest unknown" }
        #expect(throws: NodeRecordError.self) { try failing.validate() }
        var reason = Harness.record("a")
        reason.imageFailures = ["web:v2": String(repeating: "r", count: Limits.maxImageFailureReasonBytes + 1)]
        #expect(throws: NodeRecordError.self) { try reason.validate() }
        // At their bounds, with labels at theirs, a record still fits.
        var full = Harness.record("a")
        for i in 0..<Limits.maxNodeLabels { full.labels[String(repeating: "k", count: 62) + "\(i)"] = String(repeating: "v", count: 63) }
        #expect(throws: Never.self) { try full.validate() }
    }

    @Test func aDeltaCarriesAChangeOfLabelsAndFailuresAndTheirRemoval() throws {
        let old = Harness.record("a")
        var new = old
        new.labels = ["zone": "a"]
        new.imageFailures = ["web:v2": "manifest unknown"]
        new.version = 2
        let d = NodeRecordDelta.between(old, new)
        #expect(d.labels == ["zone": "a"] && d.imageFailures == ["web:v2": "manifest unknown"])
        #expect(try d.apply(to: old) == new)
        var cleared = new
        cleared.imageFailures = [:]
        cleared.version = 3
        let d2 = NodeRecordDelta.between(new, cleared)
        #expect(d2.labels == nil && d2.imageFailures == [:])
        #expect(try d.merged(with: d2).apply(to: old) == cleared)
        // A delta that changes neither carries neither.
        var moved = cleared
        moved.running = ["web": 1]
        moved.version = 4
        #expect(NodeRecordDelta.between(cleared, moved).labels == nil)
    }

    @Test func healthCountsTravelAsChangedEntriesAndAreSignedAndBounded() throws {
        let old = Harness.record("a")
        var new = old
        new.starting = ["web": 2]
        new.unhealthy = ["api": 1]
        new.version = 2
        let d = NodeRecordDelta.between(old, new)
        #expect(d.starting == ["web": 2] && d.unhealthy == ["api": 1])
        #expect(try d.apply(to: old) == new)
        var healed = new
        healed.unhealthy = [:]
        healed.version = 3
        let d2 = NodeRecordDelta.between(new, healed)
        #expect(d2.unhealthy == ["api": 0] && d2.starting.isEmpty)
        #expect(try d.merged(with: d2).apply(to: old) == healed)
        #expect(new.signedBytes != old.signedBytes)
        var negative = old
        negative.unhealthy = ["api": -1]
        #expect(throws: NodeRecordError.negative(field: "unhealthy[api]", value: -1)) { try negative.validate() }
    }

    @Test func theOwnersSignatureCoversLabelsAndFailuresAndARecordWithoutThemSignsAsBefore() {
        let plain = Harness.record("a")
        var labelled = plain
        labelled.labels = ["zone": "a"]
        #expect(labelled.signedBytes != plain.signedBytes)
        var relabelled = labelled
        relabelled.labels = ["zone": "b"]
        #expect(relabelled.signedBytes != labelled.signedBytes)
        var failing = plain
        failing.imageFailures = ["web:v2": "denied"]
        #expect(failing.signedBytes != plain.signedBytes)
        // Empty maps add nothing: agents that predate them check such a record as they did.
        var empty = plain
        empty.labels = [:]
        empty.imageFailures = [:]
        #expect(empty.signedBytes == plain.signedBytes)
        #expect(!plain.signedBytes.contains(subsequence: Array("labels".utf8)))
    }

    @Test func aRelayThatChangesAMembersLabelsIsRefused() {
        var h = Harness(members: ["b", "c"], signed: true)
        var r = Harness.record("c")
        r.labels = ["zone": "a"]
        r.version = 2
        var forged = r.signed(by: KeyedAuthenticator(owner: "c"))
        forged.labels = ["zone": "b"]
        let d = h.receive(.gossip(GossipPacket(from: "b", gossip: [.alive(incarnation: 0, record: forged)])))
        #expect(d.events.contains { if case .rejected = $0 { true } else { false } })
        #expect(h.swim.member(named: "c")?.record.labels == [:])
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.alive(incarnation: 0, record: r.signed(by: KeyedAuthenticator(owner: "c")))])))
        #expect(h.swim.member(named: "c")?.record.labels == ["zone": "a"])
    }
}

extension Array where Element == UInt8 {
    fileprivate func contains(subsequence s: [UInt8]) -> Bool {
        guard s.count <= count else { return false }
        for i in 0...(count - s.count) where Array(self[i..<(i + s.count)]) == s { return true }
        return false
    }
}
