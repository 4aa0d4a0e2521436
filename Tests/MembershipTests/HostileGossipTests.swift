import Bounds
import Membership
import Testing

/// What a peer says about incarnations, versions and records is bounded (docs/limits.md): a
/// forged counter cannot crash the members it names, and invented members cannot grow without end.
@Suite struct HostileGossipTests {
    func gossip(_ g: Gossip, from: String = "b") -> Message {
        .gossip(GossipPacket(from: from, gossip: [g]))
    }

    @Test func aSuspicionOfThisMemberAtTheLargestIncarnationIsDroppedNotRefutedIntoAnOverflow() {
        var h = Harness(members: ["b", "c"])
        let before = h.swim.incarnation
        let d = h.receive(gossip(.suspect(name: "me", incarnation: .max, from: "b")))
        #expect(h.swim.incarnation == before)
        #expect(d.events.contains { if case .rejected = $0 { true } else { false } })
        // An honest suspicion is still refuted, one above it.
        _ = h.receive(gossip(.suspect(name: "me", incarnation: before, from: "b")))
        #expect(h.swim.incarnation == before + 1)
    }

    @Test func aBuddyPingSuspectingThisMemberAtTheLargestIncarnationDoesNotOverflow() {
        var h = Harness(members: ["b"])
        let ping = Ping(sequence: 1, from: "b", fromAddress: "b:7480", target: "me", suspectedAt: .max)
        let d = h.receive(.ping(ping))
        #expect(!d.acks.isEmpty)
        #expect(h.swim.incarnation < .max)
    }

    @Test func aForgedLeapInAnotherMembersIncarnationIsIgnoredSoItsRefutationStillCounts() {
        var h = Harness(members: ["b", "c"])
        _ = h.receive(gossip(.suspect(name: "c", incarnation: .max, from: "b")))
        #expect(h.status("c") == .alive)
        #expect(h.swim.member(named: "c")?.incarnation == 0)
        _ = h.receive(gossip(.dead(name: "c", incarnation: Limits.maxIncarnationJump + 1, from: "b")))
        #expect(h.status("c") == .alive)
        _ = h.receive(gossip(.left(name: "c", incarnation: .max)))
        #expect(h.status("c") == .alive)
    }

    @Test func aRecordVersionAtTheLargestValueAboutThisMemberIsNotAdopted() {
        var h = Harness(members: ["b"])
        var forged = Harness.record("me")
        forged.version = .max
        _ = h.receive(gossip(.alive(incarnation: 0, record: forged)))
        #expect(h.swim.record.version < .max)
    }

    @Test func aRecordWithCapacityOrCountsBeyondTheLimitsIsRejected() {
        var h = Harness(members: ["b"])
        let huge = NodeRecord(
            name: "x", address: "x:7480",
            capacity: Resources(cpuMillicores: Limits.maxNodeCPUMillicores + 1, memoryBytes: 1))
        var d = h.receive(gossip(.alive(incarnation: 1, record: huge)))
        #expect(h.swim.member(named: "x") == nil)
        #expect(d.events.contains { if case .rejected = $0 { true } else { false } })
        let many = NodeRecord(name: "y", address: "y:7480", running: ["web": Limits.maxRunningPerService + 1])
        d = h.receive(gossip(.alive(incarnation: 1, record: many)))
        #expect(h.swim.member(named: "y") == nil)
    }

    @Test func membersBeyondTheConfiguredMaximumAreRefused() {
        var c = MembershipConfiguration.lan
        c.maxMembers = 3
        var h = Harness(members: ["b", "c"], configuration: c)
        _ = h.receive(gossip(.alive(incarnation: 1, record: Harness.record("d"))))
        #expect(h.swim.member(named: "d") != nil)
        let d = h.receive(gossip(.alive(incarnation: 1, record: Harness.record("e"))))
        #expect(h.swim.member(named: "e") == nil)
        #expect(d.events.contains { if case .rejected = $0 { true } else { false } })
    }
}
