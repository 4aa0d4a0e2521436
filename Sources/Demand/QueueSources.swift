import Bounds
import Foundation

/// `rabbitmq`: a queue's ready messages (`messages_ready`: published, not yet delivered to a
/// consumer) from the management plugin's HTTP API, `GET /api/queues/{vhost}/{queue}` with basic
/// auth (RabbitMQ, "Management HTTP API"). The plugin refreshes queue figures every
/// `collect_statistics_interval` (5 s by default), so the reading lags the queue by up to that.
public struct RabbitMQDemand: DemandSource {
    public let name: String
    public let url: SourceURL
    public let vhost: String
    public let queue: String
    public let credentials: String?
    public let timeout: Duration
    private let http: SourceHTTP

    public init(url: SourceURL, vhost: String = "/", queue: String, credentials: String?, caFile: String? = nil, timeout: Duration = .seconds(5)) {
        self.name = "rabbitmq \(url.base) \(vhost) \(queue)"
        self.url = url
        self.vhost = vhost
        self.queue = queue
        self.credentials = credentials
        self.timeout = timeout
        self.http = SourceHTTP(caFile: caFile)
    }

    /// The management API's path for the queue: the vhost `/` is `%2F`, as is any `/` in a name.
    public var path: String {
        let prefix = url.path == "/" ? "" : (url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path)
        return "\(prefix)/api/queues/\(percentEncoded(vhost))/\(percentEncoded(queue))"
    }

    public func sample() async throws -> Double {
        var headers = [("Accept", "application/json")]
        if let credentials { headers.append(("Authorization", try Credentials.read(path: credentials, source: name).basicAuthorization)) }
        let body: [UInt8]
        do {
            body = try await http.request(url, path: path, headers: headers, source: name, timeout: timeout)
        } catch {
            if case .badAnswer(let s, let reason) = error, reason.hasPrefix("HTTP 404") {
                throw DemandError.badAnswer(source: s, reason: "no queue \(queue) in vhost \(vhost) (HTTP 404)")
            }
            throw error
        }
        return try Self.parse(body, source: name)
    }

    /// `{"name":"jobs","messages_ready":12,...}`. A queue the plugin has not yet gathered figures
    /// for answers without `messages_ready`: that is no reading, not zero.
    public static func parse(_ body: [UInt8], source: String) throws -> Double {
        try jsonCount(try jsonObject(body, source: source)["messages_ready"], field: "messages_ready", source: source)
    }
}

/// `nats`: a JetStream consumer's pending messages (`num_pending`: in the stream, not yet delivered
/// to the consumer) from the server's monitoring endpoint, `GET /jsz?consumers=true` (NATS docs,
/// "Monitoring", JetStream information). The endpoint has no authentication of its own: it is
/// meant for a private network; over https it is checked against `ca_file`.
public struct NATSDemand: DemandSource {
    public let name: String
    public let url: SourceURL
    public let stream: String
    public let consumer: String
    public let account: String?
    public let timeout: Duration
    private let http: SourceHTTP

    public init(url: SourceURL, stream: String, consumer: String, account: String? = nil, caFile: String? = nil, timeout: Duration = .seconds(5)) {
        self.name = "nats \(url.base) \(stream)/\(consumer)"
        self.url = url
        self.stream = stream
        self.consumer = consumer
        self.account = account
        self.timeout = timeout
        self.http = SourceHTTP(caFile: caFile)
    }

    public var path: String {
        let prefix = url.path == "/" ? "" : (url.path.hasSuffix("/") ? String(url.path.dropLast()) : url.path)
        return "\(prefix)/jsz?accounts=true&streams=true&consumers=true" + (account.map { "&acc=\(percentEncoded($0))" } ?? "")
    }

    public func sample() async throws -> Double {
        let body = try await http.request(url, path: path, headers: [("Accept", "application/json")], source: name, timeout: timeout)
        return try Self.parse(body, stream: stream, consumer: consumer, account: account, source: name)
    }

    /// `{"account_details":[{"name":"$G","stream_detail":[{"name":"JOBS",
    /// "consumer_detail":[{"name":"workers","num_pending":5,...}]}]}]}`. The stream and consumer
    /// must each be found exactly once (in `account` when given): two accounts with a stream of the
    /// same name make the source ambiguous, which is an error rather than a guess.
    public static func parse(_ body: [UInt8], stream: String, consumer: String, account: String?, source: String) throws -> Double {
        let root = try jsonObject(body, source: source)
        guard let accounts = root["account_details"] as? [[String: Any]] else {
            throw DemandError.badAnswer(source: source, reason: "the answer has no `account_details` (is JetStream enabled, -js?)")
        }
        var found: [[String: Any]] = []
        for a in accounts where account == nil || a["name"] as? String == account {
            for s in a["stream_detail"] as? [[String: Any]] ?? [] where s["name"] as? String == stream {
                for c in s["consumer_detail"] as? [[String: Any]] ?? [] where c["name"] as? String == consumer { found.append(c) }
            }
        }
        guard found.count == 1 else {
            throw DemandError.badAnswer(
                source: source,
                reason: found.isEmpty
                    ? "no consumer \(consumer) on stream \(stream)\(account.map { " in account \($0)" } ?? "")"
                    : "consumer \(consumer) on stream \(stream) is in \(found.count) accounts; name one with `account:`")
        }
        return try jsonCount(found[0]["num_pending"], field: "num_pending", source: source)
    }
}

/// `haproxy`: one figure of a backend or a frontend from HAProxy's statistics as CSV (`stats uri`,
/// with `;csv`; HAProxy management guide §9.1): `qcur` (a backend's requests queued, waiting for a
/// server), `scur` (current sessions), `rate` (sessions per second over the last second) or
/// `req_rate` (a frontend's HTTP requests per second over the last second: with keep-alive one
/// session carries many requests, so this, not `rate`, is a web service's traffic).
public struct HAProxyDemand: DemandSource {
    public enum Metric: String, Sendable, CaseIterable {
        case rate, scur, qcur
        case reqRate = "req_rate"
    }
    /// Which row of the proxy: its `FRONTEND` or its `BACKEND` (the `svname` column).
    public enum Side: String, Sendable {
        case frontend = "FRONTEND"
        case backend = "BACKEND"
        var word: String { self == .frontend ? "frontend" : "backend" }
    }
    public let name: String
    public let url: SourceURL
    public let proxy: String
    public let side: Side
    public let metric: Metric
    public let credentials: String?
    public let timeout: Duration
    private let http: SourceHTTP

    public var backend: String { proxy }

    public init(url: SourceURL, backend: String, metric: Metric, credentials: String? = nil, caFile: String? = nil, timeout: Duration = .seconds(5)) {
        self.init(url: url, proxy: backend, side: .backend, metric: metric, credentials: credentials, caFile: caFile, timeout: timeout)
    }

    public init(
        url: SourceURL, proxy: String, side: Side, metric: Metric, credentials: String? = nil, caFile: String? = nil,
        timeout: Duration = .seconds(5)
    ) {
        var u = url
        // The CSV form of the stats page is its URI with `;csv`.
        if !u.path.contains(";csv") {
            if let q = u.path.firstIndex(of: "?") { u.path.insert(contentsOf: ";csv", at: q) } else { u.path += ";csv" }
        }
        self.name = "haproxy \(u) \(side.word) \(proxy) \(metric.rawValue)"
        self.url = u
        self.proxy = proxy
        self.side = side
        self.metric = metric
        self.credentials = credentials
        self.timeout = timeout
        self.http = SourceHTTP(caFile: caFile)
    }

    /// Why `metric` cannot be read on `side` (HAProxy leaves the field empty there), or nil.
    public static func unusable(_ metric: Metric, on side: Side) -> String? {
        switch (metric, side) {
        case (.reqRate, .backend): "req_rate is a frontend's figure (HAProxy leaves it empty for a backend); use frontend:"
        case (.qcur, .frontend): "qcur is a backend's figure (a frontend has no queue); use backend:"
        default: nil
        }
    }

    public func sample() async throws -> Double {
        var headers: [(String, String)] = []
        if let credentials { headers.append(("Authorization", try Credentials.read(path: credentials, source: name).basicAuthorization)) }
        let body = try await http.request(url, headers: headers, source: name, timeout: timeout)
        return try Self.parse(body, proxy: proxy, side: side, metric: metric, source: name)
    }

    public static func parse(_ body: [UInt8], backend: String, metric: Metric, source: String) throws -> Double {
        try parse(body, proxy: backend, side: .backend, metric: metric, source: source)
    }

    /// The header line `# pxname,svname,qcur,qmax,scur,...` names the columns (their order has
    /// changed between versions); the proxy's own row has `svname` FRONTEND or BACKEND.
    public static func parse(_ body: [UInt8], proxy: String, side: Side, metric: Metric, source: String) throws -> Double {
        let text = String(decoding: body, as: UTF8.self)
        var lines = text.split(whereSeparator: \.isNewline).makeIterator()
        guard let header = lines.next(), header.hasPrefix("# ") else {
            throw DemandError.badAnswer(
                source: source, reason: "not HAProxy's CSV statistics (no `# pxname,...` header): \(SourceHTTP.excerpt(body))")
        }
        let columns = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).map { String($0) }
        guard let px = columns.firstIndex(of: "pxname"), let sv = columns.firstIndex(of: "svname"),
            let col = columns.firstIndex(of: metric.rawValue)
        else {
            throw DemandError.badAnswer(source: source, reason: "the CSV header has no pxname, svname or \(metric.rawValue) column")
        }
        var rows = 0
        while let line = lines.next() {
            rows += 1
            guard rows <= 100_000 else { break }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count > max(px, sv, col), fields[px] == proxy, fields[sv] == side.rawValue else { continue }
            let raw = fields[col]
            guard let v = Double(raw), v.isFinite, v >= 0, v <= Limits.maxDemand else {
                throw DemandError.badAnswer(
                    source: source,
                    reason:
                        "\(metric.rawValue) of \(side.word) \(proxy) is `\(raw.prefix(40))`, not a number from 0 to \(Limits.text(Limits.maxDemand))"
                )
            }
            return v
        }
        throw DemandError.badAnswer(source: source, reason: "no \(side.word) \(proxy) in the statistics")
    }
}
