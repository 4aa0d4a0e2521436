import Agent
import Consensus
import Foundation
import Membership
import NIOCore
import SwiftProtobuf
import Wire

/// The seed corpus, made by the real encoders: small valid examples of everything a target reads,
/// and a few edge cases. `make fuzz-seeds` writes them to fuzzing/corpus/TARGET/ (a target run with
/// FUZZ_WRITE_SEEDS=DIR writes its own and exits); crash reproducers are added there by hand.
public enum Seeds {
    public typealias Files = [(name: String, bytes: [UInt8])]

    public static func writeIfAsked(_ seeds: () -> Files) {
        guard let dir = ProcessInfo.processInfo.environment["FUZZ_WRITE_SEEDS"] else { return }
        let url = URL(fileURLWithPath: dir)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            let files = seeds()
            for file in files {
                try Data(file.bytes).write(to: url.appendingPathComponent("seed-\(file.name)"))
            }
            print("wrote \(files.count) seeds to \(dir)")
            exit(0)
        } catch {
            print("cannot write seeds to \(dir): \(error)")
            exit(1)
        }
    }

    // MARK: Membership

    static let record = NodeRecord(
        name: "node-1", address: "10.0.0.11:7480", role: .server,
        capacity: Membership.Resources(cpuMillicores: 4000, memoryBytes: 8 << 30),
        reserved: Membership.Resources(cpuMillicores: 1500, memoryBytes: 1 << 30),
        running: ["web": 3, "batch": 1], agentVersion: "0.1.0", version: 7)

    static let gossip: [Gossip] = [
        .alive(incarnation: 2, record: record),
        .suspect(name: "node-2", incarnation: 1, from: "node-1"),
        .dead(name: "node-3", incarnation: 4, from: "node-1"),
        .left(name: "node-4", incarnation: 9),
        .recordDelta(
            NodeRecordDelta(
                name: "node-1", baseVersion: 7, version: 8, address: "10.0.0.11:7481",
                role: .client, capacity: Membership.Resources(cpuMillicores: 2000, memoryBytes: 1 << 32),
                running: ["web": 0, "api": 2], agentVersion: "0.1.1")),
    ]

    static let membershipMessages: [(String, Membership.Message)] = [
        ("ping", .ping(Ping(sequence: 1, from: "node-1", fromAddress: "10.0.0.11:7480", target: "node-2"))),
        (
            "ping-suspected-gossip",
            .ping(
                Ping(
                    sequence: 2, from: "node-1", fromAddress: "10.0.0.11:7480", target: "node-2",
                    suspectedAt: 5, gossip: gossip))
        ),
        (
            "ping-req",
            .pingReq(
                PingReq(
                    sequence: 3, from: "node-1", fromAddress: "10.0.0.11:7480", target: "node-3",
                    targetAddress: "10.0.0.13:7480", gossip: [gossip[1]]))
        ),
        ("ack", .ack(Ack(sequence: 3, from: "node-2", gossip: [gossip[0], gossip[4]]))),
        ("nack", .nack(Nack(sequence: 3, from: "node-2"))),
        ("gossip", .gossip(GossipPacket(from: "node-1", gossip: gossip))),
        (
            "push-pull",
            .pushPull(
                PushPull(
                    from: "node-1", fromAddress: "10.0.0.11:7480", isReply: false, isJoin: true,
                    states: [
                        MemberState(incarnation: 1, status: .alive, record: record),
                        MemberState(incarnation: 3, status: .suspect, record: NodeRecord(name: "node-2", address: "[::1]:7480")),
                        MemberState(incarnation: 0, status: .dead, record: NodeRecord(name: "node-3", address: "node-3:7480")),
                        MemberState(incarnation: 5, status: .left, record: NodeRecord(name: "node-4", address: "")),
                    ]))
        ),
        ("record-request", .recordRequest(RecordRequest(from: "node-2", fromAddress: "10.0.0.12:7480"))),
        ("record", .record(RecordReply(incarnation: 2, record: record))),
    ]

    public static func membership() -> Files {
        var files: Files = membershipMessages.map { ($0.0, serialized(MembershipCodec.encode($0.1))) }
        // Edge cases: nothing at all; a record with an unknown role and a negative running count;
        // a member state with an unknown status; a record reply without its record.
        files.append(("empty", []))
        var bad = MembershipCodec.encode(.record(RecordReply(incarnation: 1, record: record)))
        bad.record.record.role = .UNRECOGNIZED(7)
        bad.record.record.running["web"] = -1
        files.append(("record-bad-role-and-count", serialized(bad)))
        var state = MembershipCodec.encode(
            .pushPull(
                PushPull(
                    from: "a", fromAddress: "", isReply: true, isJoin: false,
                    states: [MemberState(incarnation: 1, status: .alive, record: record)])))
        state.pushPull.states[0].status = .UNRECOGNIZED(99)
        files.append(("push-pull-unknown-status", serialized(state)))
        var missing = Microscale_Membership_MembershipMessage()
        missing.record = Microscale_Membership_RecordReply()
        files.append(("record-missing", serialized(missing)))
        return files
    }

    // MARK: Raft

    static func serviceSpecs() -> [String: ServiceSpec] {
        [
            "web": ServiceSpec(
                image: "microscale-demo:latest", command: ["httpd", "-f"], priority: 1, cpu: 0.5,
                memory: 64 << 20, min: 1, max: 40,
                demand: DemandSourceConfig(source: "random", perContainer: 10, options: ["min": "10", "max": "100"]),
                stopTimeoutMilliseconds: 5000),
            "batch": ServiceSpec(image: "busybox", cpu: 0.25, memory: 32 << 20, max: 100, fill: true),
        ]
    }

    static func commands() -> [(String, ClusterCommand)] {
        [
            ("apply-services", .applyServices(serviceSpecs())),
            ("remove-service", .removeService("batch")),
            ("set-demand", .setDemand(service: "web", value: 42.5)),
            ("set-drain", .setDrain(node: "node-2", drained: true)),
            (
                "set-plan",
                .setPlan(
                    Plan(assignments: ["node-1": ["web": 2], "node-2": ["web": 1, "batch": 3]]),
                    Decision(
                        timestampMilliseconds: 1_700_000_000_000, summary: "web 2 -> 3",
                        reasons: ["demand 30 at 10 per container"]))
            ),
        ]
    }

    static func stateSnapshot() -> [UInt8] {
        var state = ClusterState()
        for (i, (_, c)) in commands().enumerated() where i != 1 { _ = state.apply(c, index: UInt64(i + 1)) }
        return (try? state.snapshot()) ?? []
    }

    static func raftMessages() -> [(String, RaftMessage)] {
        func m(_ kind: RaftMessage.Kind, _ edit: (inout RaftMessage) -> Void = { _ in }) -> RaftMessage {
            var x = RaftMessage(kind: kind, from: "node-1", to: "node-2", term: 3)
            edit(&x)
            return x
        }
        let entries =
            commands().enumerated().map { i, c in
                Entry(term: 3, index: UInt64(10 + i), kind: .normal, data: (try? c.1.encoded()) ?? [])
            } + [
                Entry(term: 3, index: 15, kind: .normal, data: []),
                Entry(term: 3, index: 16, kind: .configuration, data: ConfChange.addLearner("node-4").encoded),
                Entry(term: 3, index: 17, kind: .configuration, data: ConfChange.promote("node-4").encoded),
                Entry(term: 3, index: 18, kind: .configuration, data: ConfChange.remove("node-3").encoded),
            ]
        return [
            (
                "append",
                m(.append) {
                    $0.logTerm = 2
                    $0.index = 9
                    $0.entries = entries
                    $0.commit = 9
                }
            ),
            ("append-response", m(.appendResponse) { $0.index = 18 }),
            (
                "append-response-reject",
                m(.appendResponse) {
                    $0.reject = true
                    $0.index = 9
                    $0.rejectHint = 4
                }
            ),
            (
                "vote",
                m(.vote) {
                    $0.logTerm = 2
                    $0.index = 9
                    $0.transfer = true
                }
            ),
            ("vote-response", m(.voteResponse) { $0.reject = true }),
            (
                "pre-vote",
                m(.preVote) {
                    $0.logTerm = 2
                    $0.index = 9
                }
            ),
            ("pre-vote-response", m(.preVoteResponse)),
            (
                "heartbeat",
                m(.heartbeat) {
                    $0.commit = 9
                    $0.readRound = 4
                }
            ),
            ("heartbeat-response", m(.heartbeatResponse) { $0.readRound = 4 }),
            (
                "snapshot",
                m(.installSnapshot) {
                    $0.snapshot = Snapshot(
                        index: 20, term: 3,
                        configuration: Configuration(
                            voters: ["node-1", "node-2", "node-3"],
                            learners: ["node-4"]),
                        data: stateSnapshot())
                }
            ),
            ("timeout-now", m(.timeoutNow)),
            ("read-index", m(.readIndex) { $0.context = [1, 2, 3, 4, 5, 6, 7, 8] }),
            (
                "read-index-response",
                m(.readIndexResponse) {
                    $0.index = 18
                    $0.context = [1, 2, 3, 4, 5, 6, 7, 8]
                }
            ),
        ]
    }

    public static func raft() -> Files {
        var files: Files = raftMessages().map { ($0.0, serialized(RaftCodec.encode($0.1))) }
        files.append(("empty", []))
        var unknown = RaftCodec.encode(raftMessages()[0].1)
        unknown.type = .UNRECOGNIZED(42)
        files.append(("unknown-type", serialized(unknown)))
        var entryType = RaftCodec.encode(raftMessages()[0].1)
        entryType.entries[0].type = .UNRECOGNIZED(3)
        files.append(("unknown-entry-type", serialized(entryType)))
        var badData = RaftCodec.encode(raftMessages()[0].1)
        badData.entries[0].data = Data([1] + Array(#"{"applyServices":{"_0":{"x":{"image":"i","cpu":1e999}}}}"#.utf8))
        files.append(("entry-huge-number", serialized(badData)))
        return files
    }

    // MARK: Control

    public static func control() -> Files {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]  // so `make fuzz-seeds` writes the same bytes each time
        var assignment = Microscale_Control_ControlMessage()
        assignment.assignment = .with {
            $0.planIndex = 12
            $0.node = "node-2"
            $0.services = serviceSpecs().sorted { $0.key < $1.key }.map { name, spec in
                .with {
                    $0.service = name
                    $0.count = 3
                    $0.specHash = "abc123"
                    $0.afterStopping = name == "web" ? ["batch"] : []
                    $0.spec = (try? encoder.encode(spec)) ?? Data()
                }
            }
        }
        var subscribe = Microscale_Control_ControlMessage()
        subscribe.subscribe = .with {
            $0.node = "node-2"
            $0.afterIndex = 11
        }
        func request(_ method: String, _ path: String, _ body: String = "", hops: UInt32 = 1) -> Microscale_Control_ControlMessage {
            var m = Microscale_Control_ControlMessage()
            guard var r = try? ClusterRequest(method: method, path: path, body: Array(body.utf8)).wire else { return m }
            r.id = 7
            r.hops = hops
            m.apiRequest = r
            return m
        }
        var untyped = Microscale_Control_ControlMessage()
        untyped.forwardRequest = .with {
            $0.id = 8
            $0.method = "PUT"
            $0.path = "/v1/demand/web"
            $0.body = Data(#"{"value": 12}"#.utf8)
        }
        var response = Microscale_Control_ControlMessage()
        response.forwardResponse = .with {
            $0.id = 7
            $0.status = 200
            $0.body = Data(#"{"applied":["web"]}"#.utf8)
            $0.leaderHint = "node-1"
        }
        return [
            ("assignment", serialized(assignment)),
            ("subscribe", serialized(subscribe)),
            ("request-status", serialized(request("GET", "/v1/status"))),
            ("request-decisions", serialized(request("GET", "/v1/decisions?limit=5"))),
            ("request-put-services", serialized(request("PUT", "/v1/services", servicesFiles[0].text))),
            ("request-put-demand", serialized(request("PUT", "/v1/demand/web", #"{"value": 12}"#))),
            ("request-drain", serialized(request("POST", "/v1/nodes/node-2/drain", hops: 2))),
            ("request-delete", serialized(request("DELETE", "/v1/services/batch"))),
            ("request-utilization", serialized(request("GET", "/v1/report/utilization?window=10m&stale"))),
            ("request-rollback", serialized(request("POST", "/v1/services/web/rollback"))),
            ("request-deny", serialized(request("POST", "/v1/nodes/node-3/deny"))),
            ("request-remove-peer", serialized(request("DELETE", "/v1/operator/raft/peers/node-3?leaving"))),
            ("request-untyped", serialized(untyped)),
            ("response", serialized(response)),
            ("empty", []),
        ]
    }

    // MARK: Frames

    public static func frame() -> Files {
        func stream(_ frames: [Frame]) -> [UInt8] {
            var out = ByteBuffer()
            for f in frames { try? FrameEncoder.encode(f, into: &out, limits: Receive.limits) }
            return Array(out.readableBytesView)
        }
        func payloads(_ files: Files) -> [ByteBuffer] { files.map { ByteBuffer(bytes: $0.bytes) } }
        let hello = Microscale_Wire_Hello.with {
            $0.nodeName = "node-1"
            $0.cluster = "microscale"
            $0.protocolVersion = WireProtocol.version
            $0.agentVersion = "0.1.0"
            $0.server = true
        }
        let goodbye = Microscale_Wire_Goodbye.with { $0.reason = "shutting down" }
        let helloFrame = try! Frame(kind: .hello, message: hello)
        let membership = payloads(membership()).map { Frame(kind: .membership, payload: $0) }
        let raft = payloads(raft()).map { Frame(kind: .raft, payload: $0) }
        let control = payloads(control()).map { Frame(kind: .control, payload: $0) }
        // Large enough to be compressed (over the 512-byte threshold).
        let bigPushPull = try! MembershipCodec.frame(
            .pushPull(
                PushPull(
                    from: "node-1", fromAddress: "10.0.0.11:7480", isReply: true, isJoin: false,
                    states: (1...12).map {
                        MemberState(
                            incarnation: UInt64($0), status: .alive,
                            record: NodeRecord(
                                name: "node-\($0)", address: "10.0.0.\($0):7480",
                                running: ["web": $0]))
                    })))
        var files: Files = [
            ("hello", stream([helloFrame])),
            ("goodbye", stream([try! Frame(kind: .goodbye, message: goodbye)])),
            ("hello-then-membership", stream([helloFrame, membership[1], membership[5]])),
            ("membership-compressed", stream([bigPushPull])),
            ("raft-append-compressed", stream([raft[0]])),
            ("raft-stream", stream([raft[1], raft[7], raft[8], raft[3]])),
            ("raft-snapshot", stream([raft[9]])),
            ("control-assignment", stream([control[0]])),
            ("control-stream", stream([control[1], control[2], control[4], control[8]])),
            ("empty", []),
        ]
        // Edge cases: a header alone; a length over the limit; unknown kind and flags; an LZ4 frame
        // that declares more than the limit; an LZ4 frame whose block is garbage; half a frame.
        files.append(("header-only", [0, 0, 0, 0, 1, 0]))
        files.append(("too-long", [0x7f, 0xff, 0xff, 0xff, 3, 0]))
        files.append(("unknown-kind", [0, 0, 0, 1, 99, 0, 0]))
        files.append(("unknown-flags", [0, 0, 0, 1, 3, 0x82, 0]))
        files.append(("lz4-bomb", [0, 0, 0, 6, 3, 1, 0x7f, 0xff, 0xff, 0xff, 0x1f, 0]))
        files.append(("lz4-garbage", [0, 0, 0, 9, 4, 1, 0, 0, 0, 32, 0xff, 0xff, 0xff, 0xff, 0xff]))
        let whole = stream([membership[0]])
        files.append(("truncated", Array(whole.prefix(whole.count / 2))))
        return files
    }

    // MARK: Files

    static let servicesFiles: [(name: String, text: String)] = [
        // The demo services, as `microscale dev` applies them.
        ("demo", DevCommand.demoServices + "\n"),
        ("json", #"{"services": {"api": {"image": "api:1", "cpu": "250m", "memory": "1GiB", "max": 3, "min": 0, "priority": 3}}}"#),
        (
            "demand-sources",
            """
            services:
              a:
                image: a
                cpu: 1
                memory: 1g
                max: 5
                demand:
                  source: prometheus
                  url: http://127.0.0.1:9090
                  query: sum(rate(http_requests_total[1m]))
                  per_container: 50
              b.c_d-e:
                image: b
                command: run --fast
                cpu: 2.5
                memory: 512M
                min: 2
                max: 2
                demand: {source: redis, address: "127.0.0.1:6379", key: queue}
                stop_timeout: 1500ms
              f:
                image: f
                cpu: 0.1
                memory: 100MB
                max: 1
                demand: {source: http, url: "http://x/demand"}
                stop_timeout: 2m
              g:
                image: g
                cpu: 1
                memory: 1TiB
                max: 1
                demand: {source: static, value: 3}
                stop_timeout: 1h

            """
        ),
        (
            "anchors",
            """
            base: &b {image: x, cpu: 1, memory: 1Gi, max: 1}
            services:
              x: *b

            """
        ),
        ("empty", ""),
        ("not-a-mapping", "- services\n"),
        ("bad-field", "services:\n  web:\n    image: x\n    cpu: -1\n    memory: 0\n    max: -3\n    colour: red\n"),
        ("nested", "services: {a: {image: [[[[[[[[[[]]]]]]]]]], cpu: {x: {y: 1}}}}\n"),
    ]

    public static func services() -> Files {
        servicesFiles.map { ($0.name, Array($0.text.utf8)) }
    }

    static let agentFiles: [(name: String, text: String)] = [
        (
            "production",
            """
            name: host-a
            bind: 10.0.0.11:7480
            advertise: 10.0.0.11:7480
            http: 127.0.0.1:7481
            server: true
            bootstrap-expect: 3
            join: [10.0.0.11:7480, 10.0.0.12:7480, 10.0.0.13:7480]
            data-dir: /var/lib/microscale
            tls-ca: /etc/microscale/tls/ca.pem
            tls-cert: /etc/microscale/tls/host-a.pem
            tls-key: /etc/microscale/tls/host-a-key.pem
            docker-socket: /var/run/docker.sock
            cluster: prod
            log-level: info

            """
        ),
        (
            "local",
            """
            name: node-1
            bind: 127.0.0.1:7480
            http: 127.0.0.1:7481
            server: yes
            bootstrap-expect: 1
            data-dir: data/node-1
            tls-ca: certs/ca/ca.pem
            tls-cert: certs/node-1.pem
            tls-key: certs/node-1-key.pem

            """
        ),
        (
            "client-ipv6",
            """
            name: c1
            bind: "[::]:7480"
            advertise: "[fd00::5]:7480"
            http: "[::1]:7481"
            join: "[fd00::1]:7480"
            data_dir: /tmp/c1
            tls_ca: ca.pem
            tls_cert: c1.pem
            tls_key: c1-key.pem
            capacity_cpu: 3500m
            capacity_memory: 6GiB
            raft-election-timeout: 1s
            raft-heartbeat-interval: 100ms
            log-level: debug

            """
        ),
        (
            "public-http",
            """
            name: n
            http: 0.0.0.0:7481
            api-token: secret
            data-dir: d
            tls-ca: a
            tls-cert: b
            tls-key: c
            capacity-cpu: 0.5
            capacity-memory: 1.5g
            raft-election-timeout: 0.5s
            raft-heartbeat-interval: 1.5ms

            """
        ),
        ("empty", ""),
        ("unknown-key", "name: n\ncolour: red\n"),
        ("bad-values", "name: -bad-\nbind: nowhere\nbootstrap-expect: 12\njoin: [{a: b}]\nserver: maybe\n"),
    ]

    public static func agentConfiguration() -> Files {
        agentFiles.map { ($0.name, Array($0.text.utf8)) }
    }

    static func serialized<M: SwiftProtobuf.Message>(_ m: M) -> [UInt8] {
        // Maps in a deterministic order, so `make fuzz-seeds` writes the same bytes each time.
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return (try? m.serializedBytes(options: options)) ?? []
    }
}
