import Bounds
import Demand
import DockerEngine
import Foundation
import Scaling
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The services scripts/test-env starts (redis-server, rabbitmq-server, nats-server with JetStream,
/// haproxy, moto_server). Under CI=true a missing variable fails the test; locally it is skipped.
enum Brokers {
    static let env = ProcessInfo.processInfo.environment
    static var underCI: Bool { env["CI"] == "true" }
    /// Whether a test needing `name` should run: the variable is set, or CI is (to fail loudly).
    static func available(_ name: String) -> Bool { underCI || !(env[name] ?? "").isEmpty }
    static func require(_ name: String) throws -> String { try DemandEnvironment.require(name) }

    /// `scripts/test-env stop|start|pause|resume NAME`: the broker really stops (or hangs).
    /// posix_spawn and waitpid, not Foundation's Process: `start` leaves a daemon behind that
    /// inherits the descriptors Process watches for the child's end, and Process then never returns.
    static func control(_ op: String, _ broker: String) throws {
        let path = try require("MICROSCALE_TEST_ENV_SCRIPT")
        let argv: [UnsafeMutablePointer<CChar>?] = [path, op, broker].map { (s: String) -> UnsafeMutablePointer<CChar>? in strdup(s) } + [nil]
        defer { for a in argv { free(a) } }
        // An empty signal mask: the test thread's may block SIGTERM, and a broker the script starts
        // would inherit it and then ignore the script's `stop`.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        var pid: pid_t = 0
        guard posix_spawn(&pid, path, nil, &attributes, argv, environ) == 0 else { throw Failed(what: "cannot run \(path)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else { throw Failed(what: "scripts/test-env \(op) \(broker) exited with status \(status)") }
    }

    struct Failed: Error, CustomStringConvertible {
        var what: String
        var description: String { what }
    }

    /// A credentials file of the test's own (mode 600).
    static func credentials(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ms-cred-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        return path
    }
}

/// What the planner makes of a reading: containers of a worker absorbing `per` each, on one big
/// node, starting from `current` containers.
func containers(for reading: DemandReading, per: Double, current: Int) -> Int {
    let worker = Scaling.ServiceSpec(name: "worker", priority: 1, cpuMillis: 100, memoryBytes: 1 << 20, min: 0, max: 1000, perContainer: per)
    let node = Scaling.Node(name: "n1", cpuMillis: 1_000_000, memoryBytes: 1 << 40, running: ["worker": current])
    var plan = Scaling.Plan()
    if current > 0 { plan.assignments = ["n1": ["worker": current]] }
    let demand: DemandValue
    switch reading {
    case .known(let v): demand = .known(v)
    case .unknown: demand = .unknown
    }
    return Planner().plan(services: [worker], demand: ["worker": demand], nodes: [node], currentPlan: plan, now: .seconds(100)).plan.total("worker")
}

/// Samples until the source reads `expected` (management APIs refresh their figures on their own
/// period), at most `within`.
func reads(_ source: any DemandSource, _ expected: Double, within: Duration = .seconds(15)) async -> Bool {
    let deadline = ContinuousClock.now + within
    while ContinuousClock.now < deadline {
        if let v = try? await source.sample(), v == expected { return true }
        try? await Task.sleep(for: .milliseconds(200))
    }
    return false
}

/// The whole story for one source, against its real broker: filled to `length` it reads `length`
/// and the planner wants ceil(length / 10) containers; emptied it reads 0; the broker stopped (or
/// hung), the last reading is held while fresh, then the source is unknown and the planner holds
/// the count; the broker back, so is the reading. One log line (transition) per change.
func exerciseFailures(
    source: any DemandSource, broker: String, how: (stop: String, start: String),
    fill: () async throws -> Void, length: Double
) async throws {
    let per = 10.0
    try await fill()
    #expect(await reads(source, length), "\(source.name) never read \(length)")
    let wanted = Int((length / per).rounded(.up))
    #expect(containers(for: .known(length), per: per, current: 0) == wanted)

    let time = ManualTime()
    // The sources are built with a 5 s timeout: moto and RabbitMQ can be slow on a loaded machine.
    let poller = DemandPoller(source: source, interval: .seconds(1), timeout: .seconds(6), staleness: .seconds(10), now: { time.now })
    let first = await poller.pollOnce()
    let health = await poller.health
    #expect(first == .known(length), "\(broker): \(health)")
    try Brokers.control(how.stop, broker)
    var restarted = false
    defer { if !restarted { try? Brokers.control(how.start, broker) } }
    time.advance(by: .seconds(2))
    let held = await poller.pollOnce()
    #expect(held == .known(length), "stale: the last reading is held")
    if case .stale = await poller.health {} else { Issue.record("\(broker): expected stale, got \(await poller.health)") }
    time.advance(by: .seconds(10))
    let unknown = await poller.pollOnce()
    #expect(unknown == .unknown)
    #expect(containers(for: unknown, per: per, current: wanted) == wanted, "unknown demand holds the count")
    try Brokers.control(how.start, broker)
    restarted = true
    try await fill()
    let deadline = ContinuousClock.now + .seconds(20)
    var back = DemandReading.unknown
    while ContinuousClock.now < deadline {
        time.advance(by: .seconds(1))
        back = await poller.pollOnce()
        if back == .known(length) { break }
        try await Task.sleep(for: .milliseconds(250))
    }
    #expect(back == .known(length), "\(broker) back: the reading returns")
    let kinds = await poller.transitions.map { h -> String in
        switch h {
        case .healthy: "ok"
        case .stale: "stale"
        case .unknown: "unknown"
        }
    }
    #expect(kinds == ["ok", "stale", "unknown", "ok"])
}

@Suite(.serialized) struct QueueSourceIntegrationTests {
    @Test(.enabled(if: Brokers.available("MICROSCALE_TEST_REDIS_ADDRESS")))
    func redisListLengthStreamAndGroupPendingDriveTheCountAndSurviveTheServerStopping() async throws {
        let address = try Brokers.require("MICROSCALE_TEST_REDIS_ADDRESS")
        let credentials = try Brokers.require("MICROSCALE_TEST_REDIS_CREDENTIALS")
        let parts = address.split(separator: ":")
        let host = String(parts[0]), port = Int(parts[1]) ?? 0
        let key = "jobs-\(UUID().uuidString.prefix(8))"
        func redis(_ commands: [[String]]) async throws -> [RESPValue] {
            try await RedisDemand.execute(host: host, port: port, credentials: credentials, commands: commands)
        }
        func fill() async throws { _ = try await redis([["DEL", key], ["RPUSH", key] + (0..<45).map { "job\($0)" }]) }
        let list = RedisDemand(host: host, port: port, key: key, credentials: credentials, timeout: .seconds(5))
        try await fill()
        #expect(try await list.sample() == 45)
        _ = try await redis([["LPOP", key, "45"]])
        #expect(try await list.sample() == 0, "an emptied list is deleted by Redis and reads 0")
        #expect(containers(for: .known(0), per: 10, current: 0) == 0)

        // A stream: XLEN, and with a group the entries delivered but not acknowledged.
        let stream = key + "-s"
        _ = try await redis(
            [["XGROUP", "CREATE", stream, "workers", "$", "MKSTREAM"]] + (0..<7).map { ["XADD", stream, "*", "n", "\($0)"] }
                + [["XREADGROUP", "GROUP", "workers", "w1", "COUNT", "3", "STREAMS", stream, ">"]])
        #expect(try await RedisDemand(host: host, port: port, key: stream, credentials: credentials).sample() == 7)
        #expect(try await RedisDemand(host: host, port: port, key: stream, group: "workers", credentials: credentials).sample() == 3)
        _ = try await redis([["SET", key + "-str", "x"]])
        await #expect(throws: DemandError.self) {
            _ = try await RedisDemand(host: host, port: port, key: key + "-str", credentials: credentials).sample()
        }

        // Credentials the server refuses, and none at all.
        let wrong = try Brokers.credentials("microscale:wrong")
        defer { try? FileManager.default.removeItem(atPath: wrong) }
        let refused = await #expect(throws: DemandError.self) {
            _ = try await RedisDemand(host: host, port: port, key: key, credentials: wrong).sample()
        }
        if case .badCredentials? = refused {} else { Issue.record("expected badCredentials, got \(String(describing: refused))") }
        let none = await #expect(throws: DemandError.self) { _ = try await RedisDemand(host: host, port: port, key: key).sample() }
        if case .badCredentials? = none {} else { Issue.record("expected badCredentials, got \(String(describing: none))") }

        try await exerciseFailures(source: list, broker: "redis", how: ("stop", "start"), fill: fill, length: 45)
        // Hung, not gone: the poll times out.
        try await exerciseFailures(source: list, broker: "redis", how: ("pause", "resume"), fill: fill, length: 45)
    }

    @Test(.enabled(if: Brokers.available("MICROSCALE_TEST_RABBITMQ_URL")))
    func rabbitMQReadyMessagesDriveTheCountAndAHungBrokerGoesStaleThenUnknown() async throws {
        let url = try SourceURL.parse(try Brokers.require("MICROSCALE_TEST_RABBITMQ_URL"), field: "url")
        let credentials = try Brokers.credentials("guest:guest")
        defer { try? FileManager.default.removeItem(atPath: credentials) }
        let queue = "jobs-\(UUID().uuidString.prefix(8))"
        let http = SourceHTTP()
        let auth = [
            ("Authorization", Credentials.userPassword(user: "guest", password: "guest").basicAuthorization), ("Content-Type", "application/json"),
        ]
        func api(_ method: String, _ path: String, _ body: String? = nil) async throws {
            _ = try await http.request(
                url, path: path, method: .init(rawValue: method), headers: auth, body: body.map { Array($0.utf8) },
                source: "test", timeout: .seconds(5))
        }
        func purge() async throws { try await api("DELETE", "/api/queues/%2F/\(queue)/contents") }
        func fill() async throws {
            try await api("PUT", "/api/queues/%2F/\(queue)", #"{"durable":true}"#)
            try await purge()
            for i in 0..<23 {
                try await api(
                    "POST", "/api/exchanges/%2F/amq.default/publish",
                    #"{"properties":{},"routing_key":"\#(queue)","payload":"\#(i)","payload_encoding":"string"}"#)
            }
        }
        let source = RabbitMQDemand(url: url, queue: queue, credentials: credentials, timeout: .seconds(5))
        try await fill()
        #expect(await reads(source, 23))
        #expect(containers(for: .known(23), per: 10, current: 0) == 3)
        try await purge()
        #expect(await reads(source, 0), "emptied, the reading drops")

        let wrong = try Brokers.credentials("guest:wrong")
        defer { try? FileManager.default.removeItem(atPath: wrong) }
        let refused = await #expect(throws: DemandError.self) { _ = try await RabbitMQDemand(url: url, queue: queue, credentials: wrong).sample() }
        if case .badCredentials? = refused {} else { Issue.record("expected badCredentials, got \(String(describing: refused))") }
        let missing = await #expect(throws: DemandError.self) {
            _ = try await RabbitMQDemand(url: url, queue: queue + "-none", credentials: credentials).sample()
        }
        #expect(missing?.description.contains("no queue") == true)

        // RabbitMQ takes ~10 s to stop and start again; hung (SIGSTOP) shows the same states in a
        // fraction of the time. Stopping for real is shown with the other brokers.
        try await exerciseFailures(source: source, broker: "rabbitmq", how: ("pause", "resume"), fill: fill, length: 23)
        try await api("DELETE", "/api/queues/%2F/\(queue)")
    }

    @Test(.enabled(if: Brokers.available("MICROSCALE_TEST_NATS_URL")))
    func natsConsumerPendingDrivesTheCountAndSurvivesTheServerStopping() async throws {
        let url = try SourceURL.parse(try Brokers.require("MICROSCALE_TEST_NATS_URL"), field: "url")
        let address = try Brokers.require("MICROSCALE_TEST_NATS_ADDRESS")
        let stream = "JOBS\(UUID().uuidString.prefix(8))"
        let subject = "jobs.\(stream)"
        func fill(_ n: Int) throws {
            let nats = try NATSTestClient(address: address)
            defer { nats.close() }
            _ = try nats.request("$JS.API.STREAM.DELETE.\(stream)", "")
            _ = try nats.request("$JS.API.STREAM.CREATE.\(stream)", #"{"name":"\#(stream)","subjects":["\#(subject)"],"storage":"memory"}"#)
            _ = try nats.request(
                "$JS.API.CONSUMER.DURABLE.CREATE.\(stream).workers",
                #"{"stream_name":"\#(stream)","config":{"durable_name":"workers","ack_policy":"explicit"}}"#)
            for i in 0..<n { _ = try nats.request(subject, "job \(i)") }
        }
        let source = NATSDemand(url: url, stream: stream, consumer: "workers", timeout: .seconds(5))
        try fill(31)
        #expect(await reads(source, 31))
        #expect(containers(for: .known(31), per: 10, current: 0) == 4)
        try fill(0)
        #expect(await reads(source, 0), "emptied, the reading drops")
        let missing = await #expect(throws: DemandError.self) { _ = try await NATSDemand(url: url, stream: stream, consumer: "nobody").sample() }
        #expect(missing?.description.contains("no consumer") == true)
        // The stream is in memory: a restarted server has none, so `fill` creates it again.
        try await exerciseFailures(source: source, broker: "nats", how: ("stop", "start"), fill: { try fill(31) }, length: 31)
    }

    @Test(.enabled(if: Brokers.available("MICROSCALE_TEST_HAPROXY_STATS")))
    func haproxyBackendSessionsDriveTheCountAndSurviveHAProxyStopping() async throws {
        let stats = try SourceURL.parse(try Brokers.require("MICROSCALE_TEST_HAPROXY_STATS"), field: "stats")
        let credentials = try Brokers.require("MICROSCALE_TEST_HAPROXY_CREDENTIALS")
        let frontend = try Brokers.require("MICROSCALE_TEST_HAPROXY_FRONTEND")
        var held: [NATSTestClient.Socket] = []
        defer { for s in held { s.close() } }
        func fill() throws {
            for s in held { s.close() }
            held = try (0..<12).map { _ in try NATSTestClient.Socket(address: frontend) }
        }
        let source = HAProxyDemand(url: stats, backend: "queue", metric: .scur, credentials: credentials, timeout: .seconds(5))
        try fill()
        #expect(await reads(source, 12))
        #expect(containers(for: .known(12), per: 10, current: 0) == 2)
        for s in held { s.close() }
        held = []
        #expect(await reads(source, 0), "connections closed, the reading drops")
        let wrong = try Brokers.credentials("microscale:wrong")
        defer { try? FileManager.default.removeItem(atPath: wrong) }
        let refused = await #expect(throws: DemandError.self) {
            _ = try await HAProxyDemand(url: stats, backend: "queue", metric: .scur, credentials: wrong).sample()
        }
        if case .badCredentials? = refused {} else { Issue.record("expected badCredentials, got \(String(describing: refused))") }
        try await exerciseFailures(source: source, broker: "haproxy", how: ("stop", "start"), fill: { try fill() }, length: 12)
    }

    @Test(.enabled(if: Brokers.available("MICROSCALE_TEST_SQS_ENDPOINT")))
    func sqsApproximateNumberOfMessagesDrivesTheCountAndSurvivesTheEndpointStopping() async throws {
        let endpoint = try SourceURL.parse(try Brokers.require("MICROSCALE_TEST_SQS_ENDPOINT"), field: "endpoint")
        let credentials = try Brokers.require("MICROSCALE_TEST_SQS_CREDENTIALS")
        let client = SQSClient(endpoint: endpoint, region: "us-east-1", credentials: credentials)
        let name = "jobs-\(UUID().uuidString.prefix(8))"
        var queueURL = ""
        func fill() async throws {
            let created = try await client.call([("Action", "CreateQueue"), ("QueueName", name)])
            queueURL =
                String(decoding: created, as: UTF8.self).components(separatedBy: "<QueueUrl>").dropFirst().first?
                .components(separatedBy: "</QueueUrl>").first ?? ""
            // A new queue (or one a restarted moto made again) is empty: no purge here, since SQS,
            // and moto with it, refuses a second PurgeQueue on a queue within 60 s.
            for i in 0..<17 { _ = try await client.call([("Action", "SendMessage"), ("QueueUrl", queueURL), ("MessageBody", "job \(i)")]) }
        }
        try await fill()
        #expect(queueURL.hasSuffix(name))
        let source = SQSDemand(queueURL: queueURL, endpoint: endpoint, region: "us-east-1", credentials: credentials, timeout: .seconds(5))
        #expect(await reads(source, 17))
        #expect(containers(for: .known(17), per: 10, current: 0) == 2)
        _ = try await client.call([("Action", "PurgeQueue"), ("QueueUrl", queueURL)])
        #expect(await reads(source, 0), "purged, the reading drops")
        // moto keeps its queues in memory: a restarted endpoint has none, so `fill` creates it again.
        try await exerciseFailures(source: source, broker: "sqs", how: ("stop", "start"), fill: fill, length: 17)
    }
}

/// Just enough of the NATS client protocol (NATS docs, "Client Protocol") to create a JetStream
/// stream and consumer and publish to it, over a blocking socket; and that socket, to hold
/// connections open through HAProxy.
final class NATSTestClient {
    final class Socket: @unchecked Sendable {
        let fd: Int32
        init(address: String) throws {
            let parts = address.split(separator: ":")
            guard parts.count == 2, let port = UInt16(parts[1]) else { throw Brokers.Failed(what: "bad address \(address)") }
            fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            inet_pton(AF_INET, String(parts[0]), &addr.sin_addr)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let r = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard r == 0 else {
                Glibc.close(fd)
                throw Brokers.Failed(what: "cannot connect to \(address)")
            }
        }
        func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }
        func receive() throws -> [UInt8] {
            var buf = [UInt8](repeating: 0, count: 65536)
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Brokers.Failed(what: "connection closed or timed out") }
            return Array(buf[..<n])
        }
        func close() { Glibc.close(fd) }
    }

    let socket: Socket
    private var buffer: [UInt8] = []

    init(address: String) throws {
        socket = try Socket(address: address)
        _ = try line()  // INFO
        socket.send(Array("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _INBOX.test 1\r\n".utf8))
    }

    private func line() throws -> String {
        while true {
            if let i = buffer.firstIndex(of: 0x0A) {
                let l = String(decoding: buffer[..<i], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                buffer.removeFirst(i + 1)
                return l
            }
            buffer += try socket.receive()
        }
    }

    /// Publishes with a reply subject and returns the reply (JetStream acknowledges every publish).
    func request(_ subject: String, _ payload: String) throws -> String {
        let body = Array(payload.utf8)
        socket.send(Array("PUB \(subject) _INBOX.test \(body.count)\r\n".utf8) + body + [0x0D, 0x0A])
        while true {
            let l = try line()
            if l.hasPrefix("PING") {
                socket.send(Array("PONG\r\n".utf8))
                continue
            }
            if l.hasPrefix("-ERR") { throw Brokers.Failed(what: l) }
            guard l.hasPrefix("MSG"), let n = Int(l.split(separator: " ").last ?? "") else { continue }
            while buffer.count < n + 2 { buffer += try socket.receive() }
            let reply = String(decoding: buffer[..<n], as: UTF8.self)
            buffer.removeFirst(n + 2)
            return reply
        }
    }

    func close() { socket.close() }
}
