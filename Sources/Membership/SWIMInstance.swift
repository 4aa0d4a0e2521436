import Bounds
import Determinism

/// The pure SWIM instance with the Lifeguard extensions (Das, Gupta, Motivala 2002; Dadgar et
/// al. 2018). It takes inputs (a message, a tick, a record change, join, leave) with the time
/// `now` — a Duration since an epoch chosen by the shell — and returns `Directives`. It reads no
/// clock or socket; its random choices come from a SeededGenerator seeded by the shell.
public struct SWIMInstance: Sendable {
    public let configuration: MembershipConfiguration
    /// Signs this member's record and checks everyone else's (see `RecordAuthenticator`).
    public let authenticator: any RecordAuthenticator
    /// This member's own record, signed; `updateRecord` changes it.
    public private(set) var record: NodeRecord
    /// SWIM §4.2: only this member raises its incarnation, to refute suspicion about itself.
    public private(set) var incarnation: UInt64
    /// Lifeguard IV.A: the Local Health Multiplier (0 = healthy). Probe interval and timeouts
    /// are stretched by (localHealth + 1).
    public private(set) var localHealth = 0
    public private(set) var isLeaving = false

    public var name: String { record.name }
    public var address: String { record.address }

    private var members: [Member] = []
    private var index: [String: Int] = [:]
    /// Members by status (self excluded).
    private var counts: [MemberStatus: Int] = [.alive: 0, .suspect: 0, .dead: 0, .left: 0]
    /// SWIM §4.3: indices into `members`, shuffled once per round.
    private var probeOrder: [Int32] = []
    private var probeCursor = 0
    private var rng: SeededGenerator
    private var lastSequence: UInt64 = 0
    private var nextProbeAt: Duration
    private var probe: Probe?
    private var relays: [UInt64: Relay] = [:]
    private var suspicions: [String: Suspicion] = [:]
    private var broadcasts = BroadcastQueue()
    private var nextGossipAt: Duration
    private var nextPushPullAt: Duration
    private var nextRedialAt: Duration
    private var redial: (sequence: UInt64, name: String)?
    /// Verification pings in flight, by member: this instance's own probe of a member others
    /// report suspect, dead or left (see `isConfirmedDown`).
    private var verifications: [String: (sequence: UInt64, deadline: Duration)] = [:]
    private var lastVerified: [String: Duration] = [:]
    private var joinSeeds: [String] = []
    private var nextJoinAt: Duration?
    /// Join seeds rechecked after the join (`checkSeeds`): the name each seed's last ack carried,
    /// the check in flight, and when the next one is due.
    private var seedNames: [String: String] = [:]
    private var seedCheck: (sequence: UInt64, seed: String)?
    private var nextSeedCheckAt: Duration?
    private var seedCursor = 0
    /// Push-pulls still owed soon after joining (see `onPushPull`).
    private var earlyPushPulls = 0
    /// Set while merging a push-pull reply that completes our join or answers one of its early
    /// push-pulls: members learned from it are not re-announced (see `onPushPull`).
    private var mergingJoinReply = false
    private var recordRequests: [String: Duration] = [:]
    /// Members heard of in this input without their certificates, by the address of the member
    /// that told us: asked of it in one request when the input is done (`askRelays`).
    private var wantedRecords: [String: [String]] = [:]
    /// The members we heard from most recently, newest last, with when (see `hear`).
    private var recentPeers: [(name: String, at: Duration)] = []
    private var out = Directives()

    private struct Probe: Sendable {
        var target: String
        var sequence: UInt64
        var directDeadline: Duration
        var roundDeadline: Duration
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
        /// When the next probe would start had this not been a first contact: an ack brings the
        /// schedule back to it (`firstContactAllowance` is for the handshake, not the round).
        var usualNextProbeAt: Duration? = nil
    }

    private struct Relay: Sendable {
        var requester: String
        var sequence: UInt64
        var deadline: Duration
    }

    /// Lifeguard IV.B: a suspicion with its independent confirmations.
    private struct Suspicion: Sendable {
        var incarnation: UInt64
        var startedAt: Duration
        /// Who suspected, the originator first; confirmations = count − 1.
        var suspecters: [String]
        var confirmations: Int { suspecters.count - 1 }
    }

    /// Bounds on per-peer bookkeeping (principle 7).
    private static let maxRelays = 64
    /// Verification pings in flight at once, and members whose last verification is remembered.
    private static let maxVerifications = 8
    private static let maxJoinSeeds = 16
    private static let maxRecordRequests = 256
    /// Records one `RecordRequest` asks a relay for, and one answer holds, at most.
    public static let maxRecordsPerRequest = 128
    private static let maxRecentPeers = 64

    /// - Parameters:
    ///   - incarnation: where to start; a shell that persists it passes the last one + 1, and
    ///     one that does not can pass 0: hearing itself suspected or dead at a higher
    ///     incarnation (push-pull on join) makes the instance jump above it.
    public init(
        configuration: MembershipConfiguration = .lan, record: NodeRecord, seed: UInt64,
        now: Duration, incarnation: UInt64 = 0,
        authenticator: any RecordAuthenticator = UnsignedRecords()
    ) throws(NodeRecordError) {
        let record = record.signed(by: authenticator).proving(incarnation: incarnation, by: authenticator)
        try record.validate(configuration.recordLimits)
        self.configuration = configuration
        self.authenticator = authenticator
        self.record = record
        self.incarnation = incarnation
        rng = SeededGenerator(seed: seed)
        // Random phases keep a cluster started at one instant from probing in lockstep.
        nextProbeAt = now + Duration.randomUpTo(configuration.probeInterval, using: &rng)
        nextPushPullAt = now + Duration.randomUpTo(configuration.pushPullInterval, using: &rng)
        nextGossipAt = now
        nextRedialAt = now + configuration.redialInterval
        broadcasts.enqueue(.alive(incarnation: incarnation, record: record))
    }

    // MARK: Queries for the shell

    /// Every member this instance knows, itself excluded, in no particular order.
    public var knownMembers: [Member] { members }

    public func member(named name: String) -> Member? {
        index[name].map { members[$0] }
    }

    public func count(_ status: MemberStatus) -> Int { counts[status] ?? 0 }

    /// Whether this instance has evidence of its own that `name` is gone: it is dead or left, and
    /// either it said it left itself, or a probe of ours went unanswered and nothing was heard
    /// from it since. A `dead`, `suspect` or `left` relayed by others is hearsay: one member that
    /// lies (or one that cannot reach the subject) must not be enough to move a node's work, so
    /// the leader plans such a node as suspect until its own probe fails; the probe is sent as
    /// soon as the hearsay arrives (`verify`), and a subject that answers refutes it at once.
    public func isConfirmedDown(_ name: String) -> Bool {
        guard let i = index[name] else { return false }
        let m = members[i]
        guard m.status == .dead || m.status == .left else { return false }
        if m.status == .left && m.saidLeft { return true }
        guard let failed = m.ownProbeFailedAt else { return false }
        return m.lastHeard.map { failed >= $0 } ?? true
    }

    /// Updates waiting to be piggybacked or gossiped (0 when the cluster is at rest).
    public var pendingBroadcasts: Int { broadcasts.count }

    /// Alive and suspect members, self excluded.
    public var liveCount: Int { count(.alive) + count(.suspect) }

    /// This member as push-pull carries it.
    public var selfState: MemberState {
        MemberState(incarnation: incarnation, status: isLeaving ? .left : .alive, record: record)
    }

    // MARK: Entry points

    /// Starts joining through `seeds` (addresses): a push-pull with each, repeated every
    /// joinRetryInterval until some member is known.
    public mutating func join(seeds: [String], now: Duration) -> Directives {
        begin()
        joinSeeds = Array(seeds.filter { $0 != address }.prefix(Self.maxJoinSeeds))
        sendJoin()
        nextJoinAt = joinSeeds.isEmpty ? nil : now + configuration.joinRetryInterval
        nextSeedCheckAt = joinSeeds.isEmpty ? nil : now + configuration.seedCheckInterval
        return finish(now)
    }

    /// Loads a membership view wholesale (a large simulation's converged start), as if it had
    /// been learned long ago: nothing is gossiped, not even this member's own `alive`.
    public mutating func restore(_ states: [MemberState], now: Duration) {
        broadcasts = BroadcastQueue()
        members.reserveCapacity(states.count)
        index.reserveCapacity(states.count)
        for s in states where s.record.name != name && index[s.record.name] == nil {
            index[s.record.name] = members.count
            members.append(Member(record: s.record, incarnation: s.incarnation, status: s.status, statusSince: now))
            counts[s.status, default: 0] += 1
        }
        probeOrder = []
        probeCursor = 0
        // init() could not know N; spread the first push-pull over the interval scaled for it.
        let interval = configuration.scaledPushPullInterval(members: liveCount + 1)
        nextPushPullAt = now + Duration.randomUpTo(interval, using: &rng)
    }

    public mutating func receive(_ message: Message, now: Duration) -> Directives {
        begin()
        if let sender = message.senderName { hear(sender, now) }
        switch message {
        case let .ping(p): onPing(p, now)
        case let .pingReq(r): onPingReq(r, now)
        case let .ack(a): onAck(a, now)
        case let .nack(n):
            if probe?.sequence == n.sequence { probe?.nacks += 1 }
        case let .gossip(g): apply(g.gossip, from: g.from, now)
        case let .pushPull(p): onPushPull(p, now)
        case let .recordRequest(r):
            if r.names.isEmpty {
                send(.record(RecordReply(incarnation: incarnation, record: record)), to: r.fromAddress)
            } else {
                answerRecordRequest(r)
            }
        case let .record(r): onRecord(r, now)
        }
        return finish(now)
    }

    /// Runs every timer due by `now`.
    public mutating func tick(now: Duration) -> Directives {
        begin()
        if var p = probe {
            if !p.indirectSent && now >= p.directDeadline {
                sendIndirectProbes(&p, now)
                probe = p
            }
            if now >= p.roundDeadline { probeFailed(p, now) }
        }
        if !relays.isEmpty {
            // In sequence order, not the dictionary's (which differs between processes): the nacks'
            // order reaches the network, and a simulation's seed must replay in any process.
            for seq in relays.keys.sorted() {
                guard let r = relays[seq], now >= r.deadline else { continue }
                // Lifeguard IV.A: the target did not answer us in time; tell the requester so it
                // knows its own link to us is fine.
                send(.nack(Nack(sequence: r.sequence, from: name)), to: r.requester)
                relays[seq] = nil
            }
        }
        if !suspicions.isEmpty {
            let n = liveCount + 1
            // By name, not in the dictionary's order: the verdicts' order reaches the gossip.
            for subject in suspicions.keys.sorted() {
                guard let s = suspicions[subject], now >= s.startedAt + suspicionTimeout(members: n, s) else { continue }
                suspicions[subject] = nil
                if let i = index[subject], members[i].status == .suspect, members[i].incarnation == s.incarnation {
                    applyDead(subject, incarnation: s.incarnation, from: name, now)
                }
            }
        }
        if !isLeaving && now >= nextProbeAt {
            startProbe(now)
        }
        verify(now)
        if !broadcasts.isEmpty && liveCount > 0 && now >= nextGossipAt {
            gossip(now)
            nextGossipAt = now + configuration.gossipInterval
        }
        if now >= nextPushPullAt {
            // The early push-pulls after a join go to a member we already talk to (the one that
            // answered the join, at first): it knows the most, and it costs no new connection.
            let target = earlyPushPulls > 0 ? recentLiveMembers(1, now).first : randomLiveMembers(1, excluding: nil).first
            if !isLeaving, let target {
                // Without certificates, even right after a join: members either side lacks are
                // asked of the other in one request (`wantRecord`). With them, a 50-member state
                // was ~35 KB each way, 14 times per joiner, and a mass join of 50 on one machine
                // spent its CPU on them (docs/membership.md, "Certificates travel to who lacks them").
                send(.pushPull(fullState(isReply: false, isJoin: false, certificates: false)), to: members[target].address)
            }
            if earlyPushPulls > 0 {
                earlyPushPulls -= 1
            }
            if earlyPushPulls > 0 {
                nextPushPullAt = now + configuration.joinPushPullDelay
            } else {
                // ±25% jitter keeps members that joined together from pushing in lockstep.
                let interval = configuration.scaledPushPullInterval(members: liveCount + 1)
                nextPushPullAt = now + interval * 0.75 + Duration.randomUpTo(interval * 0.5, using: &rng)
            }
        }
        if now >= nextRedialAt {
            nextRedialAt = now + configuration.redialInterval
            if count(.dead) > 0 && !isLeaving { redialDead(now) }
        }
        if let c = nextSeedCheckAt, now >= c {
            nextSeedCheckAt = now + configuration.seedCheckInterval
            // While the join still retries it contacts every seed itself.
            if nextJoinAt == nil && !isLeaving { checkSeeds() }
        }
        if let j = nextJoinAt, now >= j {
            if liveCount == 0 {
                sendJoin()
                nextJoinAt = now + configuration.joinRetryInterval
            } else {
                nextJoinAt = nil
            }
        }
        return finish(now)
    }

    /// Replaces this member's record (the agent's containers changed, say) and disseminates the
    /// change as a delta. The version is this instance's to assign; the one in `new` is ignored.
    public mutating func updateRecord(_ new: NodeRecord, now: Duration) throws(NodeRecordError) -> Directives {
        begin()
        guard new.name == record.name else { throw .nameChanged(from: record.name, to: new.name) }
        var next = new
        next.version = record.version
        next.certificate = record.certificate
        next.signature = record.signature
        next.provenIncarnation = record.provenIncarnation
        next.incarnationSignature = record.incarnationSignature
        if next == record { return finish(now) }
        next.version = min(record.version, .max - 1) + 1  // saturates: own counters never trap either
        next = next.signed(by: authenticator)
        try next.validate(configuration.recordLimits)
        let delta = NodeRecordDelta.between(record, next)
        record = next
        broadcasts.enqueue(.recordDelta(delta))
        out.events.append(.recordUpdated(name: name, version: record.version))
        return finish(now)
    }

    /// Signs this member's record again with what the authenticator holds now (a certificate
    /// reloaded on SIGHUP), as a new version whose delta carries the new certificate, and proves
    /// the current incarnation under it.
    public mutating func refreshProof(now: Duration) -> Directives {
        begin()
        var next = record
        next.version = min(record.version, .max - 1) + 1
        next = next.signed(by: authenticator).proving(incarnation: incarnation, by: authenticator)
        let delta = NodeRecordDelta.between(record, next)
        record = next
        broadcasts.enqueue(.recordDelta(delta))
        out.events.append(.recordUpdated(name: name, version: record.version))
        return finish(now)
    }

    /// Graceful leave: tells everyone at once (a gossip packet to several members) and keeps
    /// answering probes. The shell keeps ticking for a few gossip intervals, then stops.
    public mutating func leave(now: Duration) -> Directives {
        begin()
        guard !isLeaving else { return finish(now) }
        isLeaving = true
        probe = nil
        setOwnIncarnation(min(incarnation, .max - 1) + 1)
        broadcasts.enqueue(.left(name: name, incarnation: incarnation))
        let targets = randomLiveMembers(configuration.gossipFanout * 2, excluding: nil)
        for t in targets {
            send(
                .gossip(GossipPacket(from: name, gossip: [.left(name: name, incarnation: incarnation)])),
                to: members[t].address)
        }
        return finish(now)
    }

    /// `microscale force-leave NODE` (as Serf's force-leave): a member this instance has declared
    /// dead is marked left, and the news gossiped, so that every member treats it as gone for good
    /// (the autopilot removes a left server from the Raft configuration at once). Refused for a
    /// member that is alive or suspect here: if it is in fact alive it would refute the report
    /// anyway (a member's word about itself wins), and an operator should not be able to make a
    /// working member look gone. Returns the member's status before, nil if unknown.
    public mutating func forceLeave(_ subject: String, now: Duration) -> (MemberStatus?, Directives) {
        begin()
        guard subject != name, let i = index[subject] else { return (nil, finish(now)) }
        let before = members[i].status
        if before == .dead { applyLeft(subject, incarnation: members[i].incarnation, now) }
        return (before, finish(now))
    }

    /// A hint from the transport: the connection to `address` was refused or reset (a killed
    /// process; a frozen one or a cut link gives no such hint). It only makes us probe sooner:
    /// the current probe of that member skips to its indirect phase, or the member becomes our
    /// next probe target and that probe starts now. A verdict still needs a whole failed probe
    /// round and the suspicion timeout, so a spurious hint costs one probe and marks no one.
    public mutating func peerUnreachable(address: String, now: Duration) -> Directives {
        begin()
        // A verification whose dial failed has its answer (a reset: the process is gone).
        for (subject, _) in verifications {
            if let i = index[subject], members[i].address == address {
                verifications[subject] = nil
                members[i].ownProbeFailedAt = now
            }
        }
        if var p = probe, let i = index[p.target], members[i].address == address {
            if !p.indirectSent {
                sendIndirectProbes(&p, now)
                probe = p
            }
        } else if !isLeaving,
            let i = members.firstIndex(where: { $0.address == address && ($0.status == .alive || $0.status == .suspect) })
        {
            probeNext(i)
            if probe == nil { nextProbeAt = min(nextProbeAt, now) }
        }
        return finish(now)
    }

    /// The shell began opening a connection to `address` (TCP and a TLS handshake) for what it
    /// sends there. A first-contact probe of that member then waits for the dial, up to
    /// `configuration.dialAllowance`, instead of its fixed `firstContactAllowance`: when a mass
    /// join starves the cores, handshakes take seconds, and counting them against the member
    /// suspected members that were fine and fed the starvation with indirect probes and
    /// refutations (docs/membership.md, "The join storm"). Later probes of the member use the
    /// connection this one opened, and have no allowance.
    public mutating func peerDialing(address: String, now: Duration) -> Directives {
        begin()
        if var p = probe, p.usualNextProbeAt != nil, !p.indirectSent,
            let i = index[p.target], members[i].address == address
        {
            p.directDeadline = max(p.directDeadline, now + scaled(configuration.probeTimeout) + configuration.dialAllowance)
            p.roundDeadline = max(p.roundDeadline, now + scaled(configuration.probeInterval) + configuration.dialAllowance)
            probe = p
            nextProbeAt = max(nextProbeAt, p.roundDeadline)
        }
        return finish(now)
    }

    /// The dial to `address` completed: a first-contact probe waiting on it now has the usual
    /// `probeTimeout` from this moment, and the usual round after it.
    public mutating func peerConnected(address: String, now: Duration) -> Directives {
        begin()
        if var p = probe, p.usualNextProbeAt != nil, !p.indirectSent,
            let i = index[p.target], members[i].address == address
        {
            p.directDeadline = min(p.directDeadline, now + scaled(configuration.probeTimeout))
            p.roundDeadline = min(p.roundDeadline, now + scaled(configuration.probeInterval))
            probe = p
            nextProbeAt = min(nextProbeAt, p.roundDeadline)
        }
        return finish(now)
    }

    // MARK: Probing (SWIM §3, §4.3; Lifeguard IV.A)

    private func scaled(_ d: Duration) -> Duration { d * (localHealth + 1) }

    /// Lifeguard IV.B's timeout, stretched like every other timeout of ours by (LHM + 1)
    /// (IV.A): a member whose own probes are failing without nacks is the likelier culprit, so it
    /// gives the members it suspects longer to refute before it declares them dead. A healthy
    /// member (LHM 0) uses the plain timeout, so detection of real failures is unchanged.
    private func suspicionTimeout(members n: Int, _ s: Suspicion) -> Duration {
        scaled(configuration.suspicionTimeout(members: n, confirmations: s.confirmations))
    }

    private mutating func adjustHealth(_ delta: Int) {
        localHealth = min(configuration.maxLocalHealthMultiplier, max(0, localHealth + delta))
    }

    private mutating func nextSequence() -> UInt64 {
        lastSequence &+= 1
        return lastSequence
    }

    private mutating func startProbe(_ now: Duration) {
        nextProbeAt = now + scaled(configuration.probeInterval)
        guard let i = nextProbeTarget(now) else { return }
        let m = members[i]
        // First contact: the ping waits for a handshake too (`firstContactAllowance`). The next
        // probe waits for this one's round, so one slow handshake is in flight at a time.
        let allowance = m.lastHeard == nil ? configuration.firstContactAllowance : .zero
        nextProbeAt += allowance
        let seq = nextSequence()
        send(
            .ping(
                Ping(
                    sequence: seq, from: name, fromAddress: address, target: m.name,
                    suspectedAt: m.status == .suspect ? m.incarnation : nil,
                    gossip: broadcasts.take(budget: configuration.maxPiggybackBytes, limit: retransmitLimit))),
            to: m.address)
        probe = Probe(
            target: m.name, sequence: seq,
            directDeadline: now + scaled(configuration.probeTimeout) + allowance,
            roundDeadline: now + scaled(configuration.probeInterval) + allowance,
            usualNextProbeAt: allowance > .zero ? nextProbeAt - allowance : nil)
    }

    /// SWIM §4.3: round-robin over a list shuffled at the start of each round, so every member
    /// is probed within one round (a bounded, not just expected, detection time).
    private mutating func nextProbeTarget(_ now: Duration) -> Int? {
        var tries = 0
        while tries <= probeOrder.count + 1 {
            tries += 1
            if probeCursor >= probeOrder.count {
                newRound(now)
                if probeOrder.isEmpty { return nil }
            }
            let i = Int(probeOrder[probeCursor])
            probeCursor += 1
            if i < members.count, members[i].status == .alive || members[i].status == .suspect {
                return i
            }
        }
        return nil
    }

    /// Starts a probe round: forgets members past their retention, reshuffles.
    private mutating func newRound(_ now: Duration) {
        let expired = members.contains { m in
            (m.status == .dead && now - m.statusSince >= configuration.redialWindow)
                || (m.status == .left && now - m.statusSince >= configuration.leftRetention)
        }
        if expired {
            let redialWindow = configuration.redialWindow, leftRetention = configuration.leftRetention
            members.removeAll { m in
                (m.status == .dead && now - m.statusSince >= redialWindow)
                    || (m.status == .left && now - m.statusSince >= leftRetention)
            }
            index = [:]
            counts = [.alive: 0, .suspect: 0, .dead: 0, .left: 0]
            for (i, m) in members.enumerated() {
                index[m.name] = i
                counts[m.status, default: 0] += 1
            }
        }
        probeOrder = []
        probeOrder.reserveCapacity(liveCount)
        for (i, m) in members.enumerated() where m.status == .alive || m.status == .suspect {
            probeOrder.append(Int32(i))
        }
        probeOrder.shuffle(using: &rng)
        probeCursor = 0
    }

    private mutating func sendIndirectProbes(_ p: inout Probe, _ now: Duration) {
        p.indirectSent = true
        guard let ti = index[p.target] else { return }
        let targetAddress = members[ti].address
        // Relays we already talk to, as for gossip: over TCP + TLS a relay with no open
        // connection costs a handshake before it can even be asked. When a mass join starves the
        // cores, first-contact probes fail for want of handshakes, and asking three random relays
        // (three more handshakes, and their pings to the target three more) fed the starvation
        // that failed them: 862 of the 2,900 dials of a 50-agent join were ping-reqs
        // (docs/membership.md, "The join storm"). Any live member is as good a witness.
        let relays = relayCandidates(configuration.indirectChecks, excluding: p.target, now)
        p.expectedNacks = relays.count
        for r in relays {
            send(
                .pingReq(
                    PingReq(
                        sequence: p.sequence, from: name, fromAddress: address, target: p.target,
                        targetAddress: targetAddress,
                        gossip: broadcasts.take(budget: configuration.maxPiggybackBytes, limit: retransmitLimit))),
                to: members[r].address)
        }
    }

    private mutating func probeFailed(_ p: Probe, _ now: Duration) {
        probe = nil
        // Lifeguard IV.A: a failed probe says little about the target if the relays' nacks are
        // missing too — then the problem is more likely here. Count the missing nacks (or 1 if
        // no relay could be asked) against our own health, as memberlist does.
        if p.expectedNacks > 0 {
            adjustHealth(max(0, p.expectedNacks - p.nacks))
        } else {
            adjustHealth(1)
        }
        guard let i = index[p.target] else { return }
        members[i].ownProbeFailedAt = now
        let m = members[i]
        if m.status == .alive || m.status == .suspect {
            applySuspect(m.name, incarnation: m.incarnation, from: name, now)
        }
    }

    /// Sends this instance's own probe to members that others report suspect, dead or left and
    /// that it has no evidence about, at most one per member per probe interval and
    /// `maxVerifications` at a time. The ping carries the incarnation the hearsay is at, so a
    /// member that is alive refutes in its ack (Lifeguard IV.C's buddy system).
    private mutating func verify(_ now: Duration) {
        for (subject, v) in verifications where now >= v.deadline {
            verifications[subject] = nil
            if let i = index[subject] { members[i].ownProbeFailedAt = now }
        }
        guard !isLeaving, verifications.count < Self.maxVerifications else { return }
        for i in members.indices where verifications.count < Self.maxVerifications {
            let m = members[i]
            guard m.status != .alive, !isConfirmedDown(m.name), verifications[m.name] == nil,
                m.status != .left || !m.saidLeft,
                probe?.target != m.name,
                now - (lastVerified[m.name] ?? .seconds(-3600)) >= scaled(configuration.probeInterval)
            else { continue }
            // Hearsay that our own probe round will check anyway: a suspect it probes next.
            if m.status == .suspect, m.ownProbeFailedAt.map({ f in m.lastHeard.map { f >= $0 } ?? true }) == true { continue }
            if lastVerified.count >= 4 * Self.maxVerifications { lastVerified = [:] }
            lastVerified[m.name] = now
            let seq = nextSequence()
            verifications[m.name] = (seq, now + scaled(configuration.probeTimeout))
            send(
                .ping(Ping(sequence: seq, from: name, fromAddress: address, target: m.name, suspectedAt: m.incarnation)),
                to: m.address)
        }
    }

    private mutating func onPing(_ p: Ping, _ now: Duration) {
        apply(p.gossip, from: p.from, now)
        // A member that probes us but that we do not know: ask it for its record. It knows us, so
        // nothing else would tell us of it before its next push-pull (up to 37.5 s): its own
        // `alive` went out when it joined, and members that restarted since (each joining through
        // others that did not know it either) never heard it. microscale-sim cluster seed 182:
        // three servers restarted while the fourth agent was partitioned away and frozen; it knew
        // them, they did not know it, and its work waited 22 s for the push-pull. The answer is
        // checked like any record (`onRecord`), at most one request per member per
        // recordRequestInterval, and none past maxMembers.
        if !p.from.isEmpty, p.from != name, index[p.from] == nil, members.count < configuration.maxMembers {
            requestRecord(of: p.from, at: p.fromAddress, now)
        }
        // A ping for someone else (this address now belongs to another member) gets no ack, so
        // the sender's probe of that member fails as it should.
        guard p.target.isEmpty || p.target == name else { return }
        var gossip = broadcasts.take(budget: configuration.maxPiggybackBytes, limit: retransmitLimit)
        if let s = p.suspectedAt, !isLeaving {
            // Lifeguard IV.C (buddy system): the prober suspects us; refute at once, and answer
            // the prober itself with the refutation even if our queue has already sent it its
            // λ·log N times (dozens of buddy pings can arrive within one interval).
            if s >= incarnation { refute(above: s, now) }
            let alive = Gossip.alive(incarnation: incarnation, record: record.withoutCertificate)
            if !gossip.contains(alive) { gossip.append(alive) }
        }
        send(.ack(Ack(sequence: p.sequence, from: name, gossip: gossip)), to: p.fromAddress)
    }

    private mutating func onPingReq(_ r: PingReq, _ now: Duration) {
        apply(r.gossip, from: r.from, now)
        guard relays.count < Self.maxRelays else { return }
        let seq = nextSequence()
        let suspectedAt = index[r.target].flatMap { members[$0].status == .suspect ? members[$0].incarnation : nil }
        send(
            .ping(
                Ping(
                    sequence: seq, from: name, fromAddress: address, target: r.target, suspectedAt: suspectedAt,
                    gossip: broadcasts.take(budget: configuration.maxPiggybackBytes, limit: retransmitLimit))),
            to: r.targetAddress)
        // Lifeguard IV.A: nack at 80% of the probe timeout, leaving the requester time to count it.
        relays[seq] = Relay(
            requester: r.fromAddress, sequence: r.sequence,
            deadline: now + configuration.probeTimeout * 0.8)
    }

    private mutating func onAck(_ a: Ack, _ now: Duration) {
        apply(a.gossip, from: a.from, now)
        if let p = probe, p.sequence == a.sequence {
            probe = nil
            adjustHealth(-1)
            if let usual = p.usualNextProbeAt { nextProbeAt = min(nextProbeAt, max(usual, now)) }
        } else if let r = relays.removeValue(forKey: a.sequence) {
            // The target's refutation, if any, is in our queue now; pass it on with the ack.
            send(
                .ack(
                    Ack(
                        sequence: r.sequence, from: name,
                        gossip: broadcasts.take(budget: configuration.maxPiggybackBytes, limit: retransmitLimit))),
                to: r.requester)
        } else if let v = verifications[a.from], v.sequence == a.sequence {
            // Heard from first hand (`hear`): the hearsay does not move its work. A member we hold
            // dead that answers is a healed partition, as with a redial: a push-pull merges views.
            verifications[a.from] = nil
            if let i = index[a.from], members[i].status == .dead {
                send(.pushPull(fullState(isReply: false, isJoin: false, certificates: false)), to: members[i].address)
            }
        } else if let c = seedCheck, c.sequence == a.sequence {
            // A join seed answered. One we do not hold live is on the other side of a split (or
            // restarted unseen): a push-pull merges the views, as after a redial.
            seedCheck = nil
            seedNames[c.seed] = a.from
            if a.from != name, !isLive(a.from) {
                send(.pushPull(fullState(isReply: false, isJoin: false, certificates: false)), to: c.seed)
            }
        } else if let d = redial, d.sequence == a.sequence {
            // A member we declared dead answers: the partition healed. A push-pull merges the
            // two views; the member refutes its death when it sees it in our state. Without
            // certificates, as any push-pull after a join: what either side lacks it asks for
            // (`wantRecord`); with them a 50-member state is ~35 KB each way, and redials of the
            // members a starved mass join declared dead sent them twice a second per member.
            redial = nil
            if let i = index[d.name] {
                send(.pushPull(fullState(isReply: false, isJoin: false, certificates: false)), to: members[i].address)
            }
        }
    }

    private func isLive(_ member: String) -> Bool {
        guard let i = index[member] else { return false }
        return members[i].status == .alive || members[i].status == .suspect
    }

    /// Pings the next join seed that is not a live member we know, with no target name (any
    /// member answers such a ping, and its ack names it). Seeds in turn, not at random: the
    /// random source's draws reach the network, and this check must not move a simulation's
    /// other choices.
    private mutating func checkSeeds() {
        guard !joinSeeds.isEmpty else { return }
        // Built only while some seed is not yet known by name: once each is, a check is a few
        // dictionary lookups.
        var liveAddresses: [String: String]? = nil
        for k in 0..<joinSeeds.count {
            let seed = joinSeeds[(seedCursor + k) % joinSeeds.count]
            if let n = seedNames[seed], n == name || isLive(n) { continue }
            if liveAddresses == nil {
                var byAddress: [String: String] = [:]
                for m in members where m.status == .alive || m.status == .suspect { byAddress[m.address] = m.name }
                liveAddresses = byAddress
            }
            if let n = liveAddresses?[seed] {
                seedNames[seed] = n
                continue
            }
            seedCursor = (seedCursor + k + 1) % joinSeeds.count
            let seq = nextSequence()
            seedCheck = (seq, seed)
            send(.ping(Ping(sequence: seq, from: name, fromAddress: address, target: "")), to: seed)
            return
        }
    }

    private mutating func redialDead(_ now: Duration) {
        var candidates: [Int] = []
        for (i, m) in members.enumerated() where m.status == .dead && now - m.statusSince < configuration.redialWindow {
            candidates.append(i)
            if candidates.count >= 64 { break }
        }
        guard let i = candidates.randomElement(using: &rng) else { return }
        let seq = nextSequence()
        redial = (seq, members[i].name)
        send(
            .ping(Ping(sequence: seq, from: name, fromAddress: address, target: members[i].name)),
            to: members[i].address)
    }

    // MARK: Dissemination (SWIM §4.1)

    private var retransmitLimit: Int { configuration.retransmitLimit(members: liveCount + 1) }

    private mutating func gossip(_ now: Duration) {
        for t in recentLiveMembers(configuration.gossipFanout, now) {
            let items = broadcasts.take(budget: configuration.maxGossipPacketBytes, limit: retransmitLimit)
            if items.isEmpty { break }
            send(.gossip(GossipPacket(from: name, gossip: items)), to: members[t].address)
        }
    }

    private mutating func apply(_ updates: [Gossip], from sender: String, _ now: Duration) {
        for g in updates {
            switch g {
            case let .alive(inc, rec): applyAlive(inc, rec, relay: index[sender].map { members[$0].address }, now)
            case let .suspect(n, inc, from): applySuspect(n, incarnation: inc, from: from, now)
            case let .dead(n, inc, from): applyDead(n, incarnation: inc, from: from, now)
            case let .left(n, inc):
                applyLeft(n, incarnation: inc, now)
                // The shell has checked that `sender` is the authenticated peer: a member that
                // says itself that it leaves is first-hand; a relay of it is hearsay.
                if n == sender, let i = index[n], members[i].status == .left { members[i].saidLeft = true }
            case let .recordDelta(d): applyDelta(d, from: sender, now)
            }
        }
    }

    private mutating func setStatus(_ i: Int, _ status: MemberStatus, incarnation inc: UInt64, _ now: Duration) {
        let previous = members[i].status
        members[i].incarnation = inc
        guard previous != status else { return }
        counts[previous, default: 0] -= 1
        counts[status, default: 0] += 1
        members[i].status = status
        members[i].statusSince = now
        if status == .alive {
            // Back: what we knew of its going no longer holds.
            members[i].ownProbeFailedAt = nil
            members[i].saidLeft = false
        }
        if status != .suspect { suspicions[members[i].name] = nil }
        out.events.append(
            .memberChanged(
                MemberChange(
                    name: members[i].name, address: members[i].address,
                    previous: previous, status: status, incarnation: inc)))
    }

    /// - Parameter relay: the address of the member that passed this on, asked for the record
    ///   with its certificate when it came without one and we do not know the member.
    private mutating func applyAlive(_ inc: UInt64, _ rec: NodeRecord, relay: String? = nil, _ now: Duration) {
        do throws(NodeRecordError) {
            try rec.validate(configuration.recordLimits)
        } catch {
            out.events.append(.rejected(from: rec.name, reason: error.description))
            return
        }
        if rec.name == name {
            var ours = rec
            if ours.certificate.isEmpty { ours.certificate = record.certificate }
            noteReportAboutSelf(incarnation: inc, status: .alive, record: ours, now)
            return
        }
        // Sent without its certificate: checked against the one we hold; a member we never heard
        // of is asked of whoever told us (it checked the record, so it holds the certificate).
        var rec = rec
        if rec.certificate.isEmpty, !authenticator.certificate.isEmpty {
            guard let i = index[rec.name] else {
                wantRecord(of: rec.name, ownerAddress: rec.address, relay: relay, now)
                return
            }
            rec.certificate = members[i].record.certificate
        }
        guard let i = index[rec.name] else {
            // A member we have never heard of is known by its record alone: only its owner's.
            guard isOwners(rec) else { return }
            guard members.count < configuration.maxMembers else {
                out.events.append(.rejected(from: rec.name, reason: "member limit \(configuration.maxMembers) reached"))
                return
            }
            // At the incarnation its owner signed, no higher: a relay cannot start it higher than
            // its owner said, where a later refutation would not reach.
            let inc = min(inc, provenIncarnation(rec))
            index[rec.name] = members.count
            members.append(Member(record: rec, incarnation: inc, status: .alive, statusSince: now))
            counts[.alive, default: 0] += 1
            // New members join the current round at a random place (memberlist does the same),
            // so they are probed within this round without reshuffling everyone.
            let pos = probeCursor >= probeOrder.count ? probeOrder.count : Int.random(in: probeCursor...probeOrder.count, using: &rng)
            probeOrder.insert(Int32(members.count - 1), at: pos)
            out.events.append(
                .memberChanged(
                    MemberChange(
                        name: rec.name, address: rec.address, previous: nil,
                        status: .alive, incarnation: inc)))
            // Without its certificate (~480 of its ~690 bytes): most who hear it hold it already
            // or soon will, and one that does not asks us (`wantRecord`). With it, the update
            // was too big to ride on a probe and took a gossip packet of its own, so a mass
            // join's news drained slowly and cost every member N certificates λ·log N times.
            if !mergingJoinReply { broadcasts.enqueue(.alive(incarnation: inc, record: rec.withoutCertificate)) }
            return
        }
        let m = members[i]
        if inc < m.incarnation || !saneJump(inc, from: m.incarnation) || !saneJump(rec.version, from: m.record.version) { return }
        var changed = false
        // SWIM §4.2: a higher incarnation overrides suspect, dead and left alike, so it must be
        // the member's own: a relay shows the member's signature for it (`provenIncarnation`).
        let raises = inc > m.incarnation && provenIncarnation(rec) >= inc
        // A newer record; or, at a higher incarnation, the owner's current one even if its
        // version is lower (it restarted and has not yet heard how far it had counted).
        if rec.version > m.record.version || (raises && rec != m.record), isOwners(rec) {
            take(rec, at: i)
            changed = true
        }
        if raises {
            keepIncarnationProof(of: rec, at: i)
            setStatus(i, .alive, incarnation: inc, now)
            changed = true
        }
        // Members that hear this know the member already (it is news of a refutation or a newer
        // record), so its certificate stays home: they check against the one they hold.
        if changed { broadcasts.enqueue(.alive(incarnation: inc, record: members[i].record.withoutCertificate)) }
    }

    private mutating func applySuspect(_ subject: String, incarnation inc: UInt64, from: String, _ now: Duration) {
        if subject == name {
            noteReportAboutSelf(incarnation: inc, status: .suspect, record: nil, now)
            return
        }
        guard let i = index[subject] else { return }
        let m = members[i]
        if inc < m.incarnation || !saneJump(inc, from: m.incarnation) || m.status == .dead || m.status == .left { return }
        if m.status == .suspect, var s = suspicions[subject] {
            if inc > s.incarnation {
                // A suspicion of a newer incarnation is a new suspicion: the member refuted the
                // old one, so the old timer and its confirmations no longer count.
                members[i].incarnation = inc
                suspicions[subject] = Suspicion(incarnation: inc, startedAt: now, suspecters: [from])
                broadcasts.enqueue(.suspect(name: subject, incarnation: inc, from: from))
                probeNext(i)
                return
            }
            // Lifeguard IV.B: each independent suspecter shortens the timeout; repeat news of
            // the same one does not.
            if !s.suspecters.contains(from), s.suspecters.count <= configuration.suspicionConfirmations {
                s.suspecters.append(from)
                broadcasts.enqueue(.suspect(name: subject, incarnation: inc, from: from))
            }
            suspicions[subject] = s
            return
        }
        setStatus(i, .suspect, incarnation: inc, now)
        suspicions[subject] = Suspicion(incarnation: inc, startedAt: now, suspecters: [from])
        broadcasts.enqueue(.suspect(name: subject, incarnation: inc, from: from))
        probeNext(i)
    }

    /// Moves member `i` to the front of this round's probe order. When we hear that someone
    /// else suspects a member, our own next probe of it either confirms the suspicion
    /// independently (Lifeguard IV.B: the timeout falls to Min within about one probe interval)
    /// or carries the buddy hint (IV.C) that makes a live member refute at once. When we are
    /// the suspecter, the next probe gives the member a direct path for its refutation (its ack
    /// piggybacks it) instead of relying on gossip reaching us in time. It costs no
    /// message: the probe we were going to send anyway goes there first, and the member it
    /// displaces keeps a place in this round.
    private mutating func probeNext(_ i: Int) {
        if probe?.target == members[i].name { return }
        let target = Int32(i)
        if probeCursor < probeOrder.count, let p = probeOrder[probeCursor...].firstIndex(of: target) {
            probeOrder.swapAt(probeCursor, p)
        } else {
            probeOrder.insert(target, at: min(probeCursor, probeOrder.count))
        }
    }

    private mutating func applyDead(_ subject: String, incarnation inc: UInt64, from: String, _ now: Duration) {
        if subject == name {
            noteReportAboutSelf(incarnation: inc, status: .dead, record: nil, now)
            return
        }
        guard let i = index[subject] else { return }
        let m = members[i]
        if inc < m.incarnation || !saneJump(inc, from: m.incarnation) || m.status == .dead || m.status == .left { return }
        setStatus(i, .dead, incarnation: inc, now)
        broadcasts.enqueue(.dead(name: subject, incarnation: inc, from: from))
    }

    private mutating func applyLeft(_ subject: String, incarnation inc: UInt64, _ now: Duration) {
        if subject == name {
            noteReportAboutSelf(incarnation: inc, status: .left, record: nil, now)
            return
        }
        guard let i = index[subject] else { return }
        let m = members[i]
        if inc < m.incarnation || !saneJump(inc, from: m.incarnation) || m.status == .left { return }
        setStatus(i, .left, incarnation: inc, now)
        broadcasts.enqueue(.left(name: subject, incarnation: inc))
    }

    private mutating func applyDelta(_ d: NodeRecordDelta, from sender: String, _ now: Duration) {
        if d.name == name {
            if d.version >= record.version, saneJump(d.version, from: record.version) { bumpVersion(above: d.version) }
            return
        }
        guard let i = index[d.name] else { return }
        let m = members[i]
        if m.record.version >= d.version { return }
        do throws(NodeRecordError) {
            let next = try d.apply(to: m.record)
            try next.validate(configuration.recordLimits)
            // The signature is of the record the delta produces: a relay that changed one field
            // of it (or made the delta up) is caught here, and the owner asked for its record.
            guard isOwners(next, relayedBy: sender) else {
                requestRecord(i, now)
                return
            }
            members[i].record = next
            out.events.append(.recordUpdated(name: d.name, version: next.version))
            broadcasts.enqueue(.recordDelta(d))
        } catch .baseVersionMismatch {
            requestRecord(i, now)
        } catch {
            out.events.append(.rejected(from: sender, reason: error.description))
        }
    }

    /// A delta skipped over a version we never saw: ask the owner for its whole record.
    private mutating func requestRecord(_ i: Int, _ now: Duration) {
        requestRecord(of: members[i].name, at: members[i].address, now)
    }

    /// Asks `name` at `address` for its record, at most once per `recordRequestInterval`. The
    /// address may come from a record we could not check: the answer is checked like any record,
    /// so a wrong address costs one message.
    private mutating func requestRecord(of name: String, at address: String, _ now: Duration) {
        if let last = recordRequests[name], now - last < configuration.recordRequestInterval { return }
        if recordRequests.count >= Self.maxRecordRequests { recordRequests = [:] }
        recordRequests[name] = now
        send(.recordRequest(RecordRequest(from: self.name, fromAddress: self.address)), to: address)
    }

    /// A member heard of without its certificate, from the member at `relay` (nil: we cannot
    /// tell who): asked of the relay in one request per input, or of its owner when there is no
    /// relay to ask. Each member is asked about at most once per `recordRequestInterval`.
    private mutating func wantRecord(of member: String, ownerAddress: String, relay: String?, _ now: Duration) {
        guard let relay, relay != address, relay != ownerAddress else {
            requestRecord(of: member, at: ownerAddress, now)
            return
        }
        if let last = recordRequests[member], now - last < configuration.recordRequestInterval { return }
        guard wantedRecords[relay, default: []].count < Self.maxRecordsPerRequest else { return }
        if recordRequests.count >= Self.maxRecordRequests { recordRequests = [:] }
        recordRequests[member] = now
        wantedRecords[relay, default: []].append(member)
    }

    /// Sends the requests `wantRecord` gathered during this input, by relay address.
    private mutating func askRelays() {
        guard !wantedRecords.isEmpty else { return }
        // In address order, not the dictionary's: the order reaches the network, and a seed must
        // replay in any process.
        for relay in wantedRecords.keys.sorted() {
            send(.recordRequest(RecordRequest(from: name, fromAddress: address, names: wantedRecords[relay]!)), to: relay)
        }
        wantedRecords = [:]
    }

    /// The records of the members `r` names that we know, certificates included, as a push-pull
    /// reply (merged like any; each record is checked against its owner's signature there).
    private mutating func answerRecordRequest(_ r: RecordRequest) {
        var states: [MemberState] = []
        for n in r.names.prefix(Self.maxRecordsPerRequest) {
            if n == name {
                states.append(selfState)
            } else if let i = index[n], !members[i].record.certificate.isEmpty {
                states.append(members[i].state)
            }
        }
        guard !states.isEmpty else { return }
        send(
            .pushPull(PushPull(from: name, fromAddress: address, isReply: true, isJoin: false, wantsCertificates: false, states: states)),
            to: r.fromAddress)
    }

    private mutating func onRecord(_ r: RecordReply, _ now: Duration) {
        let rec = r.record
        do throws(NodeRecordError) {
            try rec.validate(configuration.recordLimits)
        } catch {
            out.events.append(.rejected(from: rec.name, reason: error.description))
            return
        }
        guard let i = index[rec.name] else {
            // A member we asked about (it came without a certificate): its owner's answer, checked.
            if recordRequests[rec.name] != nil, rec.name != name {
                recordRequests[rec.name] = nil
                applyAlive(r.incarnation, rec, now)
            }
            return
        }
        guard rec.version > members[i].record.version, isOwners(rec) else { return }
        recordRequests[rec.name] = nil
        take(rec, at: i)
    }

    // MARK: Refutation (SWIM §4.2) and stale incarnations after restarts

    /// Whether `rec` is its owner's, signed (see `RecordAuthenticator`); a refused one is reported
    /// once per receipt, naming the relay when we know it. Checked only where the record would be
    /// taken (a newer version, or a member we did not know), so repeated push-pulls of records we
    /// hold cost no signature check.
    private mutating func isOwners(_ rec: NodeRecord, relayedBy relay: String? = nil) -> Bool {
        guard let reason = rec.refusal(by: authenticator) else { return true }
        out.events.append(
            .rejected(
                from: relay ?? rec.name,
                reason: "record of \(rec.name) at version \(rec.version) is not its owner's: \(reason)"))
        return false
    }

    /// The incarnation `rec`'s owner signed for, or 0 when the proof does not check (reported).
    private mutating func provenIncarnation(_ rec: NodeRecord) -> UInt64 {
        guard rec.provenIncarnation > 0 else { return 0 }
        if let reason = rec.incarnationRefusal(by: authenticator) {
            out.events.append(.rejected(from: rec.name, reason: "incarnation \(rec.provenIncarnation) of \(rec.name) is not its owner's: \(reason)"))
            return 0
        }
        return rec.provenIncarnation
    }

    /// Takes `rec` (checked: its owner's) as member `i`'s record, keeping the higher of the two
    /// incarnation proofs: the new record's may be older, or not checked.
    private mutating func take(_ rec: NodeRecord, at i: Int) {
        let held = members[i].record
        var next = rec
        if held.provenIncarnation >= rec.provenIncarnation || rec.incarnationRefusal(by: authenticator) != nil {
            next.provenIncarnation = held.provenIncarnation
            next.incarnationSignature = held.incarnationSignature
        }
        members[i].record = next
        out.events.append(.recordUpdated(name: rec.name, version: rec.version))
    }

    /// After `provenIncarnation(rec)` checked it: member `i`'s record carries `rec`'s proof, so
    /// what we relay about the member proves the incarnation we relay.
    private mutating func keepIncarnationProof(of rec: NodeRecord, at i: Int) {
        guard rec.provenIncarnation > members[i].record.provenIncarnation else { return }
        var r = members[i].record
        r.provenIncarnation = rec.provenIncarnation
        r.incarnationSignature = rec.incarnationSignature
        members[i].record = r
    }

    /// `value` (an incarnation or record version someone reported) is not a forged leap above `known`.
    private func saneJump(_ value: UInt64, from known: UInt64) -> Bool {
        Limits.isSaneJump(value, from: known, limit: configuration.maxIncarnationJump)
    }

    /// Something was said about this member. Anything but "alive at most at our incarnation"
    /// is refuted by jumping above it; that is also how a restarted member that lost its
    /// incarnation catches up with what the cluster remembers (memberlist's mass-restart problem).
    private mutating func noteReportAboutSelf(
        incarnation inc: UInt64, status: MemberStatus, record rec: NodeRecord?,
        _ now: Duration
    ) {
        // Only this member raises its incarnation, so a report far above it is forged (a suspect
        // at 2^64-1 would otherwise make the refutation overflow): dropped.
        guard saneJump(inc, from: incarnation) else {
            out.events.append(
                .rejected(
                    from: name,
                    reason:
                        "incarnation \(inc) reported for this member is more than \(configuration.maxIncarnationJump) above its own (\(incarnation))")
            )
            return
        }
        // A record of ours above our own version (we restarted and lost count) is taken as a
        // floor for the next one; a forged one cannot pass the signature check, so it cannot
        // push our version about.
        if let rec, rec.version >= record.version, rec != record, saneJump(rec.version, from: record.version),
            isOwners(rec)
        {
            bumpVersion(above: rec.version)
        }
        if isLeaving {
            if status != .left && inc >= incarnation, inc < .max {
                setOwnIncarnation(inc + 1)
                broadcasts.enqueue(.left(name: name, incarnation: incarnation))
            }
            return
        }
        switch status {
        case .alive:
            if inc > incarnation { refute(above: inc, now) }
        case .suspect, .dead, .left:
            if inc >= incarnation { refute(above: inc, now) }
        }
    }

    private mutating func refute(above inc: UInt64, _ now: Duration) {
        // Checked: reports are bounded by saneJump, but the arithmetic must not trap whatever came in.
        let (next, overflow) = max(incarnation, inc).addingReportingOverflow(1)
        guard !overflow else { return }
        setOwnIncarnation(next)
        // Lifeguard IV.A: being suspected means others could not reach us in time; we may be
        // the slow one, so slow down too.
        adjustHealth(1)
        broadcasts.enqueue(.alive(incarnation: incarnation, record: record.withoutCertificate))
    }

    /// Only this member raises its incarnation (SWIM §4.2), and it signs each one it reaches, so
    /// relays can carry its `alive` at that incarnation and nobody else's.
    private mutating func setOwnIncarnation(_ next: UInt64) {
        incarnation = next
        record = record.proving(incarnation: next, by: authenticator)
    }

    private mutating func bumpVersion(above v: UInt64) {
        guard v < .max else { return }
        var r = record
        r.version = v + 1
        record = r.signed(by: authenticator)
        broadcasts.enqueue(.alive(incarnation: incarnation, record: record.withoutCertificate))
    }

    // MARK: Push-pull (anti-entropy)

    private func fullState(isReply: Bool, isJoin: Bool, certificates: Bool) -> PushPull {
        var states: [MemberState] = []
        states.reserveCapacity(members.count + 1)
        states.append(selfState)
        for m in members {
            var s = m.state
            if !certificates, !s.record.certificate.isEmpty { s.record.certificate = [] }
            states.append(s)
        }
        return PushPull(
            from: name, fromAddress: address, isReply: isReply, isJoin: isJoin,
            wantsCertificates: certificates, states: states)
    }

    /// Our state for the member that pushed `p`, less what `p` showed it already holds as we do
    /// (same incarnation, status and record version): merging those would change nothing there.
    /// memberlist answers with the whole state; during a mass join the seed answers ~10 pulls a
    /// second from every joiner, and encoding 50 signed records per answer was a quarter of its
    /// CPU while its probes went unanswered (docs/membership.md, "The join storm"). After the
    /// first pull a joiner holds nearly everything, and its answers shrink to what is new.
    private func reply(to p: PushPull) -> PushPull {
        var held: [String: (UInt64, MemberStatus, UInt64)] = [:]
        held.reserveCapacity(p.states.count)
        for s in p.states.prefix(Self.maxHeldStates) {
            held[s.record.name] = (s.incarnation, s.status, s.record.version)
        }
        var full = fullState(isReply: true, isJoin: false, certificates: p.wantsCertificates)
        full.states.removeAll { s in
            guard let h = held[s.record.name] else { return false }
            return h.0 == s.incarnation && h.1 == s.status && h.2 == s.record.version
        }
        return full
    }

    /// Bounds the index `reply(to:)` builds of a push-pull's states (a frame's worth and more).
    private static let maxHeldStates = 65_536

    private mutating func sendJoin() {
        let pp = fullState(isReply: false, isJoin: true, certificates: true)
        for s in joinSeeds { send(.pushPull(pp), to: s) }
    }

    private mutating func onPushPull(_ p: PushPull, _ now: Duration) {
        // A joiner does not re-announce the cluster it has just been told about: the member that
        // answered knows all of it and gossips its own news. Re-announcing sent N−1 alive updates
        // λ·log N times each, mostly back to that member — the only one a joiner talks to yet —
        // ~1,400 redundant packets into the seed, the busiest member, when 50 join at once.
        mergingJoinReply = p.isReply && (nextJoinAt != nil || earlyPushPulls > 0)
        defer {
            mergingJoinReply = false
            // Answer after merging, so the reply already holds what the sender just told us.
            if !p.isReply {
                send(.pushPull(reply(to: p)), to: p.fromAddress)
            }
        }
        for var s in p.states {
            // A record sent without its certificate is checked against the one we hold for that
            // member; one we have never heard of is asked of the sender, in one request.
            if s.record.certificate.isEmpty, !authenticator.certificate.isEmpty, s.record.name != name {
                guard let i = index[s.record.name] else {
                    if s.status == .alive || s.status == .suspect {
                        wantRecord(of: s.record.name, ownerAddress: s.record.address, relay: p.fromAddress, now)
                    }
                    continue
                }
                s.record.certificate = members[i].record.certificate
            }
            let known = index[s.record.name] != nil || s.record.name == name
            switch s.status {
            case .alive:
                applyAlive(s.incarnation, s.record, now)
            case .suspect:
                if !known { applyAlive(s.incarnation, s.record, now) }
                applySuspect(s.record.name, incarnation: s.incarnation, from: p.from, now)
            case .dead:
                // memberlist's mergeState: a remote "dead" only makes us suspect, so a member the
                // other side lost (a partition) gets the suspicion timeout to refute.
                if s.record.name == name {
                    noteReportAboutSelf(incarnation: s.incarnation, status: .dead, record: s.record, now)
                } else {
                    applySuspect(s.record.name, incarnation: s.incarnation, from: p.from, now)
                }
            case .left:
                applyLeft(s.record.name, incarnation: s.incarnation, now)
            }
            if known, s.record.name != name, let i = index[s.record.name], s.record.version > members[i].record.version,
                s.incarnation >= members[i].incarnation, isOwners(s.record, relayedBy: p.from)
            {
                take(s.record, at: i)
            }
        }
        if liveCount > 0 && nextJoinAt != nil {
            // Joined. Members that join at the same time as us may have spent their
            // retransmissions before their gossipers knew us (serf's 86.7 s tail in issue 3):
            // a few early push-pulls fetch what we missed and announce us afresh, every d.
            nextJoinAt = nil
            earlyPushPulls = configuration.joinPushPulls
            if earlyPushPulls > 0 { nextPushPullAt = now + configuration.joinPushPullDelay }
            if configuration.probeAfterJoinSettles && earlyPushPulls > 0 {
                let settled = configuration.joinPushPullDelay * earlyPushPulls
                nextProbeAt = max(nextProbeAt, now + settled + Duration.randomUpTo(configuration.probeInterval, using: &rng))
            }
        }
    }

    // MARK: Helpers

    private mutating func begin() { out = Directives() }

    private mutating func send(_ m: Message, to address: String) {
        out.messages.append(Outbound(to: address, message: m))
    }

    /// Notes that `name` spoke to us: whatever connection carried it is open.
    private mutating func hear(_ name: String, _ now: Duration) {
        if let i = index[name] { members[i].lastHeard = now }
        if let i = recentPeers.lastIndex(where: { $0.name == name }) { recentPeers.remove(at: i) }
        recentPeers.append((name, now))
        if recentPeers.count > Self.maxRecentPeers { recentPeers.removeFirst() }
    }

    /// Gossip targets: up to `n` random live members among those heard from within
    /// `configuration.gossipPeerWindow`, or random live members if none was.
    ///
    /// Over TCP + TLS a message to a member with no open connection costs a handshake (about a
    /// millisecond of CPU on each side) where one on an open connection costs microseconds.
    /// Gossiping to uniformly random members while 50 members join at once opened all N(N−1)/2
    /// connections within a second — seconds of CPU on a 2-core host, which is what delayed
    /// convergence. Members we heard from recently still make a random sample of the cluster
    /// once probing has run a while (every member is probed within a round; the ring holds the
    /// last 64 speakers), so epidemic spread keeps its log N rounds; during a mass join they are
    /// the seed and our first probe targets, and the early push-pulls fill in the rest.
    private mutating func recentLiveMembers(_ n: Int, _ now: Duration) -> [Int] {
        var warm: [Int] = []
        for p in recentPeers where now - p.at <= configuration.gossipPeerWindow {
            if let i = index[p.name], members[i].status == .alive || members[i].status == .suspect { warm.append(i) }
        }
        if warm.isEmpty { return randomLiveMembers(n, excluding: nil) }
        warm.shuffle(using: &rng)
        return Array(warm.prefix(n))
    }

    /// Indirect-probe relays: up to `n` distinct live members other than `target`, those heard
    /// from within `configuration.gossipPeerWindow` first (their connection is open), random
    /// live members after them.
    private mutating func relayCandidates(_ n: Int, excluding target: String, _ now: Duration) -> [Int] {
        var warm: [Int] = []
        for p in recentPeers where p.name != target && now - p.at <= configuration.gossipPeerWindow {
            if let i = index[p.name], members[i].status == .alive || members[i].status == .suspect, !warm.contains(i) {
                warm.append(i)
            }
        }
        warm.shuffle(using: &rng)
        var picked = Array(warm.prefix(n))
        if picked.count < n {
            for i in randomLiveMembers(n, excluding: target) where picked.count < n && !picked.contains(i) {
                picked.append(i)
            }
        }
        return picked
    }

    /// Up to `n` distinct random alive-or-suspect members other than `excluding`.
    private mutating func randomLiveMembers(_ n: Int, excluding: String?) -> [Int] {
        guard n > 0, liveCount > 0 else { return [] }
        var picked: [Int] = []
        let isCandidate = { (m: Member) in (m.status == .alive || m.status == .suspect) && m.name != excluding }
        if liveCount <= n * 4 || members.count > liveCount * 4 {
            var all: [Int] = []
            for (i, m) in members.enumerated() where isCandidate(m) { all.append(i) }
            all.shuffle(using: &rng)
            return Array(all.prefix(n))
        }
        var attempts = 0
        while picked.count < n && attempts < n * 16 {
            attempts += 1
            let i = Int.random(in: 0..<members.count, using: &rng)
            if isCandidate(members[i]) && !picked.contains(i) { picked.append(i) }
        }
        return picked
    }

    private mutating func finish(_ now: Duration) -> Directives {
        askRelays()
        var next: Duration? = nil
        func consider(_ d: Duration) { next = min(next ?? d, d) }
        if !isLeaving && liveCount > 0 { consider(nextProbeAt) }
        if let p = probe { consider(p.indirectSent ? p.roundDeadline : p.directDeadline) }
        for r in relays.values { consider(r.deadline) }
        if !suspicions.isEmpty {
            let n = liveCount + 1
            for s in suspicions.values {
                consider(s.startedAt + suspicionTimeout(members: n, s))
            }
        }
        if !broadcasts.isEmpty && liveCount > 0 { consider(max(nextGossipAt, now)) }
        if liveCount > 0 { consider(nextPushPullAt) }
        if count(.dead) > 0 { consider(nextRedialAt) }
        if let j = nextJoinAt { consider(j) }
        if let c = nextSeedCheckAt { consider(c) }
        out.nextDeadline = next
        let result = out
        out = Directives()
        return result
    }
}

extension Duration {
    /// Uniform in 0..<d at nanosecond resolution.
    static func randomUpTo(_ d: Duration, using rng: inout SeededGenerator) -> Duration {
        let (s, atto) = d.components
        let ns = s * 1_000_000_000 + atto / 1_000_000_000
        guard ns > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0..<ns, using: &rng))
    }
}

/// Updates waiting to be piggybacked (SWIM §4.1). A newer update about a member replaces the
/// older one (memberlist's invalidation), so the queue holds at most two entries per member.
struct BroadcastQueue: Sendable {
    private struct Item: Sendable {
        var key: Key
        var gossip: Gossip
        var size: Int
        var transmits: Int
        var order: UInt64
    }

    private struct Key: Hashable, Sendable {
        var subject: String
        var isRecord: Bool
    }

    private var items: [Item] = []
    private var counter: UInt64 = 0
    static let maxItems = 4096

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }

    mutating func enqueue(_ g: Gossip) {
        var g = g
        let key: Key
        if case .recordDelta = g { key = Key(subject: g.subject, isRecord: true) } else { key = Key(subject: g.subject, isRecord: false) }
        if let i = items.firstIndex(where: { $0.key == key }) {
            if case let .recordDelta(old) = items[i].gossip, case let .recordDelta(new) = g {
                if old.version == new.baseVersion {
                    // Consecutive deltas merge, so a receiver still at the older base can apply the result.
                    g = .recordDelta(old.merged(with: new))
                } else if new.version <= old.version {
                    return
                }
            }
            items.remove(at: i)
        }
        counter += 1
        items.append(Item(key: key, gossip: g, size: g.estimatedSize, transmits: 0, order: counter))
        if items.count > Self.maxItems {
            // Drop the most-sent (ties: oldest); push-pull heals what this loses.
            if let worst = items.indices.max(by: { (items[$0].transmits, items[$1].order) < (items[$1].transmits, items[$0].order) }) {
                items.remove(at: worst)
            }
        }
    }

    /// Updates that fit in `budget` bytes, least-sent first (then newest); each is dropped after
    /// `limit` transmissions.
    mutating func take(budget: Int, limit: Int) -> [Gossip] {
        guard !items.isEmpty else { return [] }
        items.sort { ($0.transmits, $1.order) < ($1.transmits, $0.order) }
        var out: [Gossip] = []
        var used = 0
        for i in items.indices {
            if used + items[i].size > budget { continue }
            used += items[i].size
            out.append(items[i].gossip)
            items[i].transmits += 1
            if used >= budget { break }
        }
        items.removeAll { $0.transmits >= limit }
        return out
    }
}
