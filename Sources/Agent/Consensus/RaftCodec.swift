import Consensus
import Foundation
import Wire

/// Raft messages on the wire (proto/raft.proto), in frames of kind `.raft`. The pure core has its own
/// types; this is the only place that knows both.
public enum RaftCodec {
    public static func frame(_ m: RaftMessage) throws -> Frame {
        try Frame(kind: .raft, message: encode(m))
    }

    public static func decode(_ frame: Frame) throws -> RaftMessage {
        try decode(frame.decode(Microscale_Raft_Message.self))
    }

    /// Snapshots travel in chunks of this many bytes (a frame holds at most 1 MiB).
    public static let snapshotChunkBytes = 512 * 1024

    /// Where a chunk of a snapshot sits in the whole (Raft §7: offset, data, done).
    public struct SnapshotChunk: Sendable, Hashable {
        public var offset: Int
        public var size: Int
    }

    /// The frames that carry `m`: one, or an InstallSnapshot whose state is larger than a frame in
    /// chunks of `chunkBytes`, in order, each with the message's header and snapshot metadata.
    public static func frames(_ m: RaftMessage, chunkBytes: Int = snapshotChunkBytes) throws -> [Frame] {
        guard m.kind == .installSnapshot, let s = m.snapshot, s.data.count > chunkBytes else { return [try frame(m)] }
        var header = m
        header.snapshot?.data = []
        var p = encode(header)
        p.snapshotSize = UInt64(s.data.count)
        var out: [Frame] = []
        out.reserveCapacity(s.data.count / chunkBytes + 1)
        var offset = 0
        while offset < s.data.count {
            let end = min(offset + chunkBytes, s.data.count)
            p.snapshotOffset = UInt64(offset)
            p.snapshot.data = Data(s.data[offset..<end])
            out.append(try Frame(kind: .raft, message: p))
            offset = end
        }
        return out
    }

    /// A message, and where its snapshot data sits when it is one chunk of a larger snapshot.
    public static func decodeChunk(_ frame: Frame) throws -> (RaftMessage, SnapshotChunk?) {
        let p = try frame.decode(Microscale_Raft_Message.self)
        let m = try decode(p)
        guard p.snapshotSize > 0 || p.snapshotOffset > 0 else { return (m, nil) }
        guard m.kind == .installSnapshot, m.snapshot != nil, p.snapshotSize <= UInt64(Int.max),
            p.snapshotOffset < p.snapshotSize
        else {
            throw WireDecodingError(
                kind: .raft, message: "raft message", underlying: "snapshot chunk at \(p.snapshotOffset) of \(p.snapshotSize) bytes")
        }
        return (m, SnapshotChunk(offset: Int(p.snapshotOffset), size: Int(p.snapshotSize)))
    }

    static let kinds: [(RaftMessage.Kind, Microscale_Raft_MessageType)] = [
        (.append, .msgAppend), (.appendResponse, .msgAppendResponse), (.vote, .msgVote),
        (.voteResponse, .msgVoteResponse), (.preVote, .msgPreVote), (.preVoteResponse, .msgPreVoteResponse),
        (.heartbeat, .msgHeartbeat), (.heartbeatResponse, .msgHeartbeatResponse),
        (.installSnapshot, .msgSnapshot), (.timeoutNow, .msgTimeoutNow), (.readIndex, .msgReadIndex),
        (.readIndexResponse, .msgReadIndexResponse),
    ]

    public static func encode(_ m: RaftMessage) -> Microscale_Raft_Message {
        var p = Microscale_Raft_Message()
        p.type = kinds.first { $0.0 == m.kind }!.1
        p.from = m.from
        p.to = m.to
        p.term = m.term
        p.logTerm = m.logTerm
        p.index = m.index
        p.entries = m.entries.map(encode)
        p.commit = m.commit
        p.reject = m.reject
        p.rejectHint = m.rejectHint
        if let s = m.snapshot { p.snapshot = encode(s) }
        p.context = Data(m.context)
        p.readRound = m.readRound
        p.transfer = m.transfer
        return p
    }

    public static func decode(_ p: Microscale_Raft_Message) throws -> RaftMessage {
        guard let kind = kinds.first(where: { $0.1 == p.type })?.0 else {
            throw WireDecodingError(kind: .raft, message: "raft message", underlying: "unknown type \(p.type.rawValue)")
        }
        var m = RaftMessage(kind: kind, from: p.from, to: p.to, term: p.term)
        m.logTerm = p.logTerm
        m.index = p.index
        m.entries = try p.entries.map(decode)
        m.commit = p.commit
        m.reject = p.reject
        m.rejectHint = p.rejectHint
        if p.hasSnapshot { m.snapshot = decode(p.snapshot) }
        m.context = Array(p.context)
        m.readRound = p.readRound
        m.transfer = p.transfer
        return m
    }

    static func encode(_ e: Entry) -> Microscale_Raft_Entry {
        var p = Microscale_Raft_Entry()
        p.term = e.term
        p.index = e.index
        p.type = e.kind == .configuration ? .entryConfigChange : .entryNormal
        p.data = Data(e.data)
        return p
    }

    static func decode(_ p: Microscale_Raft_Entry) throws -> Entry {
        let kind: Entry.Kind
        switch p.type {
        case .entryNormal: kind = .normal
        case .entryConfigChange: kind = .configuration
        case .UNRECOGNIZED(let v):
            throw WireDecodingError(kind: .raft, message: "raft entry", underlying: "unknown entry type \(v)")
        }
        return Entry(term: p.term, index: p.index, kind: kind, data: Array(p.data))
    }

    static func encode(_ s: Snapshot) -> Microscale_Raft_Snapshot {
        var p = Microscale_Raft_Snapshot()
        p.metadata.index = s.index
        p.metadata.term = s.term
        p.metadata.conf.voters = s.configuration.voters.sorted()
        p.metadata.conf.learners = s.configuration.learners.sorted()
        p.data = Data(s.data)
        return p
    }

    static func decode(_ p: Microscale_Raft_Snapshot) -> Snapshot {
        Snapshot(
            index: p.metadata.index, term: p.metadata.term,
            configuration: Configuration(voters: Set(p.metadata.conf.voters), learners: Set(p.metadata.conf.learners)),
            data: Array(p.data))
    }
}
