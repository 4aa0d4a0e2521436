import COpenSSL
import Synchronization

/// Signatures by node certificates over small messages: what makes a member's gossiped record
/// checkable by everyone who hears it second-hand (docs/ARCHITECTURE.md, "Records are signed").
/// A node signs with the private key of its TLS certificate (ECDSA P-256 with SHA-256, as
/// `microscale tls` issues them); a receiver checks that the signer's certificate chains to the
/// cluster CA (the store the TLS context verifies handshakes with), names the node, and signed
/// the bytes.
///
/// A certificate is verified once and its public key kept (bounded, and re-verified after
/// `reverifyAfter`, so an expired certificate stops being accepted); each signature check is then
/// one ECDSA verification (~60 µs), done only for a record the receiver is about to take.
public final class NodeSignatures: @unchecked Sendable {
    /// The TLS context in use now: a SIGHUP reload (`PeerTransport.reload`) swaps it, and
    /// signatures and checks follow (the new key signs, the new CA bundle checks).
    private let current: @Sendable () -> TLSContext
    private let der = Mutex<(context: ObjectIdentifier, certificate: [UInt8])?>(nil)
    private let keys = Mutex<[[UInt8]: Verified]>([:])
    /// Signatures already found good, by the SHA-256 of what was checked (certificate, name,
    /// signature, message). The same record reaches a member many times: in push-pulls, from
    /// several relays, and again in the same input (its record and its incarnation proof are taken
    /// in separate steps). A check is one ECDSA verification (~60-100 µs, most of a 50-member join's
    /// CPU on one machine); a digest is ~1 µs. Only successes are kept, so a forgery is checked
    /// every time it comes; the certificate is checked first, so an expired one is not let
    /// through by an old entry.
    private let checked = Mutex<Set<[UInt8]>>([])
    /// Good signatures remembered at most (cleared when full).
    public static let checkedCapacity = 8_192

    /// Certificates kept at most: one per member of the largest cluster, with room for rotation.
    public static let capacity = 16_384
    /// How long a verified certificate is trusted before its chain and validity are checked again.
    public static let reverifyAfter: Duration = .seconds(600)

    private final class PublicKey: @unchecked Sendable {
        let key: OpaquePointer
        init(_ key: OpaquePointer) { self.key = key }
        deinit { EVP_PKEY_free(key) }
    }

    private struct Verified {
        var name: String
        var key: PublicKey?
        var refusal: String?
        var at: ContinuousClock.Instant
    }

    public convenience init(context: TLSContext) throws {
        try self.init(current: { context })
    }

    /// Signs and checks with whatever context `current` returns at the time (the transport's).
    public init(current: @escaping @Sendable () -> TLSContext) throws {
        OpenSSLLibrary.initialize()
        self.current = current
        _ = try certificateOf(current())
    }

    /// This node's certificate (DER), as the context in use now holds it.
    public var certificate: [UInt8] { (try? certificateOf(current())) ?? [] }

    private func certificateOf(_ context: TLSContext) throws -> [UInt8] {
        let id = ObjectIdentifier(context)
        if let d = der.withLock({ $0 }), d.context == id { return d.certificate }
        guard let cert = SSL_CTX_get0_certificate(context.ctx) else { throw TLSError.contextSetup("no certificate loaded") }
        let bytes = try Self.der(cert)
        der.withLock { $0 = (id, bytes) }
        // A reloaded CA bundle may trust less: check every certificate again against it.
        keys.withLock { $0.removeAll() }
        checked.withLock { $0.removeAll() }
        return bytes
    }

    private static func der(_ cert: OpaquePointer) throws -> [UInt8] {
        let n = i2d_X509(cert, nil)
        guard n > 0 else { throw TLSError.contextSetup(openSSLErrors()) }
        var out = [UInt8](repeating: 0, count: Int(n))
        let written = out.withUnsafeMutableBufferPointer { buf -> Int32 in
            var p = buf.baseAddress
            return i2d_X509(cert, &p)
        }
        guard written == n else { throw TLSError.contextSetup(openSSLErrors()) }
        return out
    }

    /// This node's signature over `message` (DER-encoded ECDSA); empty if OpenSSL fails, which
    /// receivers then refuse, as they should a record nobody vouches for.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        let context = current()
        guard let key = SSL_CTX_get0_privatekey(context.ctx), let md = EVP_MD_CTX_new() else { return [] }
        defer { withExtendedLifetime(context) {} }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestSignInit(md, nil, EVP_sha256(), nil, key) == 1 else {
            ERR_clear_error()
            return []
        }
        var length = 0
        guard message.withUnsafeBufferPointer({ EVP_DigestSign(md, nil, &length, $0.baseAddress, $0.count) }) == 1, length > 0 else {
            ERR_clear_error()
            return []
        }
        var signature = [UInt8](repeating: 0, count: length)
        let ok = signature.withUnsafeMutableBufferPointer { sig in
            message.withUnsafeBufferPointer { EVP_DigestSign(md, sig.baseAddress, &length, $0.baseAddress, $0.count) }
        }
        guard ok == 1 else {
            ERR_clear_error()
            return []
        }
        return Array(signature.prefix(length))
    }

    /// Why `signature` is not `name`'s signature over `message` under `certificate` (DER), or nil
    /// when it is.
    public func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? {
        if certificate.isEmpty { return "it carries no certificate" }
        if signature.isEmpty { return "it is not signed" }
        let verified = self.verified(certificate)
        if let r = verified.refusal { return r }
        guard verified.name == name else { return "its certificate names \(verified.name)" }
        var what = certificate
        what.reserveCapacity(certificate.count + name.utf8.count + signature.count + message.count + 16)
        for part in [Array(name.utf8), signature, message] {
            withUnsafeBytes(of: UInt64(part.count).bigEndian) { what.append(contentsOf: $0) }
            what.append(contentsOf: part)
        }
        let digest = Digest.sha256(what)
        if checked.withLock({ $0.contains(digest) }) { return nil }
        guard let key = verified.key, let md = EVP_MD_CTX_new() else { return "no key to check it with" }
        defer { EVP_MD_CTX_free(md) }
        guard EVP_DigestVerifyInit(md, nil, EVP_sha256(), nil, key.key) == 1 else {
            ERR_clear_error()
            return "cannot check the signature: \(openSSLErrors())"
        }
        let ok = signature.withUnsafeBufferPointer { sig in
            message.withUnsafeBufferPointer { EVP_DigestVerify(md, sig.baseAddress, sig.count, $0.baseAddress, $0.count) }
        }
        ERR_clear_error()
        guard ok == 1 else { return "the signature does not match its certificate" }
        checked.withLock { set in
            if set.count >= Self.checkedCapacity { set.removeAll(keepingCapacity: true) }
            set.insert(digest)
        }
        return nil
    }

    private func verified(_ certificate: [UInt8]) -> Verified {
        let now = ContinuousClock.now
        if let v = keys.withLock({ $0[certificate] }), now - v.at < Self.reverifyAfter { return v }
        let v = verify(certificate, now)
        keys.withLock { keys in
            if keys.count >= Self.capacity { keys.removeAll(keepingCapacity: true) }
            keys[certificate] = v
        }
        return v
    }

    private func verify(_ der: [UInt8], _ now: ContinuousClock.Instant) -> Verified {
        let context = current()
        defer { withExtendedLifetime(context) {} }
        var failed = Verified(name: "", key: nil, refusal: nil, at: now)
        guard
            let cert = der.withUnsafeBufferPointer({ buf -> OpaquePointer? in
                var p = buf.baseAddress
                return d2i_X509(nil, &p, buf.count)
            })
        else {
            ERR_clear_error()
            failed.refusal = "its certificate does not parse"
            return failed
        }
        defer { X509_free(cert) }
        guard let store = SSL_CTX_get_cert_store(context.ctx), let storeCtx = X509_STORE_CTX_new() else {
            failed.refusal = "cannot check its certificate: \(openSSLErrors())"
            return failed
        }
        defer { X509_STORE_CTX_free(storeCtx) }
        guard X509_STORE_CTX_init(storeCtx, store, cert, nil) == 1 else {
            failed.refusal = "cannot check its certificate: \(openSSLErrors())"
            return failed
        }
        guard X509_verify_cert(storeCtx) == 1 else {
            let reason = String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(storeCtx))))
            ERR_clear_error()
            failed.refusal = "its certificate does not verify against the cluster CA: \(reason)"
            return failed
        }
        guard let identity = PeerIdentity(certificate: cert) else {
            failed.refusal = "its certificate names no node"
            return failed
        }
        guard let key = X509_get_pubkey(cert) else {
            ERR_clear_error()
            failed.refusal = "its certificate has no public key"
            return failed
        }
        return Verified(name: identity.name, key: PublicKey(key), refusal: nil, at: now)
    }
}
