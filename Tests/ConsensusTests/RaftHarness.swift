import Testing

@testable import Consensus

/// A tiny synchronous cluster for scenario tests: every Ready is persisted, sent and applied at
/// once, and messages are delivered in order unless a node is cut off.
struct RaftHarness {
    var nodes: [NodeID: RaftNode] = [:]
    var storage: [NodeID: MemoryStorage] = [:]
    var applied: [NodeID: [Entry]] = [:]
    var reads: [NodeID: [ReadState]] = [:]
    var isolated: Set<NodeID> = []
    var queue: [RaftMessage] = []
    let electionTimeout: Duration = .milliseconds(300)

    static func config(_ id: NodeID, preVote: Bool = true) -> RaftConfig {
        var c = RaftConfig(id: id)
        c.preVote = preVote
        return c
    }

    init(voters: [NodeID], preVote: Bool = true, recovered: [NodeID: RecoveredState] = [:]) {
        for (i, id) in voters.enumerated() {
            add(
                id, bootstrap: Configuration(voters: Set(voters)), preVote: preVote,
                recovered: recovered[id] ?? RecoveredState(), seed: UInt64(i + 1))
        }
    }

    mutating func add(
        _ id: NodeID, bootstrap: Configuration, preVote: Bool = true,
        recovered: RecoveredState = RecoveredState(), seed: UInt64
    ) {
        var s = MemoryStorage()
        s.persist(snapshot: recovered.snapshot, entries: recovered.entries, hardState: recovered.hardState)
        storage[id] = s
        nodes[id] = RaftNode(
            config: Self.config(id, preVote: preVote), bootstrap: bootstrap,
            recovered: recovered, seed: seed)
        applied[id] = []
    }

    /// Runs Readies and delivers messages until nothing moves.
    mutating func settle() {
        for _ in 0..<10_000 {
            var moved = false
            for id in nodes.keys.sorted() where nodes[id]!.hasReady {
                moved = true
                let rd = nodes[id]!.ready()
                storage[id]!.persist(snapshot: rd.snapshot, entries: rd.entries, hardState: rd.hardState)
                for m in rd.messages where !isolated.contains(m.from) && !isolated.contains(m.to) {
                    queue.append(m)
                }
                if let s = rd.snapshot { applied[id] = [Entry(term: s.term, index: s.index, data: s.data)] }
                applied[id]!.append(contentsOf: rd.committedEntries)
                reads[id, default: []].append(contentsOf: rd.readStates)
                nodes[id]!.advance(rd)
            }
            if !queue.isEmpty {
                moved = true
                let batch = queue
                queue = []
                for m in batch where nodes[m.to] != nil { nodes[m.to]!.step(m) }
            }
            if !moved { return }
        }
        Issue.record("harness did not settle")
    }

    /// Long enough for any randomized election timeout, [T, 2T), to fire.
    mutating func expireElectionTimeout(_ id: NodeID) {
        nodes[id]!.tick(by: electionTimeout * 2)
        settle()
    }

    /// Time passing on every node, in heartbeat-sized steps.
    mutating func run(for d: Duration) {
        var t: Duration = .zero
        while t < d {
            for id in nodes.keys.sorted() { nodes[id]!.tick(by: .milliseconds(10)) }
            settle()
            t += .milliseconds(10)
        }
    }

    func leaders() -> [NodeID] { nodes.values.filter { $0.role == .leader }.map(\.id).sorted() }

    mutating func propose(_ id: NodeID, _ text: String) throws {
        try nodes[id]!.propose(Array(text.utf8))
        settle()
    }

    func appliedData(_ id: NodeID) -> [String] {
        applied[id]!.filter { $0.kind == .normal && !$0.data.isEmpty }.map { String(decoding: $0.data, as: UTF8.self) }
    }
}

func entries(_ terms: [UInt64]) -> [Entry] {
    terms.enumerated().map { Entry(term: $0.element, index: UInt64($0.offset + 1), data: Array("e\($0.offset + 1)t\($0.element)".utf8)) }
}
