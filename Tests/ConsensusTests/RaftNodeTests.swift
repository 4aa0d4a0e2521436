import Testing

@testable import Consensus

@Suite struct RaftElectionTests {
    @Test func aSingleServerElectsItselfAndCommitsAtOnce() throws {
        var h = RaftHarness(voters: ["a"])
        h.expireElectionTimeout("a")
        #expect(h.leaders() == ["a"])
        try h.propose("a", "x")
        #expect(h.appliedData("a") == ["x"])
    }

    @Test func threeServersElectOneLeaderAndReplicateToAll() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        #expect(h.leaders() == ["a"])
        for i in 0..<10 { try h.nodes["a"]!.propose(Array("w\(i)".utf8)) }
        h.settle()
        for id in ["a", "b", "c"] {
            #expect(h.appliedData(id) == (0..<10).map { "w\($0)" }, "server \(id)")
        }
    }

    /// Raft §5.2: each server votes for at most one candidate in a term.
    @Test func aServerVotesOncePerTerm() {
        var n = RaftNode(
            config: RaftHarness.config("c", preVote: false),
            bootstrap: Configuration(voters: ["a", "b", "c"]), seed: 1)
        var req = RaftMessage(kind: .vote, from: "a", to: "c", term: 5)
        n.step(req)
        req.from = "b"
        n.step(req)
        req.from = "a"
        n.step(req)
        let rd = n.ready()
        let answers = rd.messages.filter { $0.kind == .voteResponse }.map { ($0.to, $0.reject) }
        #expect(answers.map(\.0) == ["a", "b", "a"])
        #expect(answers.map(\.1) == [false, true, false])
        #expect(rd.hardState?.vote == "a")
        #expect(rd.hardState?.term == 5)
    }

    /// Raft §5.4.1: a vote goes only to a candidate whose log is at least as up to date.
    @Test func aCandidateWithAStaleLogGetsNoVote() {
        var n = RaftNode(
            config: RaftHarness.config("c", preVote: false),
            bootstrap: Configuration(voters: ["a", "b", "c"]),
            recovered: RecoveredState(hardState: HardState(term: 3), entries: entries([1, 3])), seed: 1)
        var req = RaftMessage(kind: .vote, from: "a", to: "c", term: 4)
        req.index = 5
        req.logTerm = 2  // longer log, older last term
        n.step(req)
        #expect(n.ready().messages.first?.reject == true)
        req.from = "b"
        req.index = 2
        req.logTerm = 3
        n.step(req)
        #expect(n.ready().messages.first?.reject == false)
    }

    /// Raft §5.2: election timeouts are drawn from [T, 2T); ours at nanosecond resolution, since
    /// whole-tick draws made split votes common in etcd.
    @Test func electionTimeoutsAreDrawnFinelyFromTToTwoT() {
        var seen = Set<Duration>()
        for seed in UInt64(1)...200 {
            let n = RaftNode(config: RaftConfig(id: "a"), bootstrap: Configuration(voters: ["a", "b", "c"]), seed: seed)
            let t = n.timeUntilNextTimeout!
            #expect(t >= .milliseconds(300) && t < .milliseconds(600), "seed \(seed): \(t)")
            seen.insert(t)
        }
        #expect(seen.count > 190)
    }

    /// Thesis §9.6: a server cut off from the others campaigns with pre-votes only, so its term
    /// does not grow and it does not depose the leader when it comes back.
    /// A broken connection to the leader (a killed process) starts the election within T/2 rather
    /// than after [T, 2T) of silence.
    @Test func aFollowerToldItsLeaderIsUnreachableCampaignsWithinHalfAnElectionTimeout() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        h.isolated = ["a"]
        h.nodes["b"]!.leaderUnreachable("a")
        h.nodes["c"]!.leaderUnreachable("a")
        var waited: Duration = .zero
        while h.leaders().filter({ $0 != "a" }).isEmpty, waited < .milliseconds(150) {
            for id in ["b", "c"] { h.nodes[id]!.tick(by: .milliseconds(5)) }
            h.settle()
            waited += .milliseconds(5)
        }
        #expect(h.leaders().contains { $0 != "a" }, "no new leader after \(waited)")
    }

    /// The hint changes timing only: a follower that still hears from a live leader refuses the
    /// pre-vote, so a dropped connection to a healthy leader does not depose it.
    @Test func aFalseUnreachableHintDoesNotDeposeAWorkingLeader() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        let term = h.nodes["a"]!.term
        h.nodes["b"]!.leaderUnreachable("a")
        h.run(for: .milliseconds(400))
        #expect(h.leaders() == ["a"])
        #expect(h.nodes["a"]!.term == term)
    }

    @Test func anUnreachableHintAboutAnotherServerChangesNothing() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        h.nodes["b"]!.leaderUnreachable("c")
        #expect(h.nodes["b"]!.leader == "a")
        #expect(h.nodes["b"]!.timeUntilNextTimeout! > .milliseconds(250))
    }

    @Test func aPartitionedServerDoesNotRaiseItsTermWithPreVote() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        let term = h.nodes["a"]!.term
        h.isolated = ["c"]
        for _ in 0..<5 { h.expireElectionTimeout("c") }
        #expect(h.nodes["c"]!.term == term)
        h.isolated = []
        h.run(for: .milliseconds(200))
        #expect(h.leaders() == ["a"])
        #expect(h.nodes["a"]!.term == term)
    }

    /// Thesis §6.2: a leader that stops hearing from a quorum steps down.
    @Test func anIsolatedLeaderStepsDownWithCheckQuorum() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        h.isolated = ["a"]
        h.run(for: .milliseconds(700))
        #expect(h.nodes["a"]!.role != .leader)
    }

    /// Raft §5.1: a stale leader that sees a higher term steps down, and its uncommitted entries
    /// are replaced by the new leader's (log truncation on conflict, §5.3).
    @Test func aStaleLeaderStepsDownAndItsUncommittedEntriesAreTruncated() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        try h.propose("a", "committed")
        h.isolated = ["a"]
        try h.nodes["a"]!.propose(Array("lost".utf8))
        h.settle()
        h.run(for: .seconds(1))
        let newLeader = try #require(h.leaders().first { $0 != "a" })
        try h.propose(newLeader, "kept")
        h.isolated = []
        h.run(for: .milliseconds(100))
        #expect(h.leaders() == [newLeader])
        for id in ["a", "b", "c"] {
            #expect(h.appliedData(id) == ["committed", "kept"], "server \(id)")
            #expect(!h.nodes[id]!.entries.contains { $0.data == Array("lost".utf8) }, "server \(id)")
        }
    }
}

@Suite struct RaftPaperFigureTests {
    /// Raft §5.4.2 and Figure 8: a leader never commits an entry of an earlier term by counting
    /// replicas; only once an entry of its own term is on a quorum.
    @Test func figure8ALeaderDoesNotCommitAnOldTermEntryByCountingReplicas() {
        var n = RaftNode(
            config: RaftHarness.config("s1", preVote: false),
            bootstrap: Configuration(voters: ["s1", "s2", "s3", "s4", "s5"]),
            recovered: RecoveredState(hardState: HardState(term: 3), entries: entries([1, 2])), seed: 1)
        n.tick(by: .seconds(1))
        #expect(n.role == .candidate)
        #expect(n.term == 4)
        for v in ["s2", "s3"] { n.step(RaftMessage(kind: .voteResponse, from: v, to: "s1", term: 4)) }
        #expect(n.role == .leader)
        #expect(n.lastIndex == 3)  // the no-op of term 4
        n.advance(n.ready())
        // s2 and s3 now hold index 2 (term 2): a majority with s1, yet it must not commit.
        for f in ["s2", "s3"] {
            var ack = RaftMessage(kind: .appendResponse, from: f, to: "s1", term: 4)
            ack.index = 2
            n.step(ack)
        }
        #expect(n.commit < 2)
        for f in ["s2", "s3"] {
            var ack = RaftMessage(kind: .appendResponse, from: f, to: "s1", term: 4)
            ack.index = 3
            n.step(ack)
        }
        #expect(n.commit == 3)
    }

    /// Figure 8 (d): S5, with an entry of term 3 at index 2, may win and overwrite the
    /// uncommitted term-2 entry that S1 had spread to S2 and S3.
    @Test func figure8AnUncommittedEntryOnAMajorityMayBeOverwritten() {
        let five = ["s1", "s2", "s3", "s4", "s5"]
        var h = RaftHarness(
            voters: five, preVote: false,
            recovered: [
                "s1": RecoveredState(hardState: HardState(term: 4, commit: 1), entries: entries([1, 2, 4])),
                "s2": RecoveredState(hardState: HardState(term: 4, commit: 1), entries: entries([1, 2])),
                "s3": RecoveredState(hardState: HardState(term: 4, commit: 1), entries: entries([1, 2])),
                "s4": RecoveredState(hardState: HardState(term: 4, commit: 1), entries: entries([1])),
                "s5": RecoveredState(hardState: HardState(term: 4, commit: 1), entries: entries([1, 3])),
            ])
        h.isolated = ["s1"]
        h.expireElectionTimeout("s5")
        #expect(h.leaders() == ["s5"])
        for id in ["s2", "s3", "s4", "s5"] {
            #expect(h.nodes[id]!.term(at: 2) == 3, "server \(id)")
            #expect(h.nodes[id]!.commit >= 3, "server \(id)")
        }
    }

    /// Raft Figure 7: whatever a follower's log looks like (missing entries, extra uncommitted
    /// ones, both), the new leader of term 8 brings it to its own.
    @Test func figure7ALeaderBringsEveryFollowerLogIntoAgreement() {
        let leaderLog: [UInt64] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
        let followers: [NodeID: [UInt64]] = [
            "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
            "b": [1, 1, 1, 4],
            "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
            "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
            "e": [1, 1, 1, 4, 4, 4, 4],
            "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
        ]
        var recovered = ["L": RecoveredState(hardState: HardState(term: 7), entries: entries(leaderLog))]
        for (id, log) in followers { recovered[id] = RecoveredState(hardState: HardState(term: 7), entries: entries(log)) }
        var h = RaftHarness(voters: ["L"] + followers.keys.sorted(), preVote: false, recovered: recovered)
        h.expireElectionTimeout("L")
        #expect(h.leaders() == ["L"])
        #expect(h.nodes["L"]!.term == 8)
        h.run(for: .milliseconds(200))
        let want = h.nodes["L"]!.entries
        #expect(want.count == 11)
        for id in followers.keys.sorted() {
            #expect(h.nodes[id]!.entries == want, "follower (\(id)) of Figure 7")
        }
    }
}

@Suite struct RaftFeatureTests {
    /// Thesis §3.10: the leader brings the target up to date and tells it to campaign at once.
    @Test func leadershipTransfersToTheChosenServer() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        try h.propose("a", "x")
        try h.nodes["a"]!.transferLeadership(to: "c")
        #expect(throws: RaftError.transferInProgress(to: "c")) { try h.nodes["a"]!.propose([1]) }
        h.settle()
        #expect(h.leaders() == ["c"])
        try h.propose("c", "y")
        #expect(h.appliedData("a") == ["x", "y"])
    }

    /// Thesis §6.4: a read is served at the commit index once a heartbeat round confirms the
    /// leader; a follower's read goes through the leader.
    @Test func readIndexReturnsTheCommitIndexOnLeaderAndFollower() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        try h.propose("a", "x")
        let commit = h.nodes["a"]!.commit
        try h.nodes["a"]!.readIndex(context: [1])
        try h.nodes["b"]!.readIndex(context: [2])
        h.settle()
        #expect(h.reads["a"] == [ReadState(index: commit, context: [1])])
        #expect(h.reads["b"] == [ReadState(index: commit, context: [2])])
    }

    @Test func aLeaderCutOffFromItsQuorumConfirmsNoRead() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        h.isolated = ["a"]
        try h.nodes["a"]!.readIndex(context: [1])
        h.run(for: .milliseconds(200))
        #expect(h.reads["a", default: []].isEmpty)
    }

    /// Thesis §4.2.1: a new server joins as a learner, catches up, and only then becomes a voter;
    /// §4.1: then servers leave one at a time.
    @Test func aLearnerCatchesUpIsPromotedAndAServerIsRemoved() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        for i in 0..<20 { try h.nodes["a"]!.propose(Array("w\(i)".utf8)) }
        h.settle()
        h.add("d", bootstrap: Configuration(), seed: 9)
        #expect(throws: RaftError.notAMember("d")) { try h.nodes["a"]!.proposeConfChange(.promote("d")) }
        // The first voters are in no log entry: a new server must get them from a snapshot.
        #expect(throws: RaftError.snapshotRequired) { try h.nodes["a"]!.proposeConfChange(.addLearner("d")) }
        let applied = h.nodes["a"]!.applied
        _ = try h.nodes["a"]!.compact(upTo: applied, data: Array("state".utf8))
        try h.nodes["a"]!.proposeConfChange(.addLearner("d"))
        #expect(throws: RaftError.configurationChangePending(index: h.nodes["a"]!.lastIndex)) {
            try h.nodes["a"]!.proposeConfChange(.remove("b"))
        }
        h.settle()
        #expect(h.nodes["d"]!.configuration == Configuration(voters: ["a", "b", "c"], learners: ["d"]))
        #expect(h.nodes["d"]!.snapshot.index == applied)
        #expect(h.nodes["d"]!.applied == h.nodes["a"]!.applied)
        try h.nodes["a"]!.proposeConfChange(.promote("d"))
        h.settle()
        #expect(h.nodes["a"]!.configuration.voters == ["a", "b", "c", "d"])
        #expect(throws: RaftError.cannotRemoveLeader) { try h.nodes["a"]!.proposeConfChange(.remove("a")) }
        try h.nodes["a"]!.proposeConfChange(.remove("b"))
        h.settle()
        h.isolated = ["b"]
        try h.propose("a", "after")
        #expect(h.appliedData("d").last == "after")
        #expect(h.nodes["c"]!.configuration.voters == ["a", "c", "d"])
    }

    /// Raft §7: a follower behind the leader's compacted log gets the snapshot instead.
    @Test func aLaggingFollowerIsSentTheSnapshot() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        h.isolated = ["c"]
        for i in 0..<30 { try h.nodes["a"]!.propose(Array("w\(i)".utf8)) }
        h.settle()
        let applied = h.nodes["a"]!.applied
        let snap = try h.nodes["a"]!.compact(upTo: applied, data: Array("state".utf8))
        h.storage["a"]!.compact(to: snap)
        #expect(h.nodes["a"]!.entries.isEmpty)
        h.isolated = []
        h.run(for: .milliseconds(100))
        #expect(h.nodes["c"]!.snapshot.index == applied)
        #expect(h.applied["c"]!.first?.data == Array("state".utf8))
        try h.propose("a", "next")
        #expect(h.appliedData("c").last == "next")
    }

    /// Recovery: a restarted server rebuilt from its storage has its term, vote and log.
    @Test func aServerRebuiltFromStorageKeepsItsStateAndCommitsAgain() throws {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        try h.propose("a", "x")
        let before = h.nodes["b"]!
        h.nodes["b"] = RaftNode(
            config: RaftHarness.config("b"), bootstrap: Configuration(voters: ["a", "b", "c"]),
            recovered: h.storage["b"]!.recover(), seed: 42)
        #expect(h.nodes["b"]!.term == before.term)
        #expect(h.nodes["b"]!.entries == before.entries)
        #expect(h.nodes["b"]!.commit == before.commit)
        h.applied["b"] = []
        h.settle()
        #expect(h.appliedData("b") == ["x"])
    }

    @Test func aFollowerRefusesProposalsNamingTheLeader() {
        var h = RaftHarness(voters: ["a", "b", "c"])
        h.expireElectionTimeout("a")
        #expect(throws: RaftError.notLeader(leader: "a")) { try h.nodes["b"]!.propose([1]) }
    }

    @Test func confChangesRoundTripTheirEncoding() {
        for c in [ConfChange.addLearner("n-1"), .promote("x y"), .remove("z")] {
            #expect(ConfChange(encoded: c.encoded) == c)
        }
        #expect(ConfChange(encoded: Array("Q x".utf8)) == nil)
    }
}
