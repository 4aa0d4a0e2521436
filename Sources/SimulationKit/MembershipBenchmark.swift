import Membership

/// The `microscale-sim membership` scenario, shaped like the serf measurement of issue 3: all N
/// join one seed at once; then a quiet period for bandwidth; then one record change; then one
/// member is crashed (SIGKILL) and, separately, one frozen (SIGSTOP). Every time is simulated.
public struct MembershipBenchmark {
    public struct Options: Sendable {
        public var nodes: Int
        public var seed: UInt64
        public var configuration = MembershipConfiguration.lan
        public var loss = 0.0
        /// Records signed as the agent's are (`SimulatedCertificates`): certificates and
        /// signatures in the messages, and every certificate path of the core running.
        public var signedRecords = false
        /// Above this many nodes the cluster starts converged instead of joining (N simultaneous
        /// joins through one seed cost the seed O(N²) push-pull bytes; it is not the 10,000-node
        /// question).
        public var maxJoiningNodes = 1000
        /// Quiet period over which messages and bytes per node per second are measured; nil:
        /// two push-pull intervals up to `maxJoiningNodes` nodes (so push-pull is counted at its
        /// real rate), 10 s above (where a full-state exchange is too costly to simulate often).
        public var idleWindow: Duration? = nil

        public init(nodes: Int, seed: UInt64) {
            self.nodes = nodes
            self.seed = seed
        }
    }

    public struct Report: Sendable, Codable, Hashable {
        public var nodes: Int
        public var seed: UInt64
        /// nil when the cluster started converged.
        public var joinConvergenceSeconds: Double?
        /// Bytes each node sent, on average, from the first start to the join's convergence.
        public var joinBytesPerNode: Double?
        public var recordSpread999Seconds: Double?
        public var recordSpreadAllSeconds: Double?
        /// Until every survivor holds it dead; the first suspicion and first dead verdict show
        /// where the time went.
        public var crashDetectionSeconds: Double?
        public var crashFirstSuspectSeconds: Double?
        public var crashFirstDeadSeconds: Double?
        /// The same with the transport's connection-reset hint (`peerUnreachable`) delivered to
        /// every survivor at the crash; the verdict still comes from a failed probe and suspicion.
        public var crashWithResetHintDetectionSeconds: Double?
        public var freezeDetectionSeconds: Double?
        public var freezeFirstSuspectSeconds: Double?
        public var freezeFirstDeadSeconds: Double?
        /// Dead verdicts about members that were running.
        public var falsePositives: Int
        /// Suspect verdicts about members that were running (refuted in time, but counted).
        public var falseSuspicions: Int
        public var messagesPerNodePerSecond: Double
        public var bytesPerNodePerSecond: Double
        public var idleWindowSeconds: Double
        public var simulatedSeconds: Double
    }

    public static func run(_ o: Options) -> Report {
        precondition(o.nodes >= 6, "the scenario crashes two members and freezes a third: use at least 6 nodes")
        let faults = MembershipCluster.Network.Faults(loss: o.loss, delay: .microseconds(200) ... .milliseconds(2))
        let c = MembershipCluster(
            size: o.nodes, seed: o.seed, configuration: o.configuration, faults: faults, signedRecords: o.signedRecords)
        let limit: Duration = .seconds(60)

        var join: Double? = nil
        var joinBytes: Double? = nil
        if o.nodes <= o.maxJoiningNodes {
            c.start(0, joining: [])
            for i in 1..<o.nodes { c.start(i, joining: [0]) }
            if let t = c.run(until: c.now + limit, stopWhen: c.isConverged) {
                join = t.seconds
                joinBytes = Double(c.sentBytes.reduce(0, +)) / Double(o.nodes)
            }
        } else {
            c.startConverged()
        }
        // At rest: every join announcement has used up its retransmissions (after N
        // simultaneous joins each node holds N updates to send λ·log N times each).
        var busy = Set((0..<o.nodes).filter { (c.instance($0)?.pendingBroadcasts ?? 0) > 0 })
        c.onStep = { i in
            if (c.instance(i)?.pendingBroadcasts ?? 0) > 0 { busy.insert(i) } else { busy.remove(i) }
        }
        if !busy.isEmpty { c.run(until: c.now + limit, stopWhen: { busy.isEmpty }) }
        c.onStep = nil
        c.advance(by: .seconds(2))

        // Bandwidth at rest.
        let m0 = c.sentMessages.reduce(0, +), b0 = c.sentBytes.reduce(0, +)
        let idle =
            o.idleWindow
            ?? (o.nodes <= o.maxJoiningNodes
                ? o.configuration.scaledPushPullInterval(members: o.nodes) * 2 : .seconds(10))
        c.advance(by: idle)
        let window = idle.seconds * Double(o.nodes)
        let msgs = Double(c.sentMessages.reduce(0, +) - m0) / window
        let bytes = Double(c.sentBytes.reduce(0, +) - b0) / window

        // One record change (a container started on node 1).
        let changer = 1
        let start = c.now
        try? c.updateRecord(changer) { $0.running["web", default: 0] += 1 }
        let version = c.instance(changer)!.record.version
        let others = o.nodes - 1
        let target999 = Int((Double(others) * 0.999).rounded(.up))
        var have = 0
        var seen = [Bool](repeating: false, count: o.nodes)
        var t999: Double? = nil
        c.onStep = { i in
            guard i != changer, !seen[i],
                let v = c.instance(i)?.member(named: MembershipCluster.name(changer))?.record.version, v >= version
            else { return }
            seen[i] = true
            have += 1
            if t999 == nil && have >= target999 { t999 = (c.now - start).seconds }
        }
        let tAll = c.run(until: c.now + limit, stopWhen: { have == others })
        c.onStep = nil
        c.advance(by: .seconds(1))

        // SIGKILL one member, then SIGSTOP another.
        let crashed = 2, frozen = 3
        c.watch(crashed)
        var t0 = c.now
        let crashAt = t0
        c.crash(crashed)
        let crashT = c.run(until: c.now + limit, stopWhen: { c.allRunningHoldDead(crashed) }).map { ($0 - t0).seconds }
        c.advance(by: .seconds(1))
        let hinted = 4
        c.watch(hinted)
        let hintAt = c.now
        c.crash(hinted, resetHints: true)
        let hintT = c.run(until: c.now + limit, stopWhen: { c.allRunningHoldDead(hinted) }).map { ($0 - hintAt).seconds }
        c.advance(by: .seconds(1))
        c.watch(frozen)
        t0 = c.now
        let freezeAt = t0
        c.freeze(frozen)
        let freezeT = c.run(until: c.now + limit, stopWhen: { c.allRunningHoldDead(frozen) }).map { ($0 - t0).seconds }
        c.advance(by: .seconds(2))

        func first(_ subject: Int, _ status: MemberStatus, after t: Duration) -> Double? {
            c.verdicts.first { $0.subject == subject && $0.status == status && $0.time >= t }.map { ($0.time - t).seconds }
        }
        let fp = c.verdicts.filter { $0.subject != crashed && $0.subject != frozen && $0.subject != hinted }
        return Report(
            nodes: o.nodes, seed: o.seed, joinConvergenceSeconds: join, joinBytesPerNode: joinBytes,
            recordSpread999Seconds: t999, recordSpreadAllSeconds: tAll.map { ($0 - start).seconds },
            crashDetectionSeconds: crashT,
            crashFirstSuspectSeconds: first(crashed, .suspect, after: crashAt),
            crashFirstDeadSeconds: first(crashed, .dead, after: crashAt),
            crashWithResetHintDetectionSeconds: hintT,
            freezeDetectionSeconds: freezeT,
            freezeFirstSuspectSeconds: first(frozen, .suspect, after: freezeAt),
            freezeFirstDeadSeconds: first(frozen, .dead, after: freezeAt),
            falsePositives: fp.filter { $0.status == .dead }.count,
            falseSuspicions: fp.filter { $0.status == .suspect }.count,
            messagesPerNodePerSecond: msgs, bytesPerNodePerSecond: bytes, idleWindowSeconds: idle.seconds,
            simulatedSeconds: c.now.seconds)
    }
}
