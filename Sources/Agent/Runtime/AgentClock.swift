import Foundation

/// The agent's one clock, made by the composition root (`AgentRuntime`) and handed to the shells,
/// which pass its readings to the pure control plane as `now` (docs/ARCHITECTURE.md, "Time").
/// Two readings: monotonic time since the clock's epoch (what rounds, graces and windows are
/// measured in) and the wall clock in milliseconds since 1970 (what the decision log and plans'
/// decision times carry, compared across nodes). A simulation or a test injects its own.
public struct AgentClock: Sendable {
    private let monotonic: @Sendable () -> Duration
    private let wall: @Sendable () -> Int64

    public init(monotonic: @escaping @Sendable () -> Duration, wallMilliseconds: @escaping @Sendable () -> Int64) {
        self.monotonic = monotonic
        self.wall = wallMilliseconds
    }

    /// The host's clocks, monotonic time counted from now.
    public static func system() -> AgentClock {
        let epoch = ContinuousClock.now
        return AgentClock(
            monotonic: { ContinuousClock.now - epoch },
            wallMilliseconds: { Int64(Date().timeIntervalSince1970 * 1000) })
    }

    /// Monotonic time since the clock's epoch.
    public var now: Duration { monotonic() }
    /// The wall clock, milliseconds since 1970.
    public var wallMilliseconds: Int64 { wall() }
}
