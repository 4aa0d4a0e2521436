import Foundation

/// Parsing of the human units used in flags, the agent configuration and the services file.
public enum Units {
    /// `text` without the whitespace around it. By hand rather than with Foundation's
    /// `trimmingCharacters(in:)`: its first use costs an agent more start-up instructions
    /// (CharacterSet and its protocol-conformance lookups, ~1.2 M under callgrind) than parsing
    /// all of its flags, and in a membership send it cost more than the rest of the send.
    public static func trimmed<S: StringProtocol>(_ text: S) -> S.SubSequence {
        var t = text[...]
        while t.first?.isWhitespace == true { t.removeFirst() }
        while t.last?.isWhitespace == true { t.removeLast() }
        return t
    }

    /// Bytes from "64MiB", "1.5GiB", "512M", "1024", "2g" (binary multiples for Ki/Mi/Gi/Ti and
    /// for the Docker-style single letters k/m/g/t; decimal for kB/MB/GB/TB).
    public static func bytes(_ text: String) -> Int64? {
        let s = trimmed(text)
        guard !s.isEmpty else { return nil }
        let digits = s.prefix { $0.isNumber || $0 == "." }
        let suffix = trimmed(s.dropFirst(digits.count)).lowercased()
        guard let value = Double(digits), value >= 0 else { return nil }
        let multiplier: Double
        switch suffix {
        case "", "b": multiplier = 1
        case "k", "ki", "kib": multiplier = 1024
        case "m", "mi", "mib": multiplier = 1_048_576
        case "g", "gi", "gib": multiplier = 1_073_741_824
        case "t", "ti", "tib": multiplier = 1_099_511_627_776
        case "kb": multiplier = 1e3
        case "mb": multiplier = 1e6
        case "gb": multiplier = 1e9
        case "tb": multiplier = 1e12
        default: return nil
        }
        let bytes = value * multiplier
        guard bytes < 9.2e18 else { return nil }
        return Int64(bytes.rounded())
    }

    /// CPU in millicores from "0.5", "2", "500m".
    public static func millicores(_ text: String) -> Int64? {
        let s = trimmed(text)
        if s.hasSuffix("m"), let m = Int64(s.dropLast()), m >= 0 { return m }
        guard let cores = Double(s), cores >= 0, cores < 1e9 else { return nil }
        return Int64((cores * 1000).rounded())
    }

    /// A duration from "5s", "250ms", "1m", "1.5s", "2h".
    public static func duration(_ text: String) -> Duration? {
        let s = trimmed(text).lowercased()
        let digits = s.prefix { $0.isNumber || $0 == "." }
        let unit = s.dropFirst(digits.count)
        guard let v = Double(digits), v >= 0 else { return nil }
        let ms: Double
        switch unit {
        case "ms": ms = v
        case "s", "": ms = v * 1000
        case "m": ms = v * 60_000
        case "h": ms = v * 3_600_000
        default: return nil
        }
        // Int64(_:) traps on what it cannot hold: "99999999999999999999h" must be refused, not
        // crash the agent reading its configuration (found by fuzz-agent-config).
        guard ms.isFinite, ms < 9.2e18 else { return nil }
        return .milliseconds(Int64(ms.rounded()))
    }
}

extension Duration {
    /// The duration in (fractional) milliseconds, for figures and log lines.
    public var inMilliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
