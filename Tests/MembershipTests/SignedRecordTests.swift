import Foundation
import Membership
import Testing

/// Issue 15, item 2: a member cannot change what the cluster believes about another node's
/// address, capacity, role or containers. Records are signed by their owners
/// (`RecordAuthenticator`), and a record or delta is taken, whoever relayed it, only when its
/// owner's signature covers exactly what arrived.
@Suite struct SignedRecordTests {
    func gossip(_ g: Gossip, from: String = "b") -> Message {
        .gossip(GossipPacket(from: from, gossip: [g]))
    }

    /// c's record as c itself would sign it at `version`, with `change` applied first.
    func owners(_ name: String = "c", version: UInt64, _ change: (inout NodeRecord) -> Void = { _ in }) -> NodeRecord {
        var r = Harness.record(name)
        r.version = version
        change(&r)
        return r.signed(by: KeyedAuthenticator(owner: name))
    }

    func refused(_ d: Directives) -> Bool {
        d.events.contains { if case let .rejected(_, reason) = $0 { reason.contains("not its owner's") } else { false } }
    }

    @Test func aRecordRelayedByAThirdPartyIsTakenWhenItsOwnerSignedIt() {
        var h = Harness(members: ["b", "c"], signed: true)
        let d = h.receive(gossip(.alive(incarnation: 0, record: owners(version: 2) { $0.running = ["web": 3] })))
        #expect(!refused(d))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 3])
        #expect(h.swim.member(named: "c")?.record.version == 2)
    }

    @Test func aRecordWhoseFieldsARelayChangedIsRefusedAndTheOwnersIsKept() {
        var h = Harness(members: ["b", "c"], signed: true)
        // b takes c's genuine signature and raises the capacity under it.
        var forged = owners(version: 2)
        forged.capacity = Resources(cpuMillicores: 64_000, memoryBytes: 1 << 40)
        let d = h.receive(gossip(.alive(incarnation: 0, record: forged)))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.record.capacity == Harness.record("c").capacity)
        #expect(h.swim.member(named: "c")?.record.version == 1)
    }

    @Test func aRecordSignedByTheRelayInsteadOfItsOwnerIsRefused() {
        var h = Harness(members: ["b", "c"], signed: true)
        var r = Harness.record("c")
        r.version = 5
        r.address = "mallory:7480"
        let d = h.receive(gossip(.alive(incarnation: 1, record: r.signed(by: KeyedAuthenticator(owner: "b")))))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.address == "c:7480")
    }

    @Test func anUnsignedRecordIsRefusedWhereRecordsAreSigned() {
        var h = Harness(members: ["b", "c"], signed: true)
        var r = Harness.record("c")
        r.version = 5
        let d = h.receive(gossip(.alive(incarnation: 1, record: r)))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.record.version == 1)
    }

    @Test func aMemberNobodyKnowsIsNotAddedOnAForgedRecord() {
        var h = Harness(members: ["b"], signed: true)
        var ghost = Harness.record("ghost")
        ghost.capacity = Resources(cpuMillicores: 1_000_000, memoryBytes: 1 << 44)
        let d = h.receive(gossip(.alive(incarnation: 1, record: ghost.signed(by: KeyedAuthenticator(owner: "b")))))
        #expect(refused(d))
        #expect(h.swim.member(named: "ghost") == nil)
        // Its owner's own record is taken, through the same relay.
        _ = h.receive(gossip(.alive(incarnation: 1, record: owners("ghost", version: 1))))
        #expect(h.swim.member(named: "ghost") != nil)
    }

    @Test func aDeltaIsCheckedAgainstTheRecordItProducesAndAForgedOneAsksTheOwner() {
        var h = Harness(members: ["b", "c"], signed: true)
        let v1 = owners(version: 1)
        let v2 = owners(version: 2) { $0.running = ["web": 2] }
        // Genuine, relayed by b: applied.
        var d = h.receive(gossip(.recordDelta(NodeRecordDelta.between(v1, v2))))
        #expect(!refused(d))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 2])
        // b reuses c's next signature on a delta that empties c: refused, and c is asked itself.
        let v3 = owners(version: 3) { $0.running = ["web": 4] }
        var forged = NodeRecordDelta.between(v2, v3)
        forged.running = ["web": 0]
        d = h.receive(gossip(.recordDelta(forged)))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 2])
        #expect(
            d.messages.contains { o in
                if case .recordRequest = o.message { return o.to == "c:7480" } else { return false }
            })
        // c's own answer is taken.
        d = h.receive(.record(RecordReply(incarnation: 0, record: v3)))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 4])
    }

    @Test func aPushPullCannotCarryAForgedRecordEither() {
        var h = Harness(members: ["b", "c"], signed: true)
        var forged = owners(version: 9)
        forged.running = ["batch": 40]
        let pp = PushPull(
            from: "b", fromAddress: "b:7480", isReply: true, isJoin: false,
            states: [
                MemberState(incarnation: 0, status: .alive, record: forged),
                MemberState(incarnation: 0, status: .alive, record: owners("b", version: 2) { $0.running = ["web": 1] }),
            ])
        let d = h.receive(.pushPull(pp))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.record.version == 1)
        #expect(h.swim.member(named: "b")?.record.running == ["web": 1])
    }

    @Test func thisMembersRecordIsSignedAndSignedAgainOnEveryChange() throws {
        var h = Harness(members: ["b"], signed: true)
        let me = KeyedAuthenticator(owner: "me")
        #expect(h.swim.record.refusal(by: me) == nil)
        var r = h.swim.record
        r.running = ["web": 1]
        h.next = try h.swim.updateRecord(r, now: h.now).nextDeadline
        #expect(h.swim.record.version == 2)
        #expect(h.swim.record.refusal(by: me) == nil)
        // The delta it sends carries that signature, so a receiver holding version 1 can check it.
        let out = h.runTimers(until: h.now + .seconds(2)).gossip
        let delta = try #require(out.compactMap { if case let .recordDelta(x) = $0 { x } else { nil } }.first)
        let applied = try delta.apply(to: Harness.record("me").signed(by: me))
        #expect(applied.refusal(by: me) == nil)
        // An update that changes nothing is no new version (the proof is not content).
        var same = h.swim.record
        same.signature = []
        _ = try h.swim.updateRecord(same, now: h.now)
        #expect(h.swim.record.version == 2)
    }

    @Test func anAliveAtAHigherIncarnationRevivesADeadMemberOnlyWithItsOwnersWordForIt() {
        var h = Harness(members: ["b", "c"], signed: true)
        _ = h.receive(gossip(.dead(name: "c", incarnation: 0, from: "b")))
        #expect(h.status("c") == .dead)
        // b says c is alive at incarnation 7, relaying c's genuine record (proof for 0 only).
        var d = h.receive(gossip(.alive(incarnation: 7, record: Harness.alive("c", 0, signed: true))))
        #expect(h.status("c") == .dead)
        // ...or with a proof of its own making.
        let forged = Harness.alive("c", 0, signed: true).proving(incarnation: 7, by: KeyedAuthenticator(owner: "b"))
        d = h.receive(gossip(.alive(incarnation: 7, record: forged)))
        #expect(h.status("c") == .dead)
        #expect(d.events.contains { if case let .rejected(_, r) = $0 { r.contains("incarnation 7 of c") } else { false } })
        // c's own word, relayed by b, revives it; and what we relay of c carries that word.
        _ = h.receive(gossip(.alive(incarnation: 1, record: Harness.alive("c", 1, signed: true))))
        #expect(h.status("c") == .alive)
        #expect(h.swim.member(named: "c")?.incarnation == 1)
        let relayed = h.swim.member(named: "c")?.record
        #expect(relayed?.provenIncarnation == 1)
        #expect(relayed?.incarnationRefusal(by: KeyedAuthenticator(owner: "c")) == nil)
    }

    @Test func aMemberFirstHeardOfAtAnIncarnationItsOwnerDidNotSignStartsAtTheSignedOne() {
        var h = Harness(members: ["b"], signed: true)
        _ = h.receive(gossip(.alive(incarnation: 1_000, record: Harness.alive("d", 2, signed: true))))
        #expect(h.swim.member(named: "d")?.incarnation == 2)
    }

    @Test func aRefutationIsSignedAtTheIncarnationItReaches() {
        var h = Harness(members: ["b"], signed: true)
        _ = h.receive(gossip(.suspect(name: "me", incarnation: 0, from: "b")))
        #expect(h.swim.incarnation == 1)
        #expect(h.swim.record.provenIncarnation == 1)
        #expect(h.swim.record.incarnationRefusal(by: KeyedAuthenticator(owner: "me")) == nil)
    }

    // MARK: Certificates travel where they are needed

    func stripped(_ r: NodeRecord) -> NodeRecord {
        var r = r
        r.certificate = []
        return r
    }

    @Test func aPeriodicPushPullCarriesOnlyTheSendersOwnCertificate() throws {
        var h = Harness(members: ["b", "c"], signed: true)
        // b and c answer every probe, so they stay alive until the first periodic push-pull.
        var sent: PushPull?
        while sent == nil, h.now < .seconds(60) {
            let d = h.runTimers(until: h.now + .milliseconds(50))
            for (_, ping) in d.pings {
                _ = h.receive(.ack(Ack(sequence: ping.sequence, from: ping.target, gossip: [])))
            }
            sent = d.pushPulls.first { !$0.pp.isReply }?.pp
        }
        let pp = try #require(sent)
        #expect(!pp.wantsCertificates)
        for s in pp.states {
            #expect(s.record.certificate.isEmpty == (s.record.name != "me"), "\(s.record.name)")
        }
    }

    @Test func aJoinOrAHealedPartitionIsAnsweredWithEveryCertificate() throws {
        var h = Harness(members: ["b", "c"], signed: true)
        let ask = PushPull(
            from: "z", fromAddress: "z:7480", isReply: false, isJoin: true, wantsCertificates: true,
            states: [MemberState(incarnation: 0, status: .alive, record: Harness.alive("z", 0, signed: true))])
        let reply = try #require(h.receive(.pushPull(ask)).pushPulls.first?.pp)
        #expect(reply.wantsCertificates)
        #expect(reply.states.allSatisfy { !$0.record.certificate.isEmpty })
    }

    @Test func aRecordWithoutItsCertificateIsCheckedAgainstTheOneHeldForItsOwner() {
        var h = Harness(members: ["b", "c"], signed: true)
        let newer = owners(version: 4) { $0.running = ["web": 6] }
        var forged = stripped(owners(version: 5))
        forged.running = ["evil": 9]
        let pp = PushPull(
            from: "b", fromAddress: "b:7480", isReply: true, isJoin: false, wantsCertificates: false,
            states: [MemberState(incarnation: 0, status: .alive, record: stripped(newer))])
        _ = h.receive(.pushPull(pp))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 6])
        #expect(h.swim.member(named: "c")?.record.certificate == newer.certificate, "what we relay still carries it")
        let d = h.receive(
            .pushPull(
                PushPull(
                    from: "b", fromAddress: "b:7480", isReply: true, isJoin: false,
                    wantsCertificates: false,
                    states: [MemberState(incarnation: 0, status: .alive, record: forged)])))
        #expect(refused(d))
        #expect(h.swim.member(named: "c")?.record.running == ["web": 6])
    }

    /// The record requests in `d`: (to, names).
    func recordRequests(_ d: Directives) -> [(to: String, names: [String])] {
        d.messages.compactMap { o in
            if case let .recordRequest(r) = o.message { return (o.to, r.names) } else { return nil }
        }
    }

    @Test func aMemberNeverHeardOfThatComesWithoutACertificateIsAskedOfWhoeverToldUs() throws {
        var h = Harness(members: ["b"], signed: true)
        let pp = PushPull(
            from: "b", fromAddress: "b:7480", isReply: true, isJoin: false, wantsCertificates: false,
            states: [
                MemberState(incarnation: 3, status: .alive, record: stripped(Harness.alive("d", 3, signed: true))),
                MemberState(incarnation: 0, status: .alive, record: stripped(Harness.alive("e", 0, signed: true))),
            ])
        let d = h.receive(.pushPull(pp))
        #expect(h.swim.member(named: "d") == nil)
        #expect(!refused(d), "not a forgery: just not checkable here yet")
        let asked = recordRequests(d)
        #expect(asked.count == 1, "one request for both, to the member that told us, not one dial per owner")
        #expect(asked.first?.to == "b:7480")
        #expect(asked.first?.names == ["d", "e"])
        // b answers with what it holds, certificates included, as a push-pull reply.
        let answer = PushPull(
            from: "b", fromAddress: "b:7480", isReply: true, isJoin: false, wantsCertificates: false,
            states: [
                MemberState(incarnation: 3, status: .alive, record: Harness.alive("d", 3, signed: true)),
                MemberState(incarnation: 0, status: .alive, record: Harness.alive("e", 0, signed: true)),
            ])
        _ = h.receive(.pushPull(answer))
        #expect(h.status("d") == .alive)
        #expect(h.swim.member(named: "d")?.incarnation == 3)
        #expect(h.status("e") == .alive)
    }

    @Test func aMemberIsAskedAboutAtMostOncePerRecordRequestInterval() {
        var h = Harness(members: ["b", "c"], signed: true)
        let news = Gossip.alive(incarnation: 0, record: stripped(Harness.alive("d", 0, signed: true)))
        #expect(recordRequests(h.receive(gossip(news, from: "b"))).map(\.names) == [["d"]])
        #expect(recordRequests(h.receive(gossip(news, from: "c"))).isEmpty, "asked already, from b")
        let later = h.receive(gossip(news, from: "c"), at: h.now + h.swim.configuration.recordRequestInterval)
        #expect(recordRequests(later).map(\.to) == ["c:7480"])
    }

    @Test func newsOfAMemberNeverHeardOfFromAnUnknownSenderIsAskedOfItsOwner() {
        var h = Harness(members: ["b"], signed: true)
        let news = Gossip.alive(incarnation: 0, record: stripped(Harness.alive("d", 0, signed: true)))
        let d = h.receive(gossip(news, from: "stranger"))
        #expect(recordRequests(d).map(\.to) == ["d:7480"])
        #expect(recordRequests(d).first?.names == [], "its own record")
    }

    @Test func aRecordRequestNamingMembersIsAnsweredWithTheirRecordsAndCertificates() throws {
        var h = Harness(members: ["b", "c"], signed: true)
        let d = h.receive(.recordRequest(RecordRequest(from: "z", fromAddress: "z:7480", names: ["c", "nobody", "me"])))
        let reply = try #require(d.pushPulls.first)
        #expect(reply.to == "z:7480")
        #expect(reply.pp.isReply)
        #expect(reply.pp.states.map(\.record.name) == ["c", "me"], "only the members it knows")
        #expect(reply.pp.states.allSatisfy { !$0.record.certificate.isEmpty })
        let none = h.receive(.recordRequest(RecordRequest(from: "z", fromAddress: "z:7480", names: ["nobody"])))
        #expect(none.messages.isEmpty)
    }

    @Test func aRecordRequestWithoutNamesIsStillAnsweredWithTheOwnRecord() throws {
        var h = Harness(members: ["b"], signed: true)
        let d = h.receive(.recordRequest(RecordRequest(from: "z", fromAddress: "z:7480")))
        let reply = try #require(
            d.messages.compactMap { o -> RecordReply? in if case let .record(r) = o.message { r } else { nil } }.first)
        #expect(reply.record.name == "me")
        #expect(!reply.record.certificate.isEmpty)
    }

    @Test func aNewMemberIsGossipedWithoutItsCertificate() {
        var h = Harness(members: ["b"], signed: true)
        _ = h.receive(gossip(.alive(incarnation: 0, record: Harness.alive("d", 0, signed: true)), from: "b"))
        #expect(h.status("d") == .alive)
        let out = h.runTimers(until: h.now + .seconds(2))
        let relayed = out.gossip.compactMap { g -> NodeRecord? in
            if case let .alive(_, r) = g, r.name == "d" { r } else { nil }
        }
        #expect(!relayed.isEmpty)
        #expect(relayed.allSatisfy { $0.certificate.isEmpty && !$0.signature.isEmpty })
    }

    /// A node certificate reloaded on SIGHUP: same node, a new key.
    final class Rotating: RecordAuthenticator, @unchecked Sendable {
        let lock = NSLock()
        var generation = 0
        var current: KeyedAuthenticator { lock.withLock { KeyedAuthenticator(owner: generation == 0 ? "me" : "me-2") } }
        var certificate: [UInt8] { lock.withLock { generation == 0 ? Array("me".utf8) : Array("me#2".utf8) } }
        func sign(_ message: [UInt8]) -> [UInt8] { current.sign(message) }
        func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? { nil }
    }

    @Test func aReloadedCertificateIsCarriedByANewVersionSignedWithTheNewKey() throws {
        let rotating = Rotating()
        var swim = try SWIMInstance(record: Harness.record("me"), seed: 1, now: .zero, authenticator: rotating)
        swim.restore([MemberState(incarnation: 0, status: .alive, record: Harness.record("b"))], now: .zero)
        let before = swim.record
        rotating.lock.withLock { rotating.generation = 1 }
        var d = swim.refreshProof(now: .seconds(1))
        #expect(swim.record.version == before.version + 1)
        #expect(swim.record.certificate == Array("me#2".utf8))
        #expect(swim.record.signature == KeyedAuthenticator(owner: "me-2").sign(swim.record.signedBytes))
        #expect(swim.record.incarnationSignature != before.incarnationSignature)
        // Its delta carries the new certificate, so members holding the old one can check it.
        d = swim.tick(now: .seconds(2))
        var all = d.messages
        for t in stride(from: 2.05, through: 4.0, by: 0.05) { all += swim.tick(now: .milliseconds(Int(t * 1000))).messages }
        let deltas = all.flatMap { o -> [NodeRecordDelta] in
            let g: [Gossip]
            switch o.message {
            case let .ping(p): g = p.gossip
            case let .gossip(p): g = p.gossip
            default: g = []
            }
            return g.compactMap { if case let .recordDelta(x) = $0 { x } else { nil } }
        }
        #expect(deltas.contains { $0.certificate == Array("me#2".utf8) && $0.version == before.version + 1 })
    }

    @Test func aForgedRecordAboutThisMemberDoesNotPushItsVersion() {
        var h = Harness(members: ["b"], signed: true)
        var forged = Harness.record("me")
        forged.version = 1_000
        _ = h.receive(gossip(.alive(incarnation: 0, record: forged.signed(by: KeyedAuthenticator(owner: "b")))))
        #expect(h.swim.record.version == 1)
    }
}
