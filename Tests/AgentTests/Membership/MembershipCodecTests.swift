import Membership
import Testing

@testable import Agent

/// The owner's proofs survive the wire: without them every relayed record would be refused.
@Suite struct MembershipCodecTests {
    @Test func aRecordRequestCarriesTheNamesItAsksForAndRefusesMoreThanTheCoreAnswers() throws {
        let ask = RecordRequest(from: "a", fromAddress: "a:7480", names: ["b", "c"])
        #expect(try MembershipCodec.decode(MembershipCodec.encode(.recordRequest(ask))) == .recordRequest(ask))
        let own = RecordRequest(from: "a", fromAddress: "a:7480")
        #expect(try MembershipCodec.decode(MembershipCodec.encode(.recordRequest(own))) == .recordRequest(own))
        let tooMany = RecordRequest(
            from: "a", fromAddress: "a:7480", names: (0...SWIMInstance.maxRecordsPerRequest).map { "n\($0)" })
        #expect {
            _ = try MembershipCodec.decode(MembershipCodec.encode(.recordRequest(tooMany)))
        } throws: { error in
            (error as? MembershipCodec.DecodingError)?.field == "record_request.names"
        }
    }

    @Test func aRecordCarriesItsCertificateSignatureAndIncarnationProofAcrossTheWire() throws {
        var r = NodeRecord(
            name: "n1", address: "10.0.0.1:7480", role: .server,
            capacity: Resources(cpuMillicores: 4000, memoryBytes: 1 << 33), running: ["web": 3], version: 9)
        r.certificate = [0x30, 0x82, 1, 2, 3]
        r.signature = Array(repeating: 7, count: 71)
        r.provenIncarnation = 12
        r.incarnationSignature = Array(repeating: 9, count: 70)
        let message = Message.gossip(GossipPacket(from: "n2", gossip: [.alive(incarnation: 12, record: r)]))
        let back = try MembershipCodec.message(from: try MembershipCodec.frame(message))
        guard case let .gossip(g) = back, case let .alive(inc, record)? = g.gossip.first else {
            Issue.record("not an alive gossip: \(back)")
            return
        }
        #expect(inc == 12)
        #expect(record == r)
    }

    @Test func aDeltaCarriesTheSignatureOfTheRecordItMakesAndANewCertificate() throws {
        var d = NodeRecordDelta(name: "n1", baseVersion: 3, version: 4, running: ["web": 0])
        d.signature = [1, 2, 3]
        d.certificate = [4, 5]
        let back = try MembershipCodec.message(from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.recordDelta(d)]))))
        guard case let .gossip(g) = back, case let .recordDelta(x)? = g.gossip.first else {
            Issue.record("not a delta: \(back)")
            return
        }
        #expect(x == d)
        d.certificate = nil
        let again = try MembershipCodec.message(from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.recordDelta(d)]))))
        guard case let .gossip(g2) = again, case let .recordDelta(y)? = g2.gossip.first else { return }
        #expect(y.certificate == nil)
    }

    @Test func labelsAndImageFailuresCrossTheWireInRecordsAndDeltas() throws {
        var r = NodeRecord(name: "n1", address: "10.0.0.1:7480", version: 3)
        r.labels = ["zone": "a", "disk": "ssd"]
        r.imageFailures = ["web:v2": "manifest unknown"]
        let back = try MembershipCodec.message(
            from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.alive(incarnation: 1, record: r)]))))
        guard case let .gossip(g) = back, case let .alive(_, record)? = g.gossip.first else {
            Issue.record("not an alive gossip: \(back)")
            return
        }
        #expect(record == r)
        var d = NodeRecordDelta(name: "n1", baseVersion: 3, version: 4)
        d.labels = ["zone": "b"]
        d.imageFailures = [:]
        let again = try MembershipCodec.message(from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.recordDelta(d)]))))
        guard case let .gossip(g2) = again, case let .recordDelta(x)? = g2.gossip.first else { return }
        #expect(x.labels == ["zone": "b"])
        // An emptied map is a change (the failures cleared), not "unchanged".
        #expect(x.imageFailures == [:])
        d.labels = nil
        d.imageFailures = nil
        let none = try MembershipCodec.message(from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.recordDelta(d)]))))
        guard case let .gossip(g3) = none, case let .recordDelta(y)? = g3.gossip.first else { return }
        #expect(y.labels == nil && y.imageFailures == nil)
    }
}

/// Rollout reports (docs/rollouts.md) survive the wire, in records and deltas.
@Suite struct RolloutProgressCodecTests {
    @Test func aRecordAndADeltaCarryTheirRolloutReports() throws {
        var r = NodeRecord(name: "n1", address: "10.0.0.1:7480", running: ["web": 3], version: 2)
        r.rollouts = ["web": RolloutProgress(spec: "1a2b", serving: 2, failed: 1)]
        let back = try MembershipCodec.message(
            from: try MembershipCodec.frame(
                .gossip(GossipPacket(from: "n2", gossip: [.alive(incarnation: 1, record: r)]))))
        guard case let .gossip(g) = back, case let .alive(_, record)? = g.gossip.first else {
            Issue.record("not an alive gossip: \(back)")
            return
        }
        #expect(record == r)
        var d = NodeRecordDelta(name: "n1", baseVersion: 2, version: 3)
        d.rollouts = ["web": RolloutProgress(spec: "", serving: 0), "api": RolloutProgress(spec: "ff", serving: 1)]
        let again = try MembershipCodec.message(from: try MembershipCodec.frame(.gossip(GossipPacket(from: "n2", gossip: [.recordDelta(d)]))))
        guard case let .gossip(g2) = again, case let .recordDelta(x)? = g2.gossip.first else { return }
        #expect(x == d)
    }
}

/// Endpoints cross the wire in records and deltas, and ports out of range are refused on decode.
@Suite struct EndpointsCodecTests {
    @Test func aRecordAndADeltaCarryEndpointsAcrossTheWire() throws {
        var r = NodeRecord(name: "n1", address: "10.0.0.1:7480", running: ["web": 2], version: 9)
        r.endpoints = ["web": [Endpoint(containerPort: 8080, hostPort: 32768), Endpoint(containerPort: 8080, hostPort: 32769)]]
        var d = NodeRecordDelta(name: "n1", baseVersion: 9, version: 10)
        d.endpoints = ["web": [Endpoint(containerPort: 8080, hostPort: 32768)], "api": []]
        let message = Message.gossip(GossipPacket(from: "n2", gossip: [.alive(incarnation: 1, record: r), .recordDelta(d)]))
        guard case let .gossip(g) = try MembershipCodec.message(from: try MembershipCodec.frame(message)),
            case let .alive(_, record)? = g.gossip.first, case let .recordDelta(delta)? = g.gossip.last
        else {
            Issue.record("not the gossip sent")
            return
        }
        #expect(record == r)
        #expect(delta == d)
    }

    @Test func aPortOutOfRangeIsRefusedNamingTheField() throws {
        var y = MembershipCodec.encode(NodeRecord(name: "n1", address: "10.0.0.1:7480", version: 1))
        y.endpoints["web"] = .with {
            $0.endpoints = [
                .with {
                    $0.containerPort = 8080
                    $0.hostPort = 70000
                }
            ]
        }
        #expect(throws: MembershipCodec.DecodingError.self) { _ = try MembershipCodec.decode(y) }
        do { _ = try MembershipCodec.decode(y) } catch { #expect("\(error)".contains("record.endpoints[web]")) }
    }
}
