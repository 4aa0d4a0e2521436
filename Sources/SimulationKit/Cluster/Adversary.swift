import Consensus
import ControlPlane
import Membership

/// The adversary's faults (docs/simulation.md, "Faults"): a server's disk that refuses writes, and
/// a hostile peer. Both draw from `adversary`, a generator of their own, so that adding them
/// moved none of a seed's other faults.
///
/// The hostile peer is `mallory`: a valid client certificate (what a compromised client host
/// holds) that runs no agent. While it is active it sends, every 20-150 ms, one of the forgeries
/// the trust model lists (docs/ARCHITECTURE.md, "Trust") to a live agent, straight to that agent's
/// admission (`receive(_:from:to:)`, the shells' `PeerAdmission`): Raft frames (a vote as a
/// server, an append as itself with a higher term, a commit index far ahead), a subscription for
/// another node, an assignment push, and membership messages carrying another member's record with
/// its capacity raised, signed with mallory's key, and a rumour of that member's death. What the
/// shells refuse is counted (`refused`); what they admit reaches the cores, where the invariants
/// watch: a forged Raft entry applied is `no-committed-plan-lost`, a forged record held is
/// `no-forged-record-taken`.
extension ClusterSimulation {
    static let adversarySalt: UInt64 = 0x6d61_6c6c_6f72_7921
    static let hostileName = "mallory"
    /// What mallory's forged records claim: far more than any simulated host has.
    static let forgedCapacity = Resources(cpuMillicores: 64_000, memoryBytes: 256 << 30)

    /// At most one disk error and one hostile spell per run, each in about a third of the runs,
    /// at a time within the faults' part of the run.
    mutating func scheduleAdversary() {
        let window = max(Int64(1), faultEnd.nanoseconds / 1_000_000 - 1_000)
        if Int.random(in: 0..<100, using: &adversary) < 35 {
            schedule(.milliseconds(Int64.random(in: 500...max(500, window), using: &adversary)), .diskFails)
        }
        if Int.random(in: 0..<100, using: &adversary) < 40 {
            let start = Duration.milliseconds(Int64.random(in: 200...max(200, window), using: &adversary))
            let length = Duration.milliseconds(Int64.random(in: 1_000...4_000, using: &adversary))
            count(.hostilePeer)
            schedule(start, .hostile(until: start + length))
        }
    }

    // MARK: Disk errors

    /// A server's disk starts refusing writes: its next Raft write fails (`complete`).
    mutating func diskFails() {
        let up = servers.filter { $0.up && $0.raft != nil && !$0.diskFailing }
        guard !up.isEmpty else { return }
        let s = up[Int.random(in: 0..<up.count, using: &adversary)]
        count(.diskError)
        note("\(s.name): its disk refuses writes")
        s.diskFailing = true
        // The operator replaces it 2-7 s later (what was written before the failure is kept);
        // until then every start of the agent stops again at its first Raft write.
        schedule(now + .milliseconds(Int64.random(in: 2_000...7_000, using: &adversary)), .diskRepaired(s.name))
    }

    mutating func diskRepaired(_ name: String) {
        guard let s = agent(name), s.diskFailing else { return }
        note("\(name): disk replaced")
        s.diskFailing = false
    }

    // MARK: The hostile peer

    mutating func hostileMessage() {
        let live = agents.filter { $0.up }
        guard !live.isEmpty else { return }
        let target = live[Int.random(in: 0..<live.count, using: &adversary)]
        let others = agents.filter { $0 !== target }
        let victim = others.isEmpty ? target : others[Int.random(in: 0..<others.count, using: &adversary)]
        let me = Self.hostileName
        switch Int.random(in: 0..<8, using: &adversary) {
        case 0:
            // A vote request in a server's name, far ahead of every term.
            guard target.isServer, let r = target.raft else { return }
            var m = RaftMessage(kind: .vote, from: victim.name, to: target.name, term: r.term + 100)
            m.logTerm = r.lastTerm + 100
            m.index = r.lastIndex + 100
            deliverHostile(.raft(m), to: target)
        case 1:
            // An append as itself: a server outside the configuration may lead it, so only the
            // certificate's role stands between this and a forged entry committed.
            guard target.isServer, let r = target.raft else { return }
            var m = RaftMessage(kind: .append, from: me, to: target.name, term: r.term + 100)
            m.index = r.lastIndex
            m.logTerm = r.lastTerm
            let data = (try? ClusterCommand.setDrain(node: victim.name, drained: true).encoded()) ?? []
            m.entries = [Entry(term: r.term + 100, index: r.lastIndex + 1, data: data)]
            m.commit = r.lastIndex + 1
            deliverHostile(.raft(m), to: target)
        case 2:
            // A heartbeat in the leader's name with a commit index far ahead.
            guard target.isServer, let r = target.raft else { return }
            var m = RaftMessage(kind: .heartbeat, from: r.leader ?? victim.name, to: target.name, term: r.term)
            m.commit = r.lastIndex + 1_000
            deliverHostile(.raft(m), to: target)
        case 3:
            // A subscription for another node's assignment.
            guard let server = servers.first(where: \.up) else { return }
            deliverHostile(.subscribe(node: victim.name, after: 0), to: server)
        case 4:
            // An assignment push: every service at its maximum.
            var all: [String: (count: Int, spec: Consensus.ServiceSpec)] = [:]
            for (name, spec) in services { all[name] = (spec.max, spec) }
            deliverHostile(.assignment(NodeAssignment(planIndex: UInt64.max / 2, services: all)), to: target)
        case 5:
            // A rumour of the victim's death.
            let inc = swim.instance(index[target.name]!)?.member(named: victim.name)?.incarnation ?? 0
            let g = GossipPacket(from: me, gossip: [.dead(name: victim.name, incarnation: inc, from: me)])
            deliverHostile(.swim(.gossip(g)), to: target)
        case 6:
            guard let forged = forgedRecord(of: victim, seenBy: target) else { return }
            let g = GossipPacket(from: me, gossip: [.alive(incarnation: forged.incarnation, record: forged.record)])
            deliverHostile(.swim(.gossip(g)), to: target)
            checkNoForgedRecord(target, victim: victim)
        default:
            guard let forged = forgedRecord(of: victim, seenBy: target) else { return }
            let p = PushPull(
                from: me, fromAddress: Self.swimAddress(me), isReply: false, isJoin: false, wantsCertificates: false,
                states: [MemberState(incarnation: forged.incarnation, status: .alive, record: forged.record)])
            deliverHostile(.swim(.pushPull(p)), to: target)
            checkNoForgedRecord(target, victim: victim)
        }
    }

    mutating func deliverHostile(_ m: ClusterMessage, to target: ClusterAgent) {
        // Mallory's host is not frozen or partitioned: it talks to whoever it can reach.
        guard !target.frozen else { return }
        receive(m, from: Self.hostileName, to: target.name)
    }

    /// The victim's record as `target` holds it, its capacity raised and its version and
    /// incarnation ahead, carrying the victim's certificate but signed with mallory's key.
    func forgedRecord(of victim: ClusterAgent, seenBy target: ClusterAgent) -> (incarnation: UInt64, record: NodeRecord)? {
        guard let m = swim.instance(index[target.name]!)?.member(named: victim.name) else { return nil }
        var r = m.record
        r.capacity = Self.forgedCapacity
        r.version += 100
        let mallory = SimulatedCertificates(owner: Self.hostileName)
        r = r.signed(by: mallory).proving(incarnation: m.incarnation + 1_000, by: mallory)
        r.certificate = SimulatedCertificates.certificate(of: victim.name)
        return (m.incarnation + 1_000, r)
    }

    /// `no-forged-record-taken`: every simulated host has the same capacity, so a view holding
    /// the victim with the forged one took mallory's record.
    mutating func checkNoForgedRecord(_ target: ClusterAgent, victim: ClusterAgent) {
        check(ClusterInvariant.noForgedRecordTaken)
        guard let m = swim.instance(index[target.name]!)?.member(named: victim.name) else { return }
        if m.record.capacity == Self.forgedCapacity {
            violation(
                ClusterInvariant.noForgedRecordTaken,
                "\(target.name) holds \(victim.name)'s record as \(Self.hostileName) forged it (incarnation \(m.incarnation))")
        }
    }
}
