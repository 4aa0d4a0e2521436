import Foundation

/// Resident memory and CPU time of a process, from /proc.
struct ProcessSample {
    var rssBytes: Double
    /// The anonymous part of the resident set (heap, stacks): what a leak grows. The rest is
    /// pages of the binary and libraries the process has touched, bounded by their size.
    var anonBytes: Double
    /// CPU time used so far, in seconds: the sum of its threads' run time from
    /// /proc/PID/task/*/schedstat (nanoseconds), else utime + stime from /proc/PID/stat. The
    /// latter counts in clock ticks (10 ms): an idle agent uses ~4 ticks in 10 s, so a tick more
    /// or less would move its figure by a quarter.
    var cpuSeconds: Double
    static func read(_ pid: Int32) -> ProcessSample? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func kb(_ field: String) -> Double? {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field) }) else { return nil }
            return Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        guard let rss = kb("VmRSS:"), let anon = kb("RssAnon:"),
            let cpu = threadRunTime(pid) ?? clockTicks(pid)
        else { return nil }
        return ProcessSample(rssBytes: rss * 1024, anonBytes: anon * 1024, cpuSeconds: cpu)
    }

    /// utime + stime, in seconds, counted in clock ticks.
    private static func clockTicks(_ pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (proc(5)).
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The run time of the process's live threads (a thread that has exited is not counted; the
    /// agents' threads live as long as the process).
    private static func threadRunTime(_ pid: Int32) -> Double? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var nanoseconds = 0.0
        for t in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/schedstat", encoding: .utf8),
                let first = text.split(separator: " ").first, let ns = Double(first)
            else { return nil }
            nanoseconds += ns
        }
        return nanoseconds / 1e9
    }
}
