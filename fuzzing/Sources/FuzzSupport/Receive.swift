import Agent
import Consensus
import Foundation
import Membership
import NIOCore
import Scaling
import Wire

/// What the agent does with bytes from outside, step for step as its receive paths do, with every
/// error swallowed: a fuzz target fails only on a trap (a crash, a failed precondition, an
/// overflow), never on a thrown error. Each function names the code it mirrors.
public enum Receive {
    /// The limits every connection runs with (SecureChannel's default).
    public static let limits = FrameLimits.default

    /// A byte stream from a peer: FrameDecoder takes frames off the front until one is incomplete
    /// or refused (the pipeline then closes the connection); each frame goes where the agent's
    /// handlers send it (HelloHandler, then AgentRuntime's onFrame).
    public static func stream(_ bytes: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: bytes)
        var frames = 0
        while frames < 10_000 {
            let frame: Frame?
            do { frame = try FrameDecoder.decodeFrame(from: &buffer, limits: limits) } catch { return }
            guard let frame else { return }
            check(frame.payload.readableBytes <= limits.maxUncompressedBytes, "payload over the limit")
            self.frame(frame)
            frames += 1
        }
    }

    /// One frame, by kind.
    public static func frame(_ frame: Frame) {
        switch frame.kind {
        case .hello:
            // HelloHandler: decode, then compare the fields with the certificate and this agent.
            if let hello = try? frame.decode(Microscale_Wire_Hello.self) {
                _ = hello.nodeName == "node-1" && hello.protocolVersion == WireProtocol.version && hello.cluster == "microscale"
            }
        case .goodbye:
            if let bye = try? frame.decode(Microscale_Wire_Goodbye.self) { _ = "\(bye.reason)" }
        case .membership:
            membership(frame)
        case .raft:
            raft(frame)
        case .control:
            control(frame)
        }
    }

    /// MembershipService: MembershipCodec.message(from:). A message that decodes must survive the
    /// way back: encoding it and decoding again gives the same message.
    public static func membership(_ frame: Frame) {
        guard let message = try? MembershipCodec.message(from: frame) else { return }
        guard let again = try? MembershipCodec.message(from: MembershipCodec.frame(message)) else {
            fail("a decoded membership message does not decode again after encoding")
        }
        check(again == message, "membership message changed on the way back")
        // Then what MembershipService does with it: the pure instance receives it, as a member
        // that knows the sender and two others, and ticks past every deadline it asks for.
        var swim = memberInstance
        var directives = swim.receive(message, now: .seconds(1))
        for _ in 0..<4 {
            guard let next = directives.nextDeadline else { break }
            directives = swim.tick(now: next)
        }
    }

    /// A member of a small cluster, its view loaded wholesale (what push-pull would have taught it).
    static let memberInstance: SWIMInstance = {
        func record(_ n: String) -> NodeRecord {
            NodeRecord(name: n, address: "\(n):7480", capacity: Resources(cpuMillicores: 2000, memoryBytes: 1 << 30))
        }
        var swim = try! SWIMInstance(configuration: .lan, record: record("node-1"), seed: 1, now: .zero)
        swim.restore(
            ["node-2", "node-3", "node-4"].map { MemberState(incarnation: 3, status: .alive, record: record($0)) },
            now: .zero)
        return swim
    }()

    /// RaftService: RaftCodec.decode, then what the node does with the data it carries: a
    /// configuration entry is a ConfChange, a normal entry a ClusterCommand applied to the state,
    /// a snapshot a ClusterState restored and later snapshotted again.
    public static func raft(_ frame: Frame) {
        guard let message = try? RaftCodec.decode(frame) else { return }
        guard let again = try? RaftCodec.decode(RaftCodec.frame(message)) else {
            fail("a decoded raft message does not decode again after encoding")
        }
        check(again == message, "raft message changed on the way back")
        var state = ClusterState()
        for entry in message.entries.prefix(64) {
            switch entry.kind {
            case .configuration:
                if let change = ConfChange(encoded: entry.data) {
                    _ = Configuration(voters: ["node-1"], learners: []).applying(change)
                }
            case .normal:
                _ = state.apply(entry.data, index: entry.index)
            }
        }
        check((try? state.snapshot()) != nil, "an applied state does not encode as a snapshot")
        // Then what RaftService does with it: a follower of a three-server cluster steps it (terms,
        // indexes and entries straight from the peer), and its Ready is taken and advanced.
        var node = raftFollower
        var addressed = message
        addressed.to = "node-1"
        node.step(addressed)
        if node.hasReady { node.advance(node.ready()) }
        node.tick(by: .seconds(1))
        if node.hasReady { node.advance(node.ready()) }
        if let snapshot = message.snapshot, let restored = try? ClusterState.restore(snapshot.data) {
            guard let bytes = try? restored.snapshot() else { fail("a restored snapshot does not encode again") }
            check((try? ClusterState.restore(bytes)) == restored, "a restored snapshot does not restore again")
            plan(restored, demand: restored.demand.values.first ?? 0)
        }
        plan(state, demand: state.demand.values.first ?? 0)
    }

    /// A follower in term 5 that has entries up to index 3, as a server mid-life would be.
    static let raftFollower: RaftNode = {
        let entries = (1...3).map { Entry(term: UInt64($0 + 2), index: UInt64($0)) }
        var n = RaftNode(
            config: RaftConfig(id: "node-1"), bootstrap: Configuration(voters: ["node-1", "node-2", "node-3"]),
            recovered: RecoveredState(hardState: HardState(term: 5, commit: 2), entries: entries), seed: 1)
        if n.hasReady { n.advance(n.ready()) }
        return n
    }()

    /// AgentRuntime's onFrame for `.control`, then ClusterAPI.receive (a forwarded request bounded
    /// field by field as ClusterRequest(wire:), then served as the leader would: a services
    /// document parsed as a services file, a snapshot file decoded; an untyped request of older
    /// versions only answered) or AssignmentStream.receive (each service's spec decoded from JSON).
    public static func control(_ frame: Frame) {
        guard let message = try? frame.decode(Microscale_Control_ControlMessage.self) else { return }
        switch message.body {
        case .apiRequest(let r):
            guard let request = try? ClusterRequest(wire: r) else { return }
            // What passed the bounds crosses the wire again unchanged (a relay to the leader).
            var again = request.wire
            again.id = r.id
            check((try? ClusterRequest(wire: again)) == request, "a forwarded request changes when relayed")
            _ = request.summary
            switch request {
            case .applyServices(let document):
                services(String(decoding: document, as: UTF8.self))
            case .restoreSnapshot(let file):
                _ = try? SnapshotFile.decode(file)
            default:
                break
            }
        case .forwardRequest(let r):
            // Answered 503 with its method and path clipped into a log line, never served.
            _ = (r.id, r.method.prefix(64), r.path.prefix(64))
        case .forwardResponse(let r):
            _ = (r.id, Int(r.status), Array(r.body))
        case .assignment(let a):
            var services: [String: (Int, Consensus.ServiceSpec)] = [:]
            for s in a.services.prefix(256) {
                guard let spec = try? JSONDecoder().decode(Consensus.ServiceSpec.self, from: s.spec) else { return }
                services[s.service] = (Int(s.count), spec)
            }
        case .subscribe(let s):
            _ = (s.node == "node-1", s.afterIndex)
        case .bootstrapProposal(let p):
            // RaftService.receive(bootstrap:) takes at most 16 names of at most 64 bytes.
            _ = p.voters.count <= 16 && p.voters.allSatisfy { $0.utf8.count <= 64 } ? p.voters.sorted() : []
        case .bootstrapReply(let r):
            _ = (r.pledged.sorted(), r.votersWithState.sorted(), r.candidate.sorted())
        case .denyList(let d):
            // AssignmentStream.receive bounds it as the state machine does: at most
            // Limits.defaultMaxMembers (the default --max-members) names of 1-maxNodeNameBytes bytes.
            if d.names.count <= MembershipConfiguration().maxMembers,
                d.names.allSatisfy({ !$0.isEmpty && $0.utf8.count <= ClusterState.maxNodeNameBytes })
            {
                _ = (d.index, Set(d.names))
            }
        case nil:
            break
        }
    }

    /// A services file, from `microscale services apply` or a PUT to /v1/services: ServicesFile.parse,
    /// then what the leader does with the specs: validate them as a command applied to the state.
    public static func services(_ text: String) {
        guard let specs = try? ServicesFile.parse(text, source: "fuzz") else { return }
        check(specs.count <= ServicesFile.maxServices, "more services than the bound")
        for (name, spec) in specs {
            check(spec.validationError(name: name) == nil, "the parser accepted a spec that does not validate")
        }
        var state = ClusterState()
        check(state.apply(.applyServices(specs), index: 1) == nil, "parsed specs refused by the state")
        _ = try? ClusterCommand.applyServices(specs).encoded()
        // Then what the leader's decision loop does with them: plan, with a demand the input
        // chooses, over four nodes.
        plan(state, demand: Double(text.utf8.reduce(0) { $0 &+ Int($1) } % 100_000) * 0.37)
    }

    /// The decision loop's planning pass (DecisionLoop.step) over `state`'s services, four nodes of
    /// 4 cores and 8 GiB, `demand` for every demand-driven service, and the state's plan as the
    /// current one. Planned fresh (no current plan), no node may be given more than it holds.
    static func plan(_ state: ClusterState, demand: Double) {
        let services = state.services.map { Specs.planner($0.key, $0.value) }
        let nodes = (1...4).map { Scaling.Node(name: "node-\($0)", cpuMillis: 4000, memoryBytes: 8 << 30) }
        let wanted = Dictionary(uniqueKeysWithValues: services.map { ($0.name, DemandValue.known(demand)) })
        let fresh = Planner().plan(services: services, demand: wanted, nodes: nodes, currentPlan: nil, now: .zero)
        let byName = Dictionary(uniqueKeysWithValues: services.map { ($0.name, $0) })
        for node in nodes {
            var cpu = 0.0, memory = 0.0  // in Double: the harness must not trap where the planner did not
            for (service, n) in fresh.plan.assignments[node.name] ?? [:] {
                guard let s = byName[service] else { fail("a plan places \(service), which was not declared") }
                cpu += Double(n) * Double(s.cpuMillis)
                memory += Double(n) * Double(s.memoryBytes)
            }
            check(
                cpu <= Double(node.cpuMillis) && memory <= Double(node.memoryBytes),
                "a fresh plan puts more on \(node.name) than it holds")
        }
        var current = Scaling.Plan()
        current.assignments = state.plan.assignments
        _ = Planner().plan(services: services, demand: wanted, nodes: nodes, currentPlan: current, now: .seconds(10))
    }

    /// The --config file: AgentSettings.fromYAML, then resolve() (defaults and every check).
    public static func agentConfiguration(_ text: String) {
        guard let settings = try? AgentSettings.fromYAML(text, file: "agent.yaml") else { return }
        _ = try? settings.resolve()
        _ = try? AgentSettings().overridden(by: settings).resolve()
    }

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fail(message()) }
    }

    static func fail(_ message: String) -> Never {
        fatalError("fuzz invariant: \(message)")
    }
}

/// The bytes libFuzzer hands a target, as a buffer or as text (the files are read as UTF-8 with
/// replacement, as the agent reads them).
public enum FuzzInput {
    public static func bytes(_ start: UnsafeRawPointer?, _ count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: count > 0 ? start : nil, count: count)
    }

    public static func text(_ start: UnsafeRawPointer?, _ count: Int) -> String {
        String(decoding: bytes(start, count), as: UTF8.self)
    }

    public static func frame(_ kind: FrameKind, _ start: UnsafeRawPointer?, _ count: Int) -> Frame {
        Frame(kind: kind, payload: ByteBuffer(bytes: bytes(start, count)))
    }
}
