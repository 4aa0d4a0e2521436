import Membership

/// A whole cluster of real `SWIMInstance`s on a `SimulatedNetwork`, in one process. The event
/// loop takes the earlier of the next message arrival and the earliest node deadline (`SWIMHosts`:
/// a heap of per-node deadlines, stale entries skipped), so thousands of nodes cost only the
/// events they produce. Nodes are numbered 0..<N; node i is named "n<i>" and listens on "n<i>:7480".
public final class MembershipCluster {
    public typealias Network = SimulatedNetwork<Int, Message>

    public private(set) var now: Duration = .zero
    public var network: Network
    public let configuration: MembershipConfiguration
    public let size: Int
    /// The instances and their timers, composed as in `ClusterSimulation` (SWIMHosts).
    private var hosts: SWIMHosts
    private var rng: SeededGenerator
    private var restarts: [Int] = []
    /// Up (started, not crashed) and not frozen.
    public private(set) var runningCount = 0

    /// Every dead or suspect verdict any node reached, in order: (time, observer, subject, status).
    public private(set) var verdicts: [Verdict] = []
    /// Observers that currently hold each watched subject dead (or left).
    private var deadHolders: [Int: Set<Int>] = [:]
    private var watched: Set<Int> = []
    /// Called with the node's number after it handled each input (message or tick), so an
    /// observer can check just that node instead of all N after every event.
    public var onStep: ((Int) -> Void)?
    /// Messages and bytes each node sent.
    public private(set) var sentMessages: [Int]
    public private(set) var sentBytes: [Int]

    public struct Verdict: Sendable, Hashable {
        public var time: Duration
        public var observer: Int
        public var subject: Int
        public var status: MemberStatus
    }

    public static func name(_ i: Int) -> String { "n\(i)" }
    public static func address(_ i: Int) -> String { "n\(i):7480" }

    public static func record(_ i: Int) -> NodeRecord {
        NodeRecord(
            name: name(i), address: address(i), role: i < 3 ? .server : .client,
            capacity: Resources(cpuMillicores: 2000, memoryBytes: 4 << 30), agentVersion: "0.1.0")
    }

    /// Whether records are signed (`SimulatedCertificates`), as the agent's are; unsigned by default.
    public let signedRecords: Bool

    public init(
        size: Int, seed: UInt64, configuration: MembershipConfiguration = .lan,
        faults: Network.Faults = .init(delay: .microseconds(200) ... .milliseconds(2)),
        signedRecords: Bool = false
    ) {
        self.signedRecords = signedRecords
        self.size = size
        self.configuration = configuration
        rng = SeededGenerator(seed: seed)
        network = Network(seed: rng.next(), faults: faults)
        hosts = SWIMHosts(configuration: configuration, addresses: (0..<size).map(Self.address))
        if signedRecords { hosts.authenticator = { SimulatedCertificates(owner: Self.name($0)) } }
        sentMessages = Array(repeating: 0, count: size)
        sentBytes = Array(repeating: 0, count: size)
        restarts = Array(repeating: 0, count: size)
    }

    // MARK: Building the cluster

    /// Starts node `i` and has it join through `seeds` (none: it is the first).
    public func start(_ i: Int, joining seeds: [Int], incarnation: UInt64 = 0) {
        // The record validates by construction; a failure here is a bug in this file.
        if hosts.instance(i) == nil && !network.isFrozen(i) { runningCount += 1 }
        let e = try! hosts.start(
            i, record: Self.record(i), seed: rng.next(), now: now, incarnation: incarnation, joining: seeds.map(Self.address))
        handle(i, e)
    }

    /// Every node up and already knowing every other as alive (the converged start for large
    /// clusters, where N simultaneous joins would be a benchmark of their own).
    public func startConverged() {
        let authenticator = hosts.authenticator
        let states = (0..<size).map {
            MemberState(incarnation: 0, status: .alive, record: Self.record($0).signed(by: authenticator($0)))
        }
        for i in 0..<size {
            var instance = try! SWIMInstance(
                configuration: configuration, record: states[i].record,
                seed: rng.next(), now: now, authenticator: authenticator(i))
            instance.restore(states, now: now)
            if hosts.instance(i) == nil { runningCount += 1 }
            handle(i, hosts.install(i, instance, now: now))
        }
    }

    // MARK: Faults

    /// SIGKILL: the process is gone; its state is lost. With `resetHints`, every running node
    /// is told at once that its connection to it was reset, as a TCP shell would see it (all
    /// members hold a connection to every member they probe).
    public func crash(_ i: Int, resetHints: Bool = false) {
        if isRunning(i) { runningCount -= 1 }
        network.crash(i)
        hosts.remove(i)
        guard resetHints else { return }
        for j in 0..<size where j != i && isRunning(j) {
            handle(j, hosts.step(j, now: now) { $0.peerUnreachable(address: Self.address(i), now: now) })
        }
    }

    /// A crashed node comes back with a fresh instance (incarnation 0 unless given) and rejoins.
    public func restart(_ i: Int, joining seeds: [Int], incarnation: UInt64 = 0) {
        network.restart(i)
        restarts[i] += 1
        start(i, joining: seeds, incarnation: incarnation)
    }

    public func freeze(_ i: Int) {
        if isRunning(i) { runningCount -= 1 }
        network.freeze(i)
    }

    public func thaw(_ i: Int) {
        if isUp(i) && network.isFrozen(i) { runningCount += 1 }
        network.thaw(i, now: now)
        hosts.wake(i, now: now)
    }

    public func leave(_ i: Int) {
        handle(i, hosts.step(i, now: now) { $0.leave(now: now) })
    }

    public func updateRecord(_ i: Int, _ change: (inout NodeRecord) -> Void) throws(NodeRecordError) {
        guard var r = hosts.instance(i)?.record else { return }
        change(&r)
        let e = try hosts.step(i, now: now) { (x: inout SWIMInstance) throws(NodeRecordError) in try x.updateRecord(r, now: now) }
        handle(i, e)
    }

    // MARK: Observation

    public func instance(_ i: Int) -> SWIMInstance? { hosts.instance(i) }
    public func isUp(_ i: Int) -> Bool { hosts.instance(i) != nil && !network.isCrashed(i) }
    public func isRunning(_ i: Int) -> Bool { isUp(i) && !network.isFrozen(i) }

    /// Tracks which nodes hold `subject` dead from now on.
    public func watch(_ subject: Int) {
        watched.insert(subject)
        var holders = Set<Int>()
        for i in 0..<size where i != subject {
            if let s = hosts.instance(i)?.member(named: Self.name(subject))?.status, s == .dead || s == .left { holders.insert(i) }
        }
        deadHolders[subject] = holders
    }

    /// Whether every running node other than `subject` and `except` holds `subject` dead or left.
    public func allRunningHoldDead(_ subject: Int, except: Set<Int> = []) -> Bool {
        let holders = deadHolders[subject] ?? []
        // Cheap necessary condition first: this runs after every event in large simulations.
        if holders.count < runningCount - 1 - except.count { return false }
        for i in 0..<size where i != subject && !except.contains(i) && isRunning(i) {
            if !holders.contains(i) { return false }
        }
        return true
    }

    /// Whether every running node sees exactly the other running nodes as alive (and no one else
    /// as alive or suspect).
    public func isConverged() -> Bool {
        var running = Set<String>()
        for i in 0..<size where isRunning(i) { running.insert(Self.name(i)) }
        for i in 0..<size where isRunning(i) {
            guard let inst = hosts.instance(i) else { return false }
            if inst.count(.alive) != running.count - 1 || inst.count(.suspect) != 0 { return false }
            for m in inst.knownMembers where m.status == .alive && !running.contains(m.name) { return false }
        }
        return true
    }

    // MARK: Running

    /// Processes events up to `limit`, or until `stop` returns true (checked after each event).
    /// Returns the time at which `stop` became true, if it did.
    @discardableResult
    public func run(until limit: Duration, stopWhen stop: (() -> Bool)? = nil) -> Duration? {
        while true {
            let tn = network.nextDeliveryTime
            let tt = hosts.nextTimer
            guard let next = [tn, tt].compactMap({ $0 }).min(), next <= limit else { break }
            now = max(now, next)
            if let tn, tn == next, tt == nil || tn <= tt! {
                guard let e = network.deliverNext(upTo: now) else { continue }
                guard hosts.instance(e.to) != nil else { continue }
                handle(e.to, hosts.receive(e.to, e.message, now: now))
                onStep?(e.to)
            } else {
                guard let i = hosts.popTimer() else { continue }
                if network.isFrozen(i) { continue }  // thaw() wakes it
                handle(i, hosts.tick(i, now: now))
                onStep?(i)
            }
            if let stop, stop() { return now }
        }
        now = max(now, limit)
        return stop?() == true ? now : nil
    }

    /// Runs for `duration` more.
    public func advance(by duration: Duration) { run(until: now + duration) }

    private func handle(_ i: Int, _ e: SWIMHosts.Effects) {
        for (to, message, size) in e.messages {
            sentMessages[i] += 1
            sentBytes[i] += size
            network.send(message, from: i, to: to, size: size, now: now)
        }
        for e in e.events {
            guard case let .memberChanged(c) = e, let subject = Self.node(named: c.name) else { continue }
            if c.status == .dead || c.status == .suspect {
                verdicts.append(Verdict(time: now, observer: i, subject: subject, status: c.status))
            }
            if watched.contains(subject) {
                if c.status == .dead || c.status == .left {
                    deadHolders[subject, default: []].insert(i)
                } else {
                    deadHolders[subject, default: []].remove(i)
                }
            }
        }
    }

    private static func node(named name: String) -> Int? {
        guard name.first == "n" else { return nil }
        return Int(name.dropFirst())
    }
}
