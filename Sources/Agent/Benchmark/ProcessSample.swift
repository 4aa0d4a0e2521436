import Foundation

/// Resident memory and CPU time of a process, from /proc.
struct ProcessSample {
    var rssBytes: Double
    /// The anonymous part of the resident set (heap, stacks): what a leak grows. The rest is
    /// pages of the binary and libraries the process has touched, bounded by their size.
    var anonBytes: Double
    var cpuTicks: Double
    static func read(_ pid: Int32) -> ProcessSample? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func kb(_ field: String) -> Double? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }) else { return nil }
            return Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        guard let rss = kb("VmRSS:"), let anon = kb("RssAnon:"),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (proc(5)).
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return ProcessSample(rssBytes: rss * 1024, anonBytes: anon * 1024, cpuTicks: u + s)
    }
}
