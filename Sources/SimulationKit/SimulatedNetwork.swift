import HeapModule

/// A message network for whole-cluster simulation: every message gets a random delay (which
/// also reorders), may be lost or duplicated, and is dropped by partitions, cut links and
/// crashed endpoints. A frozen node (SIGSTOP) keeps its connections: messages to it wait and
/// arrive when it thaws, and it sends nothing meanwhile, exactly like a stopped process whose
/// kernel still buffers its sockets.
///
/// The network is a value type driven by the simulation loop: `send` enqueues, `deliver(upTo:)`
/// hands back what has arrived by then. All randomness comes from the seeded generator given
/// at creation, so a seed replays the same deliveries.
public struct SimulatedNetwork<Node: Hashable & Sendable, Message: Sendable>: Sendable {
    public struct Faults: Sendable, Hashable {
        /// Probability that a message is lost.
        public var loss: Double
        /// Probability that a delivered message arrives twice.
        public var duplication: Double
        /// One-way delay, drawn uniformly; a wide range reorders messages.
        public var delay: ClosedRange<Duration>

        public init(
            loss: Double = 0, duplication: Double = 0,
            delay: ClosedRange<Duration> = .milliseconds(1) ... .milliseconds(5)
        ) {
            self.loss = loss
            self.duplication = duplication
            self.delay = delay
        }

        public static var none: Faults { Faults() }
    }

    public struct Envelope: Sendable {
        public var from: Node
        public var to: Node
        public var message: Message
        public var size: Int
        public var sentAt: Duration
        public var deliverAt: Duration
        fileprivate var sequence: UInt64
    }

    /// Counters for reports (messages and bytes per node per second, say).
    public struct Statistics: Sendable, Hashable {
        public var sent = 0
        public var delivered = 0
        public var dropped = 0
        public var duplicated = 0
        public var bytesSent = 0
    }

    private struct Pending: Comparable, Sendable {
        var envelope: Envelope
        static func < (a: Pending, b: Pending) -> Bool {
            (a.envelope.deliverAt, a.envelope.sequence) < (b.envelope.deliverAt, b.envelope.sequence)
        }
        static func == (a: Pending, b: Pending) -> Bool { a.envelope.sequence == b.envelope.sequence }
    }

    public var faults: Faults
    public private(set) var statistics = Statistics()
    private var rng: SeededGenerator
    private var inFlight = Heap<Pending>()
    private var held: [Node: [Envelope]] = [:]
    private var sequence: UInt64 = 0
    private var crashed: Set<Node> = []
    private var frozen: Set<Node> = []
    /// Partition groups: a node maps to the group it is in; nodes in different groups cannot
    /// talk. Nodes absent from the map are in the default group 0.
    private var group: [Node: Int] = [:]
    private var cutLinks: Set<Link> = []
    /// Directed per-link fault overrides (loss or delay on one path only, as tc netem does).
    private var linkFaults: [Link: Faults] = [:]

    private struct Link: Hashable, Sendable {
        var from: Node
        var to: Node
    }

    public init(seed: UInt64, faults: Faults = .none) {
        self.rng = SeededGenerator(seed: seed)
        self.faults = faults
    }

    // MARK: Sending and delivering

    /// Sends `message` from `from` to `to` at time `now`. `size` is the encoded size, counted
    /// for bandwidth reports only.
    public mutating func send(_ message: Message, from: Node, to: Node, size: Int = 0, now: Duration) {
        statistics.sent += 1
        statistics.bytesSent += size
        guard canReach(from, to) else {
            statistics.dropped += 1
            return
        }
        let f = linkFaults[Link(from: from, to: to)] ?? faults
        if rng.chance(f.loss) {
            statistics.dropped += 1
            return
        }
        enqueue(message, from: from, to: to, size: size, now: now, delay: f.delay)
        if rng.chance(f.duplication) {
            statistics.duplicated += 1
            enqueue(message, from: from, to: to, size: size, now: now, delay: f.delay)
        }
    }

    private mutating func enqueue(
        _ message: Message, from: Node, to: Node, size: Int, now: Duration,
        delay: ClosedRange<Duration>
    ) {
        sequence += 1
        let at = now + Duration.random(in: delay, using: &rng)
        inFlight.insert(
            Pending(
                envelope: Envelope(
                    from: from, to: to, message: message, size: size, sentAt: now, deliverAt: at, sequence: sequence)))
    }

    /// When the next message arrives, if any is in flight.
    public var nextDeliveryTime: Duration? { inFlight.min?.envelope.deliverAt }

    /// Messages in flight (for bounds in tests and reports).
    public var inFlightCount: Int { inFlight.count + held.values.reduce(0) { $0 + $1.count } }

    /// Removes and returns the messages that arrive by `now`, in arrival order. A message whose
    /// path broke while it was in flight (a partition, a crash) is dropped; one for a frozen
    /// node waits for it to thaw.
    public mutating func deliver(upTo now: Duration) -> [Envelope] {
        var out: [Envelope] = []
        while let e = deliverNext(upTo: now) { out.append(e) }
        return out
    }

    /// Removes and returns the single next arrival if it is due by `now`; lets a driver
    /// interleave deliveries with timers at exact times.
    public mutating func deliverNext(upTo now: Duration) -> Envelope? {
        while let next = inFlight.min, next.envelope.deliverAt <= now {
            let e = inFlight.removeMin().envelope
            if crashed.contains(e.to) || !partitionAllows(e.from, e.to) || cutLinks.contains(Link(from: e.from, to: e.to)) {
                statistics.dropped += 1
            } else if frozen.contains(e.to) {
                held[e.to, default: []].append(e)
            } else {
                statistics.delivered += 1
                return e
            }
        }
        return nil
    }

    // MARK: Faults

    public func canReach(_ from: Node, _ to: Node) -> Bool {
        !crashed.contains(from) && !crashed.contains(to) && !frozen.contains(from)
            && partitionAllows(from, to) && !cutLinks.contains(Link(from: from, to: to))
    }

    private func partitionAllows(_ a: Node, _ b: Node) -> Bool {
        (group[a] ?? 0) == (group[b] ?? 0)
    }

    /// Splits the cluster: each inner array is a side; nodes not named stay in a side of their own
    /// with everyone else not named.
    public mutating func partition(_ sides: [[Node]]) {
        group = [:]
        for (i, side) in sides.enumerated() {
            for n in side { group[n] = i + 1 }
        }
    }

    /// Isolates one node from everyone else.
    public mutating func isolate(_ node: Node) {
        group[node] = (group.values.max() ?? 0) + 1
    }

    /// Ends every partition and cut link.
    public mutating func heal() {
        group = [:]
        cutLinks = []
    }

    /// Cuts the link in both directions (a dead switch port, an iptables DROP).
    public mutating func cut(_ a: Node, _ b: Node) {
        cutLinks.insert(Link(from: a, to: b))
        cutLinks.insert(Link(from: b, to: a))
    }

    /// Faults on one directed path only.
    public mutating func setFaults(_ f: Faults?, from: Node, to: Node) {
        linkFaults[Link(from: from, to: to)] = f
    }

    /// A crash: the node sends and receives nothing until `restart`, and what was in flight to
    /// it is lost.
    public mutating func crash(_ node: Node) {
        crashed.insert(node)
        held[node] = nil
    }

    public mutating func restart(_ node: Node) {
        crashed.remove(node)
    }

    /// SIGSTOP: the node's sockets stay open, so messages to it are held, not lost.
    public mutating func freeze(_ node: Node) { frozen.insert(node) }

    /// SIGCONT: held messages arrive at `now`, in the order they were sent.
    public mutating func thaw(_ node: Node, now: Duration) {
        frozen.remove(node)
        for e in held.removeValue(forKey: node) ?? [] {
            var e = e
            e.deliverAt = now
            inFlight.insert(Pending(envelope: e))
        }
    }

    public func isCrashed(_ node: Node) -> Bool { crashed.contains(node) }
    public func isFrozen(_ node: Node) -> Bool { frozen.contains(node) }
}
