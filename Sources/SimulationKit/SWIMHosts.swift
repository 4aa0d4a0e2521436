import HeapModule
import Membership

/// The SWIM side of a simulated cluster, shared by `MembershipCluster` (`microscale-sim
/// membership`) and `ClusterSimulation` (`microscale-sim cluster`): one real `SWIMInstance` per
/// node number, and their timers, driven the way `MembershipService` drives the instance in the
/// agent (docs/membership.md): each input (a message, a tick, a record change, join, leave) is
/// handed to the instance with the time, and its `Directives` are carried out: messages go to
/// the member listening on their address, and the instance is ticked again at its
/// `nextDeadline`, which after each input replaces the one before (older heap entries go stale
/// and are skipped, so thousands of nodes cost only the events they produce).
///
/// What the network is, and what becomes of the instance's events, is the caller's: `step`
/// returns the messages already routed to node numbers, and the events as they are.
public struct SWIMHosts: Sendable {
    public let configuration: MembershipConfiguration
    /// Who signs and checks node i's records: `UnsignedRecords` unless the caller says otherwise
    /// (`SimulatedCertificates` runs the certificate paths the agent runs).
    public var authenticator: @Sendable (Int) -> any RecordAuthenticator = { _ in UnsignedRecords() }
    private var nodes: [SWIMInstance?]
    private var deadlines: [Duration?]
    private var timers = Heap<Timer>()
    private var addressToNode: [String: Int] = [:]

    private struct Timer: Comparable, Sendable {
        var at: Duration
        var node: Int32
        static func < (a: Timer, b: Timer) -> Bool { (a.at, a.node) < (b.at, b.node) }
    }

    /// What one input asked for: messages to send (to node numbers, with their size for
    /// bandwidth counts), and the events to report. Messages to an address no node listens on
    /// are dropped, as a dial to it would fail.
    public struct Effects: Sendable {
        public var messages: [(to: Int, message: Message, size: Int)] = []
        public var events: [MembershipEvent] = []
    }

    /// `addresses[i]` is where node i listens (its record's address).
    public init(configuration: MembershipConfiguration, addresses: [String]) {
        self.configuration = configuration
        nodes = Array(repeating: nil, count: addresses.count)
        deadlines = Array(repeating: nil, count: addresses.count)
        addressToNode.reserveCapacity(addresses.count)
        for (i, a) in addresses.enumerated() { addressToNode[a] = i }
    }

    public var count: Int { nodes.count }
    public func instance(_ i: Int) -> SWIMInstance? { nodes[i] }
    public func node(address: String) -> Int? { addressToNode[address] }

    /// The earliest timer (possibly stale: `popTimer` skips those).
    public var nextTimer: Duration? { timers.min?.at }

    /// Removes the earliest timer; returns its node when the timer is still that node's deadline
    /// (nil for a stale entry). The caller ticks the node with `step`, or, if the node cannot run
    /// now (frozen), drops the tick and calls `wake` when it can.
    public mutating func popTimer() -> Int? {
        guard let t = timers.popMin() else { return nil }
        let i = Int(t.node)
        guard deadlines[i] == t.at, nodes[i] != nil else { return nil }
        deadlines[i] = nil
        return i
    }

    // MARK: Lifecycle

    /// A fresh instance on node i (a start, or a restart after a crash: nothing of the old one is
    /// kept), joining through `seeds` (addresses; none: it is the first).
    public mutating func start(
        _ i: Int, record: NodeRecord, seed: UInt64, now: Duration, incarnation: UInt64 = 0, joining seeds: [String]
    ) throws(NodeRecordError) -> Effects {
        nodes[i] = try SWIMInstance(
            configuration: configuration, record: record, seed: seed, now: now, incarnation: incarnation,
            authenticator: authenticator(i))
        deadlines[i] = nil
        return step(i, now: now) { $0.join(seeds: seeds, now: now) }
    }

    /// Installs an instance built by the caller (a converged start), and ticks it.
    public mutating func install(_ i: Int, _ instance: SWIMInstance, now: Duration) -> Effects {
        nodes[i] = instance
        deadlines[i] = nil
        return step(i, now: now) { $0.tick(now: now) }
    }

    /// SIGKILL: the instance and its timers are gone.
    public mutating func remove(_ i: Int) {
        nodes[i] = nil
        deadlines[i] = nil
    }

    /// A node that could not run its timers (SIGSTOP) runs again: tick it now. A frozen
    /// process's timers fire late, all at once; the instance catches up on one tick.
    public mutating func wake(_ i: Int, now: Duration) {
        guard nodes[i] != nil else { return }
        deadlines[i] = now
        timers.insert(Timer(at: now, node: Int32(i)))
    }

    // MARK: Inputs

    /// Hands one input to node i's instance (`input` calls one of its entry points) and carries
    /// out the directives' timer; returns what to send and report. Nothing when the node has no
    /// instance (crashed).
    public mutating func step<E: Error>(_ i: Int, now: Duration, _ input: (inout SWIMInstance) throws(E) -> Directives) throws(E) -> Effects {
        guard nodes[i] != nil else { return Effects() }
        let d = try input(&nodes[i]!)
        var effects = Effects()
        effects.messages.reserveCapacity(d.messages.count)
        for o in d.messages {
            guard let to = addressToNode[o.to] else { continue }
            effects.messages.append((to, o.message, o.message.estimatedSize))
        }
        effects.events = d.events
        // The instance's deadline after each input is authoritative; older heap entries go stale.
        deadlines[i] = nil
        if let next = d.nextDeadline {
            let at = max(next, now)
            deadlines[i] = at
            timers.insert(Timer(at: at, node: Int32(i)))
        }
        return effects
    }

    public mutating func tick(_ i: Int, now: Duration) -> Effects { step(i, now: now) { $0.tick(now: now) } }
    public mutating func receive(_ i: Int, _ message: Message, now: Duration) -> Effects {
        step(i, now: now) { $0.receive(message, now: now) }
    }
}
