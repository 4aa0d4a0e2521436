import ControlPlane
import Testing

/// When a client agent subscribes to a server for its assignments (docs/scheduling.md,
/// "Subscriptions"): long-lived, renewed at once when its server is gone or its connection
/// lost, after `retry` when a subscription could not be sent, and otherwise every `keepalive`.
@Suite struct SubscriptionTests {
    static func first(_ n: Int) -> Int { 0 }
    static func last(_ n: Int) -> Int { n - 1 }

    @Test func anAgentSubscribesAtOnceToAServerItCanReachAndNotAgainUntilTheKeepalive() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        let r1 = s.check(servers: [], now: .zero, pick: Self.first)
        #expect(r1 == nil, "no server known: nothing to send")
        let r2 = s.check(servers: ["s2", "s1"], now: .seconds(1), pick: Self.first)
        #expect(r2 == "s1", "the pick is among the servers sorted by name")
        for t in 2...10 {
            let r3 = s.check(servers: ["s1", "s2"], now: .seconds(t), pick: Self.last)
            #expect(r3 == nil, "t=\(t) s: subscribed, nothing due")
        }
        let r4 = s.check(servers: ["s1", "s2"], now: .seconds(11), pick: Self.last)
        #expect(r4 == "s1", "the keepalive, to the same server")
        #expect(s.wait(now: .seconds(11)) == .seconds(10))
    }

    @Test func withNoServerKnownTheNextCheckWaitsForAMemberChangeNotForATimer() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        let none = s.check(servers: [], now: .seconds(5), pick: Self.first)
        #expect(none == nil && s.nextCheck(now: .seconds(5)) == nil, "nothing to wait for but a server")
        let sent = s.check(servers: ["s1"], now: .seconds(6), pick: Self.first)
        #expect(sent == "s1" && s.nextCheck(now: .seconds(6)) == .seconds(10))
        s.sendFailed(now: .seconds(6))
        #expect(s.nextCheck(now: .seconds(6)) == .seconds(1), "the retry is waited for")
        let gone = s.check(servers: [], now: .seconds(7), pick: Self.first)
        #expect(gone == nil && s.nextCheck(now: .seconds(7)) == nil)
    }

    @Test func aServerGoneFromMembershipIsReplacedAtOnce() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        let r5 = s.check(servers: ["s1", "s2", "s3"], now: .zero, pick: Self.first)
        #expect(r5 == "s1")
        let r6 = s.check(servers: ["s2", "s3"], now: .seconds(2), pick: Self.last)
        #expect(r6 == "s3", "s1 is dead or left: another, now")
        #expect(s.upstream == "s3")
        let r7 = s.check(servers: [], now: .seconds(3), pick: Self.first)
        #expect(r7 == nil, "no server left: none followed")
        #expect(s.upstream == nil)
        let r8 = s.check(servers: ["s2"], now: .seconds(4), pick: Self.first)
        #expect(r8 == "s2", "the first server back is followed at once")
    }

    @Test func aLostConnectionToTheUpstreamMakesTheNextCheckSubscribeAndOneToAnotherPeerDoesNot() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        _ = s.check(servers: ["s1", "s2"], now: .zero, pick: Self.first)
        let r9 = s.connectionLost("s2", now: .seconds(3))
        #expect(!r9, "not the upstream")
        let r10 = s.check(servers: ["s1", "s2"], now: .seconds(3), pick: Self.first)
        #expect(r10 == nil)
        let r11 = s.connectionLost("s1", now: .seconds(4))
        #expect(r11)
        #expect(s.wait(now: .seconds(4)) == .zero)
        let r12 = s.check(servers: ["s1", "s2"], now: .seconds(4), pick: Self.last)
        #expect(r12 == "s1", "the same server, which may have forgotten it")
    }

    @Test func connectionsClosingAgainAndAgainMakeAtMostOneSubscriptionARetry() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        let sent = s.check(servers: ["s1"], now: .zero, pick: Self.first)
        #expect(sent == "s1")
        s.connectionLost("s1", now: .milliseconds(200))
        #expect(s.wait(now: .milliseconds(200)) == .milliseconds(800), "not before a retry after the last one sent")
        let early = s.check(servers: ["s1"], now: .milliseconds(500), pick: Self.first)
        #expect(early == nil)
        let due = s.check(servers: ["s1"], now: .seconds(1), pick: Self.first)
        #expect(due == "s1")
        s.connectionLost("s1", now: .milliseconds(1100))
        s.connectionLost("s1", now: .milliseconds(1300))
        let again = s.check(servers: ["s1"], now: .milliseconds(1300), pick: Self.first)
        #expect(again == nil && s.wait(now: .milliseconds(1300)) == .milliseconds(700))
    }

    @Test func aSubscriptionThatCouldNotBeSentIsRetriedAfterRetryToAServerChosenAgain() {
        var s = Subscription(keepalive: .seconds(10), retry: .seconds(1))
        let r13 = s.check(servers: ["s1", "s2"], now: .zero, pick: Self.first)
        #expect(r13 == "s1")
        s.sendFailed(now: .zero)
        #expect(s.upstream == nil)
        let r14 = s.check(servers: ["s1", "s2"], now: .milliseconds(500), pick: Self.last)
        #expect(r14 == nil, "not before the retry")
        #expect(s.upstream == "s2", "chosen again, sent when due")
        let r15 = s.check(servers: ["s1", "s2"], now: .seconds(1), pick: Self.first)
        #expect(r15 == "s2")
    }

    @Test func aPickOutsideTheServersFallsBackToTheFirstRatherThanTrapping() {
        var s = Subscription()
        let r16 = s.check(servers: ["s1", "s2"], now: .zero, pick: { _ in 7 })
        #expect(r16 == "s1")
    }
}
