import NIOCore
import NIOEmbedded
import Testing

@testable import Wire

@Suite struct FrameCodecTests {
    func channel(limits: FrameLimits = .default) throws -> EmbeddedChannel {
        let ch = EmbeddedChannel()
        try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(limits: limits)))
        try ch.pipeline.syncOperations.addHandler(MessageToByteHandler(FrameEncoder(limits: limits)))
        return ch
    }

    func encoded(_ frames: [Frame], limits: FrameLimits = .default) throws -> ByteBuffer {
        var out = ByteBuffer()
        for f in frames { try FrameEncoder.encode(f, into: &out, limits: limits) }
        return out
    }

    func text(_ s: String, kind: FrameKind = .membership) -> Frame {
        Frame(kind: kind, payload: ByteBuffer(string: s))
    }

    /// A node-state-like payload: repetitive, as real ones are, so LZ4 has something to do.
    func realisticPayload(bytes: Int) -> ByteBuffer {
        var b = ByteBuffer()
        var i = 0
        while b.readableBytes < bytes {
            b.writeString("{\"service\":\"web-\(i % 7)\",\"running\":\(i % 13),\"node\":\"node-\(i % 5)\"}")
            i += 1
        }
        return b.getSlice(at: 0, length: bytes)!
    }

    @Test func framesWrittenWholeAreReadBackInOrder() throws {
        let ch = try channel()
        let frames = [text("a", kind: .hello), text("bb", kind: .raft), Frame(kind: .control, payload: realisticPayload(bytes: 4000))]
        try ch.writeInbound(try encoded(frames))
        for f in frames { #expect(try ch.readInbound(as: Frame.self) == f) }
        #expect(try ch.readInbound(as: Frame.self) == nil)
    }

    @Test func framesFedOneByteAtATimeAreReadBackInOrder() throws {
        let ch = try channel()
        let frames = [text("hello"), Frame(kind: .raft, payload: realisticPayload(bytes: 2048)), text("", kind: .goodbye)]
        let bytes = try encoded(frames)
        var delivered: [Frame] = []
        for byte in bytes.readableBytesView {
            try ch.writeInbound(ByteBuffer(bytes: [byte]))
            while let f = try ch.readInbound(as: Frame.self) { delivered.append(f) }
        }
        #expect(delivered == frames)
    }

    @Test func theEncoderWritesTheDocumentedHeader() throws {
        let ch = try channel()
        try ch.writeOutbound(text("xyz", kind: .raft))
        var out = try ch.readOutbound(as: ByteBuffer.self) ?? ByteBuffer()
        #expect(out.readInteger(as: UInt32.self) == 3)
        #expect(out.readInteger(as: UInt8.self) == FrameKind.raft.rawValue)
        #expect(out.readInteger(as: UInt8.self) == 0)
        #expect(out.readString(length: 3) == "xyz")
    }

    @Test func payloadsOverTheThresholdAreCompressedAndCarryTheirLength() throws {
        let payload = realisticPayload(bytes: 8192)
        var out = try encoded([Frame(kind: .membership, payload: payload)])
        let length = out.readInteger(as: UInt32.self) ?? 0
        _ = out.readInteger(as: UInt8.self)
        #expect(out.readInteger(as: UInt8.self) == FrameFormat.flagLZ4)
        #expect(out.readInteger(as: UInt32.self) == 8192)
        #expect(Int(length) < 8192 / 2, "a repetitive payload should at least halve")
    }

    @Test func smallPayloadsAreSentAsTheyAre() throws {
        var out = try encoded([Frame(kind: .membership, payload: realisticPayload(bytes: 100))])
        out.moveReaderIndex(forwardBy: 5)
        #expect(out.readInteger(as: UInt8.self) == 0)
    }

    @Test func incompressiblePayloadsAreSentAsTheyAre() throws {
        var rng = SystemRandomNumberGenerator()
        let noise = ByteBuffer(bytes: (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) })
        var out = try encoded([Frame(kind: .raft, payload: noise)])
        #expect(out.readInteger(as: UInt32.self) == 4096)
        out.moveReaderIndex(forwardBy: 1)
        #expect(out.readInteger(as: UInt8.self) == 0)
    }

    @Test func lz4RoundTripsPayloadsOfManySizes() throws {
        for size in [1, 15, 511, 512, 513, 4096, 65_536, 1 << 20] {
            let p = realisticPayload(bytes: size)
            if let block = LZ4.compress(p) {
                #expect(try LZ4.decompress(block, uncompressedLength: size) == p, "size \(size)")
            }
            let ch = try channel()
            try ch.writeInbound(try encoded([Frame(kind: .control, payload: p)]))
            #expect(try ch.readInbound(as: Frame.self)?.payload == p, "size \(size)")
        }
    }

    @Test func aFrameOverTheLimitIsRefusedFromItsHeaderAlone() throws {
        let ch = try channel(limits: FrameLimits(maxFrameBytes: 1024))
        var header = ByteBuffer()
        header.writeInteger(UInt32(1025))
        header.writeInteger(FrameKind.raft.rawValue)
        header.writeInteger(UInt8(0))
        #expect(throws: FrameError.frameTooLarge(length: 1025, limit: 1024)) { try ch.writeInbound(header) }
    }

    @Test func aDecompressionBombIsRefusedBeforeDecompressing() throws {
        let ch = try channel()
        // A tiny frame that claims to expand to 1 GiB.
        let block = try #require(LZ4.compress(self.realisticPayload(bytes: 4096)))
        var bomb = ByteBuffer()
        bomb.writeInteger(UInt32(4 + block.readableBytes))
        bomb.writeInteger(FrameKind.membership.rawValue)
        bomb.writeInteger(FrameFormat.flagLZ4)
        bomb.writeInteger(UInt32(1 << 30))
        bomb.writeImmutableBuffer(block)
        #expect(throws: FrameError.uncompressedTooLarge(length: 1 << 30, limit: 1 << 20)) { try ch.writeInbound(bomb) }
    }

    @Test func aBlockThatExpandsPastItsDeclaredLengthIsRefused() throws {
        let ch = try channel()
        let block = try #require(LZ4.compress(self.realisticPayload(bytes: 4096)))
        var liar = ByteBuffer()
        liar.writeInteger(UInt32(4 + block.readableBytes))
        liar.writeInteger(FrameKind.membership.rawValue)
        liar.writeInteger(FrameFormat.flagLZ4)
        liar.writeInteger(UInt32(100))
        liar.writeImmutableBuffer(block)
        #expect(throws: FrameError.corruptCompressedPayload) { try ch.writeInbound(liar) }
    }

    @Test func unknownKindsAndFlagsAreRefused() throws {
        var unknownKind = ByteBuffer()
        unknownKind.writeInteger(UInt32(0))
        unknownKind.writeInteger(UInt8(200))
        unknownKind.writeInteger(UInt8(0))
        #expect(throws: FrameError.unknownKind(200)) { try channel().writeInbound(unknownKind) }

        var unknownFlags = ByteBuffer()
        unknownFlags.writeInteger(UInt32(0))
        unknownFlags.writeInteger(FrameKind.raft.rawValue)
        unknownFlags.writeInteger(UInt8(0x80))
        #expect(throws: FrameError.unknownFlags(0x80)) { try channel().writeInbound(unknownFlags) }
    }

    @Test func theEncoderRefusesAPayloadThePeerWouldRefuse() throws {
        var out = ByteBuffer()
        let big = Frame(kind: .raft, payload: ByteBuffer(repeating: 1, count: 2048))
        #expect(throws: FrameError.payloadTooLarge(length: 2048, limit: 1024)) {
            try FrameEncoder.encode(big, into: &out, limits: FrameLimits(maxFrameBytes: 1024, maxUncompressedBytes: 1024))
        }
    }

    @Test func protobufMessagesRoundTripThroughFrames() throws {
        var hello = Microscale_Wire_Hello()
        hello.nodeName = "node-a"
        hello.cluster = "prod"
        hello.protocolVersion = WireProtocol.version
        hello.server = true
        let frame = try Frame(kind: .hello, message: hello)
        let ch = try channel()
        try ch.writeInbound(try encoded([frame]))
        let back = try #require(try ch.readInbound(as: Frame.self))
        #expect(try back.decode(Microscale_Wire_Hello.self) == hello)
    }

    @Test func aMalformedMessageNamesItsKindAndType() throws {
        let junk = Frame(kind: .raft, payload: ByteBuffer(bytes: [0xFF, 0xFF, 0xFF]))
        #expect(throws: WireDecodingError.self) { try junk.decode(Microscale_Raft_Message.self) }
        do {
            _ = try junk.decode(Microscale_Raft_Message.self)
        } catch let e as WireDecodingError {
            #expect(e.description.contains("Microscale_Raft_Message"))
            #expect(e.description.contains("raft"))
        }
    }
}
