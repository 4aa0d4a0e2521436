import Consensus

/// Options for one seeded whole-cluster Raft run (the model is TigerBeetle's VOPR and etcd's
/// rafttest: real nodes, a simulated network and disk, faults drawn from the seed).
public struct RaftSimulationOptions: Sendable, Hashable, Codable {
    public var nodes = 3
    /// Faults happen during this first part of the run ...
    public var faultDuration: Duration = .seconds(8)
    /// ... then stop; a leader must commit a client write within this bound ...
    public var recoveryBound: Duration = .seconds(5)
    /// ... and the run goes on this long after the faults end, so every node catches up.
    public var settleDuration: Duration = .seconds(4)
    public var electionTimeout: Duration = .milliseconds(300)
    public var heartbeatInterval: Duration = .milliseconds(50)
    /// A node compacts its log once this many applied entries follow its snapshot.
    public var compactEvery: UInt64 = 40

    public init() {}
}

/// What one run found. `violations` is empty when every checker held.
public struct RaftSimulationResult: Sendable, Hashable, Codable {
    public var seed: UInt64
    public var nodes: Int
    public var violations: [String] = []
    public var elections = 0
    public var proposals = 0
    public var acknowledged = 0
    public var committedIndex: UInt64 = 0
    public var crashes = 0
    /// Membership changes committed.
    public var configurationChanges = 0
    /// Linearizable reads (ReadIndex) served and checked.
    public var reads = 0
    public var snapshotsInstalled = 0
    public var messages = 0
    /// From the end of the faults to the first acknowledged write after it, in seconds.
    public var recoverySeconds: Double?
}

/// Runs one seed. The same seed and options always give the same result.
public func runRaftSimulation(seed: UInt64, options: RaftSimulationOptions = RaftSimulationOptions()) -> RaftSimulationResult {
    var sim = RaftSimulation(seed: seed, options: options)
    return sim.run()
}

/// The replicated state machine of a simulated server: the data of every applied entry, by
/// index, so checkers can compare servers and find acknowledged writes.
struct SimStateMachine: Sendable, Hashable {
    var applied: UInt64 = 0
    var values: [UInt64: [UInt8]] = [:]
}

final class SimServer {
    let name: NodeID
    var core: RaftNode?
    /// What survives a crash: only what a completed Ready persisted.
    var disk = MemoryStorage()
    var machine = SimStateMachine()
    /// A Ready being written: its writes are lost if the server crashes before `completeAt`.
    var pending: (ready: Ready, completeAt: Duration)?
    var lastTick: Duration = .zero
    var slowDisk = false

    init(name: NodeID) { self.name = name }
}

struct RaftSimulation {
    let seed: UInt64
    let options: RaftSimulationOptions
    var rng: SeededGenerator
    var net: SimulatedNetwork<NodeID, RaftMessage>
    var now: Duration = .zero
    var servers: [SimServer]
    var bootstrap: Configuration
    var result: RaftSimulationResult

    // Checker state.
    var leaders: [UInt64: NodeID] = [:]
    /// Every entry any server applied, by index: committed, so never to change (Raft §5.4.3).
    var committed: [UInt64: Entry] = [:]
    /// Snapshot payloads by key: a snapshot's data is the key, as opaque to Raft as real bytes.
    var snapshots: [UInt64: SimStateMachine] = [:]
    var nextSnapshotKey: UInt64 = 1
    struct Proposal {
        var server: NodeID
        var index: UInt64
        var term: UInt64
        var data: [UInt8]
    }
    var proposals: [Proposal] = []
    var acked: [UInt64: [UInt8]] = [:]
    var maxAcked: UInt64 = 0
    /// ReadIndex requests in flight: context -> the highest acknowledged write when issued.
    var reads: [UInt64: UInt64] = [:]
    var firstAckAfterFaults: Duration?
    var nextFault: Duration
    var nextClient: Duration = .milliseconds(100)
    var counter = 0

    init(seed: UInt64, options: RaftSimulationOptions) {
        self.seed = seed
        self.options = options
        var rng = SeededGenerator(seed: seed)
        self.net = SimulatedNetwork(seed: rng.next(), faults: .init(delay: .microseconds(200) ... .milliseconds(3)))
        let names = (1...options.nodes).map { "n\($0)" }
        self.servers = names.map { SimServer(name: $0) }
        self.bootstrap = Configuration(voters: Set(names))
        self.nextFault = .milliseconds(Int64.random(in: 300...1500, using: &rng))
        self.rng = rng
        self.result = RaftSimulationResult(seed: seed, nodes: options.nodes)
        for s in servers { start(s) }
    }

    func raftConfig(_ name: NodeID) -> RaftConfig {
        var c = RaftConfig(id: name)
        c.electionTimeout = options.electionTimeout
        c.heartbeatInterval = options.heartbeatInterval
        c.maxEntriesPerMessage = 16
        c.maxInflightMessages = 8
        return c
    }

    mutating func start(_ s: SimServer) {
        let recovered = s.disk.recover()
        s.core = RaftNode(config: raftConfig(s.name), bootstrap: bootstrap, recovered: recovered, seed: rng.next())
        if let snap = recovered.snapshot, let m = snapshots[key(snap)] {
            s.machine = m
        } else {
            s.machine = SimStateMachine()
        }
        s.lastTick = now
        s.pending = nil
    }

    func key(_ s: Snapshot) -> UInt64 {
        s.data.prefix(8).enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    }

    var faultEnd: Duration { options.faultDuration }
    var end: Duration { options.faultDuration + max(options.settleDuration, options.recoveryBound) }

    mutating func run() -> RaftSimulationResult {
        while now < end {
            var next = end
            if let t = net.nextDeliveryTime { next = min(next, t) }
            for s in servers {
                if let p = s.pending { next = min(next, p.completeAt) }
                if let core = s.core, s.pending == nil || true, let d = core.timeUntilNextTimeout {
                    next = min(next, s.lastTick + d)
                }
            }
            if now < faultEnd { next = min(next, nextFault) }
            next = min(next, nextClient)
            now = max(now, next)

            for s in servers {
                if let p = s.pending, p.completeAt <= now { complete(s) }
            }
            while let e = net.deliverNext(upTo: now) {
                guard let s = server(e.to), s.core != nil else { continue }
                tick(s)
                s.core!.step(e.message)
                pump(s)
            }
            for s in servers {
                if let core = s.core, let d = core.timeUntilNextTimeout, s.lastTick + d <= now {
                    tick(s)
                    pump(s)
                }
            }
            if now < faultEnd && nextFault <= now {
                injectFault()
                nextFault = now + .milliseconds(Int64.random(in: 200...1500, using: &rng))
                if nextFault >= faultEnd { nextFault = faultEnd }
            } else if now >= faultEnd && nextFault <= now && nextFault == faultEnd {
                endFaults()
                nextFault = end + .seconds(1)
            }
            // Clients stop a second before the end, so that checking that every server holds
            // every acknowledged write does not race the last acknowledgement.
            if nextClient <= now {
                if now + .seconds(1) < end { client() }
                nextClient = now + .milliseconds(Int64.random(in: 10...40, using: &rng))
            }
            if !result.violations.isEmpty { break }
        }
        finalChecks()
        result.messages = net.statistics.sent
        result.acknowledged = acked.count
        result.committedIndex = committed.keys.max() ?? 0
        result.configurationChanges = committed.values.filter { $0.kind == .configuration }.count
        return result
    }

    func server(_ name: NodeID) -> SimServer? { servers.first { $0.name == name } }

    mutating func tick(_ s: SimServer) {
        if now > s.lastTick {
            s.core!.tick(by: now - s.lastTick)
            s.lastTick = now
        }
    }

    /// Takes a Ready if the server's disk is free; what needs no disk completes at once.
    mutating func pump(_ s: SimServer) {
        var guardCount = 0
        while s.pending == nil, let core = s.core, core.hasReady, guardCount < 100 {
            guardCount += 1
            observeRole(s)
            let rd = s.core!.ready()
            let needsDisk = rd.snapshot != nil || !rd.entries.isEmpty || rd.hardState != nil
            let latency: Duration =
                needsDisk
                ? (s.slowDisk
                    ? .microseconds(Int64.random(in: 5_000...40_000, using: &rng))
                    : .microseconds(Int64.random(in: 50...500, using: &rng)))
                : .zero
            s.pending = (rd, now + latency)
            if latency == .zero { complete(s) }
        }
        observeRole(s)
    }

    mutating func complete(_ s: SimServer) {
        guard let (rd, _) = s.pending, s.core != nil else { return }
        s.disk.persist(snapshot: rd.snapshot, entries: rd.entries, hardState: rd.hardState)
        for m in rd.messages {
            net.send(m, from: s.name, to: m.to, size: m.approximateSize, now: now)
        }
        if let snap = rd.snapshot {
            guard let m = snapshots[key(snap)] else {
                violation("\(s.name) installed snapshot \(snap.index) with unknown data")
                return
            }
            s.machine = m
            result.snapshotsInstalled += 1
        }
        for e in rd.committedEntries { apply(e, on: s) }
        for r in rd.readStates {
            // Linearizable reads (thesis §6.4): a read sees every write acknowledged before it
            // was issued, so its index is at least theirs.
            let ctx = key(Snapshot(index: 0, term: 0, configuration: Configuration(), data: r.context))
            if let floor = reads.removeValue(forKey: ctx) {
                result.reads += 1
                if r.index < floor {
                    violation("linearizability: read \(ctx) on \(s.name) at index \(r.index), but write \(floor) was acknowledged before it")
                }
            }
        }
        s.core!.advance(rd)
        s.pending = nil
        if let core = s.core, core.applied >= core.snapshot.index + options.compactEvery {
            let k = nextSnapshotKey
            nextSnapshotKey += 1
            snapshots[k] = s.machine
            let data = (0..<8).map { UInt8(truncatingIfNeeded: k >> (8 * UInt64($0))) }
            if let snap = try? s.core!.compact(upTo: core.applied, data: data) {
                s.disk.compact(to: snap)
            }
        }
        pump(s)
    }

    mutating func apply(_ e: Entry, on s: SimServer) {
        // State machine safety (Raft §5.4.3): no two servers apply different entries at an index.
        if let c = committed[e.index] {
            if c != e {
                violation("state machine safety: \(s.name) applied \(describe(e)) where \(describe(c)) was applied")
            }
        } else {
            committed[e.index] = e
        }
        if e.index != s.machine.applied + 1 {
            violation("\(s.name) applied index \(e.index) after \(s.machine.applied)")
        }
        s.machine.applied = e.index
        if e.kind == .normal && !e.data.isEmpty { s.machine.values[e.index] = e.data }
        if let i = proposals.firstIndex(where: { $0.server == s.name && $0.index == e.index }) {
            let p = proposals.remove(at: i)
            if p.term == e.term && p.data == e.data {
                acked[e.index] = e.data
                maxAcked = max(maxAcked, e.index)
                if now >= faultEnd && firstAckAfterFaults == nil { firstAckAfterFaults = now }
            }
        }
    }

    func describe(_ e: Entry) -> String { "(index \(e.index), term \(e.term), \(e.data.count) bytes)" }

    mutating func observeRole(_ s: SimServer) {
        guard let core = s.core, core.role == .leader else { return }
        if let l = leaders[core.term] {
            if l != s.name { violation("election safety: \(l) and \(s.name) both leaders in term \(core.term)") }
            return
        }
        leaders[core.term] = s.name
        result.elections += 1
        // Leader completeness (Raft §5.4): the new leader holds every committed entry.
        for (i, e) in committed where i > core.snapshot.index {
            if core.term(at: i) != e.term {
                violation("leader completeness: \(s.name), leader of term \(core.term), lacks committed \(describe(e))")
                return
            }
        }
    }

    mutating func violation(_ text: String) {
        if result.violations.count < 20 {
            result.violations.append("t=\(now.seconds)s \(text)")
        }
    }

    // MARK: Clients

    mutating func client() {
        if rng.chance(0.2) {
            let live = servers.filter { $0.core != nil }
            if !live.isEmpty {
                let s = live[Int.random(in: 0..<live.count, using: &rng)]
                counter += 1
                let ctx = UInt64(counter)
                tick(s)
                if (try? s.core!.readIndex(context: (0..<8).map { UInt8(truncatingIfNeeded: ctx >> (8 * UInt64($0))) })) != nil {
                    reads[ctx] = maxAcked
                    if reads.count > 10_000 { reads.removeAll() }
                }
                pump(s)
            }
        }
        let leaders = servers.filter { $0.core?.role == .leader }
        guard !leaders.isEmpty else { return }
        let s = leaders[Int.random(in: 0..<leaders.count, using: &rng)]
        let burst = rng.chance(0.1) ? 8 : 1
        for _ in 0..<burst {
            counter += 1
            let data = Array("w\(seed)-\(counter)".utf8)
            tick(s)
            if let (index, term) = try? s.core!.propose(data) {
                proposals.append(Proposal(server: s.name, index: index, term: term, data: data))
                result.proposals += 1
            }
        }
        // Bound the bookkeeping: a proposal far behind the commit point will never be acked.
        if proposals.count > 10_000 { proposals.removeFirst(proposals.count - 10_000) }
        pump(s)
    }

    // MARK: Faults

    mutating func injectFault() {
        let names = servers.map(\.name)
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<20:
            var a: [NodeID] = [], b: [NodeID] = []
            for n in names { if rng.chance(0.5) { a.append(n) } else { b.append(n) } }
            net.partition([a, b])
        case 20..<32:
            if let l = servers.first(where: { $0.core?.role == .leader }) { net.isolate(l.name) }
        case 32..<52:
            net.heal()
        case 52..<67:
            let live = servers.filter { $0.core != nil }
            if !live.isEmpty { crash(live[Int.random(in: 0..<live.count, using: &rng)]) }
        case 67..<82:
            let down = servers.filter { $0.core == nil }
            if !down.isEmpty { restart(down[Int.random(in: 0..<down.count, using: &rng)]) }
        case 82..<86:
            let hi = Int64.random(in: 2...60, using: &rng)
            net.faults = .init(
                loss: Double.random(in: 0...0.2, using: &rng),
                duplication: Double.random(in: 0...0.1, using: &rng),
                delay: .microseconds(200) ... .milliseconds(hi))
        case 86..<90:
            let s = servers[Int.random(in: 0..<servers.count, using: &rng)]
            s.slowDisk.toggle()
        case 90..<97:
            reconfigure()
        default:
            if let l = servers.first(where: { $0.core?.role == .leader }) {
                let target = names[Int.random(in: 0..<names.count, using: &rng)]
                tick(l)
                try? l.core!.transferLeadership(to: target)
                pump(l)
            }
        }
        checkLogMatching()
    }

    /// Single-server membership changes (thesis §4.1-4.2): promote a learner, re-add a removed
    /// server as a learner (with its old state: a server may rejoin), or remove a follower.
    mutating func reconfigure() {
        guard let l = servers.first(where: { $0.core?.role == .leader }) else { return }
        let c = l.core!.configuration
        tick(l)
        if let learner = c.learners.sorted().first {
            _ = try? l.core!.proposeConfChange(.promote(learner))
        } else if let absent = servers.map(\.name).first(where: { !c.members.contains($0) }) {
            _ = try? l.core!.proposeConfChange(.addLearner(absent))
        } else {
            let others = c.voters.sorted().filter { $0 != l.name }
            if c.voters.count >= 3, !others.isEmpty {
                _ = try? l.core!.proposeConfChange(.remove(others[Int.random(in: 0..<others.count, using: &rng)]))
            }
        }
        pump(l)
    }

    mutating func crash(_ s: SimServer) {
        // Whatever the pending Ready had not yet made durable is lost with the process.
        s.core = nil
        s.pending = nil
        net.crash(s.name)
        proposals.removeAll { $0.server == s.name }
        result.crashes += 1
    }

    mutating func restart(_ s: SimServer) {
        net.restart(s.name)
        start(s)
        pump(s)
    }

    mutating func endFaults() {
        net.heal()
        net.faults = .init(delay: .microseconds(200) ... .milliseconds(3))
        for s in servers {
            s.slowDisk = false
            if s.core == nil { restart(s) }
        }
    }

    // MARK: Checkers

    /// Log matching (Raft §5.3): if two logs hold an entry with the same index and term, the
    /// logs are identical up to it.
    mutating func checkLogMatching() {
        let live = servers.compactMap(\.core)
        for i in live.indices {
            for j in live.indices where j > i {
                let a = live[i], b = live[j]
                let lo = max(a.snapshot.index, b.snapshot.index) + 1
                let hi = min(a.lastIndex, b.lastIndex)
                guard lo <= hi else { continue }
                var top: UInt64 = 0
                var k = hi
                while k >= lo {
                    if a.term(at: k) == b.term(at: k) {
                        top = k
                        break
                    }
                    k -= 1
                }
                guard top >= lo else { continue }
                for x in lo...top where a.entry(at: x) != b.entry(at: x) {
                    violation("log matching: \(a.id) and \(b.id) agree at \(top) but differ at \(x)")
                    return
                }
            }
        }
    }

    mutating func finalChecks() {
        checkLogMatching()
        if let t = firstAckAfterFaults {
            result.recoverySeconds = (t - faultEnd).seconds
            if t - faultEnd > options.recoveryBound {
                violation("liveness: first write after the faults took \((t - faultEnd).seconds)s")
            }
        } else if result.violations.isEmpty {
            violation("liveness: no write acknowledged within \(options.recoveryBound.seconds)s of the faults ending")
        }
        // No acknowledged write lost: every server, after catching up, holds every one.
        let maxAcked = acked.keys.max() ?? 0
        // A server removed from the configuration (and not re-added) stops receiving the log.
        let members =
            servers.compactMap(\.core).filter { $0.role == .leader }.max { $0.term < $1.term }?
            .configuration.members ?? Set(servers.map(\.name))
        for s in servers where members.contains(s.name) {
            if s.machine.applied < maxAcked {
                violation("\(s.name) applied only up to \(s.machine.applied), below acknowledged \(maxAcked)")
                continue
            }
            for (i, data) in acked where s.machine.values[i] != data {
                violation("acknowledged write at \(i) missing on \(s.name)")
                break
            }
        }
    }
}
