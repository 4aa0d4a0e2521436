import Membership
import Testing

extension Harness {
    /// Ticks to `limit`, answering as live members would: every ping to a member not in
    /// `silent` is acked, every ping-req is nacked. Returns everything the instance sent.
    mutating func runAnswering(until limit: Duration, silent: Set<String> = []) -> Directives {
        var all = Directives()
        while let n = next, n <= limit {
            let d = tick(at: n)
            all.messages += d.messages
            all.events += d.events
            for (to, p) in d.pings {
                let target = String(to.prefix { $0 != ":" })
                if !silent.contains(target) {
                    let r = receive(.ack(Ack(sequence: p.sequence, from: target, gossip: [])))
                    all.messages += r.messages
                    all.events += r.events
                }
            }
            for (to, r) in d.pingReqs {
                let relay = String(to.prefix { $0 != ":" })
                _ = receive(.nack(Nack(sequence: r.sequence, from: relay)))
            }
        }
        now = max(now, limit)
        return all
    }
}

private let five = ["a", "b", "c", "d", "e"]
private let eight = ["a", "b", "c", "d", "e", "f", "g", "h"]

@Suite struct ProbingSpecification {
    @Test func everyMemberIsProbedOnceInEachRoundRobinRound() {
        // SWIM §4.3: a shuffled round-robin bounds the time until a failed member is probed.
        var h = Harness(members: five)
        var targets: [String] = []
        for _ in five {
            guard let (_, p) = h.nextProbe() else { break }
            targets.append(p.target)
            _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target, gossip: [])))
        }
        #expect(targets.sorted() == five)
    }

    @Test func anUnansweredPingAsksKOtherMembersForIndirectProbesAfterTheProbeTimeout() throws {
        // SWIM §3.1.
        var h = Harness(members: five)
        let (_, p) = try h.probe()
        let sentAt = h.now
        #expect(h.tick(at: sentAt + .milliseconds(99)).pingReqs.isEmpty)
        let reqs = h.tick(at: sentAt + .milliseconds(100)).pingReqs
        #expect(reqs.count == MembershipConfiguration.lan.indirectChecks)
        #expect(Set(reqs.map(\.to)).count == reqs.count)
        #expect(reqs.allSatisfy { $0.req.target == p.target && $0.to != "\(p.target):7480" })
    }

    @Test func aFirstContactWaitsFirstContactAllowanceForItsHandshakeBeforeAskingRelays() throws {
        var h = Harness(members: ["b", "c", "d", "e"], firstContact: true)
        let allowance = h.swim.configuration.firstContactAllowance
        let (to, ping) = try h.probe()
        let sentAt = h.now
        #expect(h.tick(at: sentAt + .milliseconds(100)).pingReqs.isEmpty, "not at probeTimeout: the handshake may still be running")
        #expect(h.tick(at: sentAt + .milliseconds(99) + allowance).pingReqs.isEmpty)
        #expect(h.tick(at: sentAt + .milliseconds(100) + allowance).pingReqs.map(\.req.target) == [ping.target, ping.target, ping.target])
        #expect(to == ping.target + ":7480")
    }

    @Test func aFirstContactWhoseDialIsInProgressWaitsForItUpToTheDialAllowance() throws {
        var h = Harness(members: ["b", "c", "d", "e"], firstContact: true)
        let c = h.swim.configuration
        let (to, ping) = try h.probe()
        let sentAt = h.now
        h.next = h.swim.peerDialing(address: to, now: sentAt).nextDeadline
        #expect(h.tick(at: sentAt + c.probeTimeout + c.firstContactAllowance).pingReqs.isEmpty, "the handshake is still running")
        #expect(h.tick(at: sentAt + c.probeTimeout + c.dialAllowance - .milliseconds(1)).pingReqs.isEmpty)
        #expect(h.tick(at: sentAt + c.probeTimeout + c.dialAllowance).pingReqs.map(\.req.target) == Array(repeating: ping.target, count: 3))
    }

    @Test func aFirstContactWhoseDialCompletedHasTheUsualProbeTimeoutFromThen() throws {
        var h = Harness(members: ["b", "c", "d", "e"], firstContact: true)
        let c = h.swim.configuration
        let (to, ping) = try h.probe()
        let sentAt = h.now
        _ = h.swim.peerDialing(address: to, now: sentAt)
        let connectedAt = sentAt + .seconds(3)
        let d = h.swim.peerConnected(address: to, now: connectedAt)
        #expect(d.nextDeadline == connectedAt + c.probeTimeout)
        h.next = d.nextDeadline
        #expect(h.tick(at: connectedAt + c.probeTimeout - .milliseconds(1)).pingReqs.isEmpty)
        #expect(h.tick(at: connectedAt + c.probeTimeout).pingReqs.map(\.req.target) == Array(repeating: ping.target, count: 3))
    }

    @Test func aDialReportDoesNotStretchAProbeOfAMemberAlreadyHeardFromNorOneToAnotherAddress() throws {
        var h = Harness(members: five)
        let (to, _) = try h.probe()
        let sentAt = h.now
        h.next = h.swim.peerDialing(address: to, now: sentAt).nextDeadline
        #expect(h.tick(at: sentAt + h.swim.configuration.probeTimeout).pingReqs.count == 3)
        var first = Harness(members: ["b", "c", "d", "e"], firstContact: true)
        let c = first.swim.configuration
        let (firstTo, _) = try first.probe()
        let firstAt = first.now
        let other = ["b:7480", "c:7480", "d:7480", "e:7480"].first { $0 != firstTo }!
        first.next = first.swim.peerDialing(address: other, now: firstAt).nextDeadline
        #expect(first.tick(at: firstAt + c.probeTimeout + c.firstContactAllowance).pingReqs.count == 3)
    }

    @Test func indirectProbesAskMembersHeardFromRecentlyBeforeOthers() throws {
        // Over TCP + TLS a relay we hold no connection to costs a handshake before it can be asked.
        var h = Harness(members: eight)
        var heard: [String] = []
        for _ in 0..<3 {
            let (_, p) = try h.probe()
            heard.append(p.target)
            _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target)))
        }
        let (_, silent) = try h.probe()
        let reqs = h.tick(at: h.now + h.swim.configuration.probeTimeout).pingReqs
        #expect(Set(reqs.map { String($0.to.prefix { $0 != ":" }) }) == Set(heard), "not \(silent.target), not the four never heard")
    }

    @Test func aPushPullIsAnsweredWithoutWhatTheSenderShowedItHoldsAsWeDo() throws {
        var h = Harness(members: five)
        let held = ["a", "b", "c"].map { MemberState(incarnation: 0, status: .alive, record: Harness.record($0)) }
        let stale = MemberState(incarnation: 0, status: .suspect, record: Harness.record("d"))
        let d = h.receive(.pushPull(PushPull(from: "a", fromAddress: "a:7480", isReply: false, isJoin: false, states: held + [stale])))
        let reply = try #require(d.pushPulls.first { $0.to == "a:7480" }?.pp)
        #expect(reply.isReply)
        let names = Set(reply.states.map(\.record.name))
        #expect(names.isDisjoint(with: ["a", "b", "c"]), "held as we hold them")
        #expect(names.isSuperset(of: ["me", "e"]), "unknown to the sender")
        #expect(h.status("d") == .suspect)
        #expect(!names.contains("d"), "its suspicion, merged before the answer, is ours too: not news to it")
    }

    @Test func anAckedFirstContactKeepsTheUsualProbeScheduleAndLaterProbesHaveNoAllowance() throws {
        var h = Harness(members: ["b", "c"], firstContact: true)
        let interval = h.swim.configuration.probeInterval
        let (_, p1) = try h.probe()
        let t1 = h.now
        _ = h.receive(.ack(Ack(sequence: p1.sequence, from: p1.target)), at: t1 + .milliseconds(30))
        let (_, p2) = try h.probe()
        #expect(h.now == t1 + interval, "the allowance is for the handshake, not the round")
        #expect(p2.target != p1.target)
        _ = h.receive(.ack(Ack(sequence: p2.sequence, from: p2.target)), at: h.now + .milliseconds(30))
        // Both have answered: the next round's probe is asked of the relay at probeTimeout.
        let (_, p3) = try h.probe()
        let t3 = h.now
        let relayed = h.tick(at: t3 + h.swim.configuration.probeTimeout).pingReqs
        #expect(relayed.map(\.req.target) == [p3.target])
    }

    @Test func aProbeRoundWithoutAnyAckMakesTheTargetSuspectButNacksKeepLocalHealth() throws {
        // SWIM §4.2 (suspicion instead of instant death); Lifeguard IV.A (nacks prove our own links).
        var h = Harness(members: five)
        let (_, p) = try h.probe()
        let sentAt = h.now
        for (to, r) in h.tick(at: sentAt + .milliseconds(100)).pingReqs {
            _ = h.receive(.nack(Nack(sequence: r.sequence, from: String(to.prefix { $0 != ":" }))))
        }
        let d = h.tick(at: sentAt + .milliseconds(200))
        #expect(h.status(p.target) == .suspect)
        #expect(d.changes.contains { $0.name == p.target && $0.status == .suspect })
        #expect(h.swim.localHealth == 0)
    }

    @Test func missingNacksRaiseTheLocalHealthMultiplierWhichStretchesTheProbeInterval() throws {
        // Lifeguard IV.A: no nack from the relays means our own messages are not getting through
        // (or we are slow); we slow down instead of accusing.
        var h = Harness(members: five)
        let (_, p) = try h.probe()
        let sentAt = h.now
        _ = h.tick(at: sentAt + .milliseconds(100))
        let failed = h.tick(at: sentAt + .milliseconds(200))
        #expect(h.swim.localHealth == 3, "three relays, no nack from any")
        #expect(h.status(p.target) == .suspect)
        // The round that failed ends where the next begins: its ping goes out in the same tick.
        let (_, p2) = try #require(failed.pings.first)
        let t2 = h.now
        _ = h.receive(.ack(Ack(sequence: p2.sequence, from: p2.target, gossip: [])))
        #expect(h.swim.localHealth == 2, "an acked probe lowers the multiplier by one")
        _ = try h.probe()
        #expect(h.now - t2 == .milliseconds(200) * 4, "the interval was stretched by LHM + 1 = 4 when set")
    }

    @Test func aConnectionResetHintSkipsTheRestOfTheDirectProbeTimeout() throws {
        var h = Harness(members: five)
        let (to, _) = try h.probe()
        #expect(h.swim.peerUnreachable(address: to, now: h.now).pingReqs.count == 3)
    }

    @Test func aConnectionResetHintMakesThatMemberTheNextProbeTargetAtOnce() throws {
        var h = Harness(members: eight)
        let (_, p) = try h.probe()
        _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target)))
        let other = eight.first { $0 != p.target }!
        let d = h.swim.peerUnreachable(address: "\(other):7480", now: h.now)
        h.next = d.nextDeadline
        #expect(d.nextDeadline == h.now, "the probe starts now, not at the next interval")
        let (_, hinted) = try h.probe()
        #expect(hinted.target == other)
        #expect(h.status(other) == .alive, "a hint alone marks no one")
    }

    @Test func aPingForAnotherMemberIsNotAcked() {
        var h = Harness(members: five)
        let d = h.receive(.ping(Ping(sequence: 1, from: "a", fromAddress: "a:7480", target: "someone-else")))
        #expect(d.acks.isEmpty)
        let ok = h.receive(.ping(Ping(sequence: 2, from: "a", fromAddress: "a:7480", target: "me")))
        #expect(ok.acks.map(\.ack.sequence) == [2])
    }

    /// A member that knows us but that we do not know (it joined through others that have all
    /// restarted since, say) is learned from its own probe of us: we ask it for its record and
    /// take its answer, instead of waiting for its next push-pull (microscale-sim cluster seed
    /// 182). Asked once per recordRequestInterval, however often it probes.
    @Test func aPingFromAMemberWeDoNotKnowAsksItForItsRecordAndTheAnswerMakesItAMember() {
        var h = Harness(members: five)
        #expect(h.status("stranger") == nil)
        let d = h.receive(.ping(Ping(sequence: 1, from: "stranger", fromAddress: "stranger:7480", target: "me")))
        #expect(d.acks.map(\.ack.sequence) == [1], "the probe is answered as any other")
        let requests = d.messages.filter { if case .recordRequest = $0.message { return $0.to == "stranger:7480" } else { return false } }
        #expect(requests.count == 1)
        let again = h.receive(.ping(Ping(sequence: 2, from: "stranger", fromAddress: "stranger:7480", target: "me")))
        #expect(!again.messages.contains { if case .recordRequest = $0.message { return true } else { return false } })
        _ = h.receive(.record(RecordReply(incarnation: 3, record: Harness.alive("stranger", 3))))
        #expect(h.status("stranger") == .alive)
        // A ping from a member we know asks for nothing.
        let known = h.receive(.ping(Ping(sequence: 3, from: "a", fromAddress: "a:7480", target: "me")))
        #expect(!known.messages.contains { if case .recordRequest = $0.message { return true } else { return false } })
    }
}

@Suite struct RelaySpecification {
    @Test func aRelayForwardsTheTargetsAckToTheRequester() throws {
        // SWIM §3.1.
        var h = Harness(members: five)
        let d = h.receive(
            .pingReq(
                PingReq(
                    sequence: 9, from: "a", fromAddress: "a:7480", target: "b",
                    targetAddress: "b:7480", gossip: [])))
        let (to, ping) = try #require(d.pings.first)
        #expect(to == "b:7480" && ping.target == "b")
        let fwd = h.receive(.ack(Ack(sequence: ping.sequence, from: "b", gossip: [])))
        #expect(fwd.acks.map(\.to) == ["a:7480"])
        #expect(fwd.acks.map(\.ack.sequence) == [9])
    }

    @Test func aRelayNacksTheRequesterWhenTheTargetStaysSilent() throws {
        // Lifeguard IV.A: the nack goes out at 80% of the probe timeout.
        var h = Harness(members: five)
        _ = h.receive(
            .pingReq(
                PingReq(
                    sequence: 9, from: "a", fromAddress: "a:7480", target: "b",
                    targetAddress: "b:7480", gossip: [])), at: .seconds(10))
        #expect(h.tick(at: .seconds(10) + .milliseconds(79)).nacks.isEmpty)
        let n = h.tick(at: .seconds(10) + .milliseconds(80)).nacks
        #expect(n.map(\.to) == ["a:7480"])
        #expect(n.map(\.nack.sequence) == [9])
    }
}

@Suite struct SuspicionSpecification {
    @Test func theSuspicionTimeoutFallsFromMaxToMinAsConfirmationsArrive() {
        // Lifeguard IV.B: timeout = max(Min, Max − (Max − Min)·log(C + 1)/log(K + 1)).
        let c = MembershipConfiguration.lan
        let n = 50
        let timeouts = (0...4).map { c.suspicionTimeout(members: n, confirmations: $0) }
        #expect(timeouts[0] == c.suspicionMax(members: n))
        #expect(timeouts[3] == c.suspicionMin(members: n))
        #expect(timeouts[4] == c.suspicionMin(members: n))
        #expect(timeouts[0] > timeouts[1] && timeouts[1] > timeouts[2] && timeouts[2] > timeouts[3])
        #expect(c.suspicionMin(members: 10_000) > c.suspicionMin(members: 10), "Min grows with log N")
    }

    @Test func anUnconfirmedSuspicionExpiresAtMax() {
        var h = Harness(members: eight)
        let t0 = Duration.seconds(1)
        _ = h.runAnswering(until: t0)
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.suspect(name: "a", incarnation: 0, from: "b")])), at: t0)
        // "a" acks our probes (its refutation is lost), so our own probe adds no confirmation.
        let maxT = MembershipConfiguration.lan.suspicionMax(members: 9)
        _ = h.runAnswering(until: t0 + maxT - .milliseconds(1))
        #expect(h.status("a") == .suspect)
        let d = h.runAnswering(until: t0 + maxT + .milliseconds(1))
        #expect(h.status("a") == .dead)
        #expect(d.gossip.contains(.dead(name: "a", incarnation: 0, from: "me")))
    }

    @Test func independentConfirmationsBringTheDeclarationForwardToMin() {
        var h = Harness(members: eight)
        let t0 = Duration.seconds(1)
        _ = h.runAnswering(until: t0)
        for from in ["b", "c", "d", "e"] {
            _ = h.receive(.gossip(GossipPacket(from: from, gossip: [.suspect(name: "a", incarnation: 0, from: from)])), at: t0)
        }
        let minT = MembershipConfiguration.lan.suspicionMin(members: 9)
        _ = h.runAnswering(until: t0 + minT - .milliseconds(1))
        #expect(h.status("a") == .suspect)
        _ = h.runAnswering(until: t0 + minT + .milliseconds(1))
        #expect(h.status("a") == .dead)
    }

    @Test func hearingASuspicionMovesTheSuspectToTheFrontOfOurProbeOrderWithTheBuddyHint() throws {
        // Lifeguard IV.C: a ping to a suspect tells it so, letting it refute at once.
        var h = Harness(members: eight)
        _ = h.runAnswering(until: .seconds(1))
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.suspect(name: "a", incarnation: 0, from: "b")])))
        let (_, p) = try h.probe()
        #expect(p.target == "a")
        #expect(p.suspectedAt == 0)
    }

    @Test func aSuspicionAtAnOlderIncarnationIsIgnored() {
        var h = Harness(members: five)
        var rec = Harness.record("a")
        rec.version = 2
        _ = h.receive(.gossip(GossipPacket(from: "a", gossip: [.alive(incarnation: 3, record: rec.proving(incarnation: 3, by: UnsignedRecords()))])))
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.suspect(name: "a", incarnation: 2, from: "b")])))
        #expect(h.status("a") == .alive)
        #expect(h.swim.member(named: "a")?.incarnation == 3)
    }

    @Test func aHigherIncarnationAliveRevivesADeadMember() {
        // SWIM §4.2: only the member itself raises its incarnation, so a higher one is proof of life.
        var h = Harness(members: five)
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.dead(name: "a", incarnation: 0, from: "b")])))
        #expect(h.status("a") == .dead)
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.alive(incarnation: 0, record: Harness.record("a"))])))
        #expect(h.status("a") == .dead, "the same incarnation does not override dead")
        let d = h.receive(.gossip(GossipPacket(from: "a", gossip: [.alive(incarnation: 1, record: Harness.alive("a", 1))])))
        #expect(h.status("a") == .alive)
        #expect(d.changes.contains { $0.name == "a" && $0.previous == .dead && $0.status == .alive })
    }
}

@Suite struct RefutationSpecification {
    @Test func aMemberRefutesSuspicionAboutItselfWithAHigherIncarnation() {
        // SWIM §4.2; Lifeguard IV.A counts a refutation against our own health.
        var h = Harness(members: five)
        _ = h.receive(.gossip(GossipPacket(from: "a", gossip: [.suspect(name: "me", incarnation: 0, from: "a")])))
        #expect(h.swim.incarnation == 1)
        #expect(h.swim.localHealth == 1)
        let out = h.runAnswering(until: .milliseconds(300))
        #expect(out.gossip.contains(.alive(incarnation: 1, record: h.swim.record)))
    }

    @Test func aPingCarryingTheBuddyHintIsAnsweredWithARefutation() throws {
        // Lifeguard IV.C.
        var h = Harness(members: five)
        let d = h.receive(.ping(Ping(sequence: 7, from: "a", fromAddress: "a:7480", target: "me", suspectedAt: 0)))
        let (to, ack) = try #require(d.acks.first)
        #expect(to == "a:7480")
        #expect(ack.gossip.contains(.alive(incarnation: 1, record: h.swim.record)))
    }

    @Test func aRestartedMemberJumpsAboveTheIncarnationTheClusterRemembersItDeadAt() {
        // memberlist's mass-restart problem: a fresh process starts at 0 and must not stay dead.
        var h = Harness(members: [])
        var old = Harness.record("me")
        old.version = 5
        old.running = ["web": 2]
        let states = [
            MemberState(incarnation: 0, status: .alive, record: Harness.record("a")),
            MemberState(incarnation: 7, status: .dead, record: old),
        ]
        _ = h.receive(.pushPull(PushPull(from: "a", fromAddress: "a:7480", isReply: true, isJoin: false, states: states)))
        #expect(h.swim.incarnation == 8)
        #expect(h.swim.record.version == 6, "the record version also jumps above the remembered one")
        #expect(h.status("a") == .alive)
    }

    @Test func aRemoteDeadInPushPullOnlyMakesUsSuspect() {
        // memberlist's mergeState: the member gets its suspicion timeout to refute.
        var h = Harness(members: five)
        let states = [MemberState(incarnation: 0, status: .dead, record: Harness.record("b"))]
        _ = h.receive(.pushPull(PushPull(from: "a", fromAddress: "a:7480", isReply: true, isJoin: false, states: states)))
        #expect(h.status("b") == .suspect)
    }
}

@Suite struct DisseminationSpecification {
    @Test func eachUpdateIsSentAtMostLambdaLogNTimes() {
        // SWIM §4.1: a retransmit limit of λ·ceil(log10(N + 1)).
        var h = Harness(members: eight)
        _ = h.receive(.gossip(GossipPacket(from: "a", gossip: [.alive(incarnation: 0, record: Harness.record("z"))])))
        #expect(h.status("z") == .alive)
        let out = h.runAnswering(until: .seconds(10))
        let sent = out.gossip.filter { $0 == .alive(incarnation: 0, record: Harness.record("z")) }.count
        #expect(sent == MembershipConfiguration.lan.retransmitLimit(members: 10))
    }

    @Test func anIdleMemberSendsNoGossipPackets() {
        var h = Harness(members: eight)
        let out = h.runAnswering(until: .seconds(5))
        #expect(!out.messages.contains { if case .gossip = $0.message { return true } else { return false } })
        #expect(out.pings.count >= 20, "probes continue at one per interval")
    }

    @Test func aJoiningMemberPushPullsWithItsSeedsUntilOneAnswers() {
        var h = Harness(members: [])
        let first = h.swim.join(seeds: ["s:7480"], now: .zero)
        h.next = first.nextDeadline
        #expect(first.pushPulls.map(\.to) == ["s:7480"])
        #expect(first.pushPulls.first?.pp.isJoin == true)
        let retry = h.tick(at: .seconds(1))
        #expect(retry.pushPulls.map(\.to) == ["s:7480"])
        _ = h.receive(
            .pushPull(
                PushPull(
                    from: "s", fromAddress: "s:7480", isReply: true, isJoin: false,
                    states: [MemberState(incarnation: 0, status: .alive, record: Harness.record("s"))])))
        #expect(h.status("s") == .alive)
        let later = h.runAnswering(until: .seconds(3))
        #expect(!later.pushPulls.contains { $0.pp.isJoin }, "no more join attempts once joined")
    }

    @Test func gossipGoesToMembersWeRecentlyHeardFromWhoseConnectionIsOpen() {
        // Over TCP + TLS a message to a member with no open connection costs a handshake; gossip
        // prefers the members that spoke to us within gossipPeerWindow.
        var h = Harness(members: eight)
        _ = h.receive(.ping(Ping(sequence: 1, from: "c", fromAddress: "c:7480", target: "me")), at: .milliseconds(1))
        _ = h.receive(.gossip(GossipPacket(from: "f", gossip: [.alive(incarnation: 0, record: Harness.record("z"))])))
        let out = h.runTimers(until: .milliseconds(400))
        let targets = Set(
            out.messages.compactMap { o -> String? in
                if case .gossip = o.message { return o.to } else { return nil }
            })
        #expect(!targets.isEmpty, "the news about z is gossiped")
        #expect(targets.isSubset(of: ["c:7480", "f:7480"]), "gossip went to \(targets), not only to c and f")
    }

    @Test func withNoRecentlyHeardMemberGossipStillGoesToRandomMembers() throws {
        var h = Harness(members: eight)
        var r = Harness.record("me")
        r.running = ["web": 1]
        let d = try h.swim.updateRecord(r, now: .zero)
        h.next = d.nextDeadline
        let out = h.runTimers(until: .milliseconds(200))
        let targets = out.messages.filter { if case .gossip = $0.message { return true } else { return false } }.map(\.to)
        #expect(!targets.isEmpty, "the change is gossiped although no member spoke to us yet")
        #expect(Set(targets).isSubset(of: Set(eight.map { "\($0):7480" })))
    }

    @Test func aJoinerPullsFromTheMemberThatAnsweredAndProbesOnlyAfterItsEarlyPushPulls() {
        var h = Harness(members: [])
        let first = h.swim.join(seeds: ["s:7480"], now: .zero)
        h.next = first.nextDeadline
        let states = ["s", "a", "b", "c", "d"].map { MemberState(incarnation: 0, status: .alive, record: Harness.record($0)) }
        _ = h.receive(
            .pushPull(PushPull(from: "s", fromAddress: "s:7480", isReply: true, isJoin: false, states: states)),
            at: .milliseconds(10))
        let c = MembershipConfiguration.lan
        let settled = c.joinPushPullDelay * c.joinPushPulls
        let early = h.runAnswering(until: .milliseconds(10) + settled)
        #expect(
            early.pushPulls.map(\.to) == Array(repeating: "s:7480", count: c.joinPushPulls),
            "early push-pulls go to the seed, the only member we heard from")
        #expect(early.pings.isEmpty, "no probe before the early push-pulls are done")
        let later = h.runAnswering(until: .milliseconds(10) + settled + c.probeInterval * 2)
        #expect(!later.pings.isEmpty, "probing starts once the join has settled")
    }

    @Test func aJoinIsAnsweredWithEveryMemberTheJoinerLacks() throws {
        var h = Harness(members: five)
        let d = h.receive(
            .pushPull(
                PushPull(
                    from: "z", fromAddress: "z:7480", isReply: false, isJoin: true,
                    states: [MemberState(incarnation: 0, status: .alive, record: Harness.record("z"))])))
        let (to, reply) = try #require(d.pushPulls.first)
        #expect(to == "z:7480" && reply.isReply)
        #expect(Set(reply.states.map(\.record.name)) == Set(five + ["me"]), "z holds its own record as we now do")
    }

    @Test func gracefulLeaveTellsMembersAtOnceAndStopsProbing() {
        var h = Harness(members: eight)
        _ = h.runAnswering(until: .seconds(1))
        let d = h.swim.leave(now: h.now)
        h.next = d.nextDeadline
        let packets = d.messages.filter { if case .gossip = $0.message { return true } else { return false } }
        #expect(packets.count == 6)
        #expect(d.gossip.allSatisfy { $0 == .left(name: "me", incarnation: h.swim.incarnation) })
        #expect(h.runAnswering(until: .seconds(3)).pings.isEmpty)
    }

    @Test func aJoinSeedThatIsNoLiveMemberIsPingedAndAStrangersAnswerStartsAPushPull() throws {
        // Both sides of a partition restarted and joined only their own side: nobody is dead, so
        // no redial merges them; the join seed on the other side does (microscale-sim seed 2442).
        var h = Harness(members: five)
        h.next = h.swim.join(seeds: ["a:7480", "z:7480"], now: .zero).nextDeadline
        let interval = h.swim.configuration.seedCheckInterval
        var checks: [(to: String, ping: Ping)] = []
        while checks.isEmpty, let n = h.next, n <= interval {
            let d = h.tick(at: n)
            checks = d.pings.filter { $0.ping.target.isEmpty }
            for (_, p) in d.pings where !p.target.isEmpty {
                _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target, gossip: [])))
            }
        }
        #expect(checks.map(\.to) == ["z:7480"], "a:7480 is a live member's address; z:7480 is no one we know")
        let ping = try #require(checks.first?.ping)
        let d = h.receive(.ack(Ack(sequence: ping.sequence, from: "z", gossip: [])))
        #expect(d.pushPulls.map(\.to) == ["z:7480"])
        #expect(d.pushPulls.first?.pp.isJoin == false)
    }

    @Test func aJoinSeedWhoseAckNamedALiveMemberIsNotPingedAgainUntilThatMemberDies() throws {
        // A seed given as a host name never equals a member's address; its ack's name does.
        var h = Harness(members: five)
        h.next = h.swim.join(seeds: ["seed.example:7480"], now: .zero).nextDeadline
        let interval = h.swim.configuration.seedCheckInterval
        func seedChecks(until limit: Duration) -> [Ping] {
            var found: [Ping] = []
            while let n = h.next, n <= limit {
                let d = h.tick(at: n)
                found += d.pings.filter { $0.to == "seed.example:7480" }.map(\.ping)
                for (_, p) in d.pings where !p.target.isEmpty {
                    _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target, gossip: [])))
                }
            }
            return found
        }
        let first = try #require(seedChecks(until: interval).first)
        #expect(first.target.isEmpty)
        let d = h.receive(.ack(Ack(sequence: first.sequence, from: "b", gossip: [])))
        #expect(d.pushPulls.isEmpty, "b is a live member: nothing to merge")
        #expect(seedChecks(until: interval * 3).isEmpty, "known by name now")
        _ = h.receive(.gossip(GossipPacket(from: "c", gossip: [.dead(name: "b", incarnation: 0, from: "c")])))
        #expect(!seedChecks(until: interval * 5).isEmpty, "b is dead: the seed is checked again")
    }

    @Test func aDeadMemberIsRedialedAndItsAnswerStartsAPushPull() throws {
        // memberlist's open problem: a healed partition must merge by itself.
        var h = Harness(members: five)
        _ = h.receive(.gossip(GossipPacket(from: "b", gossip: [.dead(name: "a", incarnation: 0, from: "b")])))
        var redial: Ping?
        while redial == nil, let n = h.next, n <= .seconds(5) {
            let d = h.tick(at: n)
            redial = d.pings.first { $0.to == "a:7480" }?.ping
            for (_, p) in d.pings where p.target != "a" {
                _ = h.receive(.ack(Ack(sequence: p.sequence, from: p.target, gossip: [])))
            }
        }
        let ping = try #require(redial)
        let d = h.receive(.ack(Ack(sequence: ping.sequence, from: "a", gossip: [])))
        #expect(d.pushPulls.map(\.to) == ["a:7480"])
    }
}
