import Bounds
import Testing

/// The one table of limits (docs/limits.md) and the two helpers every entry point uses with it.
@Suite struct LimitsTests {
    @Test func aCounterMayFallOrRiseByAtMostTheJump() {
        #expect(Limits.isSaneJump(3, from: 10, limit: 5))
        #expect(Limits.isSaneJump(15, from: 10, limit: 5))
        #expect(!Limits.isSaneJump(16, from: 10, limit: 5))
        #expect(!Limits.isSaneJump(.max, from: 0, limit: Limits.maxTermJump))
        #expect(Limits.isSaneJump(.max, from: .max - 1, limit: 1))
    }

    @Test func aDoubleBecomesAnIntOnlyWhenItFits() {
        #expect(2.5.exactlyRoundedInt == 3)
        #expect((-2.5).exactlyRoundedInt == -3)
        #expect(1e30.exactlyRoundedInt == nil)
        #expect((-1e30).exactlyRoundedInt == nil)
        #expect(Double.nan.exactlyRoundedInt == nil)
        #expect(Double.infinity.exactlyRoundedInt == nil)
        #expect(9e18.exactlyRoundedInt == 9_000_000_000_000_000_000)
    }

    /// The bounds are chosen so that the planner's products of them stay inside Int64: a bounded
    /// demand over the smallest per_container, a service's most containers times its largest CPU.
    @Test func theLimitsKeepTheirProductsInsideInt64() {
        #expect(Limits.maxDemand / Limits.minPerContainer < 9.2e18)
        #expect(Double(Limits.maxContainersPerService) * Double(Limits.maxContainerCPUMillicores) < 9.2e18)
        #expect(Limits.maxNodeCPUMillicores >= Limits.maxContainerCPUMillicores)
        #expect(Limits.maxNodeMemoryBytes >= Limits.maxContainerMemoryBytes)
    }

    @Test func limitsAreWrittenAsPeopleWriteThem() {
        #expect(Limits.text(Limits.maxDemand) == "1e12")
        #expect(Limits.text(Limits.minPerContainer) == "1e-6")
        #expect(Limits.text(1024) == "1024")
        #expect(Limits.text(2.5e7) == "2.5e7")
    }
}
