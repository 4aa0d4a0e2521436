import Consensus
import Testing

@testable import Agent

/// The workload keys of the services file (docs/contracts.md, "The services file"): env, network, ports, health.
@Suite struct WorkloadKeysTests {
    static func file(_ extra: String) -> String {
        """
        services:
          web:
            image: registry.example:5000/kittens/web:1.4
            cpu: 0.5
            memory: 64MiB
            max: 4
        \(extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        """
    }

    @Test func theDesignsExampleParses() throws {
        let specs = try ServicesFile.parse(
            Self.file(
                """
                env: { LOG_LEVEL: info, GREETING: "a=b c" }
                network: bridge
                ports: [ { container: 8080 }, { container: 53, host: 5353, protocol: udp } ]
                health: { command: [cat, /ready], interval: 1s, timeout: 500ms, retries: 2, start_period: 2s }
                """))
        let web = try #require(specs["web"])
        #expect(web.env == ["LOG_LEVEL": "info", "GREETING": "a=b c"])
        #expect(web.networkMode == "bridge")
        #expect(web.ports == [PortMapping(container: 8080), PortMapping(container: 53, host: 5353, proto: "udp")])
        #expect(web.fixedHostPorts == [5353])
        #expect(
            web.health
                == HealthCheck(
                    command: ["cat", "/ready"], intervalMilliseconds: 1000, timeoutMilliseconds: 500,
                    retries: 2, startPeriodMilliseconds: 2000))
        #expect(Specs.container("web", web, node: "n1").healthCommand?.command == ["cat", "/ready"])
        let container = Specs.container("web", web, node: "n1")
        #expect(container.env == ["GREETING=a=b c", "LOG_LEVEL=info"])
        #expect(container.network == .bridge("microscale"))
        #expect(container.ports.map(\.container) == [8080, 53])
    }

    @Test func undeclaredKeysDefaultToTheBridgeAndKeepTheOldSpecHash() throws {
        let web = try #require(try ServicesFile.parse(Self.file("")).get("web"))
        #expect(web.networkMode == "bridge" && web.env == nil && web.ports == nil && web.health == nil)
        // The hash of a spec without the new keys is the one agents computed before they existed,
        // so upgrading the agent replaces no container.
        #expect(web.containerHash == (ServiceSpec(image: web.image, cpu: web.cpu, memory: web.memory, max: 4)).containerHash)
        var changed = web
        changed.env = ["A": "1"]
        #expect(changed.containerHash != web.containerHash)
        #expect(Specs.container("web", web, node: "n").network == .bridge("microscale"))
        var host = web
        host.network = "host"
        #expect(Specs.container("web", host, node: "n").network == .host)
    }

    @Test(arguments: [
        ("network: overlay", "services.web.network: `overlay` is not one of bridge, host, none"),
        ("ports: [ { container: 70000 } ]", "services.web.ports[0].container: must be a port from 1 to 65535"),
        ("ports: [ { host: 80 } ]", "services.web.ports[0].container: required"),
        ("ports: [ { container: 80, hots: 80 } ]", "services.web.ports[0].hots: unknown field"),
        ("ports: [ 8080, 8080 ]", "services.web.ports[1].container: 8080/tcp is published twice"),
        ("ports: [ { container: 80, host: 80 }, { container: 81, host: 80 } ]", "services.web.ports: a host port is used twice"),
        ("network: none\nports: [ 8080 ]", "services.web.ports: cannot be published with network none"),
        ("env: [ A ]", "services.web.env: must be a mapping"),
        ("env: { \"A=B\": x }", "services.web.env: `A=B`: a name is"),
        ("health: { http: /, tcp: 80, port: 80 }", "services.web.health: needs exactly one of http, tcp or command"),
        ("health: { http: / }", "services.web.health.port: required with http"),
        ("network: none\nhealth: { tcp: 80 }", "services.web.health: http and tcp checks need network bridge or host"),
        ("health: { command: [true], interval: 10ms }", "services.web.health.interval: must be 100ms to 1h"),
        ("health: { command: [true], retries: 0 }", "services.web.health.retries: must be 1 to 100"),
        ("health: { command: [true], every: 1s }", "services.web.health.every: unknown field"),
        ("health: { command: [] }", "services.web.health.command: must have 1 to 256 arguments"),
    ])
    func aBadWorkloadKeyIsRefusedNamingTheFieldAndLine(yaml: String, expected: String) {
        do {
            _ = try ServicesFile.parse(Self.file(yaml), source: "s.yaml")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.description.contains(expected), "\(error.description)")
            #expect(error.description.hasPrefix("s.yaml line "), "\(error.description)")
        }
    }

    @Test func anEnvValueOverItsLimitIsRefusedOnApplyToo() {
        let spec = ServiceSpec(image: "x", cpu: 1, memory: 1, max: 1, env: ["A": String(repeating: "x", count: 40_000)])
        #expect("\(spec.validationError(name: "web")!)".contains("env.A"))
    }
}

private extension Dictionary {
    func get(_ key: Key) -> Value? { self[key] }
}

/// `update:` (issue 17 item 4, docs/rollouts.md).
@Suite struct UpdatePolicyFileTests {
    @Test func updateParsesAndLeavesTheSpecHashAlone() throws {
        let plain = try #require(try ServicesFile.parse(WorkloadKeysTests.file("")).get("web"))
        let web = try #require(try ServicesFile.parse(WorkloadKeysTests.file("update: { max_parallel: 2, order: start-first }")).get("web"))
        #expect(web.update == UpdatePolicy(maxParallel: 2, order: "start-first"))
        // A new rollout policy replaces no container.
        #expect(web.containerHash == plain.containerHash)
    }

    @Test(arguments: [
        ("update: { max_parallel: 0 }", "services.web.update.max_parallel: must be 1 to 1000"),
        ("update: { order: sideways }", "services.web.update.order: `sideways` is not one of start-first, stop-first"),
        ("update: { parallelism: 2 }", "services.web.update.parallelism: unknown field (known: max_parallel, order)"),
        ("update: 3", "services.web.update: must be a mapping"),
    ])
    func aBadUpdateKeyIsRefusedNamingTheFieldAndLine(yaml: String, expected: String) {
        do {
            _ = try ServicesFile.parse(WorkloadKeysTests.file(yaml), source: "s.yaml")
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.description.contains(expected), "\(error.description)")
            #expect(error.description.hasPrefix("s.yaml line "), "\(error.description)")
        }
    }
}
