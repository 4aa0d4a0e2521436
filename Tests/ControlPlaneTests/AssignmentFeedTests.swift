import Consensus
import ControlPlane
import Testing

/// When a server hands out assignments and which pushes an agent takes (docs/scheduling.md).
@Suite struct AssignmentFeedTests {
    static let web = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, max: 4)

    /// Services applied at 1, then a plan at `index` running web on c1.
    static func state(planAt index: UInt64) -> ClusterState {
        var s = ClusterState()
        _ = s.apply(.applyServices(["web": web]), index: 1)
        let plan = Consensus.Plan(assignments: ["c1": ["web": 2]], specs: ["web": web.containerHash])
        _ = s.apply(.setPlan(plan, Consensus.Decision(timestampMilliseconds: 0, summary: "", reasons: [])), index: index)
        return s
    }

    @Test func aServerHandsItsOwnShareOfEachNewerPlanToItsExecutorOnce() {
        var feed = AssignmentFeed(node: "s1")
        let first = feed.planApplied(Self.state(planAt: 2))
        #expect(first.local?.planIndex == 2 && first.local?.services["web"]?.count == 0)
        // Applied again (the services changed, or a subscriber asked): the same plan is not handed over twice.
        #expect(feed.planApplied(Self.state(planAt: 2)).local == nil)
        #expect(feed.planApplied(Self.state(planAt: 5)).local?.planIndex == 5)
    }

    @Test func aSubscriberIsPushedItsShareWhenItHoldsAnOlderPlanAndNotAgainOnceItHasIt() {
        var feed = AssignmentFeed(node: "s1")
        let taken = [feed.subscribe("c1", after: 0), feed.subscribe("c2", after: 2)]
        #expect(taken == [true, true])
        let sends = feed.planApplied(Self.state(planAt: 2))
        #expect(sends.pushes.map(\.peer) == ["c1"])
        #expect(sends.pushes.first?.assignment.services["web"]?.count == 2)
        feed.pushed(to: "c1", index: 2, delivered: true)
        #expect(feed.planApplied(Self.state(planAt: 2)).pushes.isEmpty)
    }

    @Test func aSubscriberThatCannotBeReachedIsDroppedUntilItSubscribesAgain() {
        var feed = AssignmentFeed(node: "s1")
        _ = feed.subscribe("c1", after: 0)
        _ = feed.planApplied(Self.state(planAt: 2))
        feed.pushed(to: "c1", index: 2, delivered: false)
        #expect(feed.subscribers.isEmpty)
        #expect(feed.planApplied(Self.state(planAt: 3)).pushes.isEmpty)
        _ = feed.subscribe("c1", after: 0)
        #expect(feed.planApplied(Self.state(planAt: 3)).pushes.map(\.peer) == ["c1"])
    }

    @Test func aSubscriptionIsAnsweredWithThatSubscribersShareOnlyWhenItHoldsAnOlderPlan() {
        var feed = AssignmentFeed(node: "s1")
        let state = Self.state(planAt: 4)
        _ = feed.subscribe("c1", after: 2)
        _ = feed.subscribe("c2", after: 0)
        #expect(feed.due(for: "c1", in: state)?.services["web"]?.count == 2)
        #expect(feed.due(for: "c1", in: state)?.planIndex == 4)
        _ = feed.subscribe("c1", after: 4)
        #expect(feed.due(for: "c1", in: state) == nil, "up to date")
        #expect(feed.due(for: "c3", in: state) == nil, "not a subscriber")
        #expect(feed.subscribers["c2"] == 0, "another subscriber is not looked at")
    }

    @Test func aServerServesAtMostMaxSubscribersButAlwaysOneItKnows() {
        var feed = AssignmentFeed(node: "s1")
        let taken = (0..<AssignmentFeed.maxSubscribers).filter { feed.subscribe("c\($0)", after: 0) }.count
        #expect(taken == AssignmentFeed.maxSubscribers)
        let stranger = feed.subscribe("one-too-many", after: 0)
        let known = feed.subscribe("c0", after: 7)
        #expect(!stranger && known && feed.subscribers["c0"] == 7)
    }

    @Test func anAgentTakesAPushOnlyForItselfAndOfANewerPlan() {
        var feed = AssignmentFeed(node: "c1")
        #expect(feed.wants(planIndex: 3, for: "c1"))
        #expect(!feed.wants(planIndex: 3, for: "c2"))
        feed.took(3)
        #expect(!feed.wants(planIndex: 3, for: "c1") && !feed.wants(planIndex: 2, for: "c1"))
        #expect(feed.wants(planIndex: 4, for: "c1") && feed.lastIndex == 3)
    }
}
