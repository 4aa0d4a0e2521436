import NIOCore

/// What a frame's payload holds.
public enum FrameKind: UInt8, Sendable, CaseIterable {
    /// `Microscale_Wire_Hello`, the first frame each side sends.
    case hello = 1
    /// `Microscale_Wire_Goodbye`, a refusal or graceful close.
    case goodbye = 2
    /// `Microscale_Membership_MembershipMessage`.
    case membership = 3
    /// `Microscale_Raft_Message`.
    case raft = 4
    /// `Microscale_Control_ControlMessage`.
    case control = 5
}

/// One frame: kind and (uncompressed) payload. Compression is the codec's business, so the
/// rest of the system never sees an LZ4 block.
public struct Frame: Sendable, Equatable {
    public var kind: FrameKind
    public var payload: ByteBuffer

    public init(kind: FrameKind, payload: ByteBuffer) {
        self.kind = kind
        self.payload = payload
    }
}

/// The limits every connection enforces. A peer that exceeds one is not trusted further: the
/// decoder throws and the connection is closed.
public struct FrameLimits: Sendable, Hashable {
    /// Largest payload accepted on the wire (compressed or not).
    public var maxFrameBytes: Int
    /// Largest payload after decompression. Checked against the declared size BEFORE any
    /// memory is allocated for it, so a decompression bomb costs the receiver nothing.
    public var maxUncompressedBytes: Int
    /// Payloads at least this large are LZ4-compressed when that makes them smaller.
    public var compressionThreshold: Int

    public init(maxFrameBytes: Int = 1 << 20, maxUncompressedBytes: Int = 1 << 20, compressionThreshold: Int = 512) {
        self.maxFrameBytes = maxFrameBytes
        self.maxUncompressedBytes = maxUncompressedBytes
        self.compressionThreshold = compressionThreshold
    }

    public static let `default` = FrameLimits()
}

/// Why a frame was refused.
public enum FrameError: Error, Equatable, CustomStringConvertible {
    case frameTooLarge(length: Int, limit: Int)
    case uncompressedTooLarge(length: Int, limit: Int)
    case unknownKind(UInt8)
    case unknownFlags(UInt8)
    case corruptCompressedPayload
    case payloadTooLarge(length: Int, limit: Int)

    public var description: String {
        switch self {
        case let .frameTooLarge(length, limit):
            return "frame of \(length) bytes exceeds the limit of \(limit) bytes"
        case let .uncompressedTooLarge(length, limit):
            return "compressed frame declares \(length) uncompressed bytes, over the limit of \(limit) bytes"
        case let .unknownKind(kind):
            return "unknown frame kind \(kind)"
        case let .unknownFlags(flags):
            return "unknown frame flags 0x\(String(flags, radix: 16))"
        case .corruptCompressedPayload:
            return "compressed payload does not decompress to its declared size"
        case let .payloadTooLarge(length, limit):
            return "refusing to send a payload of \(length) bytes, over the limit of \(limit) bytes"
        }
    }
}

/// The frame layout, in one place.
///
///     0       4      5       6
///     +-------+------+-------+-------------------------+
///     |length | kind | flags | payload (length bytes)  |
///     +-------+------+-------+-------------------------+
///
/// `length` is big-endian and counts the payload only. Flag bit 0 marks an LZ4 block payload,
/// which then starts with its own 4-byte big-endian uncompressed length.
public enum FrameFormat {
    public static let headerBytes = 6
    public static let flagLZ4: UInt8 = 0x01
    static let knownFlags: UInt8 = flagLZ4
}
