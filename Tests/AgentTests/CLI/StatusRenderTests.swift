@testable import Agent
import Testing

/// `microscale status` shows a rolling update's progress beside its service (docs/rollouts.md).
@Suite struct StatusRenderTests {
    @Test func aRolloutShowsInTheUpdateColumn() {
        let view = StatusView(leader: "s1", term: 2, planIndex: 9, services: [
            .init(name: "web", priority: 1, demand: 30, perContainer: 10, desired: 6, running: 6, rollout: "updating 3/6 (start-first)"),
            .init(name: "api", priority: 1, demand: nil, perContainer: nil, desired: 2, running: 2,
                  rollout: "paused: 2 new containers failed (health check or exit)"),
            .init(name: "batch", priority: 2, demand: nil, perContainer: nil, desired: 4, running: 4),
        ], nodes: [])
        let lines = StatusCommand.render(view).split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("web") && $0.hasSuffix("updating 3/6 (start-first)") })
        #expect(lines.contains { $0.hasPrefix("api") && $0.hasSuffix("paused: 2 new containers failed (health check or exit)") })
        #expect(lines.contains { $0.hasPrefix("batch") && $0.hasSuffix("-") })
    }
}
