import COpenSSL
import Foundation

/// Makes the cluster CA and node certificates for `microscale tls` with the OpenSSL library
/// (never by running the openssl program), in the spirit of `consul tls`:
///
/// - keys are ECDSA P-256: small, fast to sign and verify, accepted by every TLS 1.3 stack;
/// - the CA is constrained to sign leaf certificates only (pathlen 0);
/// - a node certificate names the node in its common name and as a DNS subject alternative
///   name, carries the addresses it may be reached at, is good for both TLS server and client
///   authentication (agents dial and accept), and a server's also carries
///   `PeerIdentity.serverMarker`;
/// - private keys are written with mode 0600 and nothing is overwritten without `force`.
public enum CertificateIssuer {
    public static let caCertificateName = "ca.pem"
    public static let caKeyName = "ca-key.pem"

    public struct Written: Sendable, Equatable {
        public var certificate: String
        public var key: String
    }

    /// Validity of a certificate relative to now. The default starts five minutes in the past
    /// so that hosts whose clocks lag a little accept a certificate made a moment ago.
    public struct Validity: Sendable {
        public var notBeforeOffset: TimeInterval
        public var notAfterOffset: TimeInterval

        public init(days: Int) {
            notBeforeOffset = -300
            notAfterOffset = TimeInterval(days) * 86_400
        }

        public init(notBeforeOffset: TimeInterval, notAfterOffset: TimeInterval) {
            self.notBeforeOffset = notBeforeOffset
            self.notAfterOffset = notAfterOffset
        }
    }

    // MARK: CA

    @discardableResult
    public static func createCA(
        in dir: String, validity: Validity = Validity(days: 1825), commonName: String = "Microscale Cluster CA", force: Bool = false
    ) throws -> Written {
        OpenSSLLibrary.initialize()
        let certPath = (dir as NSString).appendingPathComponent(caCertificateName)
        let keyPath = (dir as NSString).appendingPathComponent(caKeyName)
        try prepare(dir: dir, outputs: [certPath, keyPath], force: force)
        let key = try generateKey()
        defer { EVP_PKEY_free(key) }
        guard let cert = X509_new() else { throw TLSError.issuance(openSSLErrors()) }
        defer { X509_free(cert) }
        try fill(cert, subject: commonName, key: key, validity: validity)
        guard X509_set_issuer_name(cert, X509_get_subject_name(cert)) == 1 else { throw TLSError.issuance(openSSLErrors()) }
        try addExtensions(
            to: cert, issuer: cert,
            [
                (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
                (NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"),
                (NID_subject_key_identifier, "hash"),
                (NID_authority_key_identifier, "keyid:always"),
            ])
        guard X509_sign(cert, key, EVP_sha256()) > 0 else { throw TLSError.issuance(openSSLErrors()) }
        try write(pem: pemCertificate(cert), to: certPath, mode: 0o644, force: force)
        try write(pem: pemPrivateKey(key), to: keyPath, mode: 0o600, force: force)
        return Written(certificate: certPath, key: keyPath)
    }

    // MARK: Node certificates

    @discardableResult
    public static func createNodeCertificate(
        caDir: String, node: String, server: Bool, addresses: [String] = [], in dir: String,
        validity: Validity = Validity(days: 365), force: Bool = false
    ) throws -> Written {
        OpenSSLLibrary.initialize()
        try validate(nodeName: node)
        let certPath = (dir as NSString).appendingPathComponent("\(node).pem")
        let keyPath = (dir as NSString).appendingPathComponent("\(node)-key.pem")
        let caCertPath = (caDir as NSString).appendingPathComponent(caCertificateName)
        let caKeyPath = (caDir as NSString).appendingPathComponent(caKeyName)
        let caCert = try readCertificate(caCertPath)
        defer { X509_free(caCert) }
        let caKey = try readPrivateKey(caKeyPath)
        defer { EVP_PKEY_free(caKey) }
        guard X509_check_private_key(caCert, caKey) == 1 else {
            ERR_clear_error()
            throw TLSError.badFile(role: "CA key", path: caKeyPath, reason: "does not match \(caCertPath)")
        }
        try prepare(dir: dir, outputs: [certPath, keyPath], force: force)

        var sans = ["DNS:\(node)"]
        if server { sans.append("DNS:\(PeerIdentity.serverMarker)") }
        sans.append("DNS:localhost")
        sans.append("IP:127.0.0.1")
        for address in addresses where !address.isEmpty {
            let entry = isIPAddress(address) ? "IP:\(address)" : "DNS:\(address)"
            if !sans.contains(entry) { sans.append(entry) }
        }

        let key = try generateKey()
        defer { EVP_PKEY_free(key) }
        guard let cert = X509_new() else { throw TLSError.issuance(openSSLErrors()) }
        defer { X509_free(cert) }
        try fill(cert, subject: node, key: key, validity: validity)
        guard X509_set_issuer_name(cert, X509_get_subject_name(caCert)) == 1 else { throw TLSError.issuance(openSSLErrors()) }
        try addExtensions(
            to: cert, issuer: caCert,
            [
                (NID_basic_constraints, "critical,CA:FALSE"),
                (NID_key_usage, "critical,digitalSignature"),
                (NID_ext_key_usage, "serverAuth,clientAuth"),
                (NID_subject_alt_name, sans.joined(separator: ",")),
                (NID_subject_key_identifier, "hash"),
                (NID_authority_key_identifier, "keyid:always"),
            ])
        guard X509_sign(cert, caKey, EVP_sha256()) > 0 else { throw TLSError.issuance(openSSLErrors()) }
        try write(pem: pemCertificate(cert), to: certPath, mode: 0o644, force: force)
        try write(pem: pemPrivateKey(key), to: keyPath, mode: 0o600, force: force)
        return Written(certificate: certPath, key: keyPath)
    }

    /// Node names become DNS names in certificates, so they follow DNS label rules.
    public static func validate(nodeName: String) throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        guard !nodeName.isEmpty, nodeName.count <= 63 else {
            throw TLSError.issuance("node name must be 1 to 63 characters, got \(nodeName.count)")
        }
        if let bad = nodeName.first(where: { !allowed.contains($0) }) {
            throw TLSError.issuance("node name \"\(nodeName)\" contains \"\(bad)\"; use letters, digits, '-' and '.'")
        }
        guard nodeName.first != "-", nodeName.last != "-", nodeName != PeerIdentity.serverMarker else {
            throw TLSError.issuance("node name \"\(nodeName)\" is not a valid DNS name")
        }
    }

    // MARK: Pieces

    private static func generateKey() throws -> OpaquePointer {
        guard let kctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else { throw TLSError.issuance(openSSLErrors()) }
        defer { EVP_PKEY_CTX_free(kctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(kctx) == 1,
            EVP_PKEY_CTX_set_group_name(kctx, "P-256") == 1,
            EVP_PKEY_generate(kctx, &key) == 1, let key
        else { throw TLSError.issuance(openSSLErrors()) }
        return key
    }

    private static func fill(_ cert: OpaquePointer, subject: String, key: OpaquePointer, validity: Validity) throws {
        guard X509_set_version(cert, 2) == 1 else { throw TLSError.issuance(openSSLErrors()) }
        // 128 random bits of serial: unique without keeping a serial file (RFC 5280 §4.1.2.2).
        guard let bn = BN_new() else { throw TLSError.issuance(openSSLErrors()) }
        defer { BN_free(bn) }
        guard BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1,
            BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != nil
        else { throw TLSError.issuance(openSSLErrors()) }
        guard X509_gmtime_adj(X509_getm_notBefore(cert), Int(validity.notBeforeOffset)) != nil,
            X509_gmtime_adj(X509_getm_notAfter(cert), Int(validity.notAfterOffset)) != nil
        else { throw TLSError.issuance(openSSLErrors()) }
        guard let name = X509_get_subject_name(cert),
            X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, "Microscale", -1, -1, 0) == 1,
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, subject, -1, -1, 0) == 1,
            X509_set_pubkey(cert, key) == 1
        else { throw TLSError.issuance(openSSLErrors()) }
    }

    private static func addExtensions(to cert: OpaquePointer, issuer: OpaquePointer, _ exts: [(Int32, String)]) throws {
        var v3 = X509V3_CTX()
        X509V3_set_ctx(&v3, issuer, cert, nil, nil, 0)
        for (nid, value) in exts {
            guard let ext = X509V3_EXT_conf_nid(nil, &v3, nid, value) else {
                throw TLSError.issuance("extension \(String(cString: OBJ_nid2sn(nid))) = \(value): \(openSSLErrors())")
            }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(cert, ext, -1) == 1 else { throw TLSError.issuance(openSSLErrors()) }
        }
    }

    private static func pemCertificate(_ cert: OpaquePointer) throws -> Data {
        try pem { PEM_write_bio_X509($0, cert) }
    }

    private static func pemPrivateKey(_ key: OpaquePointer) throws -> Data {
        try pem { PEM_write_bio_PrivateKey($0, key, nil, nil, 0, nil, nil) }
    }

    private static func pem(_ body: (OpaquePointer) -> Int32) throws -> Data {
        guard let bio = BIO_new(BIO_s_mem()) else { throw TLSError.issuance(openSSLErrors()) }
        defer { BIO_free(bio) }
        guard body(bio) == 1 else { throw TLSError.issuance(openSSLErrors()) }
        var ptr: UnsafeMutablePointer<CChar>?
        let n = ms_BIO_get_mem_data(bio, &ptr)
        guard n > 0, let ptr else { throw TLSError.issuance("empty PEM output") }
        return Data(bytes: ptr, count: n)
    }

    static func readCertificate(_ path: String) throws -> OpaquePointer {
        OpenSSLLibrary.initialize()
        guard let bio = BIO_new_file(path, "r") else {
            ERR_clear_error()
            throw TLSError.badFile(
                role: "CA certificate", path: path,
                reason: FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file (create it with 'microscale tls ca create')")
        }
        defer { BIO_free(bio) }
        guard let cert = PEM_read_bio_X509(bio, nil, nil, nil) else {
            throw TLSError.badFile(role: "CA certificate", path: path, reason: "not a PEM certificate: \(openSSLErrors())")
        }
        return cert
    }

    private static func readPrivateKey(_ path: String) throws -> OpaquePointer {
        guard let bio = BIO_new_file(path, "r") else {
            ERR_clear_error()
            throw TLSError.badFile(role: "CA key", path: path, reason: FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file")
        }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            throw TLSError.badFile(role: "CA key", path: path, reason: "not a PEM private key: \(openSSLErrors())")
        }
        return key
    }

    private static func prepare(dir: String, outputs: [String], force: Bool) throws {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw TLSError.badFile(role: "output directory", path: dir, reason: "\(error.localizedDescription)")
        }
        if !force, let existing = outputs.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw TLSError.badFile(role: "output", path: existing, reason: "already exists; pass --force to overwrite")
        }
    }

    /// Writes through open(2) so a private key is never, even briefly, readable by others.
    private static func write(pem: Data, to path: String, mode: mode_t, force: Bool) throws {
        if force { unlink(path) }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode)
        guard fd >= 0 else {
            throw TLSError.badFile(role: "output", path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        // The umask may have narrowed the mode; a certificate should still be world-readable
        // and a key must be exactly owner-only.
        fchmod(fd, mode)
        let ok = pem.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { return false }
                off += n
            }
            return true
        }
        guard ok else { throw TLSError.badFile(role: "output", path: path, reason: String(cString: strerror(errno))) }
    }

    private static func isIPAddress(_ s: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, s, &v4) == 1 || inet_pton(AF_INET6, s, &v6) == 1
    }
}
