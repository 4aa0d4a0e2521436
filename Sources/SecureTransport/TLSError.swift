import COpenSSL

/// Why a TLS context could not be built or a connection was refused. Every case reads as a
/// sentence an operator can act on.
public enum TLSError: Error, Equatable, CustomStringConvertible, Sendable {
    /// A file named in the configuration could not be used.
    case badFile(role: String, path: String, reason: String)
    case contextSetup(String)
    case handshakeFailed(String)
    case handshakeTimeout(seconds: Double)
    case peerVerificationFailed(String)
    case noPeerCertificate
    case peerNameMismatch(expected: String, actual: String)
    case helloMismatch(certificate: String, claimed: String)
    case protocolViolation(String)
    case issuance(String)

    public var description: String {
        switch self {
        case let .badFile(role, path, reason): return "cannot use \(role) file \(path): \(reason)"
        case let .contextSetup(reason): return "TLS setup failed: \(reason)"
        case let .handshakeFailed(reason): return "TLS handshake failed: \(reason)"
        case let .handshakeTimeout(seconds): return "TLS handshake did not complete within \(seconds) s"
        case let .peerVerificationFailed(reason): return "peer certificate refused: \(reason)"
        case .noPeerCertificate: return "peer presented no certificate (mutual TLS is required)"
        case let .peerNameMismatch(expected, actual):
            return "peer certificate names \(actual.isEmpty ? "no node" : actual), expected \(expected)"
        case let .helloMismatch(certificate, claimed):
            return "peer claims to be \(claimed) but its certificate names \(certificate)"
        case let .protocolViolation(reason): return "protocol violation: \(reason)"
        case let .issuance(reason): return "certificate issuance failed: \(reason)"
        }
    }
}

/// Drains OpenSSL's thread-local error queue into one readable line.
func openSSLErrors(_ fallback: String = "unknown OpenSSL error") -> String {
    var parts: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        // "error:0A000086:SSL routines::certificate verify failed" -> keep the reason part.
        let full = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let reason = full.split(separator: ":", omittingEmptySubsequences: false).last.map(String.init) ?? full
        if !parts.contains(reason) { parts.append(reason) }
    }
    return parts.isEmpty ? fallback : parts.joined(separator: "; ")
}
