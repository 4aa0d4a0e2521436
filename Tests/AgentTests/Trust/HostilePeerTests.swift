import Consensus
import ControlPlane
import Foundation
import Logging
import Membership
import NIOCore
import NIOPosix
import SecureTransport
import Synchronization
import Testing
import Wire

@testable import Agent

/// Every warning an agent logs, with its rule, for the assertions on what was refused.
final class LogRecorder: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }

    func logger(_ agent: String) -> Logger {
        Logger(label: agent) { _ in RecordingHandler(recorder: self, agent: agent) }
    }
}

struct RecordingHandler: LogHandler {
    let recorder: LogRecorder
    let agent: String
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .warning

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let rule = event.metadata?["rule"].map { " rule=\($0)" } ?? ""
        recorder.append("\(agent): \(event.message)\(rule)")
    }
}

/// The trust model under attack (docs/ARCHITECTURE.md, "Trust"): a live cluster of three servers
/// and a client agent, and a peer holding a certificate the cluster's CA signed for a client,
/// which sends everything a client certificate used to be able to get away with.
@Suite(.serialized) struct HostilePeerTests {
    static let token = "operator-t0ken"
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-hostile-peer-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        for n in ["s1", "s2", "s3", "c1", "mallory"] {
            try! CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: n, server: n.hasPrefix("s"), in: "\(d)/certs")
        }
        return d
    }()

    func agent(_ name: String, join: Int?, logs: LogRecorder) throws -> (AgentRuntime, Int) {
        let port = AgentRuntimeTests.freePort()
        var s = loopbackAgentSettings(name, dir: Self.dir, port: port)
        s.set("api-token", Self.token, origin: "test")
        if name.hasPrefix("s") {
            s.set("server", "true", origin: "test")
            s.set("bootstrap-expect", "3", origin: "test")
        }
        if let join { s.append("join", "127.0.0.1:\(join)", origin: "test") }
        return (try AgentRuntime(configuration: try s.resolve(), logger: logs.logger(name)), port)
    }

    func eventually(_ seconds: Double = 20, _ condition: () async -> Bool) async throws -> Bool {
        try await pollUntil(seconds, condition)
    }

    /// The answer of the leader, through `a`, retrying while no leader can answer (503).
    func call(_ a: AgentRuntime, _ method: String, _ path: String, _ body: String = "") async throws -> APIResponse {
        try await callRetryingUnavailable(a, method, path, body, for: 15)
    }

    /// The hostile peer: the same transport the agents use, with mallory's client certificate.
    final class Hostile: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let transport: PeerTransport
        /// "peer#id=status" for every forward response it got.
        let responses = LogRecorder()
        /// "peer#id body" for the same responses.
        let bodies = LogRecorder()
        /// Signs as mallory, with mallory's key: what it may do for its own record, and all it can
        /// do for anyone else's.
        let signer: CertificateRecordAuthenticator

        init() throws {
            let tls = try TLSContext(
                configuration: TLSConfiguration(
                    caFile: "\(HostilePeerTests.dir)/ca/ca.pem", certificateFile: "\(HostilePeerTests.dir)/certs/mallory.pem",
                    keyFile: "\(HostilePeerTests.dir)/certs/mallory-key.pem"))
            signer = CertificateRecordAuthenticator(try NodeSignatures(context: tls))
            let responses = self.responses
            let bodies = self.bodies
            transport = PeerTransport(group: group, tls: tls, options: .init(cluster: "microscale", agentVersion: MicroscaleVersion.current)) {
                peer, frame in
                guard frame.kind == .control, let m = try? frame.decode(Microscale_Control_ControlMessage.self),
                    case .forwardResponse(let r) = m.body
                else { return }
                responses.append("\(peer.name)#\(r.id)=\(r.status)")
                bodies.append("\(peer.name)#\(r.id) \(String(decoding: r.body, as: UTF8.self))")
            }
        }

        func send(_ frame: Frame, to port: Int, _ name: String) async throws {
            try await transport.send(frame, toAddress: "127.0.0.1", port: port, expecting: name)
        }

        func stop() async {
            await transport.shutdown()
            try? await group.shutdownGracefully()
        }
    }

    static func control(_ build: (inout Microscale_Control_ControlMessage) -> Void) throws -> Frame {
        var m = Microscale_Control_ControlMessage()
        build(&m)
        return try Frame(kind: .control, message: m)
    }

    /// A request as an agent forwards it: typed (ClusterRequest), with `token` as a client agent
    /// relaying its operator's write sends it.
    static func forward(id: UInt64, _ method: String, _ path: String, _ body: String = "", token: String = "") throws -> Frame {
        var r = try ClusterRequest(method: method, path: path, body: Array(body.utf8)).wire
        r.id = id
        r.token = token
        return try control { $0.apiRequest = r }
    }

    /// A request in the form agents sent before typed requests: the HTTP method and path.
    static func untypedForward(id: UInt64, _ method: String, _ path: String) throws -> Frame {
        try control {
            var r = Microscale_Control_ForwardRequest()
            r.id = id
            r.method = method
            r.path = path
            $0.forwardRequest = r
        }
    }

    /// Runs `body` on three servers and a client agent, started and joined through s1, once every
    /// server runs Raft and knows the leader, beside the hostile peer; then stops them all, also
    /// when `body` throws, before the next test starts its own.
    func withHostileCluster(
        _ body: (_ agents: [String: AgentRuntime], _ ports: [String: Int], _ hostile: Hostile, _ logs: LogRecorder) async throws -> Void
    ) async throws {
        let logs = LogRecorder()
        let (agents, ports) = try await startCluster(logs: logs)
        let hostile = try Hostile()
        func stop() async {
            await hostile.stop()
            for a in agents.values { await a.shutdown() }
        }
        do {
            #expect(
                try await eventually {
                    for n in ["s1", "s2", "s3"] { if await agents[n]?.raft?.status()?.leader == nil { return false } }
                    return true
                }, "every server runs Raft and knows the leader")
            try await body(agents, ports, hostile, logs)
        } catch {
            await stop()
            throw error
        }
        await stop()
    }

    /// Three servers and a client agent, started and joined through s1.
    func startCluster(logs: LogRecorder) async throws -> (agents: [String: AgentRuntime], ports: [String: Int]) {
        var ports: [String: Int] = [:]
        var agents: [String: AgentRuntime] = [:]
        let (s1, p1) = try agent("s1", join: nil, logs: logs)
        try await s1.start()
        agents["s1"] = s1
        ports["s1"] = p1
        for n in ["s2", "s3", "c1"] {
            let (a, p) = try agent(n, join: p1, logs: logs)
            try await a.start()
            agents[n] = a
            ports[n] = p
        }
        return (agents, ports)
    }

    /// Issue 15, items 2-3 on the wire: gossip from a client certificate that names other members
    /// suspect, dead or left, or this member suspect at the largest incarnation. Nobody crashes,
    /// every forged verdict is refuted by its subject, and no leader takes it as evidence.
    @Test func forgedVerdictsAboutOtherMembersAreRefutedAndMoveNothing() async throws {
        try await withHostileCluster { agents, ports, hostile, logs in
            let all = agents.values
            let names = ["c1", "s1", "s2", "s3"]
            let s1 = try #require(agents["s1"])
            #expect(
                try await eventually {
                    let alive = await s1.members().filter { $0.status == .alive }.map(\.name).sorted()
                    return alive == names
                })
            let incarnations = Dictionary(uniqueKeysWithValues: await s1.members().map { ($0.name, $0.incarnation) })
            for n in ["s1", "s2", "s3"] {
                let lies: [Gossip] = [
                    .suspect(name: n, incarnation: .max, from: "mallory"),
                    .dead(name: "s2", incarnation: incarnations["s2"] ?? 0, from: "mallory"),
                    .left(name: "s3", incarnation: incarnations["s3"] ?? 0),
                    .suspect(name: "c1", incarnation: incarnations["c1"] ?? 0, from: "mallory"),
                ]
                try await hostile.send(
                    try MembershipCodec.frame(.gossip(GossipPacket(from: "mallory", gossip: lies))),
                    to: try #require(ports[n]), n)
            }
            // Refuted everywhere: every member alive in every agent's view, each server still in
            // Raft with the same voters, and no dead or left verdict anyone holds is confirmed.
            let refuted = try await eventually(30) {
                for a in all {
                    let alive = await a.members().filter { $0.status == .alive }.map(\.name)
                    if !Set(names).isSubset(of: Set(alive)) { return false }
                }
                return true
            }
            let view = await s1.members().map { "\($0.name) \($0.status)" }
            #expect(refuted, "\(view)")
            for n in ["s1", "s2", "s3"] {
                let status = try #require(await agents[n]?.raft?.status())
                #expect(status.voters == ["s1", "s2", "s3"])
            }
            for a in all {
                let confirmed = await a.members().filter { $0.confirmedDown == true && $0.name != "mallory" }
                #expect(confirmed.isEmpty, "\(confirmed.map(\.name))")
            }

            // Item 2, records: mallory rewrites s2 (capacity, containers, address) under its own
            // signature and unsigned, makes up a member, and sends s3 a delta that empties it. No
            // agent takes any of it: each view of s2 and s3 stays what their owners said.
            let views = Dictionary(uniqueKeysWithValues: await s1.members().map { ($0.name, $0) })
            let s2 = try #require(views["s2"]), s3 = try #require(views["s3"])
            let s2Record = try #require(await agents["s2"]?.membership.ownRecord())
            let s3Record = try #require(await agents["s3"]?.membership.ownRecord())
            var inflated = s2Record
            inflated.version += 100
            inflated.capacity = Membership.Resources(cpuMillicores: 1_000_000, memoryBytes: 1 << 44)
            inflated.running = ["evil": 50]
            inflated.address = "127.0.0.1:1"
            var ghost = NodeRecord(
                name: "ghost", address: "127.0.0.1:2", role: .server,
                capacity: Membership.Resources(cpuMillicores: 1_000_000, memoryBytes: 1 << 44))
            ghost = ghost.signed(by: hostile.signer)
            var emptied = NodeRecordDelta(
                name: "s3", baseVersion: s3Record.version, version: s3Record.version + 1,
                running: ["evil": 50])
            emptied.signature = hostile.signer.sign(s3Record.signedBytes)
            var keptSignature = inflated
            keptSignature.signature = s2Record.signature
            let forgeries: [Gossip] = [
                .alive(incarnation: s2.incarnation, record: inflated.signed(by: hostile.signer)),
                .alive(incarnation: s2.incarnation, record: keptSignature),
                .alive(incarnation: 1, record: ghost),
                .recordDelta(emptied),
            ]
            for n in ["s1", "s2", "s3", "c1"] {
                try await hostile.send(
                    try MembershipCodec.frame(.gossip(GossipPacket(from: "mallory", gossip: forgeries))),
                    to: try #require(ports[n]), n)
            }
            #expect(
                try await eventually {
                    ["s1", "s3", "c1"].allSatisfy { n in logs.all.contains { $0.hasPrefix("\(n): membership input refused") } }
                }, "the forgeries were refused (and logged) where they arrived")
            for a in all {
                let view = Dictionary(uniqueKeysWithValues: await a.members().map { ($0.name, $0) })
                #expect(view["ghost"] == nil)
                #expect(view["s2"]?.capacity == s2.capacity)
                #expect(view["s2"]?.address == s2.address)
                #expect(view["s2"]?.running["evil"] == nil)
                #expect(view["s3"]?.running["evil"] == nil)
                #expect(view["s3"]?.address == s3.address)
            }
        }
    }

    @Test func aPeerWithAClientCertificateCannotMoveRaftWriteStateCommandAClientOrForgeAnswersOrARole() async throws {
        try await withHostileCluster { agents, ports, hostile, logs in
            let s1 = try #require(agents["s1"])
            let p1 = try #require(ports["s1"])
            let all = agents.values
            let client = try #require(agents["c1"])
            let servers = ["s1", "s2", "s3"]

            // A leader, and the client's writes with the operator's token go through (the baseline).
            #expect(try await eventually { (try? await call(client, "GET", "/v1/leader").status) == 200 })
            #expect(try await call(client, "POST", "/v1/nodes/s3/undrain").status == 200)
            let assignedBefore = await client.assignments.lastPlanIndex
            let runningBefore = await client.executor.current

            // What mallory asks for: a service of its own, in a log entry, a snapshot and a write.
            let evil = ["evil": ServiceSpec(image: "mallory/miner:latest", cpu: 1, memory: 1 << 20, max: 100)]
            var evilState = ClusterState()
            _ = evilState.apply(try ClusterCommand.applyServices(evil).encoded(), index: 1)
            let evilFile = "services: { evil: { image: mallory/miner:latest, cpu: 1, memory: 1MiB, max: 100 } }"
            let leaderAnswer = try await call(client, "GET", "/v1/leader")
            let leaderName = try JSONDecoder().decode(LeaderView.self, from: Data(leaderAnswer.body)).name

            for n in servers {
                let port = try #require(ports[n])
                func raft(_ kind: RaftMessage.Kind, from: String = "mallory", _ fill: (inout RaftMessage) -> Void = { _ in }) throws
                    -> Frame
                {
                    var m = RaftMessage(kind: kind, from: from, to: n, term: .max)
                    fill(&m)
                    return try RaftCodec.frame(m)
                }
                try await hostile.send(try raft(.heartbeat), to: port, n)
                try await hostile.send(try raft(.heartbeat, from: leaderName), to: port, n)
                try await hostile.send(
                    try raft(.append) {
                        $0.index = 1_000_000
                        $0.logTerm = .max
                        $0.commit = 1_000_001
                        $0.entries = [Entry(term: .max, index: 1_000_001, data: (try? ClusterCommand.applyServices(evil).encoded()) ?? [])]
                    }, to: port, n)
                try await hostile.send(
                    try raft(.vote) {
                        $0.index = .max
                        $0.logTerm = .max
                    }, to: port, n)
                try await hostile.send(
                    try raft(.installSnapshot) {
                        $0.snapshot = Snapshot(
                            index: 1_000_000, term: .max, configuration: Configuration(voters: ["mallory"]),
                            data: (try? evilState.snapshot()) ?? [])
                    }, to: port, n)
                try await hostile.send(try Self.forward(id: 1, "PUT", "/v1/services", evilFile), to: port, n)
                try await hostile.send(try Self.forward(id: 2, "POST", "/v1/nodes/\(n)/drain"), to: port, n)
                try await hostile.send(try Self.forward(id: 3, "PUT", "/v1/services", evilFile, token: "guess"), to: port, n)
                try await hostile.send(
                    try Self.control {
                        var r = Microscale_Control_ForwardResponse()
                        r.id = 1
                        r.status = 200
                        $0.forwardResponse = r
                    }, to: port, n)
            }
            // At the client agent: a plan to run mallory's image, Raft, a request to relay, an answer.
            let clientPort = try #require(ports["c1"])
            try await hostile.send(
                try Self.control {
                    var a = Microscale_Control_Assignment()
                    a.planIndex = 1_000_000
                    a.node = "c1"
                    var s = Microscale_Control_ServiceAssignment()
                    s.service = "evil"
                    s.count = 50
                    s.spec = (try? JSONEncoder().encode(evil["evil"]!)) ?? Data()
                    a.services = [s]
                    $0.assignment = a
                }, to: clientPort, "c1")
            try await hostile.send(
                try RaftCodec.frame(RaftMessage(kind: .heartbeat, from: "mallory", to: "c1", term: .max)),
                to: clientPort, "c1")
            try await hostile.send(try Self.forward(id: 4, "PUT", "/v1/services", evilFile), to: clientPort, "c1")
            try await hostile.send(
                try Self.control {
                    var r = Microscale_Control_ForwardResponse()
                    r.id = 4242
                    r.status = 200
                    $0.forwardResponse = r
                }, to: clientPort, "c1")
            // And to s1, a record of its own claiming the server role.
            let record = NodeRecord(name: "mallory", address: "127.0.0.1:1", role: .server, agentVersion: MicroscaleVersion.current)
                .signed(by: hostile.signer)
            try await hostile.send(
                try MembershipCodec.frame(
                    .ping(
                        Ping(
                            sequence: 1, from: "mallory", fromAddress: "127.0.0.1:1", target: "s1",
                            gossip: [.alive(incarnation: 1, record: record)]))),
                to: p1, "s1")
            // s1 takes mallory in as a member (while its probes go unanswered), but not as a server.
            #expect(try await eventually { await s1.members().contains { $0.name == "mallory" } })
            let book = await s1.clusterAPI.servers
            #expect(await book().keys.sorted() == servers)
            #expect(await s1.members().first { $0.name == "mallory" }?.role == "client")

            // Every forwarded request is answered 403, by every server and by the client agent.
            let answers = servers.flatMap { n in (1...3).map { "\(n)#\($0)=403" } } + ["c1#4=403"]
            #expect(try await eventually { hostile.responses.all.count >= answers.count })
            #expect(hostile.responses.all.sorted() == answers.sorted())

            // Each rule counted and logged what it refused.
            func refused(_ rule: TrustRule) -> Int { all.reduce(0) { $0 + $1.refusals.count(rule) } }
            let expected: [TrustRule] = [
                .raftNeedsServerCertificate, .raftToClientAgent, .forwardedWriteNeedsToken,
                .forwardRequestToClientAgent, .assignmentNeedsServerCertificate, .forwardResponseNotAwaited,
            ]
            // Five raft frames to each of three servers.
            #expect(
                try await eventually { expected.allSatisfy { refused($0) > 0 } && refused(.raftNeedsServerCertificate) == 15 },
                "\(expected.map { ($0, refused($0)) })")
            for rule in expected {
                #expect(logs.all.contains { $0.contains("rule=\(rule.rawValue)") && $0.contains("mallory") }, "\(rule) was not logged")
            }
            let metrics = await client.metricsText()
            #expect(metrics.contains(#"microscale_refused_messages_total{rule="assignment-needs-server-certificate"} 1"#), "\(metrics)")

            // Nothing happened: the same voters under a sane term and a leader, no service, no drain,
            // the client's assignment untouched, every agent alive, and mallory is no server.
            #expect(try await eventually { (try? await call(client, "GET", "/v1/leader").status) == 200 })
            for n in servers {
                let status = try #require(await agents[n]?.raft?.status())
                #expect(status.voters == servers)
                #expect(status.term < 1_000, "term \(status.term)")
            }
            let services = try JSONDecoder().decode([String: ServiceSpec].self, from: Data(try await call(client, "GET", "/v1/services").body))
            #expect(services.isEmpty)
            let drained = try JSONDecoder().decode([String].self, from: Data(try await call(client, "GET", "/v1/nodes/drained").body))
            #expect(drained.isEmpty)
            #expect(await client.assignments.lastPlanIndex == assignedBefore)
            #expect(await client.executor.current == runningBefore)
            let members = await s1.members()
            for n in servers + ["c1"] {
                #expect(members.first { $0.name == n }?.status == .alive, "\(members)")
            }
            #expect(await s1.members().first { $0.name == "mallory" }?.role == "client")
        }
    }

    /// Typed forwarding end to end (docs/ARCHITECTURE.md, "Forwarded API requests"): mallory, with
    /// the operator's token as a client agent would send it, hands a follower a drain; the
    /// follower relays the same typed command to the leader, which carries it out. A command out
    /// of bounds is refused by the agent that receives it, naming the field; one in the untyped
    /// form of older versions is answered 503 at once, saying what to do.
    @Test func aWriteForwardedThroughAFollowerIsCarriedOutAndAMalformedOneIsRefusedNamingTheField() async throws {
        try await withHostileCluster { agents, ports, hostile, logs in
            let client = try #require(agents["c1"])
            let servers = ["s1", "s2", "s3"]
            #expect(try await eventually { (try? await call(client, "GET", "/v1/leader").status) == 200 })
            let leaderAnswer = try await call(client, "GET", "/v1/leader")
            let leaderName = try JSONDecoder().decode(LeaderView.self, from: Data(leaderAnswer.body)).name
            let follower = try #require(servers.first { $0 != leaderName })
            let port = try #require(ports[follower])

            try await hostile.send(try Self.forward(id: 1, "POST", "/v1/nodes/c1/drain", token: Self.token), to: port, follower)
            #expect(try await eventually { hostile.responses.all.contains { $0.hasPrefix("\(follower)#1=") } })
            #expect(hostile.responses.all.contains("\(follower)#1=200"), "\(hostile.bodies.all)")
            let drained = try JSONDecoder().decode([String].self, from: Data(try await call(client, "GET", "/v1/nodes/drained").body))
            #expect(drained == ["c1"])

            var bad = Microscale_Control_ApiRequest()
            bad.id = 2
            bad.token = Self.token
            bad.setDemand = .with {
                $0.service = "web"
                $0.value = .infinity
            }
            try await hostile.send(try Self.control { $0.apiRequest = bad }, to: port, follower)
            try await hostile.send(try Self.untypedForward(id: 3, "POST", "/v1/nodes/c1/undrain"), to: port, follower)
            #expect(try await eventually { hostile.responses.all.count >= 3 })
            #expect(hostile.responses.all.sorted() == ["\(follower)#1=200", "\(follower)#2=400", "\(follower)#3=503"])
            let bodies = hostile.bodies.all
            #expect(bodies.contains { $0.hasPrefix("\(follower)#2 ") && $0.contains("api_request.set_demand.value: inf") }, "\(bodies)")
            #expect(bodies.contains { $0.hasPrefix("\(follower)#3 ") && $0.contains("upgrade mallory") }, "\(bodies)")
            let target = try #require(agents[follower])
            #expect(target.refusals.count(.malformedForwardedRequest) == 1)
            #expect(target.refusals.count(.forwardRequestFromOlderAgent) == 1)
            // Neither moved anything: c1 is still drained, and no demand was set.
            #expect(try JSONDecoder().decode([String].self, from: Data(try await call(client, "GET", "/v1/nodes/drained").body)) == ["c1"])
            #expect(try JSONDecoder().decode([String: Double].self, from: Data(try await call(client, "GET", "/v1/demand").body)).isEmpty)
        }
    }

    @Test func aRefusalIsLoggedOncePerPeerAndRulePerIntervalAndAlwaysCounted() {
        let limiter = RateLimiter<String>(interval: .seconds(10), capacity: 2)
        let t0 = ContinuousClock.now
        #expect(limiter.allow("a", now: t0))
        #expect(!limiter.allow("a", now: t0 + .seconds(9)))
        #expect(limiter.allow("b", now: t0 + .seconds(9)))
        #expect(!limiter.allow("c", now: t0 + .seconds(9)), "full, and no interval is over: a flood of keys is limited too")
        #expect(limiter.allow("c", now: t0 + .seconds(10)), "a's interval is over: its slot is reused")
        #expect(limiter.allow("a", now: t0 + .seconds(20)))

        let logs = LogRecorder()
        let refusals = Refusals(logger: logs.logger("s1"))
        for _ in 0..<5 { refusals.refuse(.raftNeedsServerCertificate, peer: "mallory", "a raft frame") }
        refusals.refuse(.raftNeedsServerCertificate, peer: "eve", "a raft frame")
        refusals.refuse(.forwardedWriteNeedsToken, peer: "mallory", "a write")
        #expect(refusals.count(.raftNeedsServerCertificate) == 6)
        #expect(logs.all.count == 3, "\(logs.all)")
    }

    @Test func tokensAreComparedWhole() {
        #expect(tokensEqual("s3cret", "s3cret"))
        #expect(!tokensEqual("s3cret", "s3cre"))
        #expect(!tokensEqual("", "s3cret"))
        #expect(!tokensEqual("s3creT", "s3cret"))
        #expect(tokensEqual("", ""))
    }
}
