import Bounds
import Foundation

/// Timing and size parameters. The defaults target a LAN (loopback in the benchmarks) over
/// TCP + TLS, where a probe's round trip is well under 5 ms even on a loaded 2-core host:
///
/// - Crash and freeze detection by every survivor within 1.5 s (kill) and 2 s (stop), from probe
///   timeouts alone. The chain is: the wait for the first probe of the failed member (the N−1
///   survivors together probe any one member 1/probeInterval = 5 times a second whatever N, so
///   0.2 s on average, ~0.6 s at the 95th percentile) + a failed probe round (probeInterval =
///   0.2 s: direct timeout 0.1 s, then k = 3 indirect probes) + the suspicion timeout +
///   dissemination of `dead` (gossip every 0.05 s to 3 members: ×4 per tick, 50 members in
///   ~3 ticks).
///   Suspicion (Lifeguard IV.B) = max(Min, Max − (Max − Min)·log(C+1)/log(K+1)) with
///   Min = 1.5·max(1, log10 N)·probeInterval and Max = 3·Min: N = 10 → 0.30 … 0.90 s,
///   N = 50 → 0.51 … 1.53 s, N = 10,000 → 1.2 … 3.6 s. Hearing a suspicion moves the suspect to
///   the front of every member's probe order, so K = 3 confirmations arrive within about one
///   interval and the timeout sits at Min: N = 50 ≈ 0.2 + 0.2 + 0.51 + 0.05 ≈ 0.96 s mean.
/// - Bandwidth ≤ 0.5 KB/s per node at rest: a ping (~21 B) and an ack (~8 B) five times a second
///   each way is ~150 B/s of payload, plus a push-pull of N·~45 B each way every 30 s, scaled by
///   log2 N above 32 members (N = 50: 2·2.3 KB / 60 s ≈ 75 B/s): ≈ 240 B/s before the shell's
///   frame and TLS record overhead (~28 B per message).
/// - No false positive under CPU load: Lifeguard IV.A stretches this node's probe interval,
///   probe timeout and suspicion timeouts by (LHM + 1) when its own probes fail without the
///   relays' nacks arriving, and the buddy system (IV.C) lets a suspected-but-alive member
///   refute at the next incoming probe, well inside Min.
public struct MembershipConfiguration: Sendable, Hashable {
    /// SWIM §3: one probe per interval, round-robin over a shuffled list (SWIM §4.3).
    public var probeInterval: Duration = .milliseconds(200)
    /// Wait this long for a direct ack before asking k relays (SWIM §3.1).
    public var probeTimeout: Duration = .milliseconds(100)
    /// Added to a probe's deadlines when it is our first contact with the member (we have never
    /// heard from it first-hand). Our transport is TLS over TCP, not SWIM's UDP: the first ping
    /// to a member waits for a handshake (ECDSA work on both sides), and when a whole cluster
    /// starts probing at once (a mass join on shared cores) that takes far longer than
    /// `probeTimeout`; counted as a failed probe, it started a suspicion storm (docs/membership.md,
    /// "The join storm"). Later probes go over the connection the first one opened.
    public var firstContactAllowance: Duration = .seconds(1)
    /// While the shell reports the dial a first contact needs as in progress
    /// (`SWIMInstance.peerDialing`), the probe's direct deadline stands this long after the dial
    /// began, and once the connection is open (`peerConnected`) it is the usual `probeTimeout`
    /// from then: the failure detector measures the member, not our own queue of handshakes. The
    /// agent's dial gives up after its connect timeout and TLS handshake timeout (2 + 5 s) and
    /// says so (`peerUnreachable`, which asks the relays at once), so this only bounds a dial
    /// whose end the shell never reports. A member whose process is gone refuses the dial at
    /// once; one behind a power cut or a partition fails it at the connect timeout.
    public var dialAllowance: Duration = .seconds(8)
    /// k: relays asked for an indirect probe (SWIM §3.1).
    public var indirectChecks = 3
    /// Lifeguard IV.B: Min = multiplier · max(1, log10 N) · probeInterval.
    public var suspicionMinMultiplier = 1.5
    /// Lifeguard IV.B: Max = multiplier · Min.
    public var suspicionMaxMultiplier = 3.0
    /// Lifeguard IV.B: K, the independent confirmations that bring the timeout down to Min.
    public var suspicionConfirmations = 3
    /// Lifeguard IV.A: the Local Health Multiplier's ceiling; timeouts stretch by at most (max + 1).
    public var maxLocalHealthMultiplier = 8
    /// λ in the retransmit limit λ·ceil(log10(N + 1)) (SWIM §4.1, memberlist's RetransmitMult).
    public var retransmitMultiplier = 4
    /// Gossip packets carrying pending updates go to `gossipFanout` random members every
    /// `gossipInterval`, but only while there is something to say: idle nodes send none.
    public var gossipInterval: Duration = .milliseconds(50)
    public var gossipFanout = 3
    /// Gossip packets go to members heard from within this window when there are any: their
    /// connection is open, and they are reachable now — a short window drops the far side of a
    /// partition from the candidates within a couple of seconds, so gossip is not wasted on it.
    /// At 5 probes a second each way, ~10 distinct members speak to us within 2 s whatever N.
    /// See `SWIMInstance.recentLiveMembers`.
    public var gossipPeerWindow: Duration = .seconds(2)
    /// Bytes of updates piggybacked on one ping/ack, and carried by one gossip packet.
    public var maxPiggybackBytes = 512
    public var maxGossipPacketBytes = 1400
    /// Push-pull with one random member every interval, scaled by ceil(log2(N/32)) + 1 above
    /// 32 members so the total full-state traffic grows like N log N, not N².
    public var pushPullInterval: Duration = .seconds(30)
    /// After joining, this many extra push-pulls, one every `joinPushPullDelay` (at 0.1, 0.2,
    /// … 1.4 s), with a member we already talk to — at first the one that answered the join,
    /// which hears of every member joining at the same time first. One full-state exchange
    /// brings what dozens of gossip packets would, over an open connection. Evenly spaced, so a
    /// member that joined early also pulls while the last of a mass join are still arriving
    /// (with doubling delays, 0.1/0.3/0.7/1.5 s, the early joiners learned of the late ones only
    /// at their 1.5 s pull: every 50-node join took ~1.1 s); they bound the tail of a member that
    /// missed some gossip to 1.4 s instead of a whole push-pull interval (serf's 86.7 s).
    /// During a mass join the seed's gossip cannot carry N−1 updates to N−1 members (its
    /// retransmit limit is λ·log N), so an early joiner learns of the last ones at its next pull:
    /// the spacing is the join's tail. 0.1 s rather than 0.2 s took the 50-agent join from
    /// 0.53 s to 0.35-0.42 s (docs/membership.md); the seed then answers ~10 pulls a second per
    /// joiner for 1.4 s, a few KB each over connections already open.
    public var joinPushPulls = 14
    public var joinPushPullDelay: Duration = .milliseconds(100)
    /// A joining node repeats its push-pull to the seeds this often until one answers.
    public var joinRetryInterval: Duration = .seconds(1)
    /// A member that joins starts probing only after its early push-pulls (1.4 s with the
    /// defaults). When 50 members join at once, probing from the start would open a TLS
    /// connection per probe (each first-round target is new), ~250 handshakes a second across
    /// the cluster competing for CPU with the join itself; the members already in the cluster
    /// keep watching everyone meanwhile, and the joiner's first round then finds its
    /// connections cheaper to open one by one.
    public var probeAfterJoinSettles = true
    /// memberlist's open problem (healed partitions stay split): for `redialWindow` after a
    /// member is declared dead, ping one such member every `redialInterval`; an ack starts a
    /// push-pull, which merges the two sides. After the window the member is forgotten.
    public var redialInterval: Duration = .milliseconds(500)
    public var redialWindow: Duration = .seconds(300)
    /// A split that no dead member can heal: every agent restarts during a partition and joins
    /// only its own side, so after the heal each side knows none of the other, and nobody is
    /// dead to redial (microscale-sim cluster seeds 1137, 2442, 8600). Every `seedCheckInterval`
    /// a member pings one join seed it does not know as a live member; a seed that answers with
    /// a name we do not hold live gets a push-pull, which merges the two views. A seed learned
    /// to be a live member (by address, or by the name its ack carried: a host name never
    /// equals a member's address) costs nothing after its first ack. Consul's `retry_join`
    /// stops at the first success and has this split; serf's snapshot rejoin does too.
    public var seedCheckInterval: Duration = .seconds(5)
    /// Left members are remembered this long so late gossip about them does not revive them.
    public var leftRetention: Duration = .seconds(60)
    /// A record delta that does not apply triggers a full-record request, at most this often per member.
    public var recordRequestInterval: Duration = .seconds(1)
    public var recordLimits = NodeRecordLimits.standard
    /// Members kept at most (10,000 by default, Limits.defaultMaxMembers): an unknown member
    /// announced beyond it is refused, so gossip about invented names cannot grow memory without
    /// bound.
    public var maxMembers = Limits.defaultMaxMembers
    /// How far above what is known an incarnation or record version someone reports may be
    /// (Limits.maxIncarnationJump): only a member raises its own, one refutation at a time, so a
    /// larger jump is a forgery, and refusing it keeps `+ 1` far from overflow.
    public var maxIncarnationJump = Limits.maxIncarnationJump

    public init() {}

    /// Defaults for a LAN; named so the shell's configuration reads like memberlist's profiles.
    public static let lan = MembershipConfiguration()

    /// Lifeguard IV.B, Min for a group of `n` members.
    public func suspicionMin(members n: Int) -> Duration {
        let factor = suspicionMinMultiplier * max(1.0, log10(Double(max(n, 1))))
        return probeInterval * factor
    }

    public func suspicionMax(members n: Int) -> Duration {
        suspicionMin(members: n) * suspicionMaxMultiplier
    }

    /// Lifeguard IV.B: the suspicion timeout after `confirmations` independent confirmations.
    public func suspicionTimeout(members n: Int, confirmations c: Int) -> Duration {
        let lo = suspicionMin(members: n), hi = suspicionMax(members: n)
        let k = min(suspicionConfirmations, max(0, n - 2))
        if k < 1 { return lo }
        let frac = log(Double(min(c, k) + 1)) / log(Double(k + 1))
        let t = hi - (hi - lo) * frac
        return max(lo, t)
    }

    /// SWIM §4.1: each update is sent λ·ceil(log10(N + 1)) times.
    public func retransmitLimit(members n: Int) -> Int {
        retransmitMultiplier * max(1, Int(ceil(log10(Double(n + 1)))))
    }

    public func scaledPushPullInterval(members n: Int) -> Duration {
        if n <= 32 { return pushPullInterval }
        let mult = Int(ceil(log2(Double(n)) - log2(32.0))) + 1
        return pushPullInterval * mult
    }
}
