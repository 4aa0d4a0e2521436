import Testing

@testable import Agent

/// Servers started with --bootstrap-expect agree on one voter set before the first election
/// (issue 15, item 7): a pledge is given once, to the N lowest names of a view that held still,
/// and Raft starts only when every member of the set pledged to it.
@Suite struct BootstrapAgreementTests {
    @Test func aServerPledgesOnlyOnceItsViewHeldStillAndStartsOnlyWhenEveryMemberPledged() {
        var a = BootstrapAgreement(name: "s1", expect: 3)
        #expect(a.observe(servers: ["s1", "s2"], now: .zero).isEmpty, "fewer servers than expected")
        #expect(a.observe(servers: ["s1", "s2", "s3", "s4"], now: .milliseconds(100)).isEmpty)
        #expect(a.observe(servers: ["s1", "s2", "s3", "s4"], now: .milliseconds(900)).isEmpty, "not yet still for 1 s")
        let effects = a.observe(servers: ["s1", "s2", "s3", "s4"], now: .milliseconds(1100))
        #expect(effects == [.persistPledge(["s1", "s2", "s3"]), .propose(["s1", "s2", "s3"], to: ["s2", "s3"])])
        #expect(a.receiveReply(.pledged(["s1", "s2", "s3"]), from: "s2").isEmpty)
        #expect(a.receiveReply(.pledged(["s2", "s3", "s4"]), from: "s3").isEmpty, "a pledge to another set is no agreement")
        #expect(a.receiveReply(.pledged(["s1", "s2", "s3"]), from: "s3") == [.bootstrap(["s1", "s2", "s3"])])
    }

    @Test func aPledgeIsGivenOnceAndForGood() {
        var b = BootstrapAgreement(name: "s3", expect: 3)
        _ = b.observe(servers: ["s2", "s3", "s4"], now: .zero)
        let (first, effects) = b.receiveProposal(["s2", "s3", "s4"], hasState: nil)
        #expect(first == .pledged(["s2", "s3", "s4"]) && effects == [.persistPledge(["s2", "s3", "s4"])])
        // s1 appears, and proposes the set that would now be the candidate: the pledge stands.
        _ = b.observe(servers: ["s1", "s2", "s3", "s4"], now: .seconds(5))
        let (second, none) = b.receiveProposal(["s1", "s2", "s3"], hasState: nil)
        #expect(second == .pledged(["s2", "s3", "s4"]) && none.isEmpty)
        // A restart reads the pledge back from disk.
        let restarted = BootstrapAgreement(name: "s3", expect: 3, pledge: ["s2", "s3", "s4"])
        #expect(restarted.pledge == ["s2", "s3", "s4"])
    }

    @Test func aServerOutsideTheCandidateSetNeverStartsRaftByItself() {
        var d = BootstrapAgreement(name: "s4", expect: 3)
        #expect(d.observe(servers: ["s1", "s2", "s3", "s4"], now: .zero).isEmpty)
        #expect(d.observe(servers: ["s1", "s2", "s3", "s4"], now: .seconds(5)).isEmpty)
        let (answer, effects) = d.receiveProposal(["s1", "s2", "s3"], hasState: nil)
        #expect(answer == .candidate([]) && effects.isEmpty)
        #expect(d.receiveReply(.hasState(voters: ["s1", "s2", "s3"]), from: "s1").isEmpty)
    }

    @Test func aServerThatAlreadyRunsRaftAnswersWithItsVotersAndAMemberOfThemMayStartWithThem() {
        var c = BootstrapAgreement(name: "s2", expect: 3)
        let (answer, _) = c.receiveProposal(["s1", "s2", "s3"], hasState: ["s1", "s2", "s3"])
        #expect(answer == .hasState(voters: ["s1", "s2", "s3"]))
        var lost = BootstrapAgreement(name: "s3", expect: 3, pledge: ["s1", "s2", "s3"])
        #expect(lost.receiveReply(.hasState(voters: ["s1", "s2", "s3"]), from: "s1") == [.bootstrap(["s1", "s2", "s3"])])
        var other = BootstrapAgreement(name: "s3", expect: 3, pledge: ["s2", "s3", "s4"])
        #expect(
            other.receiveReply(.hasState(voters: ["s1", "s2", "s3"]), from: "s1").isEmpty,
            "pledged to another set: it cannot be a voter of this one")
    }

    /// The safety argument, exhaustively for four servers and N = 3: whatever views each server has
    /// when it pledges, two sets that both gather every member's pledge are the same set.
    @Test func noTwoDifferentSetsCanBothGatherEveryPledgeAmongFourServersExpectingThree() {
        let names = ["s1", "s2", "s3", "s4"]
        let sets = [["s1", "s2", "s3"], ["s1", "s2", "s4"], ["s1", "s3", "s4"], ["s2", "s3", "s4"]]
        // Each server pledges to at most one set containing it (or none): every assignment.
        func choices(_ n: String) -> [[String]?] { [nil] + sets.filter { $0.contains(n) } }
        var checked = 0
        for p1 in choices("s1") {
            for p2 in choices("s2") {
                for p3 in choices("s3") {
                    for p4 in choices("s4") {
                        let pledges = Dictionary(uniqueKeysWithValues: zip(names, [p1, p2, p3, p4]))
                        let started = sets.filter { set in set.allSatisfy { pledges[$0] == set } }
                        #expect(started.count <= 1, "\(pledges)")
                        checked += 1
                    }
                }
            }
        }
        #expect(checked == 4 * 4 * 4 * 4)
    }
}
