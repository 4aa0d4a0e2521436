import Bounds
import Testing

/// The human units of flags, the agent configuration and the services file.
@Suite struct UnitsTests {
    @Test func durationsTakeMillisecondsSecondsMinutesAndHours() {
        #expect(Units.duration("250ms") == .milliseconds(250))
        #expect(Units.duration("1.5s") == .milliseconds(1500))
        #expect(Units.duration("5") == .seconds(5))
        #expect(Units.duration("2m") == .seconds(120))
        #expect(Units.duration("1h") == .seconds(3600))
    }

    /// fuzzing/corpus/agent-config/crash-duration-overflow: such a value trapped in Int64(_:).
    @Test(arguments: ["99999999999999999999h", "9300000000000000000ms", String(repeating: "6", count: 400) + "s", "1e3s", "soon", ""])
    func aDurationTooLongForMillisecondsOrNotANumberIsRefusedInsteadOfCrashing(_ text: String) {
        #expect(Units.duration(text) == nil)
    }

    @Test func theLongestDurationAcceptedStillFitsInMilliseconds() {
        #expect(Units.duration("9000000000000000000ms") == .milliseconds(9_000_000_000_000_000_000))
    }

    @Test(arguments: [String(repeating: "9", count: 400), "1e400", "99999999999tib"])
    func sizesAndCoresTooLargeForAnInt64AreRefused(_ text: String) {
        #expect(Units.bytes(text) == nil)
        #expect(Units.millicores(text) == nil)
    }
}
