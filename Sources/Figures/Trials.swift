/// One benchmark figure measured over repeated trials, keeping the trials that did not finish.
///
/// A benchmark that drops its failed trials reports the median of the runs that went well: ten
/// trials of which four timed out would print the median of six. Here every trial counts. The
/// unfinished ones rank after every finished one (as if they took forever), so a percentile that
/// lands on one of them is "did not finish", and the summary always says how many failed and why.
public struct Trials: Codable, Sendable, Equatable {
    /// What the benchmark injects or changes in each trial, in words ("SIGKILL of a non-leader
    /// agent on loopback"): a figure is only comparable with one taken under the same fault.
    public var fault: String
    /// The unit of the values ("ms", "s").
    public var unit: String
    /// Finished trials, in the order they ran.
    public private(set) var values: [Double] = []
    /// Why each unfinished trial failed, in the order they ran.
    public private(set) var failures: [String] = []

    public init(fault: String, unit: String = "ms") {
        self.fault = fault
        self.unit = unit
    }

    public mutating func record(_ value: Double) {
        // A NaN or infinite reading is a broken measurement, not a fast or slow trial.
        if value.isFinite { values.append(value) } else { failures.append("measured \(value)") }
    }

    public mutating func fail(_ reason: String) { failures.append(reason) }

    /// Every trial, finished or not.
    public var count: Int { values.count + failures.count }
    public var failed: Int { failures.count }

    /// The p-quantile (0...1) over all trials, the unfinished ranked last; `nil` when there are no
    /// trials or the quantile falls on an unfinished one. Same rank rule as the finished-only
    /// percentile the benchmarks used before: index round((n - 1) · p) of the sorted trials.
    public func percentile(_ p: Double) -> Double? {
        let n = count
        guard n > 0, p.isFinite else { return nil }
        let rank = Int((Double(n - 1) * Swift.min(Swift.max(p, 0), 1)).rounded())
        let sorted = values.sorted()
        return rank < sorted.count ? sorted[rank] : nil
    }

    public var median: Double? { percentile(0.5) }
    public var p90: Double? { percentile(0.9) }
    public var p99: Double? { percentile(0.99) }

    /// "812 ms median, 1,020 ms p90, p99 did not finish (2 of 20 failed: timed out ×2)".
    public func summary(_ format: (Double) -> String) -> String {
        guard count > 0 else { return "no trials" }
        func show(_ v: Double?, _ name: String) -> String { v.map { "\(format($0)) \(name)" } ?? "\(name) did not finish" }
        var text = [show(median, "median"), show(p90, "p90"), show(p99, "p99")].joined(separator: ", ")
        text += failed == 0 ? " (\(count) trials, none failed)" : " (\(failed) of \(count) failed: \(reasons))"
        return text
    }

    /// The failure reasons with their counts, most frequent first ("timed out ×3, did not settle").
    public var reasons: String {
        var counts: [String: Int] = [:]
        for f in failures { counts[f, default: 0] += 1 }
        return counts.sorted { ($1.value, $0.key) < ($0.value, $1.key) }
            .map { $0.value > 1 ? "\($0.key) ×\($0.value)" : $0.key }
            .joined(separator: ", ")
    }
}
