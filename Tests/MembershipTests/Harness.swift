import Membership
import Testing

/// Drives one pure instance with an injected clock: every input carries `now`, and `runTimers`
/// ticks at each deadline the instance asks for.
struct Harness {
    var swim: SWIMInstance
    var now: Duration = .zero
    var next: Duration?

    static func record(_ name: String) -> NodeRecord {
        NodeRecord(name: name, address: "\(name):7480", capacity: Resources(cpuMillicores: 2000, memoryBytes: 1 << 30))
    }

    /// `name`'s record as its owner sends it at `incarnation` (with its word that it got there).
    static func alive(_ name: String, _ incarnation: UInt64, signed: Bool = false) -> NodeRecord {
        let a: any RecordAuthenticator = signed ? KeyedAuthenticator(owner: name) : UnsignedRecords()
        return record(name).signed(by: a).proving(incarnation: incarnation, by: a)
    }

    /// - Parameter firstContact: whether the members start as never heard from (their first probe
    ///   waits `firstContactAllowance` for a handshake); by default the harness is a running
    ///   cluster whose connections are up, and the allowance is zero.
    init(
        name: String = "me", members: [String], configuration: MembershipConfiguration = .lan, seed: UInt64 = 1,
        signed: Bool = false, firstContact: Bool = false
    ) {
        var configuration = configuration
        if !firstContact { configuration.firstContactAllowance = .zero }
        let authenticator: any RecordAuthenticator = signed ? KeyedAuthenticator(owner: name) : UnsignedRecords()
        swim = try! SWIMInstance(
            configuration: configuration, record: Self.record(name), seed: seed, now: .zero,
            authenticator: authenticator)
        swim.restore(
            members.map {
                MemberState(
                    incarnation: 0, status: .alive,
                    record: signed ? Self.record($0).signed(by: KeyedAuthenticator(owner: $0)) : Self.record($0))
            }, now: .zero)
        next = swim.tick(now: .zero).nextDeadline
    }

    mutating func tick(at t: Duration) -> Directives {
        now = max(now, t)
        let d = swim.tick(now: now)
        next = d.nextDeadline
        return d
    }

    mutating func receive(_ m: Message, at t: Duration? = nil) -> Directives {
        if let t { now = max(now, t) }
        let d = swim.receive(m, now: now)
        next = d.nextDeadline
        return d
    }

    /// Ticks at each requested deadline up to `limit`, collecting everything.
    mutating func runTimers(until limit: Duration) -> Directives {
        var all = Directives()
        while let n = next, n <= limit {
            let d = tick(at: n)
            all.messages += d.messages
            all.events += d.events
        }
        now = max(now, limit)
        return all
    }

    /// Ticks until the instance sends a ping to a member; returns it.
    mutating func nextProbe(limit: Duration = .seconds(5)) -> (to: String, ping: Ping)? {
        while let n = next, n <= limit {
            let d = tick(at: n)
            if let p = d.pings.first { return p }
        }
        return nil
    }

    struct NoProbe: Error {}

    /// The next probe, or an error failing the test when none comes within 5 s.
    mutating func probe() throws -> (to: String, ping: Ping) {
        guard let p = nextProbe() else { throw NoProbe() }
        return p
    }

    func status(_ name: String) -> MemberStatus? { swim.member(named: name)?.status }
}

extension Directives {
    var pings: [(to: String, ping: Ping)] {
        messages.compactMap { if case let .ping(p) = $0.message { return ($0.to, p) } else { return nil } }
    }
    var pingReqs: [(to: String, req: PingReq)] {
        messages.compactMap { if case let .pingReq(p) = $0.message { return ($0.to, p) } else { return nil } }
    }
    var acks: [(to: String, ack: Ack)] {
        messages.compactMap { if case let .ack(a) = $0.message { return ($0.to, a) } else { return nil } }
    }
    var nacks: [(to: String, nack: Nack)] {
        messages.compactMap { if case let .nack(n) = $0.message { return ($0.to, n) } else { return nil } }
    }
    var pushPulls: [(to: String, pp: PushPull)] {
        messages.compactMap { if case let .pushPull(p) = $0.message { return ($0.to, p) } else { return nil } }
    }
    /// Every gossip update carried by any message here.
    var gossip: [Gossip] {
        messages.flatMap { o -> [Gossip] in
            switch o.message {
            case let .ping(p): return p.gossip
            case let .pingReq(p): return p.gossip
            case let .ack(a): return a.gossip
            case let .gossip(g): return g.gossip
            default: return []
            }
        }
    }
    var changes: [MemberChange] {
        events.compactMap { if case let .memberChanged(c) = $0 { return c } else { return nil } }
    }
}

/// A stand-in for node certificates in the core's tests: the "certificate" is the owner's name
/// and the "signature" a keyed hash only an authenticator made for that owner computes. A test's
/// liar signs with its own (`owner: "b"`), or copies the owner's signature onto changed fields.
struct KeyedAuthenticator: RecordAuthenticator {
    let owner: String
    var certificate: [UInt8] { Array(owner.utf8) }
    func sign(_ message: [UInt8]) -> [UInt8] { Self.mac(owner, message) }
    func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? {
        if certificate != Array(name.utf8) { return "its certificate names \(String(decoding: certificate, as: UTF8.self))" }
        return signature == Self.mac(name, message) ? nil : "the signature does not match its certificate"
    }

    /// FNV-1a over a per-owner key and the message: not cryptography, a test double of it.
    static func mac(_ key: String, _ message: [UInt8]) -> [UInt8] {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in Array("key:\(key):".utf8) + message {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return withUnsafeBytes(of: h.bigEndian) { Array($0) }
    }
}
