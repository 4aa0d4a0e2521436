import Determinism
import DockerEngine
import Foundation
import NIOConcurrencyHelpers

/// One reading of a demand source, or why there is none.
public enum DemandError: Error, Sendable, Equatable, CustomStringConvertible {
    case unreachable(source: String, reason: String)
    case badAnswer(source: String, reason: String)
    case timedOut(source: String, after: Duration)
    case notSet(source: String)
    /// The credentials file is unusable, or the broker refused what it holds.
    case badCredentials(source: String, reason: String)

    public var description: String {
        switch self {
        case .unreachable(let s, let r): "demand source \(s) is unreachable: \(r)"
        case .badAnswer(let s, let r): "demand source \(s) gave no usable number: \(r)"
        case .timedOut(let s, let d): "demand source \(s) did not answer within \(d)"
        case .notSet(let s): "demand source \(s) has no value set yet"
        case .badCredentials(let s, let r): "demand source \(s): credentials \(r)"
        }
    }
}

/// Something that yields the current demand for one service: one number (requests per second, queue
/// depth, ...), which the planner divides by the service's per-container figure.
public protocol DemandSource: Sendable {
    var name: String { get }
    func sample() async throws -> Double
}

/// `static`: the value an operator set through the API (`microscale demand set`).
public final class StaticDemand: DemandSource {
    public let name: String
    private let value: NIOLockedValueBox<Double?>
    public init(name: String = "static", value: Double? = nil) {
        self.name = name
        self.value = NIOLockedValueBox(value)
    }
    public func set(_ v: Double) { value.withLockedValue { $0 = v } }
    public func sample() async throws -> Double {
        guard let v = value.withLockedValue({ $0 }) else { throw DemandError.notSet(source: name) }
        return v
    }
}

/// The microscaling demo's demand: a seeded random walk. Each step moves by at most `step` in either
/// direction and stays within `bounds`. Pure: the same seed gives the same walk.
public struct RandomWalk: Sendable, Hashable {
    public var value: Double
    public let step: Double
    public let bounds: ClosedRange<Double>
    private var generator: SeededGenerator

    public init(seed: UInt64, start: Double, step: Double, bounds: ClosedRange<Double>) {
        self.generator = SeededGenerator(seed: seed)
        self.value = min(max(start, bounds.lowerBound), bounds.upperBound)
        self.step = step
        self.bounds = bounds
    }

    public mutating func next() -> Double {
        let delta = Double.random(in: -step...step, using: &generator)
        value = min(max(value + delta, bounds.lowerBound), bounds.upperBound)
        return value
    }
}

/// `random`: a `RandomWalk` advanced once per sample (the poller's interval is the walk's interval).
public final class RandomDemand: DemandSource {
    public let name: String
    private let walk: NIOLockedValueBox<RandomWalk>
    public init(name: String = "random", walk: RandomWalk) {
        self.name = name
        self.walk = NIOLockedValueBox(walk)
    }
    public func sample() async throws -> Double { walk.withLockedValue { $0.next() } }
}

/// `prometheus`: an instant PromQL query (GET /api/v1/query) that must yield exactly one number
/// (a scalar, or a vector with one sample).
public struct PrometheusDemand: DemandSource {
    public let name: String
    public let baseURL: String
    public let query: String
    public let timeout: Duration
    private let http: SourceHTTP
    private let credentials: String?

    /// `caFile` checks an https:// server (the system's store when nil); `credentials` names a
    /// file with `user:password` (basic auth) or a token (bearer), for a Prometheus behind a proxy.
    public init(baseURL: String, query: String, timeout: Duration = .seconds(5), caFile: String? = nil, credentials: String? = nil) {
        self.name = "prometheus \(baseURL) \(query)"
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.query = query
        self.timeout = timeout
        self.http = SourceHTTP(caFile: caFile)
        self.credentials = credentials
    }

    public func sample() async throws -> Double {
        let url = try SourceURL.parse("\(baseURL)/api/v1/query?query=\(percentEncoded(query))", field: "url")
        var headers = [("Accept", "application/json")]
        if let credentials { headers.append(("Authorization", try Credentials.read(path: credentials, source: name).basicAuthorization)) }
        let body = try await http.request(url, headers: headers, source: name, timeout: timeout)
        return try Self.parse(body, source: name)
    }

    /// Prometheus HTTP API: {"status":"success","data":{"resultType":"vector","result":[{"value":[t,"7"]}]}}.
    public static func parse(_ body: [UInt8], source: String) throws -> Double {
        guard let root = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw DemandError.badAnswer(source: source, reason: "the answer is not a JSON object")
        }
        guard root["status"] as? String == "success", let data = root["data"] as? [String: Any] else {
            throw DemandError.badAnswer(source: source, reason: "query failed: \(root["error"] as? String ?? "status is not success")")
        }
        let type = data["resultType"] as? String ?? "?"
        let pair: [Any]
        switch type {
        case "scalar":
            guard let p = data["result"] as? [Any] else { throw DemandError.badAnswer(source: source, reason: "scalar without a value") }
            pair = p
        case "vector":
            guard let r = data["result"] as? [[String: Any]] else { throw DemandError.badAnswer(source: source, reason: "vector without results") }
            guard r.count == 1, let p = r[0]["value"] as? [Any] else {
                throw DemandError.badAnswer(source: source, reason: "the query yields \(r.count) series; it must yield exactly one")
            }
            pair = p
        default:
            throw DemandError.badAnswer(source: source, reason: "result type \(type); expected scalar or a one-sample vector")
        }
        guard pair.count == 2, let s = pair[1] as? String, let v = Double(s), v.isFinite else {
            throw DemandError.badAnswer(source: source, reason: "the sample is not a finite number")
        }
        return v
    }
}

/// `http`: GET a URL answering JSON, and read the number at a JSON pointer (RFC 6901).
public struct HTTPJSONDemand: DemandSource {
    public let name: String
    public let url: String
    public let pointer: String
    public let timeout: Duration
    private let http: SourceHTTP
    private let credentials: String?

    public init(url: String, pointer: String, timeout: Duration = .seconds(5), caFile: String? = nil, credentials: String? = nil) {
        self.name = "http \(url)#\(pointer)"
        self.url = url
        self.pointer = pointer
        self.timeout = timeout
        self.http = SourceHTTP(caFile: caFile)
        self.credentials = credentials
    }

    public func sample() async throws -> Double {
        var headers = [("Accept", "application/json")]
        if let credentials { headers.append(("Authorization", try Credentials.read(path: credentials, source: name).basicAuthorization)) }
        let body = try await http.request(try SourceURL.parse(url, field: "url"), headers: headers, source: name, timeout: timeout)
        guard let root = try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed]) else {
            throw DemandError.badAnswer(source: name, reason: "the answer is not JSON")
        }
        return try Self.resolve(pointer: pointer, in: root, source: name)
    }

    public static func resolve(pointer: String, in root: Any, source: String) throws -> Double {
        var node: Any = root
        if !pointer.isEmpty {
            guard pointer.hasPrefix("/") else {
                throw DemandError.badAnswer(source: source, reason: "JSON pointer \(pointer) must start with /")
            }
            for raw in pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
                let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
                if let object = node as? [String: Any], let next = object[token] {
                    node = next
                } else if let array = node as? [Any], let i = Int(token), array.indices.contains(i) {
                    node = array[i]
                } else {
                    throw DemandError.badAnswer(source: source, reason: "nothing at \(pointer) (stopped at \"\(token)\")")
                }
            }
        }
        if let n = node as? NSNumber {
            let v = n.doubleValue
            guard v.isFinite else { throw DemandError.badAnswer(source: source, reason: "\(pointer) is not finite") }
            return v
        }
        if let s = node as? String, let v = Double(s), v.isFinite { return v }
        throw DemandError.badAnswer(source: source, reason: "\(pointer) is not a number")
    }
}
