import Bounds
import DockerEngine
import Foundation
import NIOCore
import NIOHTTP1
import SecureTransport

/// A source's URL: `http://` or `https://`, a host, an optional port, a path with its query.
public struct SourceURL: Sendable, Hashable, CustomStringConvertible {
    public var secure: Bool
    public var host: String
    public var port: Int
    /// Starts with `/`; holds the query, if any.
    public var path: String

    public var description: String { "\(secure ? "https" : "http")://\(hostHeader)\(path)" }

    /// What the Host header (and a signature over it) says: the port only when it is not the
    /// scheme's own (RFC 9110 §7.2).
    public var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? h : "\(h):\(port)"
    }
    /// The URL without its path: where a path of ours is appended.
    public var base: String { "\(secure ? "https" : "http")://\(hostHeader)" }

    /// Parses `field`'s value; the error names the field.
    public static func parse(_ text: String, field: String) throws(DemandConfigError) -> SourceURL {
        func bad(_ why: String) -> DemandConfigError { DemandConfigError(field: field, reason: why) }
        let secure: Bool
        let rest: Substring
        if text.hasPrefix("https://") {
            secure = true
            rest = text.dropFirst("https://".count)
        } else if text.hasPrefix("http://") {
            secure = false
            rest = text.dropFirst("http://".count)
        } else {
            throw bad("`\(text.prefix(80))` must start with http:// or https://")
        }
        let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<slash]
        var path = slash == rest.endIndex ? "/" : String(rest[slash...])
        if path.hasPrefix("?") { path = "/" + path }
        guard !authority.contains("@") else {
            throw bad("must not hold credentials (user@host); put them in a file named by `credentials:`")
        }
        var host = String(authority)
        var port = secure ? 443 : 80
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw bad("the port must be 1 to 65535") }
                port = p
            } else if !after.isEmpty {
                throw bad("unexpected text after the address")
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw bad("the port must be 1 to 65535")
            }
            port = p
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || "-._:".contains($0) }) else {
            throw bad("`\(host.prefix(80))` is not a host name or address")
        }
        guard !path.contains(where: { $0 == " " || $0.isNewline }) else { throw bad("the path must not hold spaces or line breaks") }
        return SourceURL(secure: secure, host: host, port: port, path: path)
    }
}

/// How a source reaches an HTTP API: plain or over TLS (checked against `caFile`, or the system's
/// trust store when none is named), each answer bounded in size and time.
public struct SourceHTTP: Sendable {
    public let caFile: String?
    public let maxBody: Int
    private let client: MiniHTTPClient

    public init(caFile: String? = nil, maxBody: Int = Limits.maxDemandResponseBytes, client: MiniHTTPClient = MiniHTTPClient()) {
        self.caFile = caFile
        self.maxBody = maxBody
        self.client = client
    }

    /// One request; any status but 2xx is an error naming it, 401 and 403 as refused credentials.
    public func request(
        _ url: SourceURL, path: String? = nil, method: HTTPMethod = .GET, headers: [(String, String)] = [],
        body: [UInt8]? = nil, source: String, timeout: Duration
    ) async throws(DemandError) -> [UInt8] {
        var secure: (@Sendable (any Channel) throws -> Void)?
        if url.secure {
            // Built per request: the CA file may be replaced (a renewed CA) while the agent runs,
            // and a context is cheap beside a TLS handshake.
            let context: TLSContext
            do { context = try TLSContext(externalTrusting: caFile, handshakeTimeout: timeout) } catch {
                throw DemandError.unreachable(source: source, reason: "TLS: \(error)")
            }
            let host = url.host
            secure = { channel in
                try channel.pipeline.syncOperations.addHandler(OpenSSLHandler(context: context, role: .client, expectedPeer: host))
            }
        }
        var all = headers
        all.append(("Host", url.hostHeader))
        let r: HTTPResponse
        do {
            r = try await client.request(
                .tcp(host: url.host, port: url.port), method: method, path: path ?? url.path, headers: all,
                body: body, timeout: timeout, maxBody: maxBody, secure: secure)
        } catch let e as HTTPClientError {
            if case .timedOut = e { throw DemandError.timedOut(source: source, after: timeout) }
            if case .bodyTooLarge = e { throw DemandError.badAnswer(source: source, reason: "\(e)") }
            throw DemandError.unreachable(source: source, reason: "\(e)")
        } catch {
            throw DemandError.unreachable(source: source, reason: "\(error)")
        }
        if r.status == 401 || r.status == 403 {
            throw DemandError.badCredentials(source: source, reason: "refused (HTTP \(r.status)): \(Self.excerpt(r.body))")
        }
        guard (200..<300).contains(r.status) else {
            throw DemandError.badAnswer(source: source, reason: "HTTP \(r.status): \(Self.excerpt(r.body))")
        }
        return r.body
    }

    /// The first 200 bytes of an answer, printable, for an error message.
    static func excerpt(_ body: [UInt8]) -> String {
        var bytes: [UInt8] = []
        for b in body.prefix(200) { bytes.append(b < 0x20 || b == 0x7F ? 0x20 : b) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Percent-encoding of one path segment or query value (RFC 3986 §2.3: only unreserved
/// characters stay as they are). `/` in a vhost or queue name must be encoded.
func percentEncoded(_ s: String) -> String {
    let hex: [UInt8] = Array("0123456789ABCDEF".utf8)
    let unreserved: Set<UInt8> = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8))
    var out: [UInt8] = []
    for b in s.utf8 {
        if unreserved.contains(b) {
            out.append(b)
        } else {
            out.append(0x25)
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0x0F)])
        }
    }
    return String(decoding: out, as: UTF8.self)
}

/// A JSON object from a source's answer, or an error saying it is not one.
func jsonObject(_ body: [UInt8], source: String) throws(DemandError) -> [String: Any] {
    guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
        throw DemandError.badAnswer(source: source, reason: "the answer is not a JSON object: \(SourceHTTP.excerpt(body))")
    }
    return root
}

/// A count in a JSON answer: a whole number from 0 to `Limits.maxDemand`, or an error naming the field.
func jsonCount(_ value: Any?, field: String, source: String) throws(DemandError) -> Double {
    guard let n = value as? NSNumber else {
        throw DemandError.badAnswer(source: source, reason: value == nil ? "the answer has no `\(field)`" : "`\(field)` is not a number")
    }
    let v = n.doubleValue
    guard v.isFinite, v >= 0, v <= Limits.maxDemand else {
        throw DemandError.badAnswer(source: source, reason: "`\(field)` is \(v), outside 0 to \(Limits.text(Limits.maxDemand))")
    }
    return v
}
