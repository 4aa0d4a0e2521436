import Consensus
import Foundation
import Testing

/// "A plan computed before a drain committed, applied after it" (issue 16; found by
/// `microscale-sim cluster --seeds 144 --plans-without-base`, docs/simulation.md): a plan carries
/// the applied index of the state it was computed from, and apply refuses one older than the last
/// change of the services, the drained nodes or the deny list.
@Suite struct StalePlanTests {
    static let web = ServiceSpec(image: "mini:latest", priority: 1, cpu: 0.5, memory: 64 << 20, min: 1, max: 10)

    static func plan(_ assignments: [String: [String: Int]], basedOn: UInt64?) -> ClusterCommand {
        .setPlan(Plan(assignments: assignments, basedOnIndex: basedOn), Decision(timestampMilliseconds: 7, summary: "plan", reasons: []))
    }

    /// Entries 1-2: a service and a plan; the state is that of entry 2.
    static func declared() -> ClusterState {
        var s = ClusterState()
        s.apply(ClusterCommand.applyServices(["web": web]).encodedForTest, index: 1)
        s.apply(plan(["h1": ["web": 2], "h2": ["web": 2]], basedOn: 1).encodedForTest, index: 2)
        return s
    }

    @Test func aPlanComputedBeforeADrainAndCommittedAfterItIsRefusedAndSaysWhy() {
        var s = Self.declared()
        // The leader planned from the state of entry 2; a drain of h2 entered the log first.
        s.apply(ClusterCommand.setDrain(node: "h2", drained: true).encodedForTest, index: 3)
        let r = s.apply(Self.plan(["h1": ["web": 2], "h2": ["web": 3]], basedOn: 2).encodedForTest, index: 4)
        #expect(r == .stalePlan(basedOn: 2, changedAt: 3))
        #expect(s.plan.assignments["h2"] == ["web": 2], "the committed plan is the one before: the drained node gets no new work")
        #expect(s.planIndex == 2)
        let refusal = s.decisions.last
        #expect(refusal?.index == 4 && refusal?.refused == true)
        #expect(refusal?.reasons.first?.contains("before entry 3 changed the services, drained nodes or deny list") == true)
    }

    @Test func aPlanComputedAfterTheDrainApplies() {
        var s = Self.declared()
        s.apply(ClusterCommand.setDrain(node: "h2", drained: true).encodedForTest, index: 3)
        #expect(s.apply(Self.plan(["h1": ["web": 4]], basedOn: 3).encodedForTest, index: 4) == nil)
        #expect(s.planIndex == 4)
    }

    @Test func demandAndOtherPlansDoNotMakeAPlanStale() {
        var s = Self.declared()
        s.apply(ClusterCommand.setDemand(service: "web", value: 30).encodedForTest, index: 3)
        s.apply(Self.plan(["h1": ["web": 3]], basedOn: 2).encodedForTest, index: 4)
        // Based on entry 2 still: demand and the plan of entry 4 are not what the rule guards.
        #expect(s.apply(Self.plan(["h1": ["web": 3], "h2": ["web": 1]], basedOn: 2).encodedForTest, index: 5) == nil)
        #expect(s.planIndex == 5)
    }

    @Test func servicesAndDenialsMakeAPlanStaleToo() {
        var s = Self.declared()
        s.apply(ClusterCommand.applyServices(["api": Self.web]).encodedForTest, index: 3)
        #expect(s.apply(Self.plan(["h1": ["web": 1]], basedOn: 2).encodedForTest, index: 4) == .stalePlan(basedOn: 2, changedAt: 3))
        s.apply(ClusterCommand.setDenied(node: "h9", denied: true).encodedForTest, index: 5)
        #expect(s.apply(Self.plan(["h1": ["web": 1]], basedOn: 4).encodedForTest, index: 6) == .stalePlan(basedOn: 4, changedAt: 5))
    }

    @Test func aPlanWithoutABaseAppliesAsBefore() {
        var s = Self.declared()
        s.apply(ClusterCommand.setDrain(node: "h2", drained: true).encodedForTest, index: 3)
        #expect(s.apply(Self.plan(["h2": ["web": 1]], basedOn: nil).encodedForTest, index: 4) == nil)
    }

    @Test func oldEntriesAndSnapshotsStillDecode() throws {
        // A plan entry written before `basedOnIndex` existed, and a snapshot without `declaredIndex`.
        let old = #"{"setPlan":{"_0":{"assignments":{"h1":{"web":2}}},"_1":{"index":0,"reasons":[],"summary":"s","timestampMilliseconds":1}}}"#
        let command = try ClusterCommand.decode([1] + Array(old.utf8))
        guard case .setPlan(let p, _) = command else {
            Issue.record("not a plan: \(command)")
            return
        }
        #expect(p.basedOnIndex == nil)
        let without = #"{"appliedIndex":9,"decisions":[],"demand":{},"drainedNodes":["h2"],"plan":{"assignments":{}},"services":{}}"#
        var s = try ClusterState.restore([1] + Array(without.utf8))
        #expect(s.declaredIndex == 0)
        #expect(s.apply(Self.plan(["h1": ["web": 1]], basedOn: 5), index: 10) == nil)
        // And the bytes of a plan without a base are what they were: no new key.
        let bytes = try Self.plan(["h1": ["web": 1]], basedOn: nil).encoded()
        #expect(!String(decoding: bytes.dropFirst(), as: UTF8.self).contains("basedOnIndex"))
    }
}
