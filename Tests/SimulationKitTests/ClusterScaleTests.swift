import SimulationKit
import Testing

/// `microscale-sim cluster --scale` (docs/simulation.md, "At scale"), small: the same composition
/// as the seeded runs at 60 agents, no faults (200 cost make test two minutes of a debug build). Asserts what reached whom, never how long it took.
@Suite struct ClusterScaleTests {
    @Test func atSixtyNodesEveryNodeGetsEachPlanAndTheChangedNodesRunIt() {
        var o = ClusterScaleOptions()
        o.nodes = 60
        o.steps = 2
        let r = runClusterScale(seed: 1, options: o, cpuClock: { .zero })
        #expect(r.nodes == 60 && r.servers == 3)
        #expect(r.convergedSeconds != nil, "the cluster converged")
        #expect(r.steps.count == 2)
        for (k, step) in r.steps.enumerated() {
            #expect(step.planIndex > 0, "step \(k + 1) produced a plan")
            // Web goes up by 20 containers, then back: some nodes' shares change.
            #expect(step.nodesChanged > 0, "step \(k + 1) changed some node's share")
            #expect(step.assignmentAllSeconds != nil, "step \(k + 1): every node holds the plan")
            #expect(step.containersAllSeconds != nil, "step \(k + 1): every changed node runs its share")
            #expect(step.leaderCPU != nil, "step \(k + 1): the leader's sections were measured")
        }
        #expect(r.assignmentAll?.failed == 0)
        #expect(r.recordSpreadAllSeconds != nil, "every other node holds the changed record")
        #expect(r.crashDeadAllSeconds != nil, "every other node holds the crashed node dead")
        #expect(r.crashReplannedSeconds != nil, "the leader committed a plan without the crashed node")
        #expect(r.reconvergedSeconds != nil, "the crashed node came back and the cluster converged")
        #expect(r.violations.isEmpty, "\(r.violations)")
        #expect(r.checks[ClusterInvariant.convergence, default: 0] == 60, "convergence checked on every node at the end")
        #expect(r.checks[ClusterInvariant.noWorkOnDeadOrDrained, default: 0] > 0)
    }

    @Test func aNegativeStepCountRunsNoStepInsteadOfTrapping() {
        var o = ClusterScaleOptions()
        o.nodes = 5
        o.steps = -3
        #expect(runClusterScale(seed: 1, options: o, cpuClock: { .zero }).steps.isEmpty)
    }

    @Test func aScaleRunReplaysExactlyWithoutTheCPUClock() {
        var o = ClusterScaleOptions()
        o.nodes = 20
        o.steps = 1
        #expect(runClusterScale(seed: 3, options: o, cpuClock: { .zero }) == runClusterScale(seed: 3, options: o, cpuClock: { .zero }))
    }
}
