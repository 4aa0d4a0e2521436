import ControlPlane
import Foundation
import Logging
import Membership
import SecureTransport
import Synchronization

/// At most one `allow` per key per `interval`: what keeps a peer that repeats a refused message
/// from turning each copy into a log line. Bounded: past `capacity` keys, those whose interval is
/// over are forgotten, and if none is, new keys are not allowed (a flood of distinct keys is
/// itself rate-limited rather than growing the table).
public final class RateLimiter<Key: Hashable & Sendable>: Sendable {
    public let interval: Duration
    public let capacity: Int
    private let last = Mutex<[Key: ContinuousClock.Instant]>([:])

    public init(interval: Duration, capacity: Int = 1024) {
        self.interval = interval
        self.capacity = max(1, capacity)
    }

    /// Whether an event for `key` at `now` may pass; if so, it starts the key's next interval.
    public func allow(_ key: Key, now: ContinuousClock.Instant = .now) -> Bool {
        last.withLock { last in
            if let t = last[key], now - t < interval { return false }
            if last[key] == nil, last.count >= capacity {
                last = last.filter { now - $0.value < interval }
                guard last.count < capacity else { return false }
            }
            last[key] = now
            return true
        }
    }
}

/// Where every trust rule reports what it refused: the message is dropped by the caller, counted
/// here, and logged at most once per peer and rule every 10 s (a hostile or misconfigured peer
/// repeats itself several times a second; the log should say so once, not fill the disk).
public final class Refusals: Sendable {
    struct Key: Hashable, Sendable {
        var peer: String
        var rule: TrustRule
    }

    private let logger: Logger
    private let limiter: RateLimiter<Key>
    private let counts = Mutex<[TrustRule: Int]>([:])

    public init(logger: Logger, interval: Duration = .seconds(10)) {
        self.logger = logger
        limiter = RateLimiter(interval: interval)
    }

    /// Records that `rule` refused what `peer` (the certificate's name) sent.
    public func refuse(_ rule: TrustRule, peer: String, _ detail: @autoclosure () -> String) {
        counts.withLock { $0[rule, default: 0] &+= 1 }
        guard limiter.allow(Key(peer: peer, rule: rule)) else { return }
        logger.warning(
            "refused a message from \(peer): \(detail())",
            metadata: ["peer": "\(peer)", "rule": "\(rule.rawValue)"])
    }

    /// How many messages `rule` refused since start (logged or not).
    public func count(_ rule: TrustRule) -> Int { counts.withLock { $0[rule] ?? 0 } }

    public var all: [TrustRule: Int] { counts.withLock { $0 } }
}

/// The role each peer's certificate gives it, as this agent authenticated it on a connection: the
/// only source of "which nodes are servers" (a member's gossiped record may say anything about its
/// role, and gossip reaches us through third parties, so it cannot be checked on receipt). A peer
/// counts as a server once any connection with it authenticated a server certificate; SWIM probes
/// every member directly, and a client joins through a server, so each agent hears from the
/// servers it needs within a few probe rounds.
public final class CertifiedRoles: Sendable {
    /// Bound on names kept; past it the table starts over (a cache of what the next frame from
    /// each peer says again), keeping this agent's own.
    public static let capacity = 65_536

    private let own: PeerIdentity
    private let roles = Mutex<[String: Bool]>([:])

    public init(own: PeerIdentity) {
        self.own = own
    }

    /// Called for every authenticated frame; cheap when nothing changed (the common case).
    public func saw(_ peer: AuthenticatedPeer) {
        let name = peer.name, server = peer.identity.isServer
        roles.withLock { roles in
            guard roles[name] != server else { return }
            if roles[name] == nil, roles.count >= Self.capacity { roles.removeAll(keepingCapacity: true) }
            roles[name] = server
        }
    }

    /// Whether `name`'s certificate, as authenticated here, is a server's; false when never seen.
    public func isServer(_ name: String) -> Bool {
        if name == own.name { return own.isServer }
        return roles.withLock { $0[name] } == true
    }

    /// The certificate role of `name` ("server" or "client"), nil when never authenticated here.
    public func role(_ name: String) -> String? {
        if name == own.name { return own.isServer ? "server" : "client" }
        return roles.withLock { $0[name] }.map { $0 ? "server" : "client" }
    }
}

/// Records signed by node certificates (docs/ARCHITECTURE.md, "Records are signed"): the
/// membership core checks every record it takes, whoever relayed it, with this.
struct CertificateRecordAuthenticator: RecordAuthenticator {
    let signatures: NodeSignatures

    init(_ signatures: NodeSignatures) { self.signatures = signatures }

    var certificate: [UInt8] { signatures.certificate }
    func sign(_ message: [UInt8]) -> [UInt8] { signatures.sign(message) }
    func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? {
        signatures.refusal(name: name, certificate: certificate, signature: signature, message: message)
    }
}

/// Compares tokens without stopping at the first differing byte, so the time a refusal takes
/// says nothing about how much of a guess was right.
func tokensEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return diff == 0
}

/// A peer's string as a log line may quote it: at most `limit` characters, so a refused message
/// cannot make its one line long.
func clipped(_ s: String, _ limit: Int = 64) -> String {
    s.count <= limit ? s : String(s.prefix(limit)) + "…"
}
