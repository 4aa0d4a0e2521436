import NIOCore

/// Decodes frames from a byte stream, whole or a byte at a time, enforcing `FrameLimits`.
/// Any violation throws a `FrameError`; the pipeline then closes the connection, since a peer
/// that breaks the framing cannot be resynchronised.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    public let limits: FrameLimits

    public init(limits: FrameLimits = .default) { self.limits = limits }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.decodeFrame(from: &buffer, limits: limits) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }

    /// Takes one frame off the front of `buffer`, or nil if it is not all there yet. The header
    /// is validated as soon as it has arrived, so an oversized length is refused before its
    /// payload is buffered.
    public static func decodeFrame(from buffer: inout ByteBuffer, limits: FrameLimits) throws -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self),
            let kindByte = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt8.self),
            let flags = buffer.getInteger(at: buffer.readerIndex + 5, as: UInt8.self)
        else { return nil }
        let payloadLength = Int(length)
        guard payloadLength <= limits.maxFrameBytes else {
            throw FrameError.frameTooLarge(length: payloadLength, limit: limits.maxFrameBytes)
        }
        guard let kind = FrameKind(rawValue: kindByte) else { throw FrameError.unknownKind(kindByte) }
        guard flags & ~FrameFormat.knownFlags == 0 else { throw FrameError.unknownFlags(flags) }
        guard buffer.readableBytes >= FrameFormat.headerBytes + payloadLength else { return nil }

        buffer.moveReaderIndex(forwardBy: FrameFormat.headerBytes)
        var payload = buffer.readSlice(length: payloadLength)!
        if flags & FrameFormat.flagLZ4 != 0 {
            guard let declared = payload.readInteger(as: UInt32.self) else { throw FrameError.corruptCompressedPayload }
            guard Int(declared) <= limits.maxUncompressedBytes else {
                throw FrameError.uncompressedTooLarge(length: Int(declared), limit: limits.maxUncompressedBytes)
            }
            payload = try LZ4.decompress(payload, uncompressedLength: Int(declared))
        }
        return Frame(kind: kind, payload: payload)
    }
}

/// Encodes frames, compressing payloads over the threshold when that helps.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    public let limits: FrameLimits

    public init(limits: FrameLimits = .default) { self.limits = limits }

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        try Self.encode(data, into: &out, limits: limits)
    }

    public static func encode(_ frame: Frame, into out: inout ByteBuffer, limits: FrameLimits) throws {
        let raw = frame.payload.readableBytes
        // The sender checks the receiver's limits too: a frame the peer must refuse would cost
        // us the connection, so it is better refused here with a clear error.
        guard raw <= limits.maxUncompressedBytes else {
            throw FrameError.payloadTooLarge(length: raw, limit: limits.maxUncompressedBytes)
        }
        if raw >= limits.compressionThreshold, let block = LZ4.compress(frame.payload) {
            let length = 4 + block.readableBytes
            guard length <= limits.maxFrameBytes else {
                throw FrameError.payloadTooLarge(length: length, limit: limits.maxFrameBytes)
            }
            out.reserveCapacity(minimumWritableBytes: FrameFormat.headerBytes + length)
            out.writeInteger(UInt32(length))
            out.writeInteger(frame.kind.rawValue)
            out.writeInteger(FrameFormat.flagLZ4)
            out.writeInteger(UInt32(raw))
            out.writeImmutableBuffer(block)
        } else {
            guard raw <= limits.maxFrameBytes else {
                throw FrameError.payloadTooLarge(length: raw, limit: limits.maxFrameBytes)
            }
            out.reserveCapacity(minimumWritableBytes: FrameFormat.headerBytes + raw)
            out.writeInteger(UInt32(raw))
            out.writeInteger(frame.kind.rawValue)
            out.writeInteger(UInt8(0))
            out.writeImmutableBuffer(frame.payload)
        }
    }
}
