import Consensus
import ControlPlane
import Testing

/// Who may tell an agent what (docs/ARCHITECTURE.md, "Trust"), as the shells and the
/// simulation's hostile peer meet it.
@Suite struct PeerAdmissionTests {
    let voters: Set<String> = ["s1", "s2", "s3"]

    @Test func raftFramesComeFromServerCertificatesOnly() {
        #expect(PeerAdmission.raftFrame(peerIsServer: false) == .raftNeedsServerCertificate)
        #expect(PeerAdmission.raftFrame(peerIsServer: true) == nil)
    }

    @Test func aRaftMessageSpeaksForItsPeerToThisServer() {
        let own = RaftMessage(kind: .vote, from: "s2", to: "s1", term: 3)
        #expect(PeerAdmission.raftMessage(own, peer: "s2", me: "s1", members: voters) == nil)
        #expect(PeerAdmission.raftMessage(own, peer: "s3", me: "s1", members: voters) == .raftSenderIsNotThePeer)
        #expect(PeerAdmission.raftMessage(own, peer: "s2", me: "s3", members: voters) == .raftSenderIsNotThePeer)
    }

    @Test func aServerOutsideTheConfigurationMayOnlyLead() {
        for kind: RaftMessage.Kind in [.append, .heartbeat, .installSnapshot] {
            let m = RaftMessage(kind: kind, from: "s9", to: "s1", term: 3)
            #expect(PeerAdmission.raftMessage(m, peer: "s9", me: "s1", members: voters) == nil, "\(kind)")
        }
        for kind: RaftMessage.Kind in [.vote, .preVote, .timeoutNow, .readIndex, .appendResponse] {
            let m = RaftMessage(kind: kind, from: "s9", to: "s1", term: 3)
            #expect(PeerAdmission.raftMessage(m, peer: "s9", me: "s1", members: voters) == .raftSenderNotInConfiguration, "\(kind)")
        }
    }

    @Test func aNodeSubscribesForItselfOnly() {
        #expect(PeerAdmission.subscription(for: "n4", peer: "n4") == nil)
        #expect(PeerAdmission.subscription(for: "n2", peer: "n4") == .subscriptionForAnotherNode)
    }

    @Test func anAssignmentIsTakenFromTheSubscribedServerOnly() {
        #expect(PeerAdmission.assignment(peer: "s1", peerIsServer: true, meIsServer: false, upstream: "s1") == nil)
        #expect(
            PeerAdmission.assignment(peer: "n5", peerIsServer: false, meIsServer: false, upstream: "n5")
                == .assignmentNeedsServerCertificate, "a client certificate, even one named as the upstream")
        #expect(
            PeerAdmission.assignment(peer: "s2", peerIsServer: true, meIsServer: false, upstream: "s1")
                == .assignmentNotFromSubscribedServer)
        #expect(
            PeerAdmission.assignment(peer: "s2", peerIsServer: true, meIsServer: true, upstream: nil)
                == .assignmentNotFromSubscribedServer, "a server reads its own state")
    }

    @Test func aMembershipMessageNamesItsPeerAsSender() {
        #expect(PeerAdmission.membership(sender: "n2", peer: "n2"))
        #expect(!PeerAdmission.membership(sender: "n3", peer: "n2"))
        #expect(PeerAdmission.membership(sender: nil, peer: "n2"), "a message that names no sender")
    }
}
