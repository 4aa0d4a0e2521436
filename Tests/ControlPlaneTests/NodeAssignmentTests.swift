import Consensus
import ControlPlane
import Testing

/// What a committed plan means to one node (docs/scheduling.md), as a specification.
@Suite struct NodeAssignmentTests {
    static let web = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, max: 4)
    static let api = ServiceSpec(image: "api:1", cpu: 0.5, memory: 64 << 20, max: 4)

    static func state() -> ClusterState {
        var s = ClusterState()
        _ = s.apply(.applyServices(["web": web, "api": api]), index: 1)
        let plan = Consensus.Plan(
            assignments: ["a": ["web": 2], "b": ["api": 1]],
            specs: ["web": web.containerHash, "api": api.containerHash])
        _ = s.apply(.setPlan(plan, Consensus.Decision(timestampMilliseconds: 1234, summary: "", reasons: [])), index: 2)
        return s
    }

    @Test func everyDeclaredServiceIsInANodesShareWithACountOfZeroWhereItRunsNothing() {
        let a = NodeAssignment.of(Self.state(), node: "a")
        #expect(a.services.mapValues(\.count) == ["web": 2, "api": 0])
        #expect(a.services["api"]?.spec == Self.api && a.keep.isEmpty)
        // A node the plan does not name (drained, dead, new) is told to run nothing.
        #expect(NodeAssignment.of(Self.state(), node: "c").services.mapValues(\.count) == ["web": 0, "api": 0])
    }

    @Test func theShareCarriesThePlansIndexAndWhenTheLeaderDecidedIt() {
        let s = Self.state()
        let a = NodeAssignment.of(s, node: "b")
        #expect(a.planIndex == 2 && s.planIndex == 2)
        #expect(a.decidedAtMilliseconds == 1234)
    }

    @Test func twoSharesAreEqualWhenTheyRunTheSameContainersOfTheSamePlan() {
        let s = Self.state()
        #expect(NodeAssignment.of(s, node: "a") == NodeAssignment.of(s, node: "a"))
        #expect(NodeAssignment.of(s, node: "a") != NodeAssignment.of(s, node: "b"))
    }
}
