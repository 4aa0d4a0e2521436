import Consensus
import Foundation
import SimulationKit
import Testing

/// Golden traces of `RaftNode` (etcd-io/raft's `testdata/` and its interaction environment):
/// every Ready a node hands out and every message delivered is printed, so a change in what the
/// core does shows as a diff in `testdata/*.txt`. `MICROSCALE_REWRITE=1 swift test --filter
/// RaftTraceTests` writes the new traces; read the diff before committing it.
///
/// Commands (nodes are named "1", "2", ...):
///   add-nodes N [learners=A,B]   N voters (and learners) that know each other; seeds 1...N
///   add-joiner ID                a server with an empty configuration, waiting to be added
///   campaign ID                  its election timer fires (ticks by 2 election timeouts)
///   tick ID [ms=N]               time passes on one node (default: one heartbeat interval)
///   tick-all ms=N                time passes on every node, in 10 ms steps, settling after each
///   propose ID DATA              a client proposal; prints the index and term, or the refusal
///   add-learner ID NEW / promote ID NEW / remove ID OLD   single-server changes (thesis §4.1)
///   transfer ID TARGET           leadership transfer (thesis §3.10)
///   read-index ID CTX            a ReadIndex request (thesis §6.4)
///   compact ID INDEX             a snapshot at INDEX replaces the log before it (Raft §7)
///   process-ready ID             persist, queue the messages, apply; prints the Ready
///   deliver [to=ID]              delivers the queued messages (to one node); prints each
///   stabilize                    process-ready and deliver on every node until nothing moves
///   isolate ID / heal            drop every message to and from ID, or stop dropping
///   crash ID / restart ID        lose the node's memory; rebuild it from what it persisted
///   forge TO kind=K from=F term=T [index=I logterm=L commit=C entries=N]   a hostile message to TO
///   status [ID]                  role, term, leader, commit, applied, configuration
///   log ID                       the entries the node holds
struct RaftTrace {
    var nodes: [NodeID: RaftNode] = [:]
    var storage: [NodeID: MemoryStorage] = [:]
    var bootstrap: [NodeID: Configuration] = [:]
    var seeds: [NodeID: UInt64] = [:]
    var crashed: Set<NodeID> = []
    var isolated: Set<NodeID> = []
    var queue: [RaftMessage] = []
    var electionTimeout: Duration { RaftConfig(id: "").electionTimeout }
    var heartbeat: Duration { RaftConfig(id: "").heartbeatInterval }

    var ids: [NodeID] { nodes.keys.sorted { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) } }

    mutating func add(_ id: NodeID, configuration: Configuration, seed: UInt64) {
        storage[id] = MemoryStorage()
        bootstrap[id] = configuration
        seeds[id] = seed
        nodes[id] = RaftNode(config: RaftConfig(id: id), bootstrap: configuration, seed: seed)
    }

    mutating func interpret(_ c: DataDriven.Command) -> String {
        let a = c.positional
        func node(_ i: Int) -> NodeID? { i < a.count && nodes[a[i]] != nil ? a[i] : nil }
        switch c.name {
        case "add-nodes":
            guard let n = a.first.flatMap({ Int($0) }), n > 0 else { return "usage: add-nodes N" }
            let voters = Set((1...n).map(String.init))
            let learners = Set((c.keyed["learners"] ?? "").split(separator: ",").map(String.init))
            for id in (voters.union(learners)).sorted() {
                add(id, configuration: Configuration(voters: voters, learners: learners), seed: UInt64(Int(id) ?? 0))
            }
            return ""
        case "add-joiner":
            guard let id = a.first else { return "usage: add-joiner ID" }
            add(id, configuration: Configuration(), seed: UInt64(Int(id) ?? 0))
            return ""
        case "campaign":
            guard let id = node(0) else { return "no such node" }
            nodes[id]!.tick(by: electionTimeout * 2)
            return ""
        case "tick":
            guard let id = node(0) else { return "no such node" }
            nodes[id]!.tick(by: c.keyed["ms"].flatMap { Int($0) }.map { .milliseconds($0) } ?? heartbeat)
            return ""
        case "tick-all":
            guard let ms = c.keyed["ms"].flatMap({ Int($0) }) else { return "usage: tick-all ms=N" }
            var out: [String] = []
            for _ in 0..<(ms / 10) {
                for id in ids where !crashed.contains(id) { nodes[id]!.tick(by: .milliseconds(10)) }
                let s = stabilize()
                if !s.isEmpty { out.append(s) }
            }
            return out.joined(separator: "\n")
        case "propose":
            guard let id = node(0), a.count > 1 else { return "usage: propose ID DATA" }
            do {
                let (index, term) = try nodes[id]!.propose(Array(a[1].utf8))
                return "proposed at \(index)/\(term)"
            } catch { return "refused: \(error)" }
        case "add-learner", "promote", "remove":
            guard let id = node(0), a.count > 1 else { return "usage: \(c.name) ID NODE" }
            let change: ConfChange = c.name == "add-learner" ? .addLearner(a[1]) : c.name == "promote" ? .promote(a[1]) : .remove(a[1])
            do {
                let (index, term) = try nodes[id]!.proposeConfChange(change)
                return "proposed at \(index)/\(term)"
            } catch { return "refused: \(error)" }
        case "transfer":
            guard let id = node(0), a.count > 1 else { return "usage: transfer ID TARGET" }
            do { try nodes[id]!.transferLeadership(to: a[1]) } catch { return "refused: \(error)" }
            return ""
        case "read-index":
            guard let id = node(0), a.count > 1 else { return "usage: read-index ID CTX" }
            do { try nodes[id]!.readIndex(context: Array(a[1].utf8)) } catch { return "refused: \(error)" }
            return ""
        case "compact":
            guard let id = node(0), a.count > 1, let index = UInt64(a[1]) else { return "usage: compact ID INDEX" }
            do {
                let s = try nodes[id]!.compact(upTo: index, data: Array("state@\(index)".utf8))
                storage[id]!.compact(to: s)
                return "snapshot \(s.index)/\(s.term) \(render(s.configuration))"
            } catch { return "refused: \(error)" }
        case "process-ready":
            guard let id = node(0) else { return "no such node" }
            return processReady(id) ?? ""
        case "deliver":
            return deliver(to: c.keyed["to"])
        case "stabilize":
            return stabilize()
        case "isolate":
            guard let id = node(0) else { return "no such node" }
            isolated.insert(id)
            return ""
        case "heal":
            isolated = []
            return ""
        case "crash":
            guard let id = node(0) else { return "no such node" }
            crashed.insert(id)
            queue.removeAll { $0.to == id }
            return ""
        case "restart":
            guard let id = node(0) else { return "no such node" }
            crashed.remove(id)
            let recovered = storage[id]!.recover()
            nodes[id] = RaftNode(config: RaftConfig(id: id), bootstrap: bootstrap[id]!, recovered: recovered, seed: seeds[id]! &+ 1000)
            return
                "\(id) restarted: term=\(recovered.hardState.term) vote=\(recovered.hardState.vote ?? "-") commit=\(recovered.hardState.commit) entries=\(recovered.entries.count)"
        case "forge":
            guard let to = node(0), let kindName = c.keyed["kind"], let kind = Self.kinds[kindName],
                let from = c.keyed["from"], let term = c.keyed["term"].flatMap({ UInt64($0) })
            else {
                return "usage: forge TO kind=K from=F term=T"
            }
            var m = RaftMessage(kind: kind, from: from, to: to, term: term)
            m.index = c.keyed["index"].flatMap { UInt64($0) } ?? 0
            m.logTerm = c.keyed["logterm"].flatMap { UInt64($0) } ?? 0
            m.commit = c.keyed["commit"].flatMap { UInt64($0) } ?? 0
            let count = c.keyed["entries"].flatMap { Int($0) } ?? 0
            m.entries = (0..<min(count, 16)).map { Entry(term: term, index: m.index + UInt64($0) + 1, data: Array("forged".utf8)) }
            nodes[to]!.step(m)
            return "\(to) <- \(render(m))"
        case "status":
            return (a.isEmpty ? ids : a.filter { nodes[$0] != nil }).map(status).joined(separator: "\n")
        case "log":
            guard let id = node(0) else { return "no such node" }
            let n = nodes[id]!
            let first = n.snapshot.index + 1
            var lines = ["snapshot \(n.snapshot.index)/\(n.snapshot.term)"]
            if first <= n.lastIndex {
                for i in first...n.lastIndex { if let e = n.entry(at: i) { lines.append(render(e)) } }
            }
            return lines.joined(separator: "\n")
        default:
            return "unknown command \(c.name)"
        }
    }

    /// Persist (to the node's storage), queue the messages, apply, advance: a shell's round.
    mutating func processReady(_ id: NodeID) -> String? {
        guard !crashed.contains(id), var n = nodes[id], n.hasReady else { return nil }
        let rd = n.ready()
        storage[id]!.persist(snapshot: rd.snapshot, entries: rd.entries, hardState: rd.hardState)
        var lines = ["> \(id) handling Ready"]
        if let s = rd.softState { lines.append("  Lead:\(s.leader ?? "-") State:\(s.role.rawValue)") }
        if let h = rd.hardState { lines.append("  HardState Term:\(h.term) Vote:\(h.vote ?? "-") Commit:\(h.commit)") }
        if let s = rd.snapshot { lines.append("  Snapshot \(s.index)/\(s.term) \(render(s.configuration))") }
        if !rd.entries.isEmpty {
            lines.append("  Entries:")
            lines += rd.entries.map { "  " + render($0) }
        }
        if !rd.messages.isEmpty {
            lines.append("  Messages:")
            lines += rd.messages.map { "  " + render($0) }
        }
        if !rd.committedEntries.isEmpty {
            lines.append("  CommittedEntries:")
            lines += rd.committedEntries.map { "  " + render($0) }
        }
        for r in rd.readStates { lines.append("  ReadState index=\(r.index) ctx=\(String(decoding: r.context, as: UTF8.self))") }
        for m in rd.messages { queue.append(m) }
        n.advance(rd)
        nodes[id] = n
        return lines.joined(separator: "\n")
    }

    mutating func deliver(to target: NodeID? = nil) -> String {
        var lines: [String] = []
        let batch = queue.filter { target == nil || $0.to == target }
        queue.removeAll { target == nil || $0.to == target }
        for m in batch {
            if isolated.contains(m.from) || isolated.contains(m.to) || crashed.contains(m.to) {
                lines.append("dropped \(render(m))")
                continue
            }
            guard nodes[m.to] != nil else { continue }
            lines.append("\(m.to) <- \(render(m))")
            nodes[m.to]!.step(m)
        }
        return lines.joined(separator: "\n")
    }

    mutating func stabilize() -> String {
        var out: [String] = []
        for _ in 0..<1000 {
            var moved = false
            for id in ids {
                if let r = processReady(id) {
                    out.append(r)
                    moved = true
                }
            }
            if !queue.isEmpty {
                out.append(deliver())
                moved = true
            }
            if !moved { return out.filter { !$0.isEmpty }.joined(separator: "\n") }
        }
        return (out + ["did not stabilize in 1000 rounds"]).joined(separator: "\n")
    }

    func status(_ id: NodeID) -> String {
        let n = nodes[id]!
        return
            "\(id): \(crashed.contains(id) ? "crashed " : "")\(n.role.rawValue) term=\(n.term) lead=\(n.leader ?? "-") commit=\(n.commit) applied=\(n.applied) last=\(n.lastIndex) \(render(n.configuration))"
    }

    func render(_ c: Configuration) -> String {
        "voters=(\(c.voters.sorted().joined(separator: " ")))"
            + (c.learners.isEmpty ? "" : " learners=(\(c.learners.sorted().joined(separator: " ")))")
    }

    func render(_ e: Entry) -> String {
        let data = e.kind == .configuration ? ConfChange(encoded: e.data).map { "\($0)" } ?? "?" : String(decoding: e.data, as: UTF8.self)
        return "\(e.index)/\(e.term) \(e.kind == .configuration ? "conf" : "normal") \"\(data)\""
    }

    func render(_ m: RaftMessage) -> String {
        var s = "\(m.from)->\(m.to) \(m.kind) term=\(m.term)"
        switch m.kind {
        case .vote, .preVote, .append: s += " log=\(m.index)/\(m.logTerm)"
        case .appendResponse: s += " index=\(m.index)"
        case .readIndexResponse: s += " index=\(m.index)"
        default: break
        }
        if m.kind == .append || m.kind == .heartbeat { s += " commit=\(m.commit)" }
        if m.reject { s += " rejected hint=\(m.rejectHint)" }
        if m.kind == .voteResponse || m.kind == .preVoteResponse { s += m.reject ? "" : " granted" }
        if !m.entries.isEmpty { s += " entries=[\(m.entries.map(render).joined(separator: ", "))]" }
        if let snap = m.snapshot { s += " snapshot=\(snap.index)/\(snap.term)" }
        if m.readRound > 0 { s += " round=\(m.readRound)" }
        if !m.context.isEmpty { s += " ctx=\(String(decoding: m.context, as: UTF8.self))" }
        if m.transfer { s += " transfer" }
        return s
    }

    static let kinds: [String: RaftMessage.Kind] = [
        "preVote": .preVote, "preVoteResponse": .preVoteResponse, "vote": .vote, "voteResponse": .voteResponse,
        "append": .append, "appendResponse": .appendResponse, "heartbeat": .heartbeat,
        "heartbeatResponse": .heartbeatResponse, "timeoutNow": .timeoutNow, "readIndex": .readIndex,
    ]
}

@Suite struct RaftTraceTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata").path
    static let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".txt") }.sorted()

    @Test func theTraceDirectoryHasTraces() {
        #expect(Self.files.count >= 5, "\(Self.directory)")
    }

    @Test(arguments: files) func theCorePrintsWhatItsTraceSays(_ file: String) throws {
        var trace = RaftTrace()
        let mismatches = try DataDriven.run("\(Self.directory)/\(file)") { trace.interpret($0) }
        for m in mismatches { Issue.record("\(m)") }
    }
}
