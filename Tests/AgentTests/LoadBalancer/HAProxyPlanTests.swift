import Testing

@testable import Agent

/// What `microscale lb haproxy` sends HAProxy to make a backend's servers equal to the endpoints.
@Suite struct HAProxyPlanTests {
    typealias Slot = HAProxyPlan.Slot
    typealias Target = HAProxyPlan.Target

    let slots = [
        Slot(name: "web1", address: "10.0.0.1", port: 32768, ready: true),
        Slot(name: "web2", address: "10.0.0.2", port: 32768, ready: true),
        Slot(name: "web3", address: "10.0.0.9", port: 40000, ready: false),
        Slot(name: "web10", address: "127.0.0.1", port: 9, ready: false),
        Slot(name: "web4", address: "127.0.0.1", port: 9, ready: false),
    ]

    @Test func serversAlreadyPointingAtEndpointsAreLeftAloneAndNothingIsSentWhenAllMatch() {
        let p = HAProxyPlan.plan(
            backend: "web", slots: slots,
            desired: [Target(host: "10.0.0.1", port: 32768), Target(host: "10.0.0.2", port: 32768)])
        #expect(p.commands.isEmpty)
    }

    @Test func newEndpointsTakeFreeServersFirstTheOneThatHadThemThenTheLowestNumberedAndGoneOnesGoToMaintenanceLast() {
        let p = HAProxyPlan.plan(
            backend: "web", slots: slots,
            desired: [
                Target(host: "10.0.0.1", port: 32768), Target(host: "10.0.0.9", port: 40000),
                Target(host: "10.0.0.3", port: 32770),
            ])
        #expect(
            p.commands == [
                "set server web/web3 state ready",
                "set server web/web4 addr 10.0.0.3 port 32770",
                "set server web/web4 state ready",
                "set server web/web2 state maint",
            ])
        #expect(p.removed == [Target(host: "10.0.0.2", port: 32768)])
        #expect(Set(p.added) == [Target(host: "10.0.0.9", port: 40000), Target(host: "10.0.0.3", port: 32770)])
        #expect(p.unplaced.isEmpty)
    }

    @Test func endpointsBeyondThePoolAreReportedNotPlaced() {
        let p = HAProxyPlan.plan(
            backend: "web", slots: [Slot(name: "web1", address: "127.0.0.1", port: 9, ready: false)],
            desired: [Target(host: "10.0.0.1", port: 1), Target(host: "10.0.0.1", port: 2)])
        #expect(p.added == [Target(host: "10.0.0.1", port: 1)])
        #expect(p.unplaced == [Target(host: "10.0.0.1", port: 2)])
    }

    @Test func twoReadyServersOnOneEndpointKeepOne() {
        let p = HAProxyPlan.plan(
            backend: "b",
            slots: [
                Slot(name: "s1", address: "10.0.0.1", port: 1, ready: true),
                Slot(name: "s2", address: "10.0.0.1", port: 1, ready: true),
            ],
            desired: [Target(host: "10.0.0.1", port: 1)])
        #expect(p.commands == ["set server b/s2 state maint"])
    }

    @Test func showServersStateIsReadByItsHeaderAndMaintenanceFlagsMeanNotReady() throws {
        // HAProxy 2.6's answers: web1 made ready from 'disabled' (admin 4: the configured flag
        // stays), web2 as configured (5), web3 put in maintenance (1), web4 draining (8).
        let text = """
            1
            # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
            3 web 1 web1 10.0.0.1 2 4 1 1 12 1 0 0 0 0 0 0 - 32768 - 0 0 - - 0
            3 web 2 web2 127.0.0.1 0 5 1 1 12 1 0 0 0 0 0 0 - 9 - 0 0 - - 0
            3 web 3 web3 127.0.0.1 0 1 1 1 12 1 0 0 0 0 0 0 - 9 - 0 0 - - 0
            3 web 4 web4 10.0.0.4 2 8 1 1 12 1 0 0 0 0 0 0 - 40000 - 0 0 - - 0

            """
        let s = try HAProxyPlan.parseServersState(text, backend: "web")
        #expect(
            s == [
                Slot(name: "web1", address: "10.0.0.1", port: 32768, ready: true),
                Slot(name: "web2", address: "127.0.0.1", port: 9, ready: false),
                Slot(name: "web3", address: "127.0.0.1", port: 9, ready: false),
                // Draining (0x08) still routes existing sessions; not maintenance.
                Slot(name: "web4", address: "10.0.0.4", port: 40000, ready: true),
            ])
        #expect(throws: HAProxyError.self) { try HAProxyPlan.parseServersState("Can't find backend.\n", backend: "web") }
    }

    @Test func theTargetsAreTheEndpointsOfTheChosenOrOnlyContainerPort() throws {
        let v = EndpointsView(
            service: "web", index: 3,
            endpoints: [
                ServiceEndpoint(node: "a", host: "10.0.0.1", port: 32768, containerPort: 8080),
                ServiceEndpoint(node: "a", host: "10.0.0.1", port: 32769, containerPort: 9090),
            ])
        #expect(throws: CLIError.self) { try HAProxyFollower.targets(v, containerPort: nil).get() }
        #expect(try HAProxyFollower.targets(v, containerPort: 9090).get() == [Target(host: "10.0.0.1", port: 32769)])
        #expect(try HAProxyFollower.targets(EndpointsView(service: "web", index: 1, endpoints: []), containerPort: nil).get().isEmpty)
    }
}
