import ArgumentParser
import Testing

@testable import Harness

/// What `microscale-chaos` prints and refuses, without a cluster (the scenarios themselves need
/// root and run through chaos/run).
struct ChaosCommandTests {
    static func result(_ scenario: String, _ k: Int, passed: Bool, _ timings: [String: Double], problems: [String] = []) -> ChaosResult {
        ChaosResult(scenario: scenario, repetition: k, passed: passed, problems: problems, timings: timings, notes: [])
    }

    @Test func aResultLineGivesItsTimingsInOrderAndItsProblemsBelow() {
        let r = Self.result("host-kill", 2, passed: false, ["replaced": 12_500, "detected": 900], problems: ["web short by 1"])
        #expect(ChaosCommand.line(r) == "FAIL host-kill #2: detected 900 ms, replaced 12.5 s\n    - web short by 1")
    }

    @Test func theSummaryCountsPassesAndGivesTheMedianOfEachTimingPerScenario() {
        let results = [
            Self.result("leader-kill", 1, passed: true, ["elected": 300]),
            Self.result("leader-kill", 2, passed: false, ["elected": 700]),
            Self.result("leader-kill", 3, passed: true, ["elected": 500]),
        ]
        #expect(ChaosCommand.summary(results) == "==> 2/3 passed\n    leader-kill: 2/3 passed; median elected 500 ms")
    }

    @Test func anUnknownScenarioIsRefusedWithTheListOfKnownOnes() {
        #expect(throws: (any Error).self) { try ChaosCommand.parse(["no-such-scenario"]) }
        #expect(throws: Never.self) { try ChaosCommand.parse(["host-kill"]) }
    }
}
