import CLZ4
import NIOCore

/// LZ4 block compression (liblz4) for frame payloads.
public enum LZ4 {
    /// Compresses `input` into a block. Returns nil when compression does not make it smaller,
    /// in which case the caller sends the payload as it is.
    public static func compress(_ input: ByteBuffer) -> ByteBuffer? {
        let n = input.readableBytes
        guard n > 0, n <= Int(LZ4_MAX_INPUT_SIZE) else { return nil }
        let bound = Int(LZ4_compressBound(Int32(n)))
        var out = ByteBufferAllocator().buffer(capacity: bound)
        let written = input.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
                Int(
                    LZ4_compress_default(
                        src.baseAddress!.assumingMemoryBound(to: CChar.self),
                        dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                        Int32(n), Int32(bound)))
            }
        }
        guard written > 0, written < n else { return nil }
        return out
    }

    /// Decompresses a block that must expand to exactly `uncompressedLength` bytes.
    /// `LZ4_decompress_safe` never writes past the capacity it is given, and that capacity is
    /// the declared length, already checked against the limit by the caller.
    public static func decompress(_ block: ByteBuffer, uncompressedLength: Int) throws -> ByteBuffer {
        guard uncompressedLength > 0, block.readableBytes > 0 else { throw FrameError.corruptCompressedPayload }
        var out = ByteBufferAllocator().buffer(capacity: uncompressedLength)
        let got = block.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: uncompressedLength) { dst in
                max(
                    0,
                    Int(
                        LZ4_decompress_safe(
                            src.baseAddress!.assumingMemoryBound(to: CChar.self),
                            dst.baseAddress!.assumingMemoryBound(to: CChar.self),
                            Int32(block.readableBytes), Int32(uncompressedLength))))
            }
        }
        guard got == uncompressedLength else { throw FrameError.corruptCompressedPayload }
        return out
    }
}
