import Foundation
import Membership
import SimulationKit
import Testing

/// Golden traces of `SWIMInstance` (the Raft traces' counterpart; docs/membership.md): nodes on a
/// simulated network with 1 ms latency and one clock, every member change each node sees printed
/// with its time, and with `verbose` every message sent, delivered or dropped. A change in what
/// the core does shows as a diff in `testdata/*.txt`; `MICROSCALE_REWRITE=1 swift test --filter
/// SWIMTraceTests` writes the new traces.
///
/// Commands (nodes are named n1, n2, ...; addresses nI:7480):
///   add-nodes N                  N instances (seeds 1...N) that know no one
///   join ID SEED                 ID joins through SEED (a push-pull to it)
///   run ms=N [verbose]           time passes: timers fire at their deadlines, messages arrive
///   kill ID                      the node stops: no timer, nothing in or out (a power cut)
///   freeze ID / thaw ID          the same, but the node keeps its state and resumes
///   partition A,B C,D / heal     messages between the groups are dropped, or no longer
///   leave ID                     a graceful leave
///   forge TO kind=suspect|dead|alive subject=S incarnation=I [from=F]   hostile gossip
///   members ID                   what ID knows: status and incarnation of each member
///   health ID                    ID's Lifeguard local health multiplier (0 = healthy)
struct SWIMTrace {
    struct Node {
        var swim: SWIMInstance
        var next: Duration?
        var down = false
    }
    struct InFlight {
        var at: Duration
        var order: Int
        var from: String
        var to: String
        var message: Message
    }
    var nodes: [String: Node] = [:]
    var now: Duration = .zero
    var queue: [InFlight] = []
    var order = 0
    var groups: [[String]] = []
    var verbose = false
    var out: [String] = []
    let latency: Duration = .milliseconds(1)

    var ids: [String] { nodes.keys.sorted { (Int($0.dropFirst()) ?? 0, $0) < (Int($1.dropFirst()) ?? 0, $1) } }
    static func address(_ id: String) -> String { "\(id):7480" }
    static func id(of address: String) -> String { String(address.split(separator: ":").first ?? "") }

    mutating func interpret(_ c: DataDriven.Command) -> String {
        out = []
        let a = c.positional
        func node(_ i: Int) -> String? { i < a.count && nodes[a[i]] != nil ? a[i] : nil }
        switch c.name {
        case "add-nodes":
            guard let n = a.first.flatMap({ Int($0) }), n > 0 else { return "usage: add-nodes N" }
            for i in 1...n {
                let id = "n\(i)"
                let record = NodeRecord(name: id, address: Self.address(id), capacity: Resources(cpuMillicores: 2000, memoryBytes: 1 << 30))
                do {
                    var swim = try SWIMInstance(record: record, seed: UInt64(i), now: now)
                    let d = swim.tick(now: now)
                    nodes[id] = Node(swim: swim, next: d.nextDeadline)
                } catch { return "\(id): \(error)" }
            }
            return ""
        case "join":
            guard let id = node(0), let seed = node(1) else { return "usage: join ID SEED" }
            let d = nodes[id]!.swim.join(seeds: [Self.address(seed)], now: now)
            take(id, d)
        case "run":
            guard let ms = c.keyed["ms"].flatMap({ Int($0) }), ms >= 0 else { return "usage: run ms=N [verbose]" }
            verbose = a.contains("verbose")
            run(until: now + .milliseconds(ms))
            verbose = false
        case "kill", "freeze":
            guard let id = node(0) else { return "no such node" }
            nodes[id]!.down = true
        case "thaw":
            guard let id = node(0) else { return "no such node" }
            nodes[id]!.down = false
        case "partition":
            groups = a.map { $0.split(separator: ",").map(String.init) }
        case "heal":
            groups = []
        case "leave":
            guard let id = node(0) else { return "no such node" }
            take(id, nodes[id]!.swim.leave(now: now))
        case "forge":
            guard let to = node(0), let subject = c.keyed["subject"], let inc = c.keyed["incarnation"].flatMap({ UInt64($0) }) else {
                return "usage: forge TO kind=K subject=S incarnation=I [from=F]"
            }
            let from = c.keyed["from"] ?? "intruder"
            let g: Gossip
            switch c.keyed["kind"] {
            case "suspect": g = .suspect(name: subject, incarnation: inc, from: from)
            case "dead": g = .dead(name: subject, incarnation: inc, from: from)
            case "alive": g = .alive(incarnation: inc, record: NodeRecord(name: subject, address: "forged:1"))
            default: return "kind must be suspect, dead or alive"
            }
            out.append("\(to) <- \(from) gossip [\(render(g))]")
            take(to, nodes[to]!.swim.receive(.gossip(GossipPacket(from: from, gossip: [g])), now: now))
        case "members":
            guard let id = node(0) else { return "no such node" }
            let s = nodes[id]!.swim
            return s.knownMembers.sorted { $0.name < $1.name }
                .map { "\($0.name) \($0.address) \($0.status.rawValue) incarnation=\($0.incarnation)" }
                .joined(separator: "\n")
        case "health":
            guard let id = node(0) else { return "no such node" }
            let lhm = nodes[id]!.swim.localHealth
            return "\(id) local health \(lhm): timeouts x\(lhm + 1)"
        default:
            return "unknown command \(c.name)"
        }
        return out.joined(separator: "\n")
    }

    func stamp(_ t: Duration) -> String { "t=\(Int(t.components.seconds * 1000 + t.components.attoseconds / 1_000_000_000_000_000))ms" }

    /// Queues what an entry point asked to send, and prints what it reported.
    mutating func take(_ id: String, _ d: Directives) {
        nodes[id]!.next = d.nextDeadline
        for e in d.events {
            switch e {
            case .memberChanged(let m):
                out.append(
                    "\(stamp(now)) \(id) sees \(m.name): \(m.previous?.rawValue ?? "new") -> \(m.status.rawValue) (incarnation \(m.incarnation))")
            case .rejected(let from, let reason):
                out.append("\(stamp(now)) \(id) rejected from \(from): \(reason)")
            case .recordUpdated:
                break
            }
        }
        for m in d.messages {
            order += 1
            queue.append(InFlight(at: now + latency, order: order, from: id, to: Self.id(of: m.to), message: m.message))
            if verbose { out.append("\(stamp(now)) \(id) -> \(Self.id(of: m.to)) \(render(m.message))") }
        }
    }

    func cut(_ a: String, _ b: String) -> Bool {
        guard !groups.isEmpty else { return false }
        let ga = groups.firstIndex { $0.contains(a) }, gb = groups.firstIndex { $0.contains(b) }
        return ga != gb
    }

    mutating func run(until end: Duration) {
        for _ in 0..<1_000_000 {
            let timer = ids.compactMap { id -> (Duration, String)? in
                guard let n = nodes[id], !n.down, let t = n.next, t <= end else { return nil }
                return (t, id)
            }.min { $0.0 < $1.0 }
            let arrival = queue.indices.filter { queue[$0].at <= end }.min { (queue[$0].at, queue[$0].order) < (queue[$1].at, queue[$1].order) }
            if let i = arrival, timer == nil || queue[i].at <= timer!.0 {
                let f = queue.remove(at: i)
                now = max(now, f.at)
                guard let target = nodes[f.to], !target.down, !(nodes[f.from]?.down ?? false), !cut(f.from, f.to) else {
                    if verbose { out.append("\(stamp(now)) dropped \(f.from) -> \(f.to) \(render(f.message))") }
                    continue
                }
                _ = target
                take(f.to, nodes[f.to]!.swim.receive(f.message, now: now))
            } else if let (t, id) = timer {
                now = max(now, t)
                take(id, nodes[id]!.swim.tick(now: now))
            } else {
                now = end
                return
            }
        }
        out.append("did not finish: over a million events")
    }

    func render(_ g: Gossip) -> String {
        switch g {
        case let .alive(inc, r): return "alive \(r.name)@\(inc)"
        case let .suspect(n, inc, from): return "suspect \(n)@\(inc) by \(from)"
        case let .dead(n, inc, from): return "dead \(n)@\(inc) by \(from)"
        case let .left(n, inc): return "left \(n)@\(inc)"
        case let .recordDelta(d): return "delta \(d.name)"
        }
    }

    func render(_ m: Message) -> String {
        func gossip(_ gs: [Gossip]) -> String { gs.isEmpty ? "" : " [\(gs.map(render).joined(separator: ", "))]" }
        switch m {
        case let .ping(p): return "ping #\(p.sequence) target=\(p.target)" + gossip(p.gossip)
        case let .pingReq(r): return "ping-req #\(r.sequence) target=\(r.target)" + gossip(r.gossip)
        case let .ack(a): return "ack #\(a.sequence)" + gossip(a.gossip)
        case let .nack(n): return "nack #\(n.sequence)"
        case let .gossip(g): return "gossip" + gossip(g.gossip)
        case let .pushPull(p): return "push-pull\(p.isJoin ? " join" : "")\(p.isReply ? " reply" : "") states=\(p.states.count)"
        case let .recordRequest(r): return "record-request from \(r.from)"
        case let .record(r): return "record \(r.record.name)@\(r.incarnation)"
        }
    }
}

@Suite struct SWIMTraceTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata").path
    static let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".txt") }.sorted()

    @Test func theTraceDirectoryHasTraces() {
        #expect(Self.files.count >= 4, "\(Self.directory)")
    }

    @Test(arguments: files) func theCorePrintsWhatItsTraceSays(_ file: String) throws {
        var trace = SWIMTrace()
        let mismatches = try DataDriven.run("\(Self.directory)/\(file)") { trace.interpret($0) }
        for m in mismatches { Issue.record("\(m)") }
    }
}
