import DockerEngine
import Foundation
import Logging
import SecureTransport
import Testing

@testable import Agent

/// Issue 17 item 5 against real components: three agents on the test dockerd run busybox httpd
/// containers with published ports and an http health check; `microscale lb haproxy`'s loop
/// (HAProxyFollower) keeps the test HAProxy's `web` backend (scripts/test-env: a pool of 16
/// servers in maintenance, an admin socket) equal to the endpoints. Containers answer through
/// HAProxy; one whose check starts failing leaves the endpoints and HAProxy; scaling up adds
/// servers.
@Suite(.serialized) struct HAProxyIntegrationTests {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-lb-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        return d
    }()
    let names: [String]

    init() throws {
        let tag = UInt32.random(in: 0...UInt32.max) % 100_000
        names = (1...3).map { "lb\(tag)-\($0)" }
        for n in names { try CertificateIssuer.createNodeCertificate(caDir: "\(Self.dir)/ca", node: n, server: true, in: "\(Self.dir)/certs") }
    }

    func agent(_ name: String, join: Int?, docker: String) throws -> (AgentRuntime, Int) {
        try dockerServerAgent(name, dir: Self.dir, join: join, docker: docker)
    }

    func removeAll(_ client: DockerClient) async {
        for n in names {
            for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(n)"])) ?? [] { try? await client.remove(c.Id, force: true) }
        }
    }

    /// The servers HAProxy routes to now, as host:port.
    static func routed(_ driver: HAProxyDriver) -> Set<String> {
        Set(((try? driver.slots()) ?? []).filter(\.ready).map { "\($0.address):\($0.port)" })
    }

    static func endpoints(_ a: AgentRuntime) async -> Set<String> {
        let r = await a.endpoints("web", query: [])
        guard let v = try? JSONDecoder().decode(EndpointsView.self, from: Data(r.body)) else { return [] }
        return Set(v.endpoints.map(\.address))
    }

    /// `n` requests through HAProxy: the bodies of those answered 200 (each container's
    /// hostname), and how many were not.
    static func through(_ frontend: String, _ n: Int) async -> (hosts: Set<String>, failed: Int) {
        let parts = frontend.split(separator: ":")
        let endpoint = HTTPEndpoint.tcp(host: String(parts[0]), port: Int(parts[1]) ?? 0)
        var hosts: Set<String> = []
        var failed = 0
        for _ in 0..<n {
            if let r = try? await MiniHTTPClient().request(endpoint, path: "/", timeout: .seconds(5), maxBody: 4096), r.status == 200 {
                hosts.insert(String(decoding: r.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            } else {
                failed += 1
            }
        }
        return (hosts, failed)
    }

    /// What each agent believes (Raft role, assignment) and what runs, for a failure message.
    static func diagnose(_ agents: [AgentRuntime], _ client: DockerClient) async -> String {
        var out: [String] = []
        for a in agents {
            let v = await a.selfView()
            out.append(
                "\(v.name): \(v.raft?.role ?? "-") term \(v.raft?.term ?? 0) leader \(v.raft?.leader ?? "-") plan \(v.assignmentPlan ?? 0) assigned \(v.assigned ?? [:])"
            )
        }
        let list = (try? await client.list(labels: ["\(MicroscaleLabel.service)=web"], all: false)) ?? []
        out.append(
            "running web: " + list.map { "\($0.Labels?[MicroscaleLabel.node] ?? "?")/\($0.Id.prefix(6))/\($0.Status ?? "")" }.joined(separator: ", "))
        return out.joined(separator: "; ")
    }

    @Test func haproxyRoutesToExactlyTheHealthyEndpointsFollowingFailuresAndScaleUp() async throws {
        let docker = try EndToEndTests.env("MICROSCALE_TEST_DOCKER_HOST")
        let image = try EndToEndTests.env("MICROSCALE_TEST_IMAGE")
        let socket = try EndToEndTests.env("MICROSCALE_TEST_HAPROXY_SOCKET")
        let frontend = try EndToEndTests.env("MICROSCALE_TEST_HAPROXY_WEB")
        let client = try DockerClient(host: docker)
        let driver = HAProxyDriver(socket: HAProxySocket(path: socket), backend: "web")
        try driver.sync([])
        await removeAll(client)
        let (a1, p1) = try agent(names[0], join: nil, docker: docker)
        try await a1.start()
        var agents = [a1]
        for n in names.dropFirst() {
            let (a, _) = try agent(n, join: p1, docker: docker)
            try await a.start()
            agents.append(a)
        }
        let httpAddr = try #require(a1.httpAddress?.port)
        let options = try HTTPClientOptions.parse(["--http-addr", "127.0.0.1:\(httpAddr)"])
        let said = LockedLines()
        let follower = Task {
            try await HAProxyFollower(
                client: options, service: "web", containerPort: nil, driver: driver,
                resync: .seconds(10), say: { said.append($0) }
            ).run()
        }
        // Cleaned up before the test returns, failed or not: a clean-up left to a task may never
        // run before the process exits, and the containers would outlive the run.
        var failure: (any Error)?
        do { try await scenario() } catch { failure = error }
        follower.cancel()
        for a in agents { await a.shutdown() }
        await removeAll(client)
        try? driver.sync([])
        if let failure { throw failure }

        func scenario() async throws {
            #expect(try await pollUntil(30) { await a1.cluster(method: "GET", path: "/v1/leader", body: []).status == 200 })

            // /w/health is the check's; SIGUSR1 removes it (the container's check starts failing while
            // httpd keeps serving). The page is the container's hostname, so answers name their container.
            let file = """
                services:
                  web:
                    image: \(image)
                    command: ["sh", "-c", "mkdir -p /w && cat /etc/hostname > /w/index.html && echo ok > /w/health && httpd -p 8080 -h /w && trap 'rm -f /w/health' USR1 && while true; do sleep 1; done"]
                    priority: 1
                    cpu: 0.25
                    memory: 16MiB
                    min: 1
                    max: 8
                    ports: [{container: 8080}]
                    health: {http: /health, port: 8080, interval: 300ms, timeout: 2s, retries: 2}
                    demand: { source: static, per_container: 10 }
                    stop_timeout: 1s
                """
            let applied = await a1.cluster(method: "PUT", path: "/v1/services", body: Array(file.utf8))
            #expect(applied.status == 200, "\(String(decoding: applied.body, as: UTF8.self))")
            #expect(await a1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 20}"#.utf8)).status == 200)

            // Two healthy containers: HAProxy routes to exactly their endpoints, and both answer.
            var eps: Set<String> = [], routed: Set<String> = []
            let two = try await pollUntil(60) {
                eps = await Self.endpoints(a1)
                routed = Self.routed(driver)
                return eps.count == 2 && routed == eps
            }
            let diagnosis = await Self.diagnose(agents, client)
            #expect(two, "endpoints \(eps), HAProxy \(routed); follower said \(said.lines); \(diagnosis)")
            var answers = await Self.through(frontend, 20)
            #expect(answers.failed == 0 && answers.hosts.count == 2, "\(answers); \(diagnosis)")

            // Scale up: four, each with a server in HAProxy, all answering.
            #expect(await a1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 40}"#.utf8)).status == 200)
            #expect(
                try await pollUntil(60) {
                    eps = await Self.endpoints(a1)
                    routed = Self.routed(driver)
                    return eps.count == 4 && routed == eps
                }, "endpoints \(eps), HAProxy \(routed); follower said \(said.lines)")
            answers = await Self.through(frontend, 40)
            #expect(answers.failed == 0 && answers.hosts.count == 4, "\(answers)")

            // One container's check starts failing: its endpoint leaves the agent's answer and HAProxy.
            let webs = try await client.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.service)=web"], all: false)
            // One HAProxy routes to (its IPv4 binding is the endpoint: the agents advertise 127.0.0.1).
            func v4(_ c: ContainerSummary) -> String? {
                c.Ports?.first { $0.PrivatePort == 8080 && $0.PublicPort != nil && ($0.IP ?? "").contains(".") }?.PublicPort.map { "127.0.0.1:\($0)" }
            }
            let sick = try #require(webs.first { names.contains($0.Labels?[MicroscaleLabel.node] ?? "") && v4($0).map(routed.contains) == true })
            let address = try #require(v4(sick))
            try await client.kill(sick.Id, signal: "USR1")
            let clock = ContinuousClock()
            var leftEndpoints: ContinuousClock.Instant?
            var leftHAProxy: ContinuousClock.Instant?
            #expect(
                try await pollUntil(30) {
                    if leftEndpoints == nil, !(await Self.endpoints(a1)).contains(address) { leftEndpoints = clock.now }
                    if leftHAProxy == nil, !Self.routed(driver).contains(address) { leftHAProxy = clock.now }
                    return leftEndpoints != nil && leftHAProxy != nil
                }, "\(address) still routed; follower said \(said.lines)")
            if let e = leftEndpoints, let h = leftHAProxy {
                // A figure, not an assertion (tests assert behaviour, not time): polled every 50 ms.
                print("lb: \(address) left the agent's endpoints and HAProxy \(max(.zero, h - e)) apart (50 ms polls)")
            }
            // The unhealthy container is replaced, and HAProxy follows back to four.
            #expect(
                try await pollUntil(60) {
                    eps = await Self.endpoints(a1)
                    routed = Self.routed(driver)
                    return eps.count == 4 && routed == eps && !eps.contains(address)
                }, "endpoints \(eps), HAProxy \(routed)")
            answers = await Self.through(frontend, 40)
            #expect(answers.failed == 0 && answers.hosts.count == 4 && !answers.hosts.contains(String(sick.Id.prefix(12))), "\(answers)")
        }
    }
}

/// What the follower said, for failure messages.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ s: String) { lock.withLock { stored.append(s) } }
    var lines: [String] { lock.withLock { stored } }
}
