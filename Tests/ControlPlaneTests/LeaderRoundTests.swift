import Consensus
import ControlPlane
import Membership
import Scaling
import Testing

/// The leader's round (docs/scheduling.md) as a specification: what it plans from the committed
/// state, the members and the demand, and when it proposes a plan. Time is a value here: every
/// `now` is chosen by the test.
@Suite struct LeaderRoundTests {
    /// Two containers of 0.5 CPU, whatever the demand (min = max), on two nodes of 2 CPUs.
    static let web = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, min: 2, max: 2)
    static let grace: Duration = .seconds(30)

    static func member(
        _ name: String, _ status: MemberStatus = .alive, confirmedDown: Bool? = nil, restarting: Bool = false,
        running: [String: Int] = [:]
    ) -> MemberView {
        var r = NodeRecord(name: name, address: "10.0.0.1:7480", role: .client, capacity: .init(cpuMillicores: 2000, memoryBytes: 4 << 30))
        r.restarting = restarting
        r.running = running
        var v = MemberView(r, status: status, incarnation: 1)
        if status == .dead || status == .left { v.confirmedDown = confirmedDown ?? true }
        return v
    }

    static func services() -> ClusterState {
        var s = ClusterState()
        _ = s.apply(.applyServices(["web": web]), index: 1)
        return s
    }

    /// Commits what a round proposes, as Raft would, and returns it.
    @discardableResult
    static func commit(_ outcome: LeaderRound.Outcome, to state: inout ClusterState) throws -> LeaderRound.Commit {
        guard case .commit(let c) = outcome.verdict else { throw Unexpected(verdict: outcome.verdict) }
        _ = state.apply(.setPlan(c.plan, c.decision(timestampMilliseconds: 0, planning: .zero)), index: state.appliedIndex + 1)
        return c
    }

    struct Unexpected: Error { var verdict: LeaderRound.Verdict }

    /// The service planned on a and b, committed.
    static func planned(_ round: inout LeaderRound, at now: Duration) throws -> ClusterState {
        var state = services()
        let c = try commit(round.step(state: state, members: [member("a"), member("b")], demand: [:], now: now), to: &state)
        #expect(c.plan.assignments.values.reduce(0) { $0 + ($1["web"] ?? 0) } == 2)
        return state
    }

    @Test func aPlanIsCommittedOnlyWhenItDiffersFromTheCommittedOne() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        var state = Self.services()
        let members = [Self.member("a"), Self.member("b")]
        let first = try Self.commit(round.step(state: state, members: members, demand: [:], now: .seconds(1)), to: &state)
        #expect(first.plan.specs == ["web": Self.web.containerHash])
        #expect(first.reasons.allSatisfy { $0.contains("web") })
        // The plan committed (a new applied index): planned again, and it is the committed one, so no proposal.
        #expect(round.step(state: state, members: members, demand: [:], now: .milliseconds(1100)).verdict == .unchanged)
        // The same inputs a moment later: nothing is planned at all.
        #expect(round.step(state: state, members: members, demand: [:], now: .milliseconds(1500)).verdict == .quiet)
        // After `maxQuiet` (1 s) the round plans again, with the same result.
        #expect(round.step(state: state, members: members, demand: [:], now: .milliseconds(2100)).verdict == .unchanged)
        // Any input that changes plans at once: here a member's record.
        let busy = [Self.member("a", running: ["web": 1]), Self.member("b")]
        #expect(round.step(state: state, members: busy, demand: [:], now: .milliseconds(2200)).verdict == .unchanged)
        #expect(round.step(state: state, members: busy, demand: [:], now: .milliseconds(2300)).verdict == .quiet)
    }

    @Test func aProposalThatFailedIsPlannedAgainAtOnce() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        let state = Self.services()
        let members = [Self.member("a"), Self.member("b")]
        guard case .commit = round.step(state: state, members: members, demand: [:], now: .seconds(1)).verdict else {
            Issue.record("the first round proposes a plan")
            return
        }
        round.commitFailed()
        guard case .commit = round.step(state: state, members: members, demand: [:], now: .milliseconds(1001)).verdict else {
            Issue.record("a failed proposal is proposed again on the next round, not after maxQuiet")
            return
        }
    }

    @Test func aNodeThatSaidItRestartsKeepsItsWorkForTheGraceThenItMoves() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        var state = try Self.planned(&round, at: .seconds(1))
        let holder = try #require(state.plan.assignments.keys.sorted().first { state.plan.assignments[$0]?["web"] ?? 0 > 0 })
        let other = holder == "a" ? "b" : "a"
        let members = [Self.member(holder, .dead, restarting: true), Self.member(other)]

        // Seen dead at 10 s: a suspect for the grace, keeping its container, getting no new one.
        let seen = round.step(state: state, members: members, demand: [:], now: .seconds(10))
        #expect(seen.nodes.first { $0.name == holder }?.status == .suspect)
        #expect(seen.verdict == .unchanged)
        #expect(round.deadSince == [holder: .seconds(10)])
        let late = round.step(state: state, members: members, demand: [:], now: .seconds(10) + Self.grace - .milliseconds(1))
        #expect(late.verdict == .unchanged)

        // The grace over: it is dead, and its container moves.
        let over = round.step(state: state, members: members, demand: [:], now: .seconds(10) + Self.grace)
        #expect(over.nodes.first { $0.name == holder }?.status == .dead)
        let moved = try Self.commit(over, to: &state)
        #expect(moved.plan.assignments[holder]?["web"] == nil)
        #expect(moved.plan.assignments[other]?["web"] == 2)
    }

    @Test func aNodeThatSaidNothingMovesAsSoonAsTheLeaderSeesItDead() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        var state = try Self.planned(&round, at: .seconds(1))
        let members = [Self.member("a", .dead), Self.member("b")]
        let moved = try Self.commit(round.step(state: state, members: members, demand: [:], now: .seconds(2)), to: &state)
        #expect(moved.plan.assignments["a"] == nil && moved.plan.assignments["b"]?["web"] == 2)
        #expect(round.deadSince.isEmpty)
    }

    @Test func aNodeOthersCallDeadKeepsItsWorkUntilTheLeaderSeesItSoItself() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        let state = try Self.planned(&round, at: .seconds(1))
        let members = [Self.member("a", .dead, confirmedDown: false), Self.member("b")]
        let heard = round.step(state: state, members: members, demand: [:], now: .seconds(2))
        #expect(heard.nodes.first { $0.name == "a" }?.status == .suspect)
        #expect(heard.verdict == .unchanged)
    }

    @Test func aLeaderThatFollowedInBetweenWaitsAFullGraceAgain() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        let state = try Self.planned(&round, at: .seconds(1))
        let members = [Self.member("a", .dead, restarting: true), Self.member("b")]
        _ = round.step(state: state, members: members, demand: [:], now: .seconds(10))
        round.follow()
        #expect(round.deadSince.isEmpty && round.lastPlan == nil)
        let again = round.step(state: state, members: members, demand: [:], now: .seconds(10) + Self.grace)
        #expect(again.nodes.first { $0.name == "a" }?.status == .suspect)
        #expect(round.deadSince == ["a": .seconds(10) + Self.grace])
    }

    @Test func aDrainedNodeGetsNothing() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        var state = try Self.planned(&round, at: .seconds(1))
        _ = state.apply(.setDrain(node: "b", drained: true), index: state.appliedIndex + 1)
        let drained = try Self.commit(
            round.step(state: state, members: [Self.member("a"), Self.member("b")], demand: [:], now: .seconds(2)), to: &state)
        #expect(drained.plan.assignments["b"] == nil && drained.plan.assignments["a"]?["web"] == 2)
        #expect(drained.reasons.contains { $0.contains("b drained") }, "\(drained.reasons)")
        // What b is told: every service, with nothing to run.
        let share = NodeAssignment.of(state, node: "b")
        #expect(share.services["web"]?.count == 0 && share.planIndex == state.planIndex)
    }

    @Test func aSpecChangeAloneIsCommittedAndSaysWhatChanged() throws {
        var round = LeaderRound(deadNodeGrace: Self.grace)
        var state = try Self.planned(&round, at: .seconds(1))
        var v2 = Self.web
        v2.image = "web:2"
        _ = state.apply(.applyServices(["web": v2]), index: state.appliedIndex + 1)
        let c = try Self.commit(round.step(state: state, members: [Self.member("a"), Self.member("b")], demand: [:], now: .seconds(2)), to: &state)
        #expect(c.plan.specs == ["web": v2.containerHash])
        #expect(c.reasons.first == "web: containers change: image web:1 → web:2")
        #expect(c.plan.rollouts?["web"] != nil)
    }

    @Test func thePlannerReadsAPolledReadingFirstThenTheAPIsValueElseUnknown() {
        var s = ClusterState()
        let batch = ServiceSpec(image: "b", cpu: 0.1, memory: 1 << 20, max: 4, fill: true)
        _ = s.apply(.applyServices(["web": Self.web, "api": Self.web, "q": Self.web, "batch": batch]), index: 1)
        _ = s.apply(.setDemand(service: "web", value: 3), index: 2)
        _ = s.apply(.setDemand(service: "q", value: 3), index: 3)
        let d = LeaderRound.demand(s, polled: ["q": .known(7), "gone": .known(1)])
        #expect(d == ["web": .known(3), "q": .known(7), "api": .unknown])
        // A poller that has no reading makes the demand unknown, whatever the API said.
        #expect(LeaderRound.demand(s, polled: ["q": .unknown])["q"] == .unknown)
    }

    @Test func theDecisionSaysHowManyChangesAndHowLongTheRoundTook() {
        let c = LeaderRound.Commit(plan: Consensus.Plan(assignments: [:]), reasons: ["x"], changes: 3, plannerDecisions: 1)
        let d = c.decision(timestampMilliseconds: 42, planning: .microseconds(1504))
        #expect(d.summary == "3 changes planned in 1.50 ms" && d.timestampMilliseconds == 42 && d.reasons == ["x"])
        let one = LeaderRound.Commit(plan: Consensus.Plan(assignments: [:]), reasons: [], changes: 1, plannerDecisions: 1)
        #expect(one.decision(timestampMilliseconds: 0, planning: .zero).summary == "1 change planned in 0.00 ms")
    }
}
