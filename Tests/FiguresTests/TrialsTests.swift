import Figures
import Testing

@Suite struct TrialsTests {
    @Test func withEveryTrialFinishedThePercentilesAreTheUsualOnes() {
        var t = Trials(fault: "none")
        for v in [5.0, 1, 4, 2, 3] { t.record(v) }
        #expect(t.median == 3)
        #expect(t.percentile(0) == 1)
        #expect(t.percentile(1) == 5)
        #expect(t.p90 == 5)
        #expect(t.failed == 0)
    }

    @Test func unfinishedTrialsRankLastSoAHighPercentileCanBeDidNotFinish() {
        var t = Trials(fault: "SIGKILL")
        for v in [10.0, 20, 30, 40, 50, 60, 70, 80] { t.record(v) }
        t.fail("timed out")
        t.fail("timed out")
        // 10 trials: median is index round(4.5) = 5 → 60 (not 45, the median of the eight that finished).
        #expect(t.median == 60)
        #expect(t.p90 == nil)
        #expect(t.count == 10)
        #expect(t.failed == 2)
    }

    @Test func aMajorityOfFailuresMakesTheMedianDidNotFinish() {
        var t = Trials(fault: "power cut")
        t.record(100)
        t.fail("did not settle")
        t.fail("timed out")
        #expect(t.median == nil)
        #expect(t.summary { "\($0) ms" }.contains("median did not finish"))
    }

    @Test func aBrokenMeasurementIsAFailureNotAValue() {
        var t = Trials(fault: "none")
        t.record(.nan)
        t.record(.infinity)
        #expect(t.values.isEmpty)
        #expect(t.failed == 2)
    }

    @Test func noTrialsHaveNoFigures() {
        let t = Trials(fault: "none")
        #expect(t.median == nil)
        #expect(t.summary { "\($0)" } == "no trials")
    }

    @Test func theSummaryCountsFailuresByReason() {
        var t = Trials(fault: "SIGKILL")
        t.record(1)
        t.fail("timed out")
        t.fail("did not settle")
        t.fail("timed out")
        let s = t.summary { "\(Int($0)) ms" }
        #expect(s.hasSuffix("(3 of 4 failed: timed out ×2, did not settle)"), "\(s)")
    }
}
