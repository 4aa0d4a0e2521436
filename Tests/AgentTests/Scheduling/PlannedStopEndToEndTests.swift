import DockerEngine
import Foundation
import Logging
import SecureTransport
import Testing

@testable import Agent

/// Planned stops withdraw first (docs/endpoints.md, "Planned stops withdraw first"), end to end
/// against real components: three server agents on the test dockerd run a busybox httpd service
/// with published ports and an http health check; `microscale lb haproxy`'s loop
/// (HAProxyFollower) keeps the test HAProxy's `stops` backend equal to its endpoints; clients
/// request through HAProxy all along, and not one request fails across (a) an image change rolled
/// out start-first with max_parallel 1 and (b) a scale-down from 4 containers to 2.
///
/// Without the withdrawal (`stop_delay: 0`, what every planned stop did before) the same run fails
/// requests: HAProxy keeps sending them to a container that has stopped until the node's record
/// says it is gone.
@Suite(.serialized) struct PlannedStopEndToEndTests {
    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-stop-tests-\(getpid())"
        try? FileManager.default.removeItem(atPath: d)
        try! CertificateIssuer.createCA(in: "\(d)/ca")
        return d
    }()
    let names: [String]

    init() throws {
        let tag = UInt32.random(in: 0...UInt32.max) % 100_000
        names = (1...3).map { "ps\(tag)-\($0)" }
        for n in names { try CertificateIssuer.createNodeCertificate(caDir: "\(Self.dir)/ca", node: n, server: true, in: "\(Self.dir)/certs") }
    }

    func agent(_ name: String, join: Int?, docker: String) throws -> (AgentRuntime, Int) {
        try dockerServerAgent(name, dir: Self.dir, join: join, docker: docker)
    }

    /// Requests through HAProxy while a phase runs: how many, which failed and why.
    actor Load {
        var requests = 0
        var failures: [String] = []
        var bodies: [String: Int] = [:]
        func record(_ body: String?, failure: String?) {
            requests += 1
            if let failure { failures.append(failure) }
            if let body { bodies[body, default: 0] += 1 }
        }
        var figures: (requests: Int, failures: [String], bodies: [String: Int]) { (requests, failures, bodies) }
    }

    /// `clients` loops, each one request at a time on a new connection with a 20 ms pause between.
    static func load(_ frontend: String, clients: Int, into load: Load) -> Task<Void, Never> {
        let parts = frontend.split(separator: ":")
        let endpoint = HTTPEndpoint.tcp(host: String(parts[0]), port: Int(parts[1]) ?? 0)
        return Task {
            await withTaskGroup(of: Void.self) { group in
                for _ in 0..<clients {
                    group.addTask {
                        while !Task.isCancelled {
                            do {
                                let r = try await MiniHTTPClient().request(endpoint, path: "/", timeout: .seconds(5), maxBody: 4096)
                                let body = r.bodyText.trimmingCharacters(in: .whitespacesAndNewlines)
                                await load.record(body, failure: r.status == 200 ? nil : "HTTP \(r.status)")
                            } catch {
                                // A request cut short by the end of the phase is no failure.
                                if Task.isCancelled { break }
                                await load.record(nil, failure: "\(error)".prefix(120).description)
                            }
                            try? await Task.sleep(for: .milliseconds(20))
                        }
                    }
                }
            }
        }
    }

    static func file(image: String, body: String, stopDelay: String?) -> String {
        """
        services:
          web:
            image: \(image)
            command: ["sh", "-c", "mkdir -p /w && echo \(body) > /w/index.html && exec httpd -f -p 8080 -h /w"]
            priority: 1
            cpu: 0.25
            memory: 16MiB
            min: 1
            max: 8
            ports: [{container: 8080}]
            health: {http: /index.html, port: 8080, interval: 200ms, timeout: 1s, retries: 2}
            demand: { source: static, per_container: 10 }
            update: { max_parallel: 1, order: start-first }
            stop_timeout: 1s
        \(stopDelay.map { "    stop_delay: \($0)" } ?? "")
        """
    }

    @Test func noRequestFailsThroughHAProxyAcrossAStartFirstRolloutAndAScaleDown() async throws {
        let docker = try EndToEndTests.env("MICROSCALE_TEST_DOCKER_HOST")
        let base = try EndToEndTests.env("MICROSCALE_TEST_IMAGE")
        let socket = try EndToEndTests.env("MICROSCALE_TEST_HAPROXY_SOCKET")
        let frontend = try EndToEndTests.env("MICROSCALE_TEST_HAPROXY_STOPS")
        // The stop delay under test; `0` shows the failures a stop without withdrawal causes.
        let stopDelay = ProcessInfo.processInfo.environment["MICROSCALE_TEST_STOP_DELAY"]
        let client = try DockerClient(host: docker)
        let repo = "microscale-stops-\(names[0])"
        for t in ["v1", "v2"] { try await client.tag(base, repository: repo, tag: t) }
        let driver = HAProxyDriver(socket: HAProxySocket(path: socket), backend: "stops")
        try driver.sync([])
        func removeAll() async {
            for n in names {
                for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(n)"])) ?? [] { try? await client.remove(c.Id, force: true) }
            }
        }
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
        // Cleaned up before the test returns, failed or not (HAProxyIntegrationTests says why).
        var failure: (any Error)?
        do { try await scenario() } catch { failure = error }
        follower.cancel()
        for a in agents { await a.shutdown() }
        await removeAll()
        for t in ["v1", "v2"] { try? await client.removeImage("\(repo):\(t)") }
        try? driver.sync([])
        if let failure { throw failure }

        func scenario() async throws {
            #expect(try await pollUntil(30) { await a1.cluster(method: "GET", path: "/v1/leader", body: []).status == 200 })
            func apply(_ text: String) async {
                let r = await a1.cluster(method: "PUT", path: "/v1/services", body: Array(text.utf8))
                #expect(r.status == 200, "\(String(decoding: r.body, as: UTF8.self))")
            }
            func demand(_ v: Int) async {
                #expect(await a1.cluster(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": \#(v)}"#.utf8)).status == 200)
            }
            func running() async -> [ContainerSummary] {
                let list = (try? await client.list(labels: ["\(MicroscaleLabel.service)=web"], all: false)) ?? []
                return list.filter { names.contains($0.Labels?[MicroscaleLabel.node] ?? "") }
            }
            func rollout() async -> String? {
                let r = await a1.cluster(method: "GET", path: "/v1/status", body: [])
                return (try? JSONDecoder().decode(StatusView.self, from: Data(r.body)))?.services.first { $0.name == "web" }?.rollout
            }
            var eps: Set<String> = [], routed: Set<String> = []
            func settled(_ n: Int) async -> Bool {
                eps = await HAProxyIntegrationTests.endpoints(a1)
                routed = HAProxyIntegrationTests.routed(driver)
                return eps.count == n && routed == eps
            }
            await apply(Self.file(image: "\(repo):v1", body: "v1", stopDelay: stopDelay))
            await demand(40)
            let four = try await pollUntil(60) { await settled(4) }
            #expect(four, "endpoints \(eps), HAProxy \(routed); follower said \(said.lines)")
            guard four else { return }

            // (a) v1 → v2, start-first, max_parallel 1, under load.
            let rolloutLoad = Load()
            var clients = Self.load(frontend, clients: 3, into: rolloutLoad)
            try await Task.sleep(for: .milliseconds(300))
            await apply(Self.file(image: "\(repo):v2", body: "v2", stopDelay: stopDelay))
            var last: [ContainerSummary] = []
            let rolled = try await pollUntil(60) {
                last = await running()
                // Done when four containers run, all of v2, HAProxy routes to exactly them, and
                // the old ones are gone (their stops happened under the load).
                guard last.count == 4, last.allSatisfy({ $0.Image == "\(repo):v2" }), await rollout() == nil else { return false }
                return await settled(4)
            }
            try await Task.sleep(for: .milliseconds(300))
            clients.cancel()
            await clients.value
            let r = await rolloutLoad.figures
            print(
                "planned stops: rollout v1→v2 (start-first, max_parallel 1) under load: \(r.requests) requests, \(r.failures.count) failed, answers \(r.bodies)"
            )
            #expect(rolled, "v2 never replaced v1: \(last.map { "\($0.Image ?? "?") \($0.Status ?? "")" }); endpoints \(eps), HAProxy \(routed)")
            #expect(r.failures.isEmpty, "\(r.failures.count) of \(r.requests) requests failed during the rollout: \(r.failures.prefix(5))")
            #expect(r.requests > 50 && r.bodies["v2", default: 0] > 0)

            // (b) 4 → 2 under load.
            let downLoad = Load()
            clients = Self.load(frontend, clients: 3, into: downLoad)
            try await Task.sleep(for: .milliseconds(300))
            await demand(20)
            let shrunk = try await pollUntil(60) {
                last = await running()
                guard last.count == 2 else { return false }
                return await settled(2)
            }
            try await Task.sleep(for: .milliseconds(300))
            clients.cancel()
            await clients.value
            let d = await downLoad.figures
            print("planned stops: scale-down 4→2 under load: \(d.requests) requests, \(d.failures.count) failed")
            #expect(shrunk, "still \(last.count) running; endpoints \(eps), HAProxy \(routed)")
            #expect(d.failures.isEmpty, "\(d.failures.count) of \(d.requests) requests failed during the scale-down: \(d.failures.prefix(5))")
            #expect(d.requests > 50)
        }
    }
}
