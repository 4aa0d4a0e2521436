import ControlPlane
import DockerEngine
import Foundation
import Membership
import Testing

@testable import Agent

/// The endpoints API's answers and its blocking queries (issue 17 item 5, docs/endpoints.md).
@Suite struct EndpointsWatchTests {
    static func member(
        _ name: String, _ address: String, status: MemberStatus = .alive,
        _ endpoints: [String: [Endpoint]]
    ) -> MemberView {
        var r = NodeRecord(name: name, address: address, version: 1)
        r.endpoints = endpoints
        return MemberView(r, status: status, incarnation: 0)
    }

    let e8080 = [Endpoint(containerPort: 8080, hostPort: 32768)]

    @Test func endpointsComeFromAliveAndSuspectMembersWithTheirAdvertisedHost() {
        let members = [
            Self.member("a", "10.0.0.1:7480", ["web": e8080]),
            Self.member("b", "[fd00::2]:7480", status: .suspect, ["web": [Endpoint(containerPort: 8080, hostPort: 40000)]]),
            Self.member("c", "10.0.0.3:7480", status: .dead, ["web": e8080]),
            Self.member("d", "10.0.0.4:7480", status: .left, ["web": e8080]),
        ]
        let web = Endpoints.from(members)["web"] ?? []
        #expect(web.map(\.address) == ["10.0.0.1:32768", "[fd00::2]:40000"])
        #expect(web.map(\.node) == ["a", "b"])
    }

    actor Members {
        var list: [MemberView] = []
        func set(_ l: [MemberView]) { list = l }
    }

    @Test func aQueryWithTheCurrentIndexWaitsForTheNextChangeOfThatServiceOnly() async throws {
        let members = Members()
        await members.set([Self.member("a", "10.0.0.1:7480", ["web": e8080])])
        let watch = EndpointsWatch { await members.list }
        let first = try await watch.query("web", after: nil, wait: .seconds(60))
        #expect(first.endpoints.count == 1 && first.index > 1)
        let waiting = Task { try await watch.query("web", after: first.index, wait: .seconds(60)) }
        #expect(try await pollUntil(10) { await watch.waiting == 1 })
        // Another service changing does not answer a query on web.
        await members.set([Self.member("a", "10.0.0.1:7480", ["web": e8080, "api": e8080])])
        await watch.changed()
        #expect(await watch.waiting == 1)
        await members.set([Self.member("a", "10.0.0.1:7480", ["web": e8080 + [Endpoint(containerPort: 8080, hostPort: 32769)], "api": e8080])])
        await watch.changed()
        let second = try await waiting.value
        #expect(second.endpoints.map(\.port) == [32768, 32769])
        #expect(second.index > first.index)
        #expect(await watch.waiting == 0)
    }

    actor CountingMembers {
        var list: [MemberView] = []
        var reads = 0
        func set(_ l: [MemberView]) { list = l }
        func read() -> [MemberView] {
            reads += 1
            return list
        }
    }

    @Test func memberChangesWithNobodyWaitingAreReadByTheNextQueryOnly() async throws {
        let members = CountingMembers()
        let watch = EndpointsWatch { await members.read() }
        // A join's storm of member changes, nobody asking: the member list is not read.
        for _ in 0..<1_000 { await watch.changed() }
        #expect(await members.reads == 0)
        let first = try await watch.query("web", after: nil, wait: .seconds(60))
        #expect(await members.reads == 1 && first.endpoints.isEmpty)
        await members.set([Self.member("a", "10.0.0.1:7480", ["web": e8080])])
        for _ in 0..<100 { await watch.changed() }
        #expect(await members.reads == 1)
        // The next query sees the change, with a new index; one more with nothing changed reads nothing.
        let second = try await watch.query("web", after: nil, wait: .seconds(60))
        #expect(second.endpoints.map(\.port) == [32768])
        #expect(second.index > first.index)
        #expect(try await watch.query("web", after: nil, wait: .seconds(60)) == second)
        #expect(await members.reads == 2)
    }

    @Test func aQueryAnswersAtOnceWithoutAnIndexWithZeroOrWithAnIndexAheadOfTheAgents() async throws {
        let watch = EndpointsWatch { [Self.member("a", "10.0.0.1:7480", ["web": [Endpoint(containerPort: 8080, hostPort: 32768)]])] }
        let now = try await watch.query("web", after: nil, wait: .seconds(60))
        #expect(try await watch.query("web", after: 0, wait: .seconds(60)) == now)
        // An index from before the agent restarted: answered at once, and the client starts over.
        #expect(try await watch.query("web", after: now.index + 100, wait: .seconds(60)) == now)
        // A service with no endpoints has index 1, never 0 (0 would ask not to wait, and a client
        // following it would spin).
        #expect(try await watch.query("nothing", after: nil, wait: .seconds(1)).index == 1)
    }

    @Test func aWaitEndsWithTheSameAnswerWhenNothingChanged() async throws {
        let watch = EndpointsWatch { [] }
        let now = try await watch.query("web", after: nil, wait: .seconds(60))
        let later = try await watch.query("web", after: now.index, wait: .milliseconds(50))
        #expect(later == now)
        #expect(await watch.waiting == 0)
    }

    @Test func waitersAreBoundedAndACancelledOneLeavesAtOnce() async throws {
        let watch = EndpointsWatch(maxWaiters: 2) { [] }
        let i = try await watch.query("web", after: nil, wait: .seconds(60)).index
        let t1 = Task { try await watch.query("web", after: i, wait: .seconds(60)) }
        let t2 = Task { try await watch.query("web", after: i, wait: .seconds(60)) }
        #expect(try await pollUntil(10) { await watch.waiting == 2 })
        await #expect(throws: EndpointsWatch.Failure.tooManyWaiting(2)) { try await watch.query("web", after: i, wait: .seconds(60)) }
        t1.cancel()
        t2.cancel()
        #expect(try await pollUntil(10) { await watch.waiting == 0 })
        _ = try await t1.value
        _ = try await t2.value
    }

    @Test func theQueryParametersAreCheckedNamingTheField() throws {
        #expect(try Endpoints.query([("index", "7"), ("wait", "30s")]).get() == Endpoints.Query(index: 7, wait: .seconds(30)))
        #expect(try Endpoints.query([]).get().index == nil)
        for (k, v, field) in [
            ("index", "-1", "index"), ("index", "1e3", "index"), ("wait", "forever", "wait"),
            ("wait", "11m", "wait"), ("wait", "0s", "wait"), ("color", "red", "color"),
        ] {
            guard case .failure(let e) = Endpoints.query([(k, v)]) else {
                Issue.record("\(k)=\(v) was taken")
                continue
            }
            #expect(e.description.hasPrefix(field + ":"), "\(e)")
        }
    }

    @Test func theAPIAnswersWithTheIndexInAHeaderAndRefusesABadOne() async throws {
        let watch = EndpointsWatch { [Self.member("a", "10.0.0.1:7480", ["web": [Endpoint(containerPort: 8080, hostPort: 32768)]])] }
        let ok = await AgentRuntime.endpoints("web", query: [], watch: watch)
        #expect(ok.status == 200)
        let view = try JSONDecoder().decode(EndpointsView.self, from: Data(ok.body))
        #expect(ok.index == view.index)
        #expect(view.endpoints.first?.address == "10.0.0.1:32768")
        #expect(await AgentRuntime.endpoints("web", query: [("index", "x")], watch: watch).status == 400)
        #expect(await AgentRuntime.endpoints(String(repeating: "w", count: 64), query: [], watch: watch).status == 400)
    }
}

/// Which of a node's containers it gossips as serving, and where they listen.
@Suite struct ServingEndpointsTests {
    /// A port as the Engine's list answer has it.
    func port(_ ip: String?, _ priv: Int, _ pub: Int?, _ type: String = "tcp") -> [String: Any] {
        var d: [String: Any] = ["PrivatePort": priv, "Type": type]
        if let ip { d["IP"] = ip }
        if let pub { d["PublicPort"] = pub }
        return d
    }

    func summary(_ id: String, service: String, status: String = "Up 1 second", ports: [[String: Any]]) throws -> ContainerSummary {
        let json: [String: Any] = [
            "Id": id, "State": "running", "Status": status,
            "Labels": [MicroscaleLabel.service: service], "Ports": ports,
        ]
        return try JSONDecoder().decode(ContainerSummary.self, from: JSONSerialization.data(withJSONObject: json))
    }

    func spec(_ service: String, network: ContainerSpec.Network, ports: [Int]) -> ContainerSpec {
        ContainerSpec(
            service: service, node: "n", specHash: "h", image: "i", cpu: 0.5, memoryBytes: 1 << 24,
            network: network, ports: ports.map { ContainerSpec.Port(container: $0) })
    }

    @Test func anEndpointIsThePortPublishedForTheFamilyTheNodeAdvertises() throws {
        // Docker's userland proxy may publish IPv4 and IPv6 on different host ports.
        let running = [try summary("c1", service: "web", ports: [port("0.0.0.0", 8080, 32810), port("::", 8080, 32808)])]
        let specs = ["web": spec("web", network: .bridge("microscale"), ports: [8080])]
        #expect(NodeExecutor.serving(running, health: [:], specs: specs).endpoints["web"] == [Endpoint(containerPort: 8080, hostPort: 32810)])
        #expect(
            NodeExecutor.serving(running, health: [:], specs: specs, ipv6: true).endpoints["web"] == [Endpoint(containerPort: 8080, hostPort: 32808)])
    }

    @Test func publishedTCPPortsOfHealthyContainersAreEndpointsOncePerAddressFamily() throws {
        let running = [
            try summary(
                "c1", service: "web",
                ports: [
                    port("0.0.0.0", 8080, 32768), port("::", 8080, 32768),
                    port("0.0.0.0", 53, 32999, "udp"), port(nil, 9000, nil),
                ]),
            try summary("c2", service: "web", ports: [port("0.0.0.0", 8080, 32769)]),
            try summary(
                "c3", service: "web", status: "Up 2 seconds (unhealthy)",
                ports: [port("0.0.0.0", 8080, 32770)]),
            try summary("c4", service: "web", ports: [port("0.0.0.0", 8080, 32771)]),
            try summary("h1", service: "edge", ports: []),
            try summary("x1", service: "quiet", ports: []),
        ]
        let specs = [
            "web": spec("web", network: .bridge("microscale"), ports: [8080]),
            "edge": spec("edge", network: .host, ports: [80]),
            "quiet": spec("quiet", network: .none, ports: []),
        ]
        // c4's own probe has not passed yet: not serving.
        let s = NodeExecutor.serving(running, health: ["c4": .starting, "c2": .healthy], specs: specs)
        #expect(s.running == ["web": 2, "edge": 1, "quiet": 1])
        #expect(s.endpoints["web"] == [Endpoint(containerPort: 8080, hostPort: 32768), Endpoint(containerPort: 8080, hostPort: 32769)])
        #expect(s.endpoints["edge"] == [Endpoint(containerPort: 80, hostPort: 80)])
        #expect(s.endpoints["quiet"] == nil)
        // A withdrawn container (a planned stop waiting for its stop_delay) serves nothing.
        let w = NodeExecutor.serving(running, health: ["c4": .starting, "c2": .healthy], specs: specs, withdrawn: ["c1"])
        #expect(w.running["web"] == 1)
        #expect(w.endpoints["web"] == [Endpoint(containerPort: 8080, hostPort: 32769)])
    }

    @Test func aStandbyContainerIsNeitherCountedNorAnEndpoint() throws {
        // A standby is created and never started (docs/scheduling.md, "Standby containers"): should
        // a list ever carry one, it serves nothing.
        var standby = try summary("s1", service: "web", status: "Created", ports: [port("0.0.0.0", 8080, 32770)])
        standby.State = "created"
        standby.Labels?[MicroscaleLabel.standby] = "true"
        let running = [try summary("c1", service: "web", ports: [port("0.0.0.0", 8080, 32768)]), standby]
        let s = NodeExecutor.serving(running, health: [:], specs: ["web": spec("web", network: .bridge("microscale"), ports: [8080])])
        #expect(s.running == ["web": 1])
        #expect(s.endpoints["web"] == [Endpoint(containerPort: 8080, hostPort: 32768)])
    }

    @Test func theExecutorRunsARoundOnExitsRemovalsHealthChangesAndReconnectsButNotOnItsOwnStarts() {
        for action in ["die", "oom", "destroy", "health_status: unhealthy", "microscale.reconnected"] { #expect(NodeExecutor.wakes(action)) }
        for action in ["create", "start", "kill", "stop", "exec_start: sh -c true"] { #expect(!NodeExecutor.wakes(action)) }
    }
}
