import Bounds

/// Control: how a demand reading becomes a desired count (docs/demand.md, docs/scaling.md "Control").
///
/// The base rule is microscaling's: `per_container` is what one container absorbs (for a queue, the
/// target length per container), so the proportional count is ceil(demand / per_container). On top:
///
/// - a band (`scale_down_at`, microscaling's 0.7): the count goes down only once demand is at or below
///   that fraction of what the current count absorbs, so a queue that is being drained by the workers
///   it has does not take them away one by one and then call them back;
/// - an optional PD controller (`kp`, `kd`): `kd` looks ahead along the queue's trend (seconds), so a
///   growing queue gets its workers before it is long; the trend is filtered (Åström & Murray §10.5)
///   and acted on only beyond the noise seen in it, so a noisy source does not flap the count; `kp` (0 < kp ≤ 1) is the fraction of the way
///   down taken per decision, so scale-down is gradual. Scale-up is never slower than proportional;
///   nothing the controller does goes below the proportional count, so the controller cannot undershoot
///   into a shortage and call workers back (the oscillation the property tests look for);
/// - a maximum change per decision (`max_change`);
/// - the stabilization window (the planner's), which holds a lower count until it has been lower for
///   the whole window.
///
/// Pure: the controller's memory (`ControlState`) comes in with the current plan and goes out with the
/// new one; time is the planner's `now`.

/// A service's control settings, as the planner needs them (validated where they enter, `Limits`).
public struct Control: Sendable, Hashable {
    /// Scale down only once demand ≤ scaleDownAt × count × per_container; 1 is no band (0 to 1).
    public var scaleDownAt: Double
    /// At most this many containers added or removed per decision (nil: no bound).
    public var maxChange: Int?
    /// The PD controller's gains (nil: proportional only).
    public var gains: Gains?
    /// The demand is a queue's length (only the wording of the reasons changes).
    public var queue: Bool

    public init(scaleDownAt: Double = 1, maxChange: Int? = nil, gains: Gains? = nil, queue: Bool = false) {
        self.scaleDownAt = scaleDownAt
        self.maxChange = maxChange
        self.gains = gains
        self.queue = queue
    }

    /// Whatever it is handed, the core keeps the values in range (the shells refuse them on entry).
    var bounded: Control {
        var c = self
        c.scaleDownAt = scaleDownAt.isFinite ? Swift.min(Swift.max(scaleDownAt, 0), 1) : 1
        if let m = maxChange { c.maxChange = Swift.max(m, 1) }
        if let g = gains {
            c.gains =
                g.kp.isFinite && g.kd.isFinite && g.kp > 0
                ? Gains(kp: Swift.min(g.kp, 1), kd: Swift.min(Swift.max(g.kd, 0), Limits.maxControllerLookaheadSeconds)) : nil
        }
        return c
    }
}

/// PD gains. `kp` (0 < kp ≤ 1): the fraction of the gap to the target closed per decision when the
/// count goes down. `kd` (seconds, 0 to `Limits.maxControllerLookaheadSeconds`): how far ahead along the queue's trend the
/// controller looks: it acts on max(0, queue + kd × trend), the trend measured over at least
/// `Planner.trendSpan`.
public struct Gains: Sendable, Hashable {
    public var kp: Double
    public var kd: Double

    public init(kp: Double, kd: Double) {
        self.kp = kp
        self.kd = kd
    }
}

/// What the PD controller remembers between decisions: the reading the trend is measured from, when,
/// the filtered trend (per second), the last raw slope, and the noise seen in the slopes. Lives in
/// `Plan.control`, so it travels with the plan and starts afresh (trend 0, no noise seen) with a new
/// leader, whose `now` is its own process's.
public struct ControlState: Sendable, Hashable {
    public var reference: Double
    public var referenceAt: Duration
    /// The derivative after its low-pass filter (Åström & Murray, "Feedback Systems", §10.5).
    public var trend: Double
    /// The last unfiltered slope, (reading − reference) / elapsed.
    public var slope: Double
    /// How much the slope changes from one span to the next, peak-held and decaying: the noise the
    /// trend must rise above before the controller acts on it.
    public var noise: Double

    public init(reference: Double, referenceAt: Duration, trend: Double = 0, slope: Double = 0, noise: Double = 0) {
        self.reference = reference
        self.referenceAt = referenceAt
        self.trend = trend
        self.slope = slope
        self.noise = noise
    }

    /// The derivative filter's time constant is kd / N (Åström & Murray §10.5: N from 2 to 20 limits the
    /// derivative's gain on noise to kp × N); 10 is their usual middle.
    static let filterN: Double = 10
    /// The noise estimate is held at least this long (seconds): a slow drift of a noisy source must not
    /// look like a quiet one a few spans after its last jump.
    static let noiseMemory: Double = 10
    /// The trend is acted on only beyond this many times the noise (the deadband). The filtered slope of
    /// a bounded noise, white or a random walk, stays below twice the span-to-span change of its slope;
    /// the property tests check it (ControlProperties, "noise inside the band").
    static let deadband: Double = 2

    /// One measured span: `elapsed` seconds (> 0) since the reference, the reading now. The filter is the
    /// backward-difference form of §10.5, trend += h / (Tf + h) × (slope − trend), so a span longer than
    /// Tf (a gap of unknown readings, or a small kd) takes the new slope almost whole.
    mutating func measure(_ demand: Double, elapsed: Double, kd: Double, at now: Duration) {
        let raw = (demand - reference) / elapsed
        let tf = kd / Self.filterN
        let a = elapsed / (tf + elapsed)
        let decay = 1 - elapsed / (Swift.max(tf, Self.noiseMemory) + elapsed)
        let change = abs(raw - slope)
        // A slope of ±inf (a reading of 1e308 over a tiny span) must not poison the state with NaN.
        noise = change.isFinite ? Swift.max(change, noise * decay) : noise
        if raw.isFinite {
            trend += a * (raw - trend)
            slope = raw
        }
        reference = demand
        referenceAt = now
    }

    /// The trend the controller acts on: the filtered trend less the deadband, 0 inside it.
    var significantTrend: Double {
        let beyond = Swift.max(0, abs(trend) - Self.deadband * noise)
        return trend < 0 ? -beyond : beyond
    }
}

/// The outcome of the control rules for one service: the count, why, and the state to carry.
struct ControlOutcome {
    var count: Int
    var reason: String
    var scaleDownSince: Duration?
    var state: ControlState?
}

extension Planner {
    /// The control rules for one demand-driven service with a known, non-NaN demand `d`, whose last
    /// desired count is `before`. `spec` is already bounded (Work.bounded).
    func control(
        _ spec: ServiceSpec, demand d: Double, before: Int, state: ControlState?, since: Duration?, now: Duration
    ) -> ControlOutcome {
        let control = spec.control.bounded
        let demand = Swift.max(0, d)
        let per = spec.perContainer
        var out = ControlOutcome(count: before, reason: "", scaleDownSince: nil, state: nil)
        // 1. Proportional. Stays in Double until clamped to [min, max]: demand 1e30 or a per_container of
        //    1e-300 is "max", never a trap converting to Int.
        func count(_ x: Double) -> Int {
            guard x.isFinite || x == .infinity else { return spec.min }
            let c = x < Double(spec.max) ? Int(Swift.max(x, 0).rounded(.up)) : spec.max
            return Swift.min(Swift.max(c, spec.min), spec.max)
        }
        let ratio = per > 0 ? demand / per : .infinity
        var target = count(ratio)
        out.reason =
            control.queue
            ? "queue \(formatDemand(d)), target \(formatDemand(per)) per container → \(target)"
            : "demand \(formatDemand(d)) at \(formatDemand(per)) per container → \(target)"

        // 2. PD. The trend is measured over at least `trendSpan`, so a plan made for another reason a
        //    moment later (a member changed) reuses it rather than seeing a flat queue.
        if let g = control.gains {
            var s = state ?? ControlState(reference: demand, referenceAt: now)
            let elapsed = now - s.referenceAt
            if elapsed >= trendSpan {
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                s.measure(demand, elapsed: seconds, kd: g.kd, at: now)
            } else if elapsed < .zero {
                s = ControlState(reference: demand, referenceAt: now)  // another clock: start afresh
            }
            out.state = s
            // The derivative acts on the filtered trend, and only on what of it rises above the noise
            // (docs/scaling.md "Control"): the raw slope of a noisy source times kd raised the count on
            // every upward wiggle and the band took it back a few seconds later, over and over.
            let trend = s.significantTrend
            let ahead = Swift.max(0, demand + g.kd * trend)
            let aheadRatio = per > 0 ? ahead / per : .infinity
            let c = Double(before)
            let u = c + g.kp * (aheadRatio - c)
            // Up: at least proportional (and further when the queue is growing). Down: kp of the way,
            // never below proportional.
            let pd = u > c ? count(u.rounded(.up)) : count(u.rounded(.down))
            if pd > target {
                let shown = trend >= 0 ? "+\(formatDemand(trend))" : "−\(formatDemand(-trend))"
                let noise = s.noise > 0 ? ", noise \(formatDemand(s.noise))/s" : ""
                out.reason += "; PD kp \(formatDemand(g.kp)) kd \(formatDemand(g.kd))s (trend \(shown)/s\(noise)) → \(pd)"
                target = pd
            }
        }

        // 3. The band, only for a scale-down the demand asks for (a lower `max` applies at once).
        let ceiling = Swift.min(before, spec.max)
        if target < ceiling, control.scaleDownAt < 1 {
            let absorbs = Double(before) * per
            let limit = control.scaleDownAt * absorbs
            if demand > limit {
                out.reason += "; band: \(formatDemand(demand)) > \(formatDemand(control.scaleDownAt))×\(formatDemand(absorbs)) holds \(ceiling)"
                target = ceiling
            } else {
                out.reason += "; band: \(formatDemand(demand)) ≤ \(formatDemand(control.scaleDownAt))×\(formatDemand(absorbs))"
            }
        }

        // 4. The stabilization window: a lower count waits until it has been lower for the whole window.
        if target < ceiling {
            let since = since ?? now
            if now - since >= stabilizationWindow {
                out.reason += " (lower for \(stabilizationWindow))"
            } else {
                out.scaleDownSince = since
                target = ceiling
            }
        }

        // 5. At most `max_change` per decision; min and max still apply (an operator's change of them
        //    is not a demand-driven move).
        if let m = control.maxChange, abs(target - before) > m {
            let limited = Swift.min(Swift.max(target, before - m), before + m)
            let bounded = Swift.min(Swift.max(limited, spec.min), spec.max)
            if bounded != target {
                out.reason += "; max_change \(m): \(before) → \(bounded)"
                target = bounded
            }
        }
        out.count = target
        return out
    }
}

func formatDemand(_ d: Double) -> String {
    DemandText.format(d)
}
