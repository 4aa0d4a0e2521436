@_exported import Determinism

/// Simulated time. Nothing in a simulation reads the wall clock: the driver advances this
/// clock to the next scheduled event, so a run of hours takes as long as its events take to
/// process, and the same seed always sees the same times.
public struct ManualClock: Sendable, Hashable {
    /// Time since the start of the simulation.
    public private(set) var now: Duration

    public init(start: Duration = .zero) { now = start }

    /// Moves time forward; time never runs backwards, so an earlier `instant` is ignored.
    public mutating func advance(to instant: Duration) {
        if instant > now { now = instant }
    }

    public mutating func advance(by delta: Duration) {
        precondition(delta >= .zero, "simulated time never runs backwards")
        now += delta
    }
}

extension Duration {
    /// Seconds as a Double, for reports.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) * 1e-18
    }

    /// A uniformly drawn duration in `range`, at nanosecond resolution.
    public static func random(in range: ClosedRange<Duration>, using rng: inout SeededGenerator) -> Duration {
        let lo = range.lowerBound.nanoseconds, hi = range.upperBound.nanoseconds
        if hi <= lo { return range.lowerBound }
        return .nanoseconds(Int64.random(in: lo...hi, using: &rng))
    }

    public var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
