/// Demand as people write it: whole numbers as such, one decimal from 10, two from 1, three below (69.1, not
/// 69.09833951060915; 340, not 340.0). Public so the CLI and the dashboard print the same text.
public enum DemandText {
    public static func format(_ d: Double) -> String {
        guard d.isFinite else { return d.isNaN ? "unknown" : (d > 0 ? "∞" : "−∞") }
        if d == d.rounded(), abs(d) < 1e15 { return String(Int(d)) }
        let a = abs(d)
        // About three significant digits; from 10 up, one decimal (a demand of 85.67 is 85.7).
        let decimals = a >= 10 ? 1 : a >= 1 ? 2 : a >= 0.01 ? 3 : 6
        var text = fixed(d, decimals: decimals)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }

    /// Fixed-point text without Foundation (Bounds imports nothing): round half away from zero.
    static func fixed(_ d: Double, decimals: Int) -> String {
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let scaled = (abs(d) * scale).rounded()
        guard scaled < 9e15 else { return String(d) }
        let n = Int(scaled)
        let whole = n / Int(scale)
        var frac = String(n % Int(scale))
        while frac.count < decimals { frac = "0" + frac }
        let sign = d < 0 && n != 0 ? "-" : ""
        return decimals == 0 ? "\(sign)\(whole)" : "\(sign)\(whole).\(frac)"
    }
}
