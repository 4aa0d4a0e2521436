import Consensus

/// Puts a snapshot that arrived in chunks back together, one peer at a time (Raft §7: the follower
/// writes each chunk at its offset and applies the snapshot once the last one is in). Chunks come
/// in order: one sender task per peer writes one connection. Anything out of order, or a different
/// snapshot, starts over; the leader sends the snapshot again when the follower does not answer.
///
/// Bounded: one snapshot in assembly per peer, at most `maxBytes` each, and at most `maxPeers`
/// peers (servers in the configuration, a handful).
struct SnapshotAssembler {
    static let maxBytes = 256 << 20
    static let maxPeers = 16

    enum Refusal: Error, Equatable, CustomStringConvertible {
        case tooLarge(size: Int)
        case outOfOrder(offset: Int, expected: Int)
        case beyondSize(end: Int, size: Int)

        var description: String {
            switch self {
            case .tooLarge(let size): "snapshot of \(size) bytes is over the limit of \(SnapshotAssembler.maxBytes)"
            case .outOfOrder(let offset, let expected): "snapshot chunk at \(offset), expected \(expected)"
            case .beyondSize(let end, let size): "snapshot chunk ends at \(end), beyond the snapshot's \(size) bytes"
            }
        }
    }

    private struct Partial {
        var index: UInt64
        var term: UInt64
        var size: Int
        var data: [UInt8]
    }

    private var partial: [NodeID: Partial] = [:]

    /// Adds one chunk; returns the whole message once its last chunk is in, nil while more are
    /// expected, and throws (dropping what was assembled from that peer) on a chunk that does not fit.
    mutating func add(_ m: RaftMessage, chunk: RaftCodec.SnapshotChunk) throws(Refusal) -> RaftMessage? {
        guard let s = m.snapshot else { return nil }
        guard chunk.size <= Self.maxBytes else {
            partial[m.from] = nil
            throw .tooLarge(size: chunk.size)
        }
        if chunk.offset == 0 {
            if partial[m.from] == nil, partial.count >= Self.maxPeers { partial.removeAll() }
            var data: [UInt8] = []
            data.reserveCapacity(chunk.size)
            partial[m.from] = Partial(index: s.index, term: s.term, size: chunk.size, data: data)
        }
        guard var p = partial.removeValue(forKey: m.from) else { throw .outOfOrder(offset: chunk.offset, expected: 0) }
        guard p.index == s.index, p.term == s.term, p.size == chunk.size, chunk.offset == p.data.count else {
            throw .outOfOrder(offset: chunk.offset, expected: p.data.count)
        }
        let end = chunk.offset + s.data.count
        guard end <= p.size else { throw .beyondSize(end: end, size: p.size) }
        p.data.append(contentsOf: s.data)
        guard p.data.count == p.size else {
            partial[m.from] = p
            return nil
        }
        var whole = m
        whole.snapshot?.data = p.data
        return whole
    }
}
