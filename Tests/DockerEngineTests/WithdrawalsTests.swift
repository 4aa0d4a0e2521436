import DockerEngine
import Testing

private func c(_ id: String, _ service: String = "web", _ hash: String = "h1", health: ObservedContainer.Health? = nil) -> ObservedContainer {
    ObservedContainer(
        id: id, labels: [MicroscaleLabel.service: service, MicroscaleLabel.node: "n1", MicroscaleLabel.spec: hash, MicroscaleLabel.managed: "true"],
        state: .running, health: health)
}

/// `w.stopDue(...)` outside `#expect`, which cannot call a mutating method.
private func due(_ w: inout Withdrawals, _ id: String, _ delay: Duration, _ now: Duration) -> Bool {
    w.stopDue(id, delay: delay, now: now)
}

/// Withdraw before stopping (docs/endpoints.md, "Planned stops withdraw first"): the table itself.
@Suite struct WithdrawalsTests {
    @Test func aPositiveDelayWithdrawsFirstAndAllowsTheStopOnlyOnceItHasPassed() {
        var w = Withdrawals()
        let first = due(&w, "a", .seconds(2), .seconds(10))
        #expect(!first && w.contains("a") && w.ids == ["a"])
        let early = due(&w, "a", .seconds(2), .milliseconds(11_999))
        let onTime = due(&w, "a", .seconds(2), .seconds(12))
        #expect(!early && onTime)
    }

    @Test func aZeroDelayAllowsTheStopAtOnceAndWithdrawsNothing() {
        var w = Withdrawals()
        let now = due(&w, "a", .zero, .seconds(10))
        #expect(now && w.isEmpty)
    }

    @Test func aDeadlineOnceSetIsKeptWhateverTheDelaySaysLater() {
        var w = Withdrawals()
        _ = w.stopDue("a", delay: .seconds(2), now: .zero)
        // A stop_delay lowered (or raised) meanwhile applies to later stops, not to this one.
        let lowered = due(&w, "a", .zero, .seconds(1))
        let raised = due(&w, "a", .seconds(60), .seconds(2))
        #expect(!lowered && raised)
    }

    @Test func containersNoLongerRunningAreForgotten() {
        var w = Withdrawals()
        _ = w.stopDue("a", delay: .seconds(2), now: .zero)
        _ = w.stopDue("b", delay: .seconds(2), now: .zero)
        w.keepOnly(["b", "c"])
        #expect(w.ids == ["b"])
    }

    @Test func theNextStopIsTheEarliestDeadlineStillAhead() {
        var w = Withdrawals()
        #expect(w.nextStop(after: .zero) == nil)
        _ = w.stopDue("a", delay: .seconds(3), now: .zero)
        _ = w.stopDue("b", delay: .seconds(1), now: .zero)
        #expect(w.nextStop(after: .zero) == .seconds(1))
        #expect(w.nextStop(after: .seconds(1)) == .seconds(3))
        #expect(w.nextStop(after: .seconds(3)) == nil)
    }
}

/// The reconciler's planned stops with a stop delay: which containers are withdrawn, which are
/// stopped at once, and what a withdrawn one counts for.
@Suite struct ReconcilerWithdrawalTests {
    let delayed = DesiredService(count: 1, specHash: "h1", stopDelay: .seconds(2))

    @Test func aScaleDownWithdrawsTheExtraServingContainerAndStopsItOnlyAfterItsDelay() {
        var r = Reconciler(node: "n1")
        var plan = r.decide(desired: ["web": delayed], observed: [c("a"), c("b")], now: .seconds(100))
        #expect(plan.withdrawn == ["b"] && plan.stops.isEmpty && plan.starts.isEmpty && plan.isEmpty)
        #expect(r.withdrawals.ids == ["b"])
        plan = r.decide(desired: ["web": delayed], observed: [c("a"), c("b")], now: .seconds(101))
        #expect(plan.withdrawn.isEmpty && plan.draining == 1 && plan.stops.isEmpty)
        plan = r.decide(desired: ["web": delayed], observed: [c("a"), c("b")], now: .seconds(102))
        #expect(plan.stops == [.stop(id: "b", service: "web")] && plan.draining == 0)
        // Once it is gone, it is forgotten.
        _ = r.decide(desired: ["web": delayed], observed: [c("a")], now: .seconds(103))
        #expect(r.withdrawals.isEmpty)
    }

    @Test func aWithdrawnContainerCountsForNothingEvenIfTheCountRisesBeforeItsStop() {
        var r = Reconciler(node: "n1")
        _ = r.decide(desired: ["web": delayed], observed: [c("a"), c("b")], now: .zero)
        var two = delayed
        two.count = 2
        var plan = r.decide(desired: ["web": two], observed: [c("a"), c("b")], now: .seconds(1))
        // Load balancers were told b is gone: a new container takes its place, b still stops.
        #expect(plan.starts == [.start(service: "web", specHash: "h1")] && plan.stops.isEmpty && plan.draining == 1)
        plan = r.decide(desired: ["web": two], observed: [c("a"), c("b"), c("n")], now: .seconds(2))
        #expect(plan.stops == [.stop(id: "b", service: "web")] && plan.starts.isEmpty)
    }

    @Test func withoutADelayAPlannedStopIsImmediate() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": .init(count: 1, specHash: "h1")], observed: [c("a"), c("b")], now: .zero)
        #expect(plan.stops == [.stop(id: "b", service: "web")] && plan.withdrawn.isEmpty && r.withdrawals.isEmpty)
    }

    @Test func deathsAreNotDelayedAnUnhealthyContainerIsStoppedAtOnce() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": delayed], observed: [c("a", health: .unhealthy)], now: .zero)
        #expect(plan.stops == [.stop(id: "a", service: "web")] && plan.withdrawn.isEmpty && r.withdrawals.isEmpty)
    }

    @Test func aContainerWhoseCheckHasNotPassedIsNoEndpointAndIsStoppedAtOnce() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": delayed], observed: [c("a", health: .healthy), c("b", health: .starting)], now: .zero)
        #expect(plan.stops == [.stop(id: "b", service: "web")] && plan.withdrawn.isEmpty)
    }

    @Test func aRolloutsOldContainerBeyondItsBudgetIsWithdrawnWhileItsReplacementStarts() {
        var r = Reconciler(node: "n1")
        // start-first: the new container serves, the budget for old ones drops from 1 to 0.
        var want = DesiredService(count: 1, specHash: "h2", keep: ["h1"], keepCount: 1, stopDelay: .seconds(2))
        var plan = r.decide(desired: ["web": want], observed: [c("old", "web", "h1")], now: .zero)
        #expect(plan.starts == [.start(service: "web", specHash: "h2")] && plan.stops.isEmpty && plan.withdrawn.isEmpty)
        want.keepCount = 0
        plan = r.decide(desired: ["web": want], observed: [c("old", "web", "h1"), c("new", "web", "h2")], now: .seconds(5))
        #expect(plan.withdrawn == ["old"] && plan.stops.isEmpty && plan.starts.isEmpty)
        plan = r.decide(desired: ["web": want], observed: [c("old", "web", "h1"), c("new", "web", "h2")], now: .seconds(7))
        #expect(plan.stops == [.stop(id: "old", service: "web")])
    }

    @Test func aStartNeedingAFixedHostPortWaitsForTheWithdrawnContainerHoldingIt() {
        var r = Reconciler(node: "n1")
        // stop-first: the old container goes and its replacement comes in one step; both need host port 80.
        let want = DesiredService(count: 1, specHash: "h2", stopDelay: .seconds(2), hostPorts: [80])
        var plan = r.decide(desired: ["web": want], observed: [c("old", "web", "h1")], now: .zero)
        #expect(plan.withdrawn == ["old"] && plan.starts.isEmpty && plan.waitingForPorts == ["web"])
        // The round that stops it starts the replacement (stops before starts).
        plan = r.decide(desired: ["web": want], observed: [c("old", "web", "h1")], now: .seconds(2))
        #expect(plan.stops == [.stop(id: "old", service: "web")] && plan.starts == [.start(service: "web", specHash: "h2")])
        // Without fixed ports the replacement starts at once, beside the withdrawn container.
        var s = Reconciler(node: "n1")
        var free = want
        free.hostPorts = []
        plan = s.decide(desired: ["web": free], observed: [c("old", "web", "h1")], now: .zero)
        #expect(plan.withdrawn == ["old"] && plan.starts == [.start(service: "web", specHash: "h2")])
    }

    @Test func aRemovedServiceIsWithdrawnForItsLastKnownDelay() {
        var r = Reconciler(node: "n1")
        _ = r.decide(desired: ["web": delayed], observed: [c("a")], now: .zero)
        var plan = r.decide(desired: [:], observed: [c("a")], now: .seconds(1))
        #expect(plan.withdrawn == ["a"] && plan.stops.isEmpty)
        plan = r.decide(desired: [:], observed: [c("a")], now: .seconds(3))
        #expect(plan.stops == [.stop(id: "a", service: "web")])
    }
}
