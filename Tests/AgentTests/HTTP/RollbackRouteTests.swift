import Testing

@testable import Agent

/// `POST /v1/services/{name}/rollback` (docs/rollouts.md) goes through the real router to the cluster.
@Suite struct RollbackRouteTests {
    @Test func aPlainCurlRollbackReachesTheCluster() async throws {
        let agent = RecordingAgent()
        try await HTTPAPITests().serving(agent) { port in
            let answer = try await RawHTTP.request(
                port: port, "POST", "/v1/services/web/rollback",
                headers: [("Host", "127.0.0.1:\(port)"), ("User-Agent", "curl/8.14.1")])
            #expect(answer.status == 200, "\(answer.body)")
        }
        #expect(agent.reached.withLock { $0 } == ["POST /v1/services/web/rollback"])
    }
}
