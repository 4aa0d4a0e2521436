import Consensus
import ControlPlane
import Membership
import Testing

@testable import Agent

/// The leader's side of a rolling update (docs/rollouts.md): a spec change begins a rollout from
/// what the committed plan runs, each plan steps it on the nodes' reports, and every agent's share
/// splits its count between new and kept containers.
@Suite struct DecisionLoopRolloutTests {
    static let v1 = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, min: 3, max: 3)
    static var v2: ServiceSpec {
        var s = v1
        s.image = "web:2"
        return s
    }
    static let counts = ["a": ["web": 2], "b": ["web": 1]]

    func member(_ name: String, _ report: RolloutProgress? = nil) -> MemberView {
        var r = NodeRecord(name: name, address: "127.0.0.1:1")
        if let report { r.rollouts = ["web": report] }
        return MemberView(r, status: .alive, incarnation: 1)
    }

    /// v1 planned and committed, then v2 applied.
    func state() -> ClusterState {
        var s = ClusterState()
        _ = s.apply(.applyServices(["web": Self.v1]), index: 1)
        _ = s.apply(
            .setPlan(
                Consensus.Plan(assignments: Self.counts, specs: ["web": Self.v1.containerHash]),
                Consensus.Decision(timestampMilliseconds: 0, summary: "", reasons: [])), index: 2)
        _ = s.apply(.applyServices(["web": Self.v2]), index: 3)
        return s
    }

    @Test func aSpecChangeBeginsARolloutFromWhatTheCommittedPlanRunsAndTakesItsFirstStep() throws {
        let s = state()
        let specs = ["web": Self.v2.containerHash]
        #expect(LeaderRound.specChanges(s, specs) == ["web: containers change: image web:1 → web:2"])
        let (rollouts, reasons) = LeaderRound.rollouts(s, specs: specs, next: Self.counts, members: [member("a"), member("b")])
        let r = try #require(rollouts?["web"])
        // Swarm's defaults: one at a time, stop-first, from the node with the most old containers.
        #expect(r.from == Self.v1.containerHash && r.to == Self.v2.containerHash)
        #expect(r.old == ["a": 1, "b": 1] && r.new == ["a": 1])
        #expect(reasons.first == "web: rolling out \(Self.v2.containerHash.prefix(8)) (stop-first, max_parallel 1)")
        #expect(reasons.contains { $0.contains("1 replacement started (stop-first, 0/3 done)") })
    }

    @Test func eachAgentRunsItsNewContainersAndKeepsItsOldOnes() throws {
        var s = state()
        let specs = ["web": Self.v2.containerHash]
        let (rollouts, _) = LeaderRound.rollouts(s, specs: specs, next: Self.counts, members: [])
        _ = s.apply(
            .setPlan(
                Consensus.Plan(assignments: Self.counts, specs: specs, rollouts: rollouts),
                Consensus.Decision(timestampMilliseconds: 0, summary: "", reasons: [])), index: 4)
        let a = NodeAssignment.of(s, node: "a")
        #expect(a.services["web"]?.count == 1 && a.services["web"]?.spec == Self.v2)
        #expect(a.keep["web"] == NodeAssignment.Kept(specs: [Self.v1.containerHash], count: 1))
        // b has no new container yet, but is told of the rollout so that it reports on it.
        let b = NodeAssignment.of(s, node: "b")
        #expect(b.services["web"]?.count == 0 && b.keep["web"]?.count == 1)

        // a reports its new container serving: the next replacement starts (a and b have one old
        // container each: the first by name).
        let (next, _) = LeaderRound.rollouts(
            s, specs: specs, next: Self.counts,
            members: [member("a", RolloutProgress(spec: Self.v2.containerHash, serving: 1))])
        #expect(next?["web"]?.old == ["b": 1] && next?["web"]?.new == ["a": 2])
        #expect(next?["web"]?.done == 1 && next?["web"]?.total == 3)
    }

    @Test func aFailedNewContainerPausesAndTheStatusSaysSo() throws {
        var s = state()
        let specs = ["web": Self.v2.containerHash]
        let (rollouts, _) = LeaderRound.rollouts(s, specs: specs, next: Self.counts, members: [])
        _ = s.apply(
            .setPlan(
                Consensus.Plan(assignments: Self.counts, specs: specs, rollouts: rollouts),
                Consensus.Decision(timestampMilliseconds: 0, summary: "", reasons: [])), index: 4)
        let (paused, reasons) = LeaderRound.rollouts(
            s, specs: specs, next: Self.counts,
            members: [member("a", RolloutProgress(spec: Self.v2.containerHash, serving: 0, failed: 1))])
        let r = try #require(paused?["web"])
        #expect(ClusterAPI.rolloutText(r, spec: Self.v2) == "paused: 1 new container failed (health check or exit)")
        #expect(
            reasons.contains("web: rollout paused: 1 new container failed (health check or exit); roll back with `microscale services rollback web`"))
        #expect(ClusterAPI.rolloutText(rollouts!["web"]!, spec: Self.v2) == "updating 0/3 (stop-first)")
    }
}

extension DecisionLoopRolloutTests {
    @Test func aSpecAppliedButNotYetPlannedKeepsWhatThePlanRunsAndStartsNothing() {
        // v1 planned, v2 applied: an assignment made in between (a subscriber's) must not replace
        // every container with v2 at once.
        let s = state()
        let a = NodeAssignment.of(s, node: "a")
        #expect(a.services["web"]?.count == 0)
        #expect(a.keep["web"] == NodeAssignment.Kept(specs: [Self.v1.containerHash], count: 2))
    }
}
