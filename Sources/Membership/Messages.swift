/// The protocol's messages as plain values; the shell maps them to protobuf (proto/membership.proto)
/// and frames them. Every message names its sender (`from`) so the receiver never trusts the
/// transport for identity beyond what TLS already verified. `estimatedSize` approximates the
/// protobuf encoding (strings: bytes + 2; integers: a tag and a varint), for bandwidth accounting.

/// Bytes of a protobuf field holding `v`: a one-byte tag and the varint (7 bits per byte).
@inline(__always)
func varintField(_ v: UInt64) -> Int {
    1 + (v == 0 ? 1 : (64 - v.leadingZeroBitCount + 6) / 7)
}

/// Bytes of a protobuf string field: tag, length, bytes.
@inline(__always)
func stringField(_ s: String) -> Int {
    let n = s.utf8.count
    let lengthBytes = varintField(UInt64(n)) - 1
    return 1 + lengthBytes + n
}

/// Codable as its raw value: the agent's API shows it (`MemberView`), and a status that is none of
/// these four is a decoding error naming the field, never read as one of them.
public enum MemberStatus: String, Sendable, Hashable, CaseIterable, Codable {
    case alive, suspect, dead, left
}

/// Dissemination (SWIM §4.4): updates piggybacked on probes and acks, and sent in gossip packets.
public enum Gossip: Sendable, Hashable {
    /// The member is alive at `incarnation`; carries its full record (joins and refutations).
    case alive(incarnation: UInt64, record: NodeRecord)
    /// `from` suspects `name` at `incarnation` (SWIM §4.2).
    case suspect(name: String, incarnation: UInt64, from: String)
    /// `from` declared `name` dead at `incarnation`.
    case dead(name: String, incarnation: UInt64, from: String)
    /// `name` left gracefully at `incarnation`.
    case left(name: String, incarnation: UInt64)
    /// A change to `delta.name`'s record.
    case recordDelta(NodeRecordDelta)

    /// The member this update is about.
    public var subject: String {
        switch self {
        case let .alive(_, record): return record.name
        case let .suspect(name, _, _), let .dead(name, _, _), let .left(name, _): return name
        case let .recordDelta(d): return d.name
        }
    }

    public var estimatedSize: Int {
        switch self {
        // One byte for the oneof tag and one or two for the submessage length.
        case let .alive(inc, record): return 3 + varintField(inc) + 2 + record.estimatedSize
        case let .suspect(name, inc, from), let .dead(name, inc, from):
            return 3 + stringField(name) + varintField(inc) + stringField(from)
        case let .left(name, inc): return 3 + stringField(name) + varintField(inc)
        case let .recordDelta(d): return 3 + d.estimatedSize
        }
    }
}

public struct Ping: Sendable, Hashable {
    public var sequence: UInt64
    public var from: String
    public var fromAddress: String
    /// The member the sender means to probe; a process that is not it ignores the ping (an
    /// address reused by another member after a restart).
    public var target: String
    /// Lifeguard IV.C (buddy system): the incarnation at which the sender suspects the target,
    /// so a suspected member learns it at once and refutes.
    public var suspectedAt: UInt64?
    public var gossip: [Gossip]

    public init(
        sequence: UInt64, from: String, fromAddress: String, target: String,
        suspectedAt: UInt64? = nil, gossip: [Gossip] = []
    ) {
        self.sequence = sequence
        self.from = from
        self.fromAddress = fromAddress
        self.target = target
        self.suspectedAt = suspectedAt
        self.gossip = gossip
    }
}

/// SWIM §3.1: ask `from`'s chosen relay to probe `target` on its behalf.
public struct PingReq: Sendable, Hashable {
    public var sequence: UInt64
    public var from: String
    public var fromAddress: String
    public var target: String
    public var targetAddress: String
    public var gossip: [Gossip]

    public init(sequence: UInt64, from: String, fromAddress: String, target: String, targetAddress: String, gossip: [Gossip] = []) {
        self.sequence = sequence
        self.from = from
        self.fromAddress = fromAddress
        self.target = target
        self.targetAddress = targetAddress
        self.gossip = gossip
    }
}

public struct Ack: Sendable, Hashable {
    public var sequence: UInt64
    public var from: String
    public var gossip: [Gossip]

    public init(sequence: UInt64, from: String, gossip: [Gossip] = []) {
        self.sequence = sequence
        self.from = from
        self.gossip = gossip
    }
}

/// Lifeguard IV.A: a relay that got no ack from the target says so, which tells the requester
/// that its own path to the relay works (a missing nack hints the requester itself is slow).
public struct Nack: Sendable, Hashable {
    public var sequence: UInt64
    public var from: String

    public init(sequence: UInt64, from: String) {
        self.sequence = sequence
        self.from = from
    }
}

public struct GossipPacket: Sendable, Hashable {
    public var from: String
    public var gossip: [Gossip]

    public init(from: String, gossip: [Gossip]) {
        self.from = from
        self.gossip = gossip
    }
}

/// One member as a push-pull carries it.
public struct MemberState: Sendable, Hashable {
    public var incarnation: UInt64
    public var status: MemberStatus
    public var record: NodeRecord

    public init(incarnation: UInt64, status: MemberStatus, record: NodeRecord) {
        self.incarnation = incarnation
        self.status = status
        self.record = record
    }

    public var estimatedSize: Int { 2 + varintField(incarnation) + 2 + 2 + record.estimatedSize }
}

/// Full-state anti-entropy (memberlist's push-pull): heals what piggybacked gossip missed.
public struct PushPull: Sendable, Hashable {
    public var from: String
    public var fromAddress: String
    public var isReply: Bool
    public var isJoin: Bool
    /// Whether the states carry their owners' certificates, and the reply should too: in the
    /// exchanges of a join and of a healed partition, where one side may know members the other
    /// has never heard of. A periodic push-pull between members that know each other sends only
    /// the sender's own certificate: the receiver checks a record against the certificate it
    /// already holds for that member, and asks the owner for its record when it holds none
    /// (docs/ARCHITECTURE.md, "Records are signed"). A certificate is ~480 of a signed record's
    /// ~690 bytes.
    public var wantsCertificates: Bool
    /// Every member the sender knows, itself included.
    public var states: [MemberState]

    public init(
        from: String, fromAddress: String, isReply: Bool, isJoin: Bool, wantsCertificates: Bool = true,
        states: [MemberState]
    ) {
        self.from = from
        self.fromAddress = fromAddress
        self.isReply = isReply
        self.isJoin = isJoin
        self.wantsCertificates = wantsCertificates
        self.states = states
    }
}

/// Asks a member for its full record when a delta arrived that does not apply (a gap); or, with
/// `names`, for the records of members the sender heard of from it without their certificates
/// (docs/membership.md, "Certificates travel to who lacks them"). The second is answered with a
/// push-pull reply holding those of `names` the receiver knows, certificates included.
public struct RecordRequest: Sendable, Hashable {
    public var from: String
    public var fromAddress: String
    /// Empty: the receiver's own record.
    public var names: [String]

    public init(from: String, fromAddress: String, names: [String] = []) {
        self.from = from
        self.fromAddress = fromAddress
        self.names = names
    }
}

public struct RecordReply: Sendable, Hashable {
    public var incarnation: UInt64
    public var record: NodeRecord

    public init(incarnation: UInt64, record: NodeRecord) {
        self.incarnation = incarnation
        self.record = record
    }
}

public enum Message: Sendable, Hashable {
    case ping(Ping)
    case pingReq(PingReq)
    case ack(Ack)
    case nack(Nack)
    case gossip(GossipPacket)
    case pushPull(PushPull)
    case recordRequest(RecordRequest)
    case record(RecordReply)

    /// The member a message says it comes from, where it says so.
    public var senderName: String? {
        switch self {
        case let .ping(p): return p.from
        case let .pingReq(p): return p.from
        case let .ack(a): return a.from
        case let .nack(n): return n.from
        case let .gossip(g): return g.from
        case let .pushPull(p): return p.from
        case let .recordRequest(r): return r.from
        case let .record(r): return r.record.name
        }
    }

    /// Approximate encoded size in bytes, for bandwidth accounting (before the frame layer's
    /// header and compression).
    public var estimatedSize: Int {
        func g(_ list: [Gossip]) -> Int { list.reduce(0) { $0 + $1.estimatedSize } }
        // Two bytes for the envelope's oneof tag and length.
        switch self {
        case let .ping(p):
            return 2 + varintField(p.sequence) + stringField(p.from) + stringField(p.fromAddress) + stringField(p.target)
                + (p.suspectedAt.map(varintField) ?? 0) + g(p.gossip)
        case let .pingReq(p):
            return 2 + varintField(p.sequence) + stringField(p.from) + stringField(p.fromAddress) + stringField(p.target)
                + stringField(p.targetAddress) + g(p.gossip)
        case let .ack(a): return 2 + varintField(a.sequence) + stringField(a.from) + g(a.gossip)
        case let .nack(n): return 2 + varintField(n.sequence) + stringField(n.from)
        case let .gossip(p): return 2 + stringField(p.from) + g(p.gossip)
        case let .pushPull(p):
            return 4 + stringField(p.from) + stringField(p.fromAddress) + 4
                + p.states.reduce(0) { $0 + $1.estimatedSize }
        case let .recordRequest(r):
            return 2 + stringField(r.from) + stringField(r.fromAddress) + r.names.reduce(0) { $0 + stringField($1) }
        case let .record(r): return 4 + varintField(r.incarnation) + r.record.estimatedSize
        }
    }
}
