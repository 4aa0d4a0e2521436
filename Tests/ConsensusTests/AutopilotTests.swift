import Consensus
import Testing

/// The leader's driver of server membership (docs/consensus.md, "Server membership").
struct AutopilotTests {
    static func settings() -> Autopilot.Settings {
        var s = Autopilot.Settings()
        s.stabilizationTime = .seconds(5)
        s.deadServerCleanup = .seconds(30)
        s.maxLag = 10
        return s
    }

    static func input(
        voters: Set<String>, learners: Set<String> = [], health: [String: Autopilot.Health],
        match: [String: UInt64] = [:], lastIndex: UInt64 = 100
    ) -> Autopilot.Input {
        Autopilot.Input(
            leader: "s1", configuration: Configuration(voters: voters, learners: learners), lastIndex: lastIndex,
            match: match, health: health, servers: Set(health.keys))
    }

    @Test func aServerAliveInGossipAndNotInTheConfigurationIsAddedAsALearner() {
        var a = Autopilot(settings: Self.settings())
        let i = Self.input(voters: ["s1", "s2", "s3"], health: ["s1": .alive, "s2": .alive, "s3": .alive, "s4": .alive])
        #expect(a.step(i, now: .zero)?.change == .addLearner("s4"))
    }

    @Test func aClientCertificateOrASuspectServerIsNotAdded() {
        var a = Autopilot(settings: Self.settings())
        var i = Self.input(voters: ["s1"], health: ["s1": .alive, "c1": .alive, "s5": .suspect])
        i.servers = ["s1", "s5"]
        #expect(a.step(i, now: .zero) == nil)
    }

    @Test func aLearnerIsPromotedOnlyOnceCaughtUpAndHealthyForTheStabilizationTime() {
        var a = Autopilot(settings: Self.settings())
        let health: [String: Autopilot.Health] = ["s1": .alive, "s2": .alive, "s3": .alive, "s4": .alive]
        // Behind by more than maxLag: not yet.
        #expect(a.step(Self.input(voters: ["s1", "s2", "s3"], learners: ["s4"], health: health, match: ["s4": 50]), now: .zero) == nil)
        // Caught up at 1 s: the stabilization time counts from then.
        let caughtUp = Self.input(voters: ["s1", "s2", "s3"], learners: ["s4"], health: health, match: ["s4": 95])
        #expect(a.step(caughtUp, now: .seconds(1)) == nil)
        #expect(a.step(caughtUp, now: .seconds(5)) == nil)
        #expect(a.step(caughtUp, now: .seconds(6))?.change == .promote("s4"))
    }

    @Test func aLearnerThatFallsBehindOrIsSuspectedStartsItsStabilizationAgain() {
        var a = Autopilot(settings: Self.settings())
        var health: [String: Autopilot.Health] = ["s1": .alive, "s4": .alive]
        let ok = Self.input(voters: ["s1"], learners: ["s4"], health: health, match: ["s4": 100])
        #expect(a.step(ok, now: .zero) == nil)
        health["s4"] = .suspect
        #expect(a.step(Self.input(voters: ["s1"], learners: ["s4"], health: health, match: ["s4": 100]), now: .seconds(4)) == nil)
        #expect(a.step(ok, now: .seconds(6)) == nil)
        #expect(a.step(ok, now: .seconds(11))?.change == .promote("s4"))
    }

    @Test func aDeadVoterIsRemovedAfterTheCleanupTimeWhenTheRestKeepAQuorum() {
        var a = Autopilot(settings: Self.settings())
        let i = Self.input(
            voters: ["s1", "s2", "s3", "s4", "s5"],
            health: ["s1": .alive, "s2": .alive, "s3": .alive, "s4": .alive, "s5": .dead])
        #expect(a.step(i, now: .zero) == nil)
        #expect(a.step(i, now: .seconds(29)) == nil)
        #expect(a.step(i, now: .seconds(30))?.change == .remove("s5"))
    }

    @Test func aDeadVoterIsNotRemovedWhenTheRemainingVotersWouldHaveNoHealthyQuorum() {
        var a = Autopilot(settings: Self.settings())
        // Five voters, three dead: removing one leaves four voters with two healthy (quorum 3).
        let i = Self.input(
            voters: ["s1", "s2", "s3", "s4", "s5"],
            health: ["s1": .alive, "s2": .alive, "s3": .dead, "s4": .dead, "s5": .dead])
        #expect(a.step(i, now: .zero) == nil)
        #expect(a.step(i, now: .seconds(60)) == nil)
        #expect(!Autopilot.keepsQuorum(removing: "s3", from: i))
    }

    @Test func aMemberMissingFromGossipCountsAsDead() {
        var a = Autopilot(settings: Self.settings())
        let i = Self.input(voters: ["s1", "s2", "s3", "s4"], health: ["s1": .alive, "s2": .alive, "s3": .alive])
        #expect(a.step(i, now: .seconds(1)) == nil)
        #expect(a.step(i, now: .seconds(31))?.change == .remove("s4"))
    }

    @Test func aServerThatComesBackBeforeTheCleanupTimeIsKept() {
        var a = Autopilot(settings: Self.settings())
        var health: [String: Autopilot.Health] = ["s1": .alive, "s2": .alive, "s3": .dead]
        #expect(a.step(Self.input(voters: ["s1", "s2", "s3"], health: health, match: ["s2": 100, "s3": 100]), now: .zero) == nil)
        health["s3"] = .alive
        #expect(a.step(Self.input(voters: ["s1", "s2", "s3"], health: health, match: ["s2": 100, "s3": 100]), now: .seconds(20)) == nil)
        health["s3"] = .dead
        #expect(a.step(Self.input(voters: ["s1", "s2", "s3"], health: health, match: ["s2": 100, "s3": 100]), now: .seconds(45)) == nil)
    }

    @Test func aServerThatLeftIsRemovedAtOnceAndCleanupCanBeTurnedOff() {
        var s = Self.settings()
        s.deadServerCleanup = nil
        var a = Autopilot(settings: s)
        let i = Self.input(voters: ["s1", "s2", "s3", "s4"], health: ["s1": .alive, "s2": .alive, "s3": .dead, "s4": .left])
        #expect(a.step(i, now: .zero)?.change == .remove("s4"))
        let j = Self.input(voters: ["s1", "s2", "s3"], health: ["s1": .alive, "s2": .alive, "s3": .dead])
        #expect(a.step(j, now: .seconds(3600)) == nil)
    }

    @Test func aDeadLearnerIsRemovedBeforeAnyVoterAndWhateverTheQuorum() {
        var a = Autopilot(settings: Self.settings())
        let i = Self.input(
            voters: ["s1", "s2", "s3"], learners: ["s9"],
            health: ["s1": .alive, "s2": .dead, "s3": .dead, "s9": .dead])
        _ = a.step(i, now: .zero)
        #expect(a.step(i, now: .seconds(31))?.change == .remove("s9"))
    }

    @Test func theLeaderIsNeverRemovedAndADepartingServerIsNotAddedBackWhileItLeaves() {
        var a = Autopilot(settings: Self.settings())
        a.departing("s4", now: .zero)
        let alive = Self.input(voters: ["s1", "s2", "s3"], health: ["s1": .alive, "s2": .alive, "s3": .alive, "s4": .alive])
        #expect(a.step(alive, now: .seconds(1)) == nil)
        // Once gossip saw it go, a later start of it is a new join.
        _ = a.step(Self.input(voters: ["s1", "s2", "s3"], health: ["s1": .alive, "s2": .alive, "s3": .alive, "s4": .left]), now: .seconds(2))
        #expect(a.step(alive, now: .seconds(3))?.change == .addLearner("s4"))
        var b = Autopilot(settings: Self.settings())
        let leaderOnly = Self.input(voters: ["s1", "s2"], health: ["s2": .alive])
        #expect(b.step(leaderOnly, now: .seconds(100)) == nil)
    }
}
