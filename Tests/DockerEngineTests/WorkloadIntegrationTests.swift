import DockerEngine
import Foundation
import Testing

/// Networking against the test dockerd (scripts/test-env): the agent's bridge network, published
/// ports and env reach a real busybox httpd.
@Suite struct WorkloadIntegrationTests {
    let client: DockerClient
    let image: String

    init() throws {
        client = try DockerClient(host: try TestEnvironment.require("MICROSCALE_TEST_DOCKER_HOST"))
        image = try TestEnvironment.require("MICROSCALE_TEST_IMAGE")
    }

    @Test func aServiceWithAPublishedPortAnswersHTTPThroughIt() async throws {
        let node = "tnet\(UInt32.random(in: 0...UInt32.max))"
        defer {
            let client = client
            Task {
                for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"])) ?? [] {
                    try? await client.remove(c.Id, force: true)
                }
            }
        }
        let spec = ContainerSpec(
            service: "web", node: node, specHash: "h1", image: image,
            command: ["sh", "-c", "echo \"$GREETING\" > /index.html && exec httpd -f -p 8080 -h /"],
            env: ["GREETING=hello from \(node)"], cpu: 0.1, memoryBytes: 32 << 20, stopTimeoutSeconds: 1,
            network: .bridge(ContainerSpec.defaultBridge), ports: [.init(container: 8080)])
        let shell = ReconcilerShell(client: client, node: node)
        await shell.setDesired([spec], counts: ["web": 1])
        let report = try await shell.converge()
        #expect(report?.errors.isEmpty == true, "\(report?.errors ?? [])")
        let running = try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false)
        let id = try #require(running.first?.Id)
        let inspect = try await client.inspect(id)
        #expect(inspect.NetworkSettings?.Networks?[ContainerSpec.defaultBridge] != nil)
        let published = try #require(inspect.NetworkSettings?.Ports?["8080/tcp"]??.first?.HostPort.flatMap { Int($0) })
        // httpd needs a moment after the start to listen.
        var answer: HTTPResponse?
        for _ in 0..<50 {
            answer = try? await MiniHTTPClient().request(.tcp(host: "127.0.0.1", port: published), path: "/index.html", timeout: .seconds(2))
            if answer?.status == 200 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(answer?.status == 200)
        #expect(answer?.bodyText == "hello from \(node)\n")
    }
}

/// Health (docs/contracts.md, "The services file"): a container whose health check starts failing is replaced.
@Suite struct HealthIntegrationTests {
    let client: DockerClient
    let image: String

    init() throws {
        client = try DockerClient(host: try TestEnvironment.require("MICROSCALE_TEST_DOCKER_HOST"))
        image = try TestEnvironment.require("MICROSCALE_TEST_IMAGE")
    }

    @Test func aContainerWhoseHealthCheckStartsFailingIsReplaced() async throws {
        let node = "thealth\(UInt32.random(in: 0...UInt32.max))"
        defer {
            let client = client
            Task {
                for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"])) ?? [] {
                    try? await client.remove(c.Id, force: true)
                }
            }
        }
        // Healthy while /ready exists; the container removes it after two seconds.
        let spec = ContainerSpec(
            service: "web", node: node, specHash: "h1", image: image,
            command: ["sh", "-c", "echo > /ready; sleep 2; busybox rm /ready; exec sleep 600"],
            cpu: 0.1, memoryBytes: 16 << 20, stopTimeoutSeconds: 1,
            healthCommand: .init(
                command: ["cat", "/ready"], interval: .milliseconds(200), timeout: .seconds(1),
                retries: 2, startPeriod: .zero))
        let shell = ReconcilerShell(client: client, node: node)
        await shell.setDesired([spec], counts: ["web": 1])
        try await shell.converge()
        let first = try #require(try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false).first)
        var sawHealthy = false
        var replaced = false
        for _ in 0..<150 {
            // `try?`: DockerIntegrationTests may be restarting the shared daemon (live-restore keeps
            // the containers); the next look sees it back.
            let now = (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false)) ?? []
            if now.contains(where: { $0.Id == first.Id && ObservedContainer.Health.fromEngineStatus($0.Status) == .healthy }) { sawHealthy = true }
            if let report = try? await shell.reconcileOnce(), report.plan.unhealthy > 0 {
                #expect(report.plan.stops.contains(.stop(id: first.Id, service: "web")))
            }
            guard let after = try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false) else {
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            if !after.contains(where: { $0.Id == first.Id }) && after.count == 1 {
                replaced = true
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(sawHealthy)
        #expect(replaced)
    }

    @Test func anHTTPProbeMakesTheContainerHealthyThenReplacesItWhenItAnswers404() async throws {
        let node = "tprobe\(UInt32.random(in: 0...UInt32.max))"
        defer {
            let client = client
            Task {
                for c in (try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"])) ?? [] {
                    try? await client.remove(c.Id, force: true)
                }
            }
        }
        // Serves /index.html for two seconds, then 404s it.
        let spec = ContainerSpec(
            service: "web", node: node, specHash: "h1", image: image,
            command: ["sh", "-c", "echo ok > /index.html; httpd -p 8080 -h /; sleep 2; busybox rm /index.html; exec sleep 600"],
            cpu: 0.1, memoryBytes: 16 << 20, stopTimeoutSeconds: 1, network: .bridge(ContainerSpec.defaultBridge),
            probe: .init(
                kind: .http(path: "/index.html", port: 8080), interval: .milliseconds(200), timeout: .seconds(1),
                retries: 2, startPeriod: .zero))
        let shell = ReconcilerShell(client: client, node: node)
        await shell.setDesired([spec], counts: ["web": 1])
        try await shell.converge()
        let first = try #require(try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false).first)
        var sawHealthy = false
        var replaced = false
        for _ in 0..<150 {
            _ = try? await shell.reconcileOnce()
            if await shell.lastHealth[first.Id] == .healthy { sawHealthy = true }
            guard let after = try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false) else {
                try await Task.sleep(for: .milliseconds(200))
                continue
            }
            if !after.contains(where: { $0.Id == first.Id }) && after.count == 1 {
                replaced = true
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(sawHealthy)
        #expect(replaced)
    }

    @Test func theHealthStateIsReadFromTheListAnswer() {
        #expect(ObservedContainer.Health.fromEngineStatus("Up 3 seconds (health: starting)") == .starting)
        #expect(ObservedContainer.Health.fromEngineStatus("Up 3 minutes (healthy)") == .healthy)
        #expect(ObservedContainer.Health.fromEngineStatus("Up 3 minutes (unhealthy)") == .unhealthy)
        #expect(ObservedContainer.Health.fromEngineStatus("Up 3 minutes") == nil)
        let starting = ObservedContainer(id: "a", labels: [:], state: .running, health: .starting)
        #expect(!starting.isServing)
        #expect(ObservedContainer(id: "a", labels: [:], state: .running).isServing)
    }
}
