import Membership
import SimulationKit
import Testing

/// Whole clusters of real instances on the simulated network, over fixed seeds. Each failure
/// message carries its seed; `MembershipCluster(size:seed:)` with that seed replays it exactly.
@Suite struct MembershipSimulationTests {
    static let seeds: [UInt64] = [11, 12, 13]
    static let size = 20

    /// All nodes join node 0 at once; returns the converged cluster once the joins have settled
    /// (joiners start probing after their early push-pulls), so each scenario starts from a
    /// cluster in which every member is watching every other.
    func joined(seed: UInt64, loss: Double = 0) -> MembershipCluster {
        let c = MembershipCluster(
            size: Self.size, seed: seed,
            faults: .init(loss: loss, delay: .microseconds(200) ... .milliseconds(2)))
        c.start(0, joining: [])
        for i in 1..<Self.size { c.start(i, joining: [0]) }
        let t = c.run(until: .seconds(30), stopWhen: c.isConverged)
        #expect(t != nil, "seed \(seed): \(Self.size) joins did not converge within 30 s")
        let lan = MembershipConfiguration.lan
        c.advance(by: lan.joinPushPullDelay * lan.joinPushPulls + lan.probeInterval)
        return c
    }

    func falseDeaths(_ c: MembershipCluster, excluding: Set<Int>) -> [MembershipCluster.Verdict] {
        c.verdicts.filter { $0.status == .dead && !excluding.contains($0.subject) }
    }

    @Test(arguments: seeds) func aSignedJoinConvergesWithEveryMemberHoldingEveryCertificateAndACrashIsDetected(seed: UInt64) {
        let c = MembershipCluster(size: Self.size, seed: seed, signedRecords: true)
        c.start(0, joining: [])
        for i in 1..<Self.size { c.start(i, joining: [0]) }
        #expect(c.run(until: .seconds(30), stopWhen: c.isConverged) != nil, "seed \(seed): signed joins did not converge within 30 s")
        for i in 0..<Self.size {
            let held = c.instance(i)?.knownMembers.filter { $0.record.certificate.isEmpty }.map(\.name) ?? ["no instance"]
            #expect(held.isEmpty, "seed \(seed): n\(i) holds no certificate for \(held)")
        }
        let lan = MembershipConfiguration.lan
        c.advance(by: lan.joinPushPullDelay * lan.joinPushPulls + lan.probeInterval)
        c.watch(5)
        c.crash(5)
        let t0 = c.now
        #expect(c.run(until: t0 + .seconds(10), stopWhen: { c.allRunningHoldDead(5) }) != nil, "seed \(seed): crash not detected")
        #expect(falseDeaths(c, excluding: [5]).isEmpty, "seed \(seed): a running member was marked dead")
    }

    @Test(arguments: seeds) func everySurvivorMarksACrashedMemberDead(seed: UInt64) {
        let c = joined(seed: seed)
        c.watch(5)
        c.crash(5)
        let t0 = c.now
        let t = c.run(until: t0 + .seconds(10), stopWhen: { c.allRunningHoldDead(5) })
        #expect(t != nil, "seed \(seed): not every survivor marked the crashed member dead within 10 s")
        #expect(falseDeaths(c, excluding: [5]).isEmpty, "seed \(seed): a running member was marked dead")
    }

    @Test(arguments: seeds) func everySurvivorMarksAFrozenMemberDeadAndItRejoinsWhenThawed(seed: UInt64) {
        let c = joined(seed: seed)
        c.watch(7)
        c.freeze(7)
        let t = c.run(until: c.now + .seconds(10), stopWhen: { c.allRunningHoldDead(7) })
        #expect(t != nil, "seed \(seed): the frozen member was not marked dead everywhere within 10 s")
        c.thaw(7)
        // SIGCONT: it learns it was declared dead, refutes with a higher incarnation, and is back.
        let back = c.run(until: c.now + .seconds(10), stopWhen: c.isConverged)
        #expect(back != nil, "seed \(seed): the thawed member did not rejoin within 10 s")
        #expect(falseDeaths(c, excluding: [7]).isEmpty, "seed \(seed): a running member was marked dead")
    }

    @Test(arguments: seeds) func aHealedPartitionMergesByItself(seed: UInt64) {
        let c = joined(seed: seed)
        let left = Array(0..<10), right = Array(10..<20)
        for i in 0..<Self.size { c.watch(i) }
        c.network.partition([left, right])
        // Half the cluster is out of reach, and so are half the relays of every indirect probe:
        // their nacks never come, and Lifeguard IV.A stretches each side's probe interval by up
        // to (LHM + 1). Over seeds 1-60 both sides held the other dead after 4-12 s (median 8).
        let split = c.run(
            until: c.now + .seconds(20),
            stopWhen: {
                left.allSatisfy { c.allRunningHoldDead($0, except: Set(left)) }
                    && right.allSatisfy { c.allRunningHoldDead($0, except: Set(right)) }
            })
        #expect(split != nil, "seed \(seed): the two sides did not each hold the other dead within 20 s")
        for i in left { #expect(c.allRunningHoldDead(i, except: Set(left)), "seed \(seed): side B still holds \(i) alive") }
        for i in right { #expect(c.allRunningHoldDead(i, except: Set(right)), "seed \(seed): side A still holds \(i) alive") }
        c.network.heal()
        // No join command: re-dialing dead members finds the other side, push-pull merges.
        let t = c.run(until: c.now + .seconds(30), stopWhen: c.isConverged)
        #expect(t != nil, "seed \(seed): the healed partition did not merge within 30 s")
    }

    @Test(arguments: seeds) func aMassRestartAtIncarnationZeroDoesNotLeaveLiveMembersDead(seed: UInt64) {
        let c = joined(seed: seed)
        let restarted = Array(10..<20)
        for i in restarted {
            c.watch(i)
            c.crash(i)
        }
        let dead = c.run(until: c.now + .seconds(15), stopWhen: { restarted.allSatisfy { c.allRunningHoldDead($0) } })
        #expect(dead != nil, "seed \(seed): the crashed half was not marked dead within 15 s")
        // The survivors remember them dead at incarnation ≥ 0; fresh processes start at 0 and
        // must jump above what they hear about themselves.
        for i in restarted { c.restart(i, joining: [0]) }
        let t = c.run(until: c.now + .seconds(30), stopWhen: c.isConverged)
        #expect(t != nil, "seed \(seed): restarted members did not all come back alive within 30 s")
    }

    @Test(arguments: seeds) func underTwentyPercentLossFalseDeathsAreRareAndHealAndACrashIsStillFound(seed: UInt64) {
        // At 20% loss a direct probe round fails 36% of the time and each relay path 59%, so
        // about 7% of probes fail outright: suspicions are constant, and a suspecter that misses
        // the refutation declares a live member dead. Lifeguard keeps that rare; re-dial and
        // push-pull undo it.
        let c = joined(seed: seed, loss: 0.2)
        let start = c.now
        c.advance(by: .seconds(60))
        let nodeMinutes = Double(Self.size) * (c.now - start).seconds / 60
        let rate = Double(falseDeaths(c, excluding: []).count) / nodeMinutes
        #expect(rate < 0.5, "seed \(seed): \(rate) false deaths per node-minute under 20% loss")
        c.watch(3)
        c.crash(3)
        let t = c.run(until: c.now + .seconds(15), stopWhen: { c.allRunningHoldDead(3) })
        #expect(t != nil, "seed \(seed): a crash under 20% loss was not found everywhere within 15 s")
        c.network.faults.loss = 0
        let healed = c.run(until: c.now + .seconds(10), stopWhen: c.isConverged)
        #expect(healed != nil, "seed \(seed): views did not reconverge within 10 s after the loss stopped")
    }

    @Test(arguments: seeds) func aGracefulLeaveIsSeenAsLeftNotDead(seed: UInt64) {
        let c = joined(seed: seed)
        c.watch(4)
        c.leave(4)
        let t = c.run(until: c.now + .seconds(2), stopWhen: { c.allRunningHoldDead(4) })
        #expect(t != nil, "seed \(seed): not everyone saw the leave within 2 s")
        for i in 0..<Self.size where i != 4 {
            #expect(c.instance(i)?.member(named: MembershipCluster.name(4))?.status == .left, "seed \(seed): node \(i)")
        }
        #expect(falseDeaths(c, excluding: []).isEmpty, "seed \(seed)")
    }

    @Test func aRecordChangeReachesEveryMember() throws {
        let c = joined(seed: 21)
        try c.updateRecord(2) { $0.running["web"] = 4 }
        let t = c.run(
            until: c.now + .seconds(5),
            stopWhen: {
                (0..<Self.size).allSatisfy { $0 == 2 || c.instance($0)?.member(named: "n2")?.record.running["web"] == 4 }
            })
        #expect(t != nil, "seed 21: the record change did not reach everyone within 5 s")
    }

    @Test func theSameSeedReplaysTheSameRun() {
        func run() -> [MembershipCluster.Verdict] {
            let c = joined(seed: 31)
            c.crash(6)
            c.advance(by: .seconds(5))
            return c.verdicts
        }
        let a = run()
        #expect(!a.isEmpty)
        #expect(a == run(), "seed 31 did not replay identically")
    }
}
