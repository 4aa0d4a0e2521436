import Foundation
import Testing

@testable import DockerEngine

private func c(
    _ id: String, _ service: String, _ hash: String = "h1", node: String = "n1", state: ObservedContainer.State = .running, ranFor: Duration? = nil,
    managed: Bool = true
) -> ObservedContainer {
    var labels = [MicroscaleLabel.service: service, MicroscaleLabel.node: node, MicroscaleLabel.spec: hash]
    if managed { labels[MicroscaleLabel.managed] = "true" }
    return ObservedContainer(id: id, labels: labels, state: state, ranFor: ranFor)
}

@Suite struct ReconcilerDecisionTests {
    @Test func missingContainersAreStartedAndNothingElseIsDone() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": .init(count: 3, specHash: "h1")], observed: [c("a", "web")], now: .zero)
        #expect(plan.stops.isEmpty)
        #expect(plan.starts == Array(repeating: .start(service: "web", specHash: "h1"), count: 2))
    }

    @Test func stopsComeBeforeStartsWhenOneServiceShrinksForAnother() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": .init(count: 2, specHash: "h1"), "batch": .init(count: 0, specHash: "b1")],
            observed: [c("b1", "batch", "b1"), c("b2", "batch", "b1")], now: .zero)
        #expect(plan.actions.prefix(2).allSatisfy { if case .stop = $0 { true } else { false } })
        #expect(plan.actions.suffix(2).allSatisfy { if case .start = $0 { true } else { false } })
    }

    @Test func extraContainersAreStoppedAndExitedOnesAreRemovedFirst() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": .init(count: 1, specHash: "h1")],
            observed: [c("a", "web"), c("b", "web"), c("z", "web", state: .exited, ranFor: .seconds(60))], now: .zero)
        #expect(plan.stops == [.remove(id: "z", service: "web"), .stop(id: "b", service: "web")])
        #expect(plan.starts.isEmpty)
    }

    @Test func aChangedSpecHashReplacesTheRunningContainers() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": .init(count: 2, specHash: "h2")], observed: [c("a", "web", "h1"), c("b", "web", "h2")], now: .zero)
        #expect(plan.stops == [.stop(id: "a", service: "web")])
        #expect(plan.starts == [.start(service: "web", specHash: "h2")])
    }

    @Test func aFreshReconcilerAdoptsRunningContainersInsteadOfDuplicatingThem() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": .init(count: 2, specHash: "h1")], observed: [c("a", "web"), c("b", "web")], now: .seconds(1000))
        #expect(plan.isEmpty)
    }

    @Test func containersWithoutTheManagedLabelOrOfAnotherNodeAreNeverTouched() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: [:],
            observed: [c("u", "web", managed: false), c("o", "web", node: "n2"), c("x", "web", state: .exited, managed: false)], now: .zero)
        #expect(plan.isEmpty)
        #expect(plan.ignored == 3)
    }

    @Test func servicesNoLongerWantedAreStopped() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: [:], observed: [c("a", "old")], now: .zero)
        #expect(plan.stops == [.stop(id: "a", service: "old")])
    }

    @Test func quickExitsBackOffExponentiallyAndAreReportedAsCrashLooping() {
        var policy = ReconcilerPolicy()
        policy.initialBackoff = .seconds(1)
        policy.maximumBackoff = .seconds(4)
        var r = Reconciler(node: "n1", policy: policy)
        let want = ["web": DesiredService(count: 1, specHash: "h1")]
        var t = Duration.zero
        var waits: [Duration] = []
        for i in 0..<5 {
            let p = r.decide(desired: want, observed: [c("x\(i)", "web", state: .exited, ranFor: .milliseconds(50))], now: t)
            #expect(p.starts.isEmpty, "a crashing service waits out its back-off")
            let loop = try! #require(p.crashLooping["web"])
            #expect(loop.failures == i + 1)
            waits.append(loop.retryAt - t)
            t = loop.retryAt
            let again = r.decide(desired: want, observed: [], now: t)
            #expect(again.starts == [.start(service: "web", specHash: "h1")])
        }
        #expect(waits == [.seconds(1), .seconds(2), .seconds(4), .seconds(4), .seconds(4)])
    }

    @Test func aContainerThatRanLongEnoughClearsTheCrashLoop() {
        var r = Reconciler(node: "n1")
        let want = ["web": DesiredService(count: 1, specHash: "h1")]
        _ = r.decide(desired: want, observed: [c("x", "web", state: .exited, ranFor: .milliseconds(10))], now: .zero)
        #expect(r.crashLoops["web"] != nil)
        let p = r.decide(desired: want, observed: [c("y", "web", state: .exited, ranFor: .seconds(60))], now: .milliseconds(1))
        #expect(r.crashLoops["web"] == nil)
        #expect(p.starts.count == 1)
    }

    /// Found by `microscale-sim cluster --seeds 34` (docs/simulation.md): one dockerd restart
    /// stopped seven young containers of a service, which counted as seven crashes in a row.
    @Test func quickExitsSeenTogetherCountAsOneFailureOfTheirService() {
        var r = Reconciler(node: "n1")
        let want = ["web": DesiredService(count: 7, specHash: "h1"), "api": DesiredService(count: 1, specHash: "h2")]
        let exited = (0..<7).map { c("w\($0)", "web", state: .exited, ranFor: .seconds(2)) } + [c("a", "api", state: .exited, ranFor: .seconds(1))]
        let p = r.decide(desired: want, observed: exited, now: .zero)
        #expect(r.crashLoops["web"]?.failures == 1)
        #expect(r.crashLoops["api"]?.failures == 1)
        #expect(p.crashLooping["web"]?.retryAt == .seconds(1), "the first back-off, not the seventh")
        _ = r.decide(desired: want, observed: [c("w9", "web", state: .exited, ranFor: .seconds(2))], now: .seconds(2))
        #expect(r.crashLoops["web"]?.failures == 2, "a later exit is a second failure")
    }

    @Test func oneExitIsCountedOnceEvenIfItsRemovalFailed() {
        var r = Reconciler(node: "n1")
        let want = ["web": DesiredService(count: 1, specHash: "h1")]
        let exited = c("x", "web", state: .exited, ranFor: .milliseconds(10))
        _ = r.decide(desired: want, observed: [exited], now: .zero)
        _ = r.decide(desired: want, observed: [exited], now: .milliseconds(1))
        #expect(r.crashLoops["web"]?.failures == 1)
    }
}

@Suite struct CapacityTests {
    @Test func cgroupLimitsLowerTheEngineFiguresOnlyWhenLower() {
        let a = CapacityDetection.resolve(engineCPUs: 8, engineMemory: 16 << 30, cgroupCPUs: 2.5, cgroupMemory: 4 << 30)
        #expect(a == NodeCapacity(cpus: 2.5, memoryBytes: 4 << 30))
        let b = CapacityDetection.resolve(engineCPUs: 2, engineMemory: 1 << 30, cgroupCPUs: 16, cgroupMemory: 8 << 30)
        #expect(b == NodeCapacity(cpus: 2, memoryBytes: 1 << 30))
    }

    @Test func explicitValuesOverrideEverything() {
        let a = CapacityDetection.resolve(
            engineCPUs: 8, engineMemory: 16 << 30, cgroupCPUs: 2, cgroupMemory: nil, overrideCPUs: 6, overrideMemory: 1000)
        #expect(a == NodeCapacity(cpus: 6, memoryBytes: 1000))
    }

    @Test func theReserveComesOffTheDetectedFiguresButNotOffAnOverride() {
        let a = CapacityDetection.offered(
            engineCPUs: 8, engineMemory: 16 << 30, cgroupCPUs: 4, cgroupMemory: nil,
            reserveCPUs: 0.5, reserveMemory: 512 << 20)
        #expect(a == NodeCapacity(cpus: 3.5, memoryBytes: (16 << 30) - (512 << 20)))
        let tiny = CapacityDetection.offered(
            engineCPUs: 1, engineMemory: 256 << 20, cgroupCPUs: 0.25, cgroupMemory: nil,
            reserveCPUs: 0.5, reserveMemory: 512 << 20)
        #expect(tiny == NodeCapacity(cpus: 0, memoryBytes: 0), "never below zero")
        let given = CapacityDetection.offered(
            engineCPUs: 8, engineMemory: 16 << 30, cgroupCPUs: nil, cgroupMemory: nil,
            reserveCPUs: 0.5, reserveMemory: 512 << 20, overrideCPUs: 8, overrideMemory: 16 << 30)
        #expect(given == NodeCapacity(cpus: 8, memoryBytes: 16 << 30))
    }

    /// A /proc and a cgroup tree of our own: `pid` sits in a child of a limited parent.
    func tree(_ files: [String: String]) throws -> String {
        let root = NSTemporaryDirectory() + "capacity-\(UInt32.random(in: 0...UInt32.max))"
        for (path, text) in files {
            let full = root + "/" + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return root
    }

    @Test func aParentCgroupsLimitBindsDockerdInAChildUnderV1() throws {
        let r = try tree([
            "proc/42/cgroup": "12:memory:/slice/docker\n4:cpu,cpuacct:/slice/docker\n1:name=systemd:/x\n",
            "cg/cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cg/cpu,cpuacct/slice/cpu.cfs_quota_us": "150000\n", "cg/cpu,cpuacct/slice/cpu.cfs_period_us": "100000\n",
            "cg/cpu,cpuacct/slice/docker/cpu.cfs_quota_us": "-1\n", "cg/cpu,cpuacct/slice/docker/cpu.cfs_period_us": "100000\n",
            "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "cg/memory/slice/memory.limit_in_bytes": "2147483648\n",
            "cg/memory/slice/docker/memory.limit_in_bytes": "4294967296\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: r) }
        let limits = CapacityDetection.readCgroupLimits(pid: 42, procRoot: r + "/proc", root: r + "/cg")
        #expect(limits.cpus == 1.5)
        #expect(limits.memory == 2 << 30)
    }

    @Test func theLowestLimitOnTheWayUpBindsUnderV2() throws {
        let r = try tree([
            "proc/7/cgroup": "0::/system.slice/docker.service\n",
            "cg/cgroup.controllers": "cpu memory\n",
            "cg/system.slice/cpu.max": "max 100000\n", "cg/system.slice/memory.max": "1073741824\n",
            "cg/system.slice/docker.service/cpu.max": "250000 100000\n", "cg/system.slice/docker.service/memory.max": "max\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: r) }
        let limits = CapacityDetection.readCgroupLimits(pid: 7, procRoot: r + "/proc", root: r + "/cg")
        #expect(limits.cpus == 2.5)
        #expect(limits.memory == 1 << 30)
        let none = CapacityDetection.readCgroupLimits(pid: 8, procRoot: r + "/proc", root: r + "/cg")
        #expect(none.cpus == nil && none.memory == nil, "no such process: no limits")
    }

    @Test func cgroupFilesAreParsedAsTheKernelWritesThem() {
        #expect(CapacityDetection.parseCPUMax("max 100000\n") == nil)
        #expect(CapacityDetection.parseCPUMax("150000 100000\n") == 1.5)
        #expect(CapacityDetection.parseMemoryMax("max\n") == nil)
        #expect(CapacityDetection.parseMemoryMax("536870912\n") == 536_870_912)
        #expect(CapacityDetection.parseMemoryMax("9223372036854771712\n") == nil, "cgroup v1's 'no limit'")
    }
}

/// Rolling updates (docs/rollouts.md): what a node keeps of the old spec, and what it reports failed.
@Suite struct ReconcilerRolloutTests {
    private func unhealthy(_ id: String, _ hash: String) -> ObservedContainer {
        var x = c(id, "web", hash)
        x.health = .unhealthy
        return x
    }

    @Test func oldContainersAreKeptUpToTheirCountAndNeverStarted() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": .init(count: 1, specHash: "h2", keep: ["h1"], keepCount: 2)],
            observed: [c("a", "web", "h1"), c("b", "web", "h1"), c("d", "web", "h1")], now: .zero)
        // One old container beyond the two kept goes; one new starts; no old one is started.
        #expect(plan.stops == [.stop(id: "d", service: "web")])
        #expect(plan.starts == [.start(service: "web", specHash: "h2")])
        let fewer = r.decide(
            desired: ["web": .init(count: 1, specHash: "h2", keep: ["h1"], keepCount: 2)], observed: [c("x", "web", "h2")], now: .zero)
        #expect(fewer.isEmpty)
    }

    @Test func theBudgetIsSharedByEveryKeptSpecAndCoversExtrasOfTheDesiredOneWhenItIsKeptToo() {
        var r = Reconciler(node: "n1")
        // A change made mid-rollout: h1 and h2 both old, h3 new; three may stay.
        let plan = r.decide(
            desired: ["web": .init(count: 0, specHash: "h3", keep: ["h2", "h1"], keepCount: 3)],
            observed: [c("a", "web", "h1"), c("b", "web", "h2"), c("d", "web", "h2"), c("e", "web", "h1")], now: .zero)
        #expect(plan.stops == [.stop(id: "e", service: "web")] && plan.starts.isEmpty)
        // Back to h1 while it still runs: its containers beyond the count are kept, not stopped and started again.
        let back = r.decide(
            desired: ["web": .init(count: 1, specHash: "h1", keep: ["h2", "h1"], keepCount: 2)],
            observed: [c("a", "web", "h1"), c("b", "web", "h2"), c("e", "web", "h1")], now: .zero)
        #expect(back.isEmpty)
    }

    @Test func failuresOfTheDesiredSpecAreCountedOnceEachAndForgottenWhenTheSpecChanges() {
        var r = Reconciler(node: "n1")
        let want: [String: DesiredService] = ["web": .init(count: 2, specHash: "h2", keep: ["h1"], keepCount: 1)]
        _ = r.decide(
            desired: want, observed: [unhealthy("a", "h2"), unhealthy("o", "h1"), c("b", "web", "h2", state: .exited, ranFor: .seconds(1))],
            now: .zero)
        #expect(r.failures["web"]?.spec == "h2" && r.failures["web"]?.count == 2)
        _ = r.decide(desired: want, observed: [unhealthy("a", "h2")], now: .seconds(1))
        #expect(r.failures["web"]?.count == 2)
        _ = r.decide(desired: ["web": .init(count: 2, specHash: "h1")], observed: [], now: .seconds(2))
        #expect(r.failures["web"] == nil)
    }
}

private func standby(_ id: String, _ service: String = "web", _ hash: String = "h1", node: String = "n1") -> ObservedContainer {
    var o = c(id, service, hash, node: node, state: .created)
    o.labels[MicroscaleLabel.standby] = "true"
    return o
}

/// The standby pool (docs/scheduling.md, "Standby containers"): containers created ahead of need
/// and left unstarted, so a demand step starts them with no create before.
@Suite struct StandbyPoolTests {
    static let web = DesiredService(count: 1, specHash: "h1", standby: 2)

    @Test func anEmptyPoolIsFilledAfterTheStartsAndNotInTheirPlace() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": Self.web], observed: [], now: .zero)
        #expect(plan.starts == [.start(service: "web", specHash: "h1")])
        #expect(plan.standby == Array(repeating: .createStandby(service: "web", specHash: "h1"), count: 2))
        #expect(plan.actions.last == .createStandby(service: "web", specHash: "h1"))
    }

    @Test func aStepStartsTheStandbysFirstAndCreatesOnlyWhatThePoolLacks() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.count = 4
        let plan = r.decide(desired: ["web": want], observed: [c("a", "web"), standby("s1"), standby("s2")], now: .zero)
        #expect(
            plan.starts == [.startStandby(id: "s1", service: "web"), .startStandby(id: "s2", service: "web"), .start(service: "web", specHash: "h1")])
        #expect(plan.stops.isEmpty)
        // The pool is refilled behind the starts.
        #expect(plan.standby.count == 2)
    }

    @Test func standbysAreNeverCountedAsRunning() {
        var r = Reconciler(node: "n1")
        // Two standbys and no running container: the one container wanted is still missing.
        let plan = r.decide(desired: ["web": Self.web], observed: [standby("s1"), standby("s2")], now: .zero)
        #expect(plan.starts == [.startStandby(id: "s1", service: "web")])
        #expect(plan.standby == [.createStandby(service: "web", specHash: "h1")])
        #expect(!standby("s1").isServing)
    }

    @Test func aFullPoolIsAdoptedByAFreshReconcilerAfterARestart() {
        // An agent restarting has an empty reconciler: what it observes is the truth.
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": Self.web], observed: [c("a", "web"), standby("s1"), standby("s2")], now: .zero)
        #expect(plan.isEmpty)
    }

    @Test func standbysOfAnOldSpecAreRemovedAndThePoolRefilledWithTheNewOne() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.specHash = "h2"
        let plan = r.decide(
            desired: ["web": want], observed: [c("a", "web", "h2"), standby("s1", "web", "h1"), standby("s2", "web", "h1")], now: .zero)
        #expect(Set(plan.stops) == [.remove(id: "s1", service: "web"), .remove(id: "s2", service: "web")])
        #expect(plan.starts.isEmpty)
        #expect(plan.standby == Array(repeating: .createStandby(service: "web", specHash: "h2"), count: 2))
    }

    @Test func standbysOfAServiceThatWentAwayAreRemoved() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: [:], observed: [standby("s1"), standby("s2")], now: .zero)
        #expect(Set(plan.stops) == [.remove(id: "s1", service: "web"), .remove(id: "s2", service: "web")])
        #expect(plan.standby.isEmpty && plan.starts.isEmpty)
    }

    @Test func aPoolOfZeroRemovesTheStandbys() {
        // A node given no work (a drained one) is handed no pool: ExecutorPolicy.standby.
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": .init(count: 0, specHash: "h1", standby: 0)], observed: [standby("s1")], now: .zero)
        #expect(plan.stops == [.remove(id: "s1", service: "web")])
        #expect(plan.standby.isEmpty)
    }

    @Test func aPoolThatShrankGivesBackItsExtraStandbys() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.standby = 1
        let plan = r.decide(desired: ["web": want], observed: [c("a", "web"), standby("s1"), standby("s2")], now: .zero)
        #expect(plan.stops == [.remove(id: "s2", service: "web")])
        #expect(plan.standby.isEmpty)
    }

    @Test func aCreatedContainerWithoutTheStandbyLabelIsStillRemoved() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": Self.web], observed: [c("a", "web"), c("half", "web", state: .created), standby("s1"), standby("s2")], now: .zero)
        #expect(plan.stops == [.remove(id: "half", service: "web")])
        #expect(plan.standby.isEmpty)
    }

    @Test func anotherNodesStandbysAreNeverTouched() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": Self.web], observed: [c("a", "web"), standby("s1", node: "n2"), standby("s2"), standby("s3")], now: .zero)
        #expect(plan.isEmpty)
        #expect(plan.ignored == 1)
    }

    @Test func aHeldServiceKeepsItsStandbysButCreatesNone() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.canStart = false
        let plan = r.decide(desired: ["web": want], observed: [standby("s1")], now: .zero)
        #expect(plan.isEmpty)
    }

    @Test func aCrashLoopingServiceNeitherStartsNorRefillsItsPool() {
        var r = Reconciler(node: "n1")
        _ = r.decide(desired: ["web": Self.web], observed: [c("x", "web", state: .exited, ranFor: .milliseconds(10)), standby("s1")], now: .zero)
        let plan = r.decide(desired: ["web": Self.web], observed: [standby("s1")], now: .milliseconds(1))
        #expect(plan.starts.isEmpty && plan.standby.isEmpty)
        #expect(plan.crashLooping["web"] != nil)
    }
}

private func warm(_ id: String, _ service: String = "web", _ hash: String = "h1", node: String = "n1") -> ObservedContainer {
    var o = c(id, service, hash, node: node, state: .paused)
    o.labels[MicroscaleLabel.standby] = "true"
    return o
}

/// Warm standbys (docs/scheduling.md, "Warm standbys"): standbys started and then paused, which a
/// demand step unpauses.
@Suite struct WarmStandbyTests {
    static let web = DesiredService(count: 1, specHash: "h1", standby: 2, warmStandby: 2)

    @Test func theEnginesPausedStateIsPausedNotRunning() {
        #expect(ObservedContainer.state(fromEngine: "paused") == .paused)
        #expect(ObservedContainer.state(fromEngine: "running") == .running)
        #expect(warm("w1").isStandby && !warm("w1").isServing)
    }

    @Test func aPausedStandbyIsAStandbyAndNeverCountedAsRunning() {
        var r = Reconciler(node: "n1")
        // Two warm standbys and nothing running: the one container wanted is still missing, and
        // it is a warm standby's unpause; the pool is refilled warm behind it.
        let plan = r.decide(desired: ["web": Self.web], observed: [warm("w1"), warm("w2")], now: .zero)
        #expect(plan.starts == [.unpauseStandby(id: "w1", service: "web")])
        #expect(plan.stops.isEmpty)
        #expect(plan.standby == [.createWarmStandby(service: "web", specHash: "h1")])
        #expect(plan.actions.last == .createWarmStandby(service: "web", specHash: "h1"))
    }

    @Test func aFullWarmPoolIsAdoptedByAFreshReconcilerAfterARestart() {
        var r = Reconciler(node: "n1")
        let plan = r.decide(desired: ["web": Self.web], observed: [c("a", "web"), warm("w1"), warm("w2")], now: .zero)
        #expect(plan.isEmpty)
    }

    @Test func aStepUnpausesTheWarmStandbysFirstThenStartsTheColdOnesThenCreates() {
        var r = Reconciler(node: "n1")
        let want = DesiredService(count: 5, specHash: "h1", standby: 3, warmStandby: 2)
        let plan = r.decide(desired: ["web": want], observed: [c("a", "web"), warm("w1"), warm("w2"), standby("s1")], now: .zero)
        #expect(
            plan.starts == [
                .unpauseStandby(id: "w1", service: "web"), .unpauseStandby(id: "w2", service: "web"), .startStandby(id: "s1", service: "web"),
                .start(service: "web", specHash: "h1"),
            ])
        // Refilled behind the starts: two warm, one cold.
        #expect(
            plan.standby == [
                .createWarmStandby(service: "web", specHash: "h1"), .createWarmStandby(service: "web", specHash: "h1"),
                .createStandby(service: "web", specHash: "h1"),
            ])
    }

    @Test func aStepThatUnpausesStopsItsVictimsAsAnyStepDoes() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.count = 2
        let desired = ["web": want, "batch": DesiredService(count: 0, specHash: "b1")]
        let observed = [
            c("a", "web"), warm("w1"), warm("w2"), c("b1", "batch", "b1"), c("b2", "batch", "b1"),
            c("b3", "batch", "b1", state: .exited, ranFor: .seconds(60)),
        ]
        let plan = r.decide(desired: desired, observed: observed, now: .zero)
        #expect(plan.starts == [.unpauseStandby(id: "w1", service: "web")])
        // Stops before starts, unpauses included: a victim paused first would be resumed by its
        // stop's TERM and run beside the unpaused standby (docs/chaos.md).
        #expect(Set(plan.stops) == [.stop(id: "b1", service: "batch"), .stop(id: "b2", service: "batch"), .remove(id: "b3", service: "batch")])
        #expect(
            plan.actions.firstIndex(of: .unpauseStandby(id: "w1", service: "web"))! > plan.actions.lastIndex {
                if case .stop = $0 { true } else { false }
            }!)
    }

    @Test func aPausedContainerThatIsNoStandbyIsStoppedAtOnceAndReplaced() {
        var r = Reconciler(node: "n1")
        // A container of ours left paused (a step's victim whose stop never came, an agent
        // stopped in between, someone's docker pause) is never left frozen: stopped with no
        // withdrawal delay (it serves nothing), and the count is made up by a start.
        let want = DesiredService(count: 1, specHash: "h1", stopDelay: .seconds(5))
        let plan = r.decide(desired: ["web": want], observed: [c("p", "web", state: .paused)], now: .zero)
        #expect(plan.stops == [.stop(id: "p", service: "web")])
        #expect(plan.withdrawn.isEmpty)
        #expect(plan.starts == [.start(service: "web", specHash: "h1")])
        // A paused container of a service gone is stopped too.
        var r2 = Reconciler(node: "n1")
        #expect(r2.decide(desired: [:], observed: [c("q", "batch", state: .paused)], now: .zero).stops == [.stop(id: "q", service: "batch")])
    }

    @Test func warmStandbysNoLongerWantedAreRemovedNeverLeftFrozen() {
        // An old spec: removed, the pool refilled warm with the new one.
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.specHash = "h2"
        var plan = r.decide(desired: ["web": want], observed: [c("a", "web", "h2"), warm("w1"), warm("w2")], now: .zero)
        #expect(Set(plan.stops) == [.remove(id: "w1", service: "web"), .remove(id: "w2", service: "web")])
        #expect(plan.standby == Array(repeating: .createWarmStandby(service: "web", specHash: "h2"), count: 2))
        // A warm share that shrank (the budget) gives its extra warm standby back for a cold one.
        want = Self.web
        want.warmStandby = 1
        plan = r.decide(desired: ["web": want], observed: [c("a", "web"), warm("w1"), warm("w2")], now: .zero)
        #expect(plan.stops == [.remove(id: "w2", service: "web")])
        #expect(plan.standby == [.createStandby(service: "web", specHash: "h1")])
        // The service gone.
        plan = r.decide(desired: [:], observed: [warm("w1")], now: .zero)
        #expect(plan.stops == [.remove(id: "w1", service: "web")])
    }

    @Test func aDrainedNodeKeepsNoWarmStandby() {
        // A node given no work is handed no pool (ExecutorPolicy.standby), so no warm share either.
        var r = Reconciler(node: "n1")
        let plan = r.decide(
            desired: ["web": .init(count: 0, specHash: "h1", standby: 0, warmStandby: 2)], observed: [warm("w1"), standby("s1")], now: .zero)
        #expect(Set(plan.stops) == [.remove(id: "w1", service: "web"), .remove(id: "s1", service: "web")])
        #expect(plan.standby.isEmpty && plan.starts.isEmpty)
    }

    @Test func aServiceWithFixedHostPortsKeepsItsStandbysCold() {
        // A started standby would hold the host port its running containers need.
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.hostPorts = [8080]
        let plan = r.decide(desired: ["web": want], observed: [c("a", "web"), warm("w1")], now: .zero)
        #expect(plan.stops == [.remove(id: "w1", service: "web")])
        #expect(plan.standby == Array(repeating: .createStandby(service: "web", specHash: "h1"), count: 2))
    }

    @Test func aRunningContainerWithTheStandbyLabelIsAnOrdinaryContainerOfItsService() {
        // Docker labels cannot change: a standby a step unpaused keeps its label and runs.
        var r = Reconciler(node: "n1")
        var unpaused = warm("w1")
        unpaused.state = .running
        let plan = r.decide(desired: ["web": Self.web], observed: [unpaused, warm("w2"), warm("w3")], now: .zero)
        #expect(plan.isEmpty)
    }

    @Test func onlyAPauseTheDaemonRefusesForARunningContainerKeepsThePoolCold() {
        func e(_ op: String, _ kind: DockerError.Kind, _ message: String) -> DockerError {
            DockerError(kind: kind, operation: op, service: "web", status: 500, daemonMessage: message)
        }
        #expect(ReconcilerShell.pauseUnsupported(e("pause", .badResponse, "Cannot pause container x: freezer not supported")))
        // Seen in `microscale-bench cluster` while a host's containers were force-removed: no sign
        // of a daemon that cannot pause.
        #expect(!ReconcilerShell.pauseUnsupported(e("pause", .badResponse, "Cannot pause container x: cannot pause a stopped container: unknown")))
        #expect(!ReconcilerShell.pauseUnsupported(e("pause", .conflict, "Container x is not running")))
        #expect(!ReconcilerShell.pauseUnsupported(e("pause", .notFound, "No such container: x")))
        #expect(!ReconcilerShell.pauseUnsupported(e("pause", .daemonUnreachable, "no complete answer within 30.0 seconds")))
        #expect(!ReconcilerShell.pauseUnsupported(e("start", .badResponse, "anything")))
    }

    @Test func aHeldServiceKeepsItsWarmStandbysAndCreatesNone() {
        var r = Reconciler(node: "n1")
        var want = Self.web
        want.canStart = false
        let plan = r.decide(desired: ["web": want], observed: [warm("w1")], now: .zero)
        #expect(plan.isEmpty)
    }
}
