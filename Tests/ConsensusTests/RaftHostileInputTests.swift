import Bounds
import Testing

@testable import Consensus

/// Counters from a peer cannot trap a server or carry its term away (docs/limits.md): a message
/// that no correct server could have sent is dropped as a lost one would be.
@Suite struct RaftHostileInputTests {
    func follower() -> RaftNode {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        return h.nodes["b"]!
    }

    @Test func aHeartbeatAtTermTwoToTheSixtyFourMinusOneIsDroppedAndTheTermKept() {
        var n = follower()
        let term = n.term
        var m = RaftMessage(kind: .heartbeat, from: "a", to: "b", term: .max)
        m.commit = 1
        n.step(m)
        #expect(n.term == term)
        // and the server still campaigns normally afterwards (a pre-vote first: the term stays)
        n.tick(by: .seconds(10))
        #expect(n.role == .preCandidate)
        #expect(n.term == term)
    }

    @Test func aTermWithinTheJumpIsAdopted() {
        var n = follower()
        let term = n.term
        n.step(RaftMessage(kind: .heartbeat, from: "a", to: "b", term: term + Limits.maxTermJump))
        #expect(n.term == term + Limits.maxTermJump)
        n.step(RaftMessage(kind: .heartbeat, from: "a", to: "b", term: n.term + Limits.maxTermJump + 1))
        #expect(n.term == term + Limits.maxTermJump)
    }

    @Test func anAppendWhoseIndexesWouldOverflowIsDropped() {
        var n = follower()
        let last = n.lastIndex
        var m = RaftMessage(kind: .append, from: "a", to: "b", term: n.term)
        m.index = .max - 1
        m.entries = [Entry(term: n.term, index: .max), Entry(term: n.term, index: 0)]
        n.step(m)
        #expect(n.lastIndex == last)
        var gap = RaftMessage(kind: .append, from: "a", to: "b", term: n.term)
        gap.index = last
        gap.logTerm = n.lastTerm
        gap.entries = [Entry(term: n.term, index: last + 5)]
        n.step(gap)
        #expect(n.lastIndex == last)
    }

    @Test func anAppendResponseBeyondTheLeadersLogIsIgnored() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        let commit = h.nodes["a"]!.commit
        var m = RaftMessage(kind: .appendResponse, from: "b", to: "a", term: h.nodes["a"]!.term)
        m.index = .max
        h.nodes["a"]!.step(m)
        m.index = .max - 1
        m.rejectHint = .max
        m.reject = true
        h.nodes["a"]!.step(m)
        h.settle()
        #expect(h.nodes["a"]!.commit == commit)
        #expect(h.leaders() == ["a"])
    }

    @Test func aServerWhoseStoredTermIsTheLargestNeverTrapsAtItsElectionTimeout() {
        var n = RaftNode(
            config: RaftHarness.config("a"), bootstrap: Configuration(voters: ["a"]),
            recovered: RecoveredState(hardState: HardState(term: .max)), seed: 1)
        n.tick(by: .seconds(10))
        #expect(n.term == .max)
        #expect(n.role == .follower)
    }
}
