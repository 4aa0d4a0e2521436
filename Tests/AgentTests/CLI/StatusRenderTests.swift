import Testing

@testable import Agent

/// `microscale status` shows a rolling update's progress beside its service (docs/rollouts.md).
@Suite struct StatusRenderTests {
    @Test func aRolloutShowsInTheUpdateColumn() {
        let view = StatusView(
            leader: "s1", term: 2, planIndex: 9,
            services: [
                .init(name: "web", priority: 1, demand: 30, perContainer: 10, desired: 6, running: 6, rollout: "updating 3/6 (start-first)"),
                .init(
                    name: "api", priority: 1, demand: nil, perContainer: nil, desired: 2, running: 2,
                    rollout: "paused: 2 new containers failed (health check or exit)"),
                .init(name: "batch", priority: 2, demand: nil, perContainer: nil, desired: 4, running: 4),
            ], nodes: [])
        let lines = StatusCommand.render(view).split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("web") && $0.hasSuffix("updating 3/6 (start-first)") })
        #expect(lines.contains { $0.hasPrefix("api") && $0.hasSuffix("paused: 2 new containers failed (health check or exit)") })
        #expect(lines.contains { $0.hasPrefix("batch") && $0.hasSuffix("-") })
    }

    @Test func healthCountsAndPullFailuresShowBesideTheirService() {
        let view = StatusView(
            leader: "s1", term: 2, planIndex: 9,
            services: [
                .init(
                    name: "web", priority: 1, demand: 30, perContainer: 10, desired: 6, running: 3,
                    starting: 2, unhealthy: 1),
                .init(
                    name: "api", priority: 1, demand: nil, perContainer: nil, desired: 2, running: 0,
                    pullFailures: ["node-b": "manifest unknown", "node-a": "unauthorized: authentication required"]),
            ], nodes: [])
        let text = StatusCommand.render(view)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("SERVICE") && $0.contains("RUNNING  STARTING  UNHEALTHY") })
        let web = lines.first { $0.hasPrefix("web") }?.split(separator: " ").map(String.init)
        #expect(web == ["web", "1", "30", "6", "3", "2", "1", "-"])
        let api = lines.first { $0.hasPrefix("api ") }?.split(separator: " ").map(String.init)
        #expect(api == ["api", "1", "-", "2", "0", "0", "0", "-"])
        #expect(lines.contains("api on node-a: image pull failing: unauthorized: authentication required"))
        #expect(lines.contains("api on node-b: image pull failing: manifest unknown"))
    }
}
