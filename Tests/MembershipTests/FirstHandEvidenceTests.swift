import Membership
import Testing

/// Issue 15, item 2: one liar cannot move work. A `dead`, `suspect` or `left` that others relay is
/// hearsay; this member probes the subject itself at once, and only an unanswered probe of its
/// own (or the subject's own `left`) is evidence that it is gone (`isConfirmedDown`), which is
/// what the leader waits for before it moves a node's work.
@Suite struct FirstHandEvidenceTests {
    func gossip(_ g: Gossip, from: String) -> Message { .gossip(GossipPacket(from: from, gossip: [g])) }

    @Test func aForgedDeathIsVerifiedByOurOwnProbeAndRefutedByTheSubjectsAck() throws {
        var h = Harness(members: ["b", "c"])
        var d = h.receive(gossip(.dead(name: "c", incarnation: 0, from: "b"), from: "b"))
        #expect(h.status("c") == .dead)
        #expect(!h.swim.isConfirmedDown("c"))
        d = h.tick(at: h.now + .milliseconds(1))
        let verification = try #require(d.pings.first { $0.to == "c:7480" }, "a probe of our own goes to c at once")
        #expect(verification.ping.suspectedAt == 0, "carrying the incarnation the hearsay is at, so c refutes")
        // c answers, with its refutation: alive again, never confirmed down.
        let refutation = Gossip.alive(incarnation: 1, record: Harness.alive("c", 1))
        _ = h.receive(.ack(Ack(sequence: verification.ping.sequence, from: "c", gossip: [refutation])))
        #expect(h.status("c") == .alive)
        #expect(!h.swim.isConfirmedDown("c"))
    }

    @Test func aMemberThatReallyDiedIsConfirmedOnceOurOwnProbeGoesUnanswered() throws {
        var h = Harness(members: ["b", "c"])
        _ = h.receive(gossip(.dead(name: "c", incarnation: 0, from: "b"), from: "b"))
        let d = h.tick(at: h.now + .milliseconds(1))
        #expect(d.pings.contains { $0.to == "c:7480" })
        _ = h.runTimers(until: h.now + .milliseconds(150))
        #expect(h.swim.isConfirmedDown("c"))
    }

    @Test func aFailedDialToTheSubjectIsAnAnswerAtOnce() throws {
        var h = Harness(members: ["b", "c"])
        _ = h.receive(gossip(.dead(name: "c", incarnation: 0, from: "b"), from: "b"))
        _ = h.tick(at: h.now + .milliseconds(1))
        #expect(!h.swim.isConfirmedDown("c"))
        _ = h.swim.peerUnreachable(address: "c:7480", now: h.now)
        #expect(h.swim.isConfirmedDown("c"))
    }

    @Test func aMemberThatSaysItselfItLeavesIsConfirmedButARelayedLeaveIsHearsay() {
        var h = Harness(members: ["b", "c", "d"])
        _ = h.receive(gossip(.left(name: "c", incarnation: 1), from: "c"))
        #expect(h.status("c") == .left)
        #expect(h.swim.isConfirmedDown("c"))
        _ = h.receive(gossip(.left(name: "d", incarnation: 1), from: "b"))
        #expect(h.status("d") == .left)
        #expect(!h.swim.isConfirmedDown("d"))
    }

    @Test func hearingFromTheSubjectAfterOurProbeFailedWithdrawsTheEvidence() throws {
        var h = Harness(members: ["b", "c"])
        _ = h.receive(gossip(.dead(name: "c", incarnation: 0, from: "b"), from: "b"))
        _ = h.tick(at: h.now + .milliseconds(1))
        _ = h.runTimers(until: h.now + .milliseconds(150))
        #expect(h.swim.isConfirmedDown("c"))
        // c speaks to us (without yet refuting): it is not gone, whatever its status says.
        _ = h.receive(.gossip(GossipPacket(from: "c", gossip: [])), at: h.now + .milliseconds(1))
        #expect(!h.swim.isConfirmedDown("c"))
    }
}
