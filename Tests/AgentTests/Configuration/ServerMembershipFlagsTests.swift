import Testing

@testable import Agent

/// `--dead-server-cleanup` and `--server-stabilization-time` (docs/consensus.md, "Server membership").
struct ServerMembershipFlagsTests {
    func resolve(_ extra: [String: String]) throws -> AgentConfiguration {
        var s = AgentSettings()
        let base = ["name": "s1", "data-dir": "/tmp/s1", "tls-ca": "ca.pem", "tls-cert": "s1.pem", "tls-key": "s1-key.pem"]
        for (k, v) in base.merging(extra, uniquingKeysWith: { $1 }) { s.set(k, v, origin: "--\(k)") }
        return try s.resolve()
    }

    @Test func theDefaultsAreThirtySecondsAndFiveSeconds() throws {
        let c = try resolve([:])
        #expect(c.deadServerCleanup == .seconds(30))
        #expect(c.serverStabilizationTime == .seconds(5))
    }

    @Test func cleanupCanBeSetOrTurnedOffAndABadValueNamesTheFlag() throws {
        #expect(try resolve(["dead-server-cleanup": "2m"]).deadServerCleanup == .seconds(120))
        #expect(try resolve(["dead-server-cleanup": "off"]).deadServerCleanup == nil)
        #expect(try resolve(["server-stabilization-time": "0s"]).serverStabilizationTime == .zero)
        for bad in ["500ms", "2d", "soon"] {
            #expect(throws: ConfigurationError.self) { try resolve(["dead-server-cleanup": bad]) }
            do { _ = try resolve(["dead-server-cleanup": bad]) } catch {
                #expect("\(error)".hasPrefix("--dead-server-cleanup:"), "\(error)")
            }
        }
        #expect(throws: ConfigurationError.self) { try resolve(["server-stabilization-time": "11m"]) }
    }
}
