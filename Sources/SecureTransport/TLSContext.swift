import COpenSSL
import Foundation

/// Which end of the handshake a connection is.
public enum TLSRole: Sendable {
    case server
    case client
}

/// The files a node's TLS identity is made of (docs/contracts.md, "The wire"): the cluster CA, and this node's
/// certificate chain and private key, as written by `microscale tls`.
public struct TLSConfiguration: Sendable, Hashable {
    public var caFile: String
    public var certificateFile: String
    public var keyFile: String
    /// How long a handshake may take before the connection is dropped. Bounds what a silent or
    /// slow-loris peer can hold.
    public var handshakeTimeout: Duration

    public init(caFile: String, certificateFile: String, keyFile: String, handshakeTimeout: Duration = .seconds(5)) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.handshakeTimeout = handshakeTimeout
    }
}

/// An OpenSSL SSL_CTX set up for Microscale: TLS 1.3 only, mutual authentication against the
/// cluster CA. One context serves both roles (the same node certificate is used to accept and
/// to dial). Immutable after init, which is what makes sharing it across event loops safe:
/// OpenSSL documents SSL_CTX as thread-safe for SSL_new once configured.
public final class TLSContext: @unchecked Sendable {
    /// `package`: the handshake flood benchmark (Harness) records a ClientHello from it.
    package let ctx: OpaquePointer
    public let configuration: TLSConfiguration
    /// This node's identity, read from its own certificate.
    public let identity: PeerIdentity
    /// The certificate's serial number in hexadecimal (as `openssl x509 -serial` prints it), to
    /// tell which certificate a reload put in place.
    public let serial: String
    /// When the certificate expires, in seconds since 1970 (the `certificate expiry` metric).
    public let notAfter: Double
    /// A client context for a service outside the cluster (a broker, Prometheus): no certificate
    /// of our own, the server checked against `caFile` (or the system's store) and the host name.
    public let isExternalClient: Bool

    /// A client context for a service outside the cluster (docs/demand.md: a broker's HTTPS or TLS
    /// port): the server's chain must verify against `caFile` (the system's trust store when nil)
    /// and name the host dialled (`OpenSSLHandler`'s `expectedPeer`). TLS 1.2 or later, since
    /// brokers do not all offer 1.3; no client certificate (the broker's own credentials
    /// authenticate us, inside the channel).
    public init(externalTrusting caFile: String?, handshakeTimeout: Duration = .seconds(5)) throws {
        OpenSSLLibrary.initialize()
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw TLSError.badFile(role: "CA", path: caFile, reason: FileManager.default.fileExists(atPath: caFile) ? "not readable" : "no such file")
        }
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { throw TLSError.contextSetup(openSSLErrors()) }
        do {
            guard ms_SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else { throw TLSError.contextSetup(openSSLErrors()) }
            if let caFile {
                guard SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1 else {
                    throw TLSError.badFile(role: "CA", path: caFile, reason: openSSLErrors())
                }
            } else {
                guard SSL_CTX_set_default_verify_paths(ctx) == 1 else { throw TLSError.contextSetup(openSSLErrors()) }
            }
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            _ = ms_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.ctx = ctx
        self.configuration = TLSConfiguration(caFile: caFile ?? "", certificateFile: "", keyFile: "", handshakeTimeout: handshakeTimeout)
        self.identity = PeerIdentity(name: "", isServer: false)
        self.serial = ""
        self.notAfter = 0
        self.isExternalClient = true
    }

    public init(configuration: TLSConfiguration) throws {
        OpenSSLLibrary.initialize()
        self.configuration = configuration
        for (role, path) in [("CA", configuration.caFile), ("certificate", configuration.certificateFile), ("key", configuration.keyFile)] {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw TLSError.badFile(role: role, path: path, reason: FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file")
            }
        }
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_method()) else { throw TLSError.contextSetup(openSSLErrors()) }
        // Everything that can throw happens before the stored properties are set, so a failed
        // init frees the context exactly once (here) and deinit never sees it.
        let me: PeerIdentity
        var serialText = ""
        var expiry: Double = 0
        do {
            // docs/contracts.md, "The wire": TLS 1.3 only. 1.3 also removes renegotiation and static-RSA key
            // exchange, so there is nothing to disable beyond the version floor.
            guard ms_SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1,
                ms_SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1
            else { throw TLSError.contextSetup(openSSLErrors()) }
            guard SSL_CTX_load_verify_locations(ctx, configuration.caFile, nil) == 1 else {
                throw TLSError.badFile(role: "CA", path: configuration.caFile, reason: openSSLErrors())
            }
            guard SSL_CTX_use_certificate_chain_file(ctx, configuration.certificateFile) == 1 else {
                throw TLSError.badFile(role: "certificate", path: configuration.certificateFile, reason: openSSLErrors())
            }
            guard SSL_CTX_use_PrivateKey_file(ctx, configuration.keyFile, SSL_FILETYPE_PEM) == 1 else {
                throw TLSError.badFile(role: "key", path: configuration.keyFile, reason: openSSLErrors())
            }
            guard SSL_CTX_check_private_key(ctx) == 1 else {
                throw TLSError.badFile(
                    role: "key", path: configuration.keyFile,
                    reason: "does not match certificate \(configuration.certificateFile)")
            }
            // Mutual authentication: a server demands a client certificate and both sides fail
            // the handshake on a bad chain, so no application byte ever flows unauthenticated.
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
            // Sessions are not resumed: every connection proves its certificate afresh, so a
            // revoked or expired certificate is noticed at the next connection.
            _ = ms_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
            ms_SSL_CTX_disable_tickets(ctx)
            // An agent keeps a connection open to every member it probes (49 at N = 50) but
            // sends a few small records a second on each: returning the 16 KiB read and write
            // record buffers while a connection is idle saves ~34 KiB per connection.
            _ = ms_SSL_CTX_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))
            guard let cert = SSL_CTX_get0_certificate(ctx) else { throw TLSError.contextSetup("no certificate loaded") }
            guard let identity = PeerIdentity(certificate: cert) else {
                throw TLSError.badFile(
                    role: "certificate", path: configuration.certificateFile,
                    reason: "names no node (no common name)")
            }
            me = identity
            (serialText, expiry) = Self.serialAndExpiry(cert)
            // Our own certificate must chain to the CA we trust, or peers will refuse us with a
            // far less helpful message.
            try Self.verifyOwnChain(ctx: ctx, certificate: cert, path: configuration.certificateFile)
        } catch {
            SSL_CTX_free(ctx)
            throw error
        }
        self.ctx = ctx
        self.identity = me
        self.serial = serialText
        self.notAfter = expiry
        self.isExternalClient = false
    }

    private static func serialAndExpiry(_ cert: OpaquePointer) -> (String, Double) {
        var serial = ""
        if let asn1 = X509_get_serialNumber(cert), let bn = ASN1_INTEGER_to_BN(asn1, nil) {
            if let hex = BN_bn2hex(bn) {
                serial = String(cString: hex)
                CRYPTO_free(hex, #fileID, #line)
            }
            BN_free(bn)
        }
        var expiry: Double = 0
        if let t = X509_get0_notAfter(cert) {
            // Seconds from now to notAfter, then from 1970: ASN1_TIME_diff works in days and seconds.
            var days: Int32 = 0, seconds: Int32 = 0
            if ASN1_TIME_diff(&days, &seconds, nil, t) == 1 {
                expiry = Date().timeIntervalSince1970 + Double(days) * 86_400 + Double(seconds)
            }
        }
        return (serial, expiry.rounded())
    }

    private static func verifyOwnChain(ctx: OpaquePointer, certificate: OpaquePointer, path: String) throws {
        guard let store = SSL_CTX_get_cert_store(ctx), let storeCtx = X509_STORE_CTX_new() else {
            throw TLSError.contextSetup(openSSLErrors())
        }
        defer { X509_STORE_CTX_free(storeCtx) }
        guard X509_STORE_CTX_init(storeCtx, store, certificate, nil) == 1 else { throw TLSError.contextSetup(openSSLErrors()) }
        if X509_verify_cert(storeCtx) != 1 {
            let reason = String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(storeCtx))))
            ERR_clear_error()
            throw TLSError.badFile(role: "certificate", path: path, reason: "does not verify against the CA: \(reason)")
        }
    }

    deinit { SSL_CTX_free(ctx) }
}

/// Who is at the other end, as its certificate says (not as it claims).
public struct PeerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The node name: the certificate's common name, which `microscale tls` also writes as a
    /// DNS subject alternative name.
    public var name: String
    /// Whether the certificate was issued with `--server` (it carries the server marker name).
    public var isServer: Bool

    public init(name: String, isServer: Bool) {
        self.name = name
        self.isServer = isServer
    }

    public var description: String { isServer ? "\(name) (server)" : name }

    /// The DNS name a server certificate carries besides the node name, as Consul's
    /// `server.<dc>.consul` does, so a client can tell servers from clients by certificate.
    public static let serverMarker = "server.microscale"

    init?(certificate: OpaquePointer) {
        guard let subject = X509_get_subject_name(certificate) else { return nil }
        var buf = [CChar](repeating: 0, count: 256)
        let n = X509_NAME_get_text_by_NID(subject, NID_commonName, &buf, Int32(buf.count))
        guard n > 0 else { return nil }
        name = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        isServer = Self.dnsNames(of: certificate).contains(Self.serverMarker)
    }

    static func dnsNames(of certificate: OpaquePointer) -> [String] {
        guard let names = ms_X509_get_subject_alt_names(certificate) else { return [] }
        defer { ms_GENERAL_NAMES_free(names) }
        var out: [String] = []
        for i in 0..<ms_sk_GENERAL_NAME_num(names) {
            guard let gn = ms_sk_GENERAL_NAME_value(names, i), gn.pointee.type == GEN_DNS,
                let ia5 = gn.pointee.d.dNSName, let data = ASN1_STRING_get0_data(ia5)
            else { continue }
            let len = Int(ASN1_STRING_length(ia5))
            out.append(String(decoding: UnsafeBufferPointer(start: data, count: len), as: UTF8.self))
        }
        return out
    }
}
