import Membership
import Testing

@Suite struct NodeRecordSpecification {
    @Test func aFieldOverItsBoundIsRefusedWithItsName() {
        var r = Harness.record("a")
        r.agentVersion = String(repeating: "v", count: 40)
        #expect(throws: NodeRecordError.fieldTooLong(field: "agentVersion", bytes: 40, limit: 32)) { try r.validate() }
        var neg = Harness.record("a")
        neg.capacity.memoryBytes = -1
        #expect(throws: NodeRecordError.negative(field: "capacity.memoryBytes", value: -1)) { try neg.validate() }
        var many = Harness.record("a")
        for i in 0..<65 { many.running["s\(i)"] = 1 }
        #expect(throws: NodeRecordError.tooManyServices(count: 65, limit: 64)) { try many.validate() }
        #expect(throws: NodeRecordError.emptyName) { try NodeRecord(name: "", address: "x:1").validate() }
    }

    @Test func aRecordOverTheTotalSizeBoundIsRefused() {
        var r = Harness.record("a")
        for i in 0..<60 { r.running[String(repeating: "x", count: 50) + "\(i)"] = 1 }
        #expect(throws: NodeRecordError.self) { try r.validate() }
        do { try r.validate() } catch {
            guard case .tooLarge = error else {
                Issue.record("expected tooLarge, got \(error)")
                return
            }
        }
    }

    @Test func updateRecordRefusesAnOversizedRecordAndKeepsTheOldOne() {
        var h = Harness(members: ["a"])
        var r = h.swim.record
        r.agentVersion = String(repeating: "v", count: 100)
        #expect(throws: NodeRecordError.self) { _ = try h.swim.updateRecord(r, now: .zero) }
        #expect(h.swim.record == Harness.record("me"))
    }

    @Test func aDeltaTurnsTheOldRecordIntoTheNew() throws {
        let old = Harness.record("a")
        var new = old
        new.running = ["web": 3]
        new.reserved = Resources(cpuMillicores: 1500, memoryBytes: 1 << 28)
        new.version = 2
        let d = NodeRecordDelta.between(old, new)
        #expect(d.capacity == nil && d.address == nil)
        #expect(try d.apply(to: old) == new)
    }

    @Test func mergedDeltasApplyFromAnyVersionTheyCover() throws {
        // A service that started in 1→2 and stopped in 2→3 must still be removed at a receiver
        // already at version 2.
        let v1 = Harness.record("a")
        var v2 = v1
        v2.running = ["web": 1]
        v2.version = 2
        var v3 = v2
        v3.running = [:]
        v3.version = 3
        let merged = NodeRecordDelta.between(v1, v2).merged(with: NodeRecordDelta.between(v2, v3))
        #expect(try merged.apply(to: v1) == v3)
        #expect(try merged.apply(to: v2) == v3)
        #expect(throws: NodeRecordError.self) { _ = try merged.apply(to: v3) }
    }

    @Test func aRecordChangeTravelsAsADeltaAndIsAppliedByOthers() throws {
        var owner = Harness(name: "a", members: ["me", "b", "c"])
        var r = owner.swim.record
        r.running = ["web": 2]
        let u = try owner.swim.updateRecord(r, now: .zero)
        owner.next = u.nextDeadline
        #expect(u.events.contains(.recordUpdated(name: "a", version: 2)))
        let out = owner.runAnswering(until: .seconds(1))
        let delta = try #require(out.gossip.compactMap { if case let .recordDelta(d) = $0 { return d } else { return nil } }.first)
        #expect(delta.baseVersion == 1 && delta.version == 2 && delta.running == ["web": 2])

        var other = Harness(members: ["a", "b", "c"])
        _ = other.receive(.gossip(GossipPacket(from: "a", gossip: [.recordDelta(delta)])))
        #expect(other.swim.member(named: "a")?.record.running == ["web": 2])
        #expect(other.swim.member(named: "a")?.record.version == 2)
    }

    @Test func aDeltaWithAGapMakesTheReceiverAskTheOwnerForItsRecord() throws {
        var h = Harness(members: ["a", "b"])
        let gap = NodeRecordDelta(name: "a", baseVersion: 2, version: 3, running: ["web": 1])
        let d = h.receive(.gossip(GossipPacket(from: "b", gossip: [.recordDelta(gap)])))
        let requests = d.messages.filter { o in
            if case .recordRequest = o.message { return true } else { return false }
        }
        #expect(requests.map(\.to) == ["a:7480"])
        var full = Harness.record("a")
        full.running = ["web": 1]
        full.version = 3
        _ = h.receive(.record(RecordReply(incarnation: 0, record: full)))
        #expect(h.swim.member(named: "a")?.record == full)
    }

    @Test func anAliveCarryingAnInvalidRecordIsRejectedWithTheReason() {
        var h = Harness(members: ["a"])
        var bad = Harness.record("z")
        bad.capacity.cpuMillicores = -5
        let d = h.receive(.gossip(GossipPacket(from: "a", gossip: [.alive(incarnation: 0, record: bad)])))
        #expect(h.status("z") == nil)
        #expect(
            d.events.contains { if case let .rejected(_, reason) = $0 { return reason.contains("capacity.cpuMillicores") } else { return false } })
    }

    @Test func estimatedSizesAreSmallForProbes() {
        let ping = Message.ping(Ping(sequence: 1000, from: "node-17", fromAddress: "10.0.0.17:7480", target: "node-4"))
        #expect(ping.estimatedSize < 50)
        let ack = Message.ack(Ack(sequence: 1000, from: "node-4", gossip: []))
        #expect(ack.estimatedSize < 20)
    }
}

/// A node's rollout reports (docs/rollouts.md) travel in its signed record and its deltas.
@Suite struct RolloutProgressRecordTests {
    @Test func rolloutReportsTravelAsDeltasAndAreSignedOnlyWhenPresent() throws {
        let v1 = Harness.record("a")
        var v2 = v1
        v2.rollouts = ["web": RolloutProgress(spec: "abc", serving: 2, failed: 1)]
        v2.version = 2
        var v3 = v2
        v3.rollouts = [:]
        v3.version = 3
        #expect(try NodeRecordDelta.between(v1, v2).apply(to: v1) == v2)
        let merged = NodeRecordDelta.between(v1, v2).merged(with: NodeRecordDelta.between(v2, v3))
        #expect(try merged.apply(to: v2) == v3)
        // A record without reports signs what it signed before the field existed.
        var unversioned = v2
        unversioned.version = 3
        #expect(v3.signedBytes != unversioned.signedBytes)
        var plain = v1
        plain.version = 3
        #expect(v3.signedBytes == plain.signedBytes)
        var tooLong = v2
        tooLong.rollouts = ["web": RolloutProgress(spec: String(repeating: "h", count: 65), serving: 0)]
        #expect(throws: NodeRecordError.self) { try tooLong.validate() }
    }
}
