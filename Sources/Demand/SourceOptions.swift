import Bounds
import Foundation

/// An option of a `demand:` block that cannot be used: which one (relative to `demand.`) and why.
public struct DemandConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var field: String
    public var reason: String
    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }
    public var description: String { "demand.\(field): \(reason)" }
}

/// The options each source takes (docs/demand.md), checked where a services file is
/// read (with the line) and again where the leader builds the source, so a typo (`quue:`) or a
/// missing key is an error at `apply`, not a source that silently reads nothing.
public enum DemandSourceOptions {
    /// Options every polled source takes.
    static let common: Set<String> = ["interval", "timeout"]

    /// A polled source's options: the common ones and its own. (A function, not `common.union`
    /// in the literal: seven generic unions of array literals in one dictionary literal are an
    /// exponential puzzle for the type checker.)
    private static func polled(_ own: Set<String>) -> Set<String> { common.union(own) }

    public static let known: [String: Set<String>] = {
        var k: [String: Set<String>] = [:]
        k["static"] = []
        k["random"] = ["min", "max", "step", "start", "seed", "interval"]
        k["prometheus"] = polled(["url", "query", "ca_file", "credentials"])
        k["http"] = polled(["url", "pointer", "ca_file", "credentials"])
        k["redis"] = polled(["address", "key", "group", "db", "credentials", "tls", "ca_file"])
        k["rabbitmq"] = polled(["url", "vhost", "queue", "credentials", "ca_file"])
        k["nats"] = polled(["url", "stream", "consumer", "account", "ca_file"])
        k["haproxy"] = polled(["stats", "backend", "frontend", "metric", "credentials", "ca_file"])
        k["sqs"] = polled(["queue_url", "region", "endpoint", "credentials", "ca_file"])
        return k
    }()

    public static var sources: [String] { known.keys.sorted() }

    /// How long one poll may take: `timeout:`, 2 s by default (the leader polls every second by
    /// default, so a poll that has not answered in 2 s is late twice over).
    public static func timeout(_ options: [String: String]) -> Duration {
        guard let t = options["timeout"], let d = Units.duration(t), d >= Limits.minPollInterval, d <= Limits.maxDemandTimeout else {
            return defaultTimeout
        }
        return d
    }
    public static let defaultTimeout: Duration = .seconds(2)

    /// Checks `options` for `source`; the first problem, naming its key.
    public static func check(source: String, options: [String: String]) throws(DemandConfigError) {
        _ = try build(service: "check", source: source, options: options)
    }

    /// The polled source for a service (nil for `static` and `random`, which the agent builds
    /// itself from the service's own figures), or the first problem with its options.
    public static func build(service: String, source: String, options o: [String: String]) throws(DemandConfigError) -> (any DemandSource)? {
        do { return try make(source: source, options: o) } catch let e as DemandConfigError { throw e } catch {
            throw DemandConfigError(field: "source", reason: "\(error)")
        }
    }

    // Untyped `throws` below: one function with a few dozen typed throw sites sent the compiler's
    // mandatory SIL passes (alloc-box-to-stack's stack nesting fix-up) into minutes of work.
    private static func make(source: String, options o: [String: String]) throws -> (any DemandSource)? {
        guard let allowed = known[source] else {
            throw DemandConfigError(field: "source", reason: "`\(source.prefix(40))` is not one of \(sources.joined(separator: ", "))")
        }
        for key in o.keys.sorted() where !allowed.contains(key) {
            throw DemandConfigError(
                field: key,
                reason: allowed.isEmpty
                    ? "unknown option; source \(source) takes none"
                    : "unknown option for source \(source) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
        let r = Reader(source: source, o: o)
        var timeout = defaultTimeout
        if let t = o["timeout"] {
            guard let d = Units.duration(t), d >= Limits.minPollInterval, d <= Limits.maxDemandTimeout else {
                throw DemandConfigError(field: "timeout", reason: "must be a duration from 100ms to \(Limits.maxDemandTimeout)")
            }
            timeout = d
        }
        if let t = o["interval"] {
            guard let d = Units.duration(t), d >= Limits.minPollInterval, d <= Limits.maxPollInterval else {
                throw DemandConfigError(field: "interval", reason: "must be a duration from 100ms to 1h")
            }
        }
        let ca = try r.path("ca_file")
        let credentials = try r.path("credentials")
        switch source {
        case "static", "random":
            return nil
        case "prometheus":
            let u = try r.url("url")
            return PrometheusDemand(
                baseURL: u.base + (u.path == "/" ? "" : u.path), query: try r.required("query"), timeout: timeout,
                caFile: ca, credentials: credentials)
        case "http":
            let u = try r.url("url")
            if let p = o["pointer"], !p.isEmpty, !p.hasPrefix("/") {
                throw DemandConfigError(field: "pointer", reason: "a JSON pointer (RFC 6901) is empty or starts with /")
            }
            return HTTPJSONDemand(url: u.description, pointer: o["pointer"] ?? "", timeout: timeout, caFile: ca, credentials: credentials)
        case "redis":
            return try redis(r, credentials: credentials, ca: ca, timeout: timeout)
        case "rabbitmq":
            let u = try r.url("url")
            if ca != nil && !u.secure { throw DemandConfigError(field: "ca_file", reason: "applies to an https:// url") }
            return RabbitMQDemand(
                url: u, vhost: try r.name("vhost", default: "/"), queue: try r.name("queue"), credentials: credentials,
                caFile: ca, timeout: timeout)
        case "nats":
            let u = try r.url("url")
            if ca != nil && !u.secure { throw DemandConfigError(field: "ca_file", reason: "applies to an https:// url") }
            let account = o["account"] == nil ? nil : try r.name("account")
            return NATSDemand(url: u, stream: try r.name("stream"), consumer: try r.name("consumer"), account: account, caFile: ca, timeout: timeout)
        case "haproxy":
            let u = try r.url("stats")
            if ca != nil && !u.secure { throw DemandConfigError(field: "ca_file", reason: "applies to an https:// stats URL") }
            let m = try r.required("metric")
            guard let metric = HAProxyDemand.Metric(rawValue: m) else {
                throw DemandConfigError(field: "metric", reason: "`\(m.prefix(40))` is not one of rate, req_rate, scur, qcur")
            }
            // One row: a backend's (queue, sessions) or a frontend's (the traffic offered to it).
            let side: HAProxyDemand.Side
            let proxy: String
            switch (o["backend"], o["frontend"]) {
            case (.some, .some): throw DemandConfigError(field: "frontend", reason: "give backend: or frontend:, not both")
            case (.none, .some):
                side = .frontend
                proxy = try r.name("frontend")
            default:
                side = .backend
                proxy = try r.name("backend")
            }
            if let why = HAProxyDemand.unusable(metric, on: side) { throw DemandConfigError(field: "metric", reason: why) }
            return HAProxyDemand(url: u, proxy: proxy, side: side, metric: metric, credentials: credentials, caFile: ca, timeout: timeout)
        case "sqs":
            return try sqs(r, credentials: credentials, ca: ca, timeout: timeout)
        default:
            return nil
        }
    }

    private static func redis(_ r: Reader, credentials: String?, ca: String?, timeout: Duration) throws -> any DemandSource {
        let o = r.o
        let address = try r.required("address")
        let u: SourceURL
        do { u = try SourceURL.parse("http://\(address)", field: "address") } catch {
            throw DemandConfigError(field: "address", reason: "must be host:port")
        }
        guard u.path == "/", address.contains(":") else { throw DemandConfigError(field: "address", reason: "must be host:port") }
        var tls = false
        if let t = o["tls"] {
            guard let b = Bool(t) else { throw DemandConfigError(field: "tls", reason: "must be true or false") }
            tls = b
        }
        if ca != nil && !tls { throw DemandConfigError(field: "ca_file", reason: "applies with `tls: true`") }
        var db: Int?
        if let d = o["db"] {
            guard let n = Int(d), (0...Limits.maxRedisDatabase).contains(n) else {
                throw DemandConfigError(field: "db", reason: "must be a database number from 0 to \(Limits.maxRedisDatabase)")
            }
            db = n
        }
        let group = o["group"] == nil ? nil : try r.name("group")
        return RedisDemand(
            host: u.host, port: u.port, key: try r.name("key"), group: group, database: db, credentials: credentials,
            tls: tls, caFile: ca, timeout: timeout)
    }

    private static func sqs(_ r: Reader, credentials: String?, ca: String?, timeout: Duration) throws -> any DemandSource {
        let o = r.o
        let queueURL = try r.url("queue_url")
        let region = try r.required("region")
        guard region.utf8.count <= 64, region.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            throw DemandConfigError(field: "region", reason: "must be an AWS region name (us-east-1)")
        }
        let endpoint =
            o["endpoint"] == nil ? SourceURL(secure: queueURL.secure, host: queueURL.host, port: queueURL.port, path: "/") : try r.url("endpoint")
        guard let credentials else {
            throw DemandConfigError(field: "credentials", reason: "required by source sqs (a file holding ACCESS_KEY_ID:SECRET_ACCESS_KEY)")
        }
        return SQSDemand(queueURL: queueURL.description, endpoint: endpoint, region: region, credentials: credentials, caFile: ca, timeout: timeout)
    }
}

/// Reads one source's options (a struct, not local functions capturing them: a dozen local
/// throwing closures in one function sent the compiler's SIL passes into a crawl).
private struct Reader {
    let source: String
    let o: [String: String]

    func required(_ key: String) throws -> String {
        guard let v = o[key], !v.isEmpty else { throw DemandConfigError(field: key, reason: "required by source \(source)") }
        return v
    }

    func name(_ key: String, default d: String? = nil) throws -> String {
        let v: String
        if let d, o[key] == nil { v = d } else { v = try required(key) }
        guard v.utf8.count <= 255, !v.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw DemandConfigError(field: key, reason: "must be 1 to 255 bytes on one line")
        }
        return v
    }

    func path(_ key: String) throws -> String? {
        guard let v = o[key] else { return nil }
        guard v.hasPrefix("/"), !v.contains("\0") else { throw DemandConfigError(field: key, reason: "must be an absolute file path") }
        return v
    }

    func url(_ key: String) throws -> SourceURL { try SourceURL.parse(try required(key), field: key) }
}
