import COpenSSL

/// Message digests from the system OpenSSL, for checksums of files the agent writes and reads back
/// (a backup), where a torn or edited file must be told from a good one.
public enum Digest {
    /// SHA-256 (FIPS 180-4) of `bytes`.
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        OpenSSLLibrary.initialize()
        var out = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                var size: UInt32 = 32
                _ = EVP_Digest(input.baseAddress, input.count, output.baseAddress, &size, EVP_sha256(), nil)
            }
        }
        return out
    }

    /// Lowercase hexadecimal, as `sha256sum` prints it.
    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
