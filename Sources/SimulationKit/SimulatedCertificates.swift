import Membership

/// Node certificates as the simulator stands them in: the agent's sizes (a certificate of ~480
/// bytes, signatures of ~72) and the agent's verdicts (a record is taken only when its owner's key
/// signed exactly these bytes), without ECDSA's cost. With it a simulation runs every certificate
/// path of the core the agent runs (a certificate left at home and checked against the one held, a
/// member never heard of asked of whoever told us, incarnation proofs), and counts their bytes; with
/// `UnsignedRecords` none of them run (docs/simulation.md, "Signed records").
///
/// The "certificate" is the owner's name padded to 480 bytes; the "signature" a keyed FNV-1a of the
/// message stretched to 72 bytes, which only an authenticator made for that owner computes. Not
/// cryptography: the simulated members are honest, or liars a test scripts.
public struct SimulatedCertificates: RecordAuthenticator {
    public static let certificateBytes = 480
    public static let signatureBytes = 72

    public let owner: String
    public init(owner: String) { self.owner = owner }

    public var certificate: [UInt8] { Self.certificate(of: owner) }
    public func sign(_ message: [UInt8]) -> [UInt8] { Self.mac(owner, message) }
    public func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? {
        guard certificate == Self.certificate(of: name) else { return "its certificate does not name \(name)" }
        return signature == Self.mac(name, message) ? nil : "the signature does not match its certificate"
    }

    static func certificate(of name: String) -> [UInt8] {
        var c = Array("simulated-certificate:\(name):".utf8)
        if c.count < certificateBytes { c += [UInt8](repeating: 0x2e, count: certificateBytes - c.count) }
        return c
    }

    static func mac(_ key: String, _ message: [UInt8]) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in Array("key:\(key):".utf8) {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        for b in message {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        var out: [UInt8] = []
        out.reserveCapacity(signatureBytes + 8)
        var x = h
        while out.count < signatureBytes {
            withUnsafeBytes(of: x.bigEndian) { out.append(contentsOf: $0) }
            x = (x &* 0x100_0000_01b3) ^ 0x9e37_79b9_7f4a_7c15
        }
        return Array(out.prefix(signatureBytes))
    }
}
