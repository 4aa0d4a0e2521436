import Consensus

/// A rule of the trust model (docs/ARCHITECTURE.md, "Trust") that refused something a peer sent.
/// The raw value is what the log line and the test name.
public enum TrustRule: String, Sendable, Hashable, CaseIterable {
    /// Raft frames come from server certificates only.
    case raftNeedsServerCertificate = "raft-needs-server-certificate"
    /// ...and only from a member of this server's Raft configuration.
    case raftSenderNotInConfiguration = "raft-sender-not-in-configuration"
    /// ...whose message names itself, and this server, as sender and recipient.
    case raftSenderIsNotThePeer = "raft-sender-is-not-the-peer"
    /// A client agent runs no Raft.
    case raftToClientAgent = "raft-to-client-agent"
    /// Assignments are pushed by server certificates only...
    case assignmentNeedsServerCertificate = "assignment-needs-server-certificate"
    /// ...and only by the server this agent subscribed to (a server reads its own state).
    case assignmentNotFromSubscribedServer = "assignment-not-from-subscribed-server"
    /// A node subscribes to assignments for itself only.
    case subscriptionForAnotherNode = "subscription-for-another-node"
    /// A client agent serves no forwarded request (it would relay it under its own certificate).
    case forwardRequestToClientAgent = "forward-request-to-client-agent"
    /// A write forwarded from a client certificate needs the operator's API token.
    case forwardedWriteNeedsToken = "forwarded-write-needs-token"
    /// A forwarded request must be within the bounds of docs/limits.md, field by field.
    case malformedForwardedRequest = "malformed-forwarded-request"
    /// A forwarded request in the untyped form of older versions (an HTTP method and path) is
    /// answered 503 naming the upgrade (docs/ARCHITECTURE.md, "Forwarded API requests").
    case forwardRequestFromOlderAgent = "forward-request-from-older-agent"
    /// A forward response is taken only from the peer the request went to, for an id it was sent.
    case forwardResponseNotAwaited = "forward-response-not-awaited"
    /// Bootstrap agreement is between server certificates only.
    case bootstrapNeedsServerCertificate = "bootstrap-needs-server-certificate"
}

/// Who may tell this agent what (docs/ARCHITECTURE.md, "Trust"): the decisions the shells make
/// on every frame from an authenticated peer, before anything reaches a core, as pure functions
/// of the peer's certificate (its name and role) and this agent's state. The shells
/// (`RaftService`, `AssignmentService`, `MembershipService`) and `microscale-sim cluster`'s
/// hostile peer run these same rules, so a rule broken here is caught by some seed.
public enum PeerAdmission {
    /// A Raft frame, before it is decoded: from a server certificate only. Raft believes what it
    /// is told (a term adopted on sight, a snapshot replacing the state and the voters).
    public static func raftFrame(peerIsServer: Bool) -> TrustRule? {
        peerIsServer ? nil : .raftNeedsServerCertificate
    }

    /// A decoded Raft message from `peer`: it speaks for itself, to this server, and a server
    /// outside the configuration this node knows may only lead it. A joining server knows no
    /// configuration until the leader's snapshot, and a follower that has not yet received the
    /// entry adding a server must still follow that server once it leads (it can lead only with
    /// the votes of a quorum that has the entry). Vote requests and the rest from outside are
    /// dropped: a removed server must not disrupt the cluster (thesis §4.2.3).
    public static func raftMessage(_ m: RaftMessage, peer: String, me: String, members: Set<String>) -> TrustRule? {
        guard m.from == peer, m.to == me else { return .raftSenderIsNotThePeer }
        guard members.contains(peer) || m.kind == .append || m.kind == .heartbeat || m.kind == .installSnapshot else {
            return .raftSenderNotInConfiguration
        }
        return nil
    }

    /// A subscription to assignments: a node subscribes for itself only (its certificate names it).
    public static func subscription(for node: String, peer: String) -> TrustRule? {
        node == peer ? nil : .subscriptionForAnotherNode
    }

    /// An assignment push. What an agent runs comes from the servers' committed plan, so a push is
    /// taken only from a server certificate, and only from the server this agent subscribed to: any
    /// other (an old upstream's late push included) is dropped. A server agent reads its own
    /// replicated state and subscribes to no one.
    public static func assignment(peer: String, peerIsServer: Bool, meIsServer: Bool, upstream: String?) -> TrustRule? {
        guard peerIsServer else { return .assignmentNeedsServerCertificate }
        guard !meIsServer, peer == upstream else { return .assignmentNotFromSubscribedServer }
        return nil
    }

    /// A membership message names its sender where it has one; it must be the peer. The records it
    /// carries are checked by the core against their owners' signatures.
    public static func membership(sender: String?, peer: String) -> Bool {
        sender.map { $0 == peer } ?? true
    }
}
