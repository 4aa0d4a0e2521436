import NIOCore
import SwiftProtobuf

/// The protocol version in `Hello`; bumped on incompatible wire changes.
public enum WireProtocol {
    /// 2: member records are signed by their owners (docs/ARCHITECTURE.md, "Records are
    /// signed"). An agent of protocol 1 gossips unsigned records, which protocol 2 refuses, so a
    /// mixed cluster would split its views without saying why; the hello says it instead.
    public static let version: UInt32 = 2
}

extension Frame {
    /// A frame carrying a serialized protobuf message.
    public init<M: SwiftProtobuf.Message>(kind: FrameKind, message: M) throws {
        let bytes: [UInt8] = try message.serializedBytes()
        self.init(kind: kind, payload: ByteBuffer(bytes: bytes))
    }

    /// Parses the payload as `type`, naming the frame kind in the error.
    public func decode<M: SwiftProtobuf.Message>(_ type: M.Type) throws -> M {
        do {
            return try M(serializedBytes: Array(payload.readableBytesView))
        } catch {
            throw WireDecodingError(kind: kind, message: String(describing: M.self), underlying: "\(error)")
        }
    }
}

public struct WireDecodingError: Error, CustomStringConvertible, Equatable {
    public var kind: FrameKind
    public var message: String
    public var underlying: String
    public var description: String { "malformed \(message) in a \(kind) frame: \(underlying)" }

    public init(kind: FrameKind, message: String, underlying: String) {
        self.kind = kind
        self.message = message
        self.underlying = underlying
    }
}
