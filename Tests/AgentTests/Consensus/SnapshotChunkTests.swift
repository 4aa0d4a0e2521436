import Consensus
import Testing
import Wire

@testable import Agent

/// A snapshot larger than a frame (1 MiB) travels in chunks and is put back together, once, by the
/// follower (Raft §7: offset, data, done). Before, a state over the frame limit never left the
/// leader: the encoder refused it and a far-behind follower waited forever.
@Suite struct SnapshotChunkTests {
    func snapshotMessage(bytes: Int, index: UInt64 = 30) -> RaftMessage {
        var m = RaftMessage(kind: .installSnapshot, from: "s1", to: "s2", term: 7)
        m.snapshot = Snapshot(
            index: index, term: 5, configuration: Configuration(voters: ["s1", "s2", "s3"]),
            data: (0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        return m
    }

    @Test func aTenMebibyteSnapshotIsSentInChunksUnderTheFrameLimitAndReassembledWhole() throws {
        let m = snapshotMessage(bytes: 10 << 20)
        let frames = try RaftCodec.frames(m)
        #expect(frames.count == 20)
        var assembler = SnapshotAssembler()
        var whole: RaftMessage?
        for (i, f) in frames.enumerated() {
            let (part, chunk) = try RaftCodec.decodeChunk(f)
            let c = try #require(chunk)
            #expect(c.offset == i * RaftCodec.snapshotChunkBytes && c.size == 10 << 20)
            let done = try assembler.add(part, chunk: c)
            #expect((done != nil) == (i == frames.count - 1))
            if let done { whole = done }
        }
        #expect(whole == m)
    }

    @Test func aSmallSnapshotStaysOneFrameWithoutChunkFields() throws {
        let m = snapshotMessage(bytes: 1000)
        let frames = try RaftCodec.frames(m)
        #expect(frames.count == 1)
        let (back, chunk) = try RaftCodec.decodeChunk(frames[0])
        #expect(back == m && chunk == nil)
    }

    @Test func aChunkOutOfOrderOrOfAnotherSnapshotStartsOverInsteadOfMixingStates() throws {
        let frames = try RaftCodec.frames(snapshotMessage(bytes: 3 << 20), chunkBytes: 1 << 20)
        let other = try RaftCodec.frames(snapshotMessage(bytes: 3 << 20, index: 31), chunkBytes: 1 << 20)
        var a = SnapshotAssembler()
        let (p0, c0) = try RaftCodec.decodeChunk(frames[0])
        #expect(try a.add(p0, chunk: #require(c0)) == nil)
        let (p2, c2) = try RaftCodec.decodeChunk(frames[2])
        #expect(throws: SnapshotAssembler.Refusal.self) { try a.add(p2, chunk: #require(c2)) }
        // After the refusal nothing of the first copy is kept: the middle chunk alone does not fit.
        let (p1, c1) = try RaftCodec.decodeChunk(frames[1])
        #expect(throws: SnapshotAssembler.Refusal.self) { try a.add(p1, chunk: #require(c1)) }
        // A chunk of another snapshot in the middle of one is refused too.
        #expect(try a.add(p0, chunk: #require(c0)) == nil)
        let (q1, d1) = try RaftCodec.decodeChunk(other[1])
        #expect(throws: SnapshotAssembler.Refusal.self) { try a.add(q1, chunk: #require(d1)) }
    }

    @Test func aSnapshotOverTheAssemblyLimitIsRefusedBeforeAnythingIsKept() throws {
        var m = snapshotMessage(bytes: 10)
        m.snapshot?.data = [1]
        var a = SnapshotAssembler()
        #expect(throws: SnapshotAssembler.Refusal.tooLarge(size: SnapshotAssembler.maxBytes + 1)) {
            try a.add(m, chunk: RaftCodec.SnapshotChunk(offset: 0, size: SnapshotAssembler.maxBytes + 1))
        }
    }

    @Test func aChunkFrameThatLiesAboutItsPlaceIsRefusedByTheDecoder() throws {
        var p = RaftCodec.encode(snapshotMessage(bytes: 10))
        p.snapshotOffset = 20
        p.snapshotSize = 10
        #expect(throws: (any Error).self) { try RaftCodec.decodeChunk(Wire.Frame(kind: .raft, message: p)) }
    }
}
