import ArgumentParser
import Bounds
import Foundation

import struct Scaling.UtilizationSummary

/// `microscale report utilization [--window 1h] [--json]`: capacity reserved and used per priority
/// over the window, and what sharing the nodes between priority 1 and batch saves (docs/utilization.md).
public struct ReportCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Reports over the cluster's recent history.", subcommands: [UtilizationReport.self])
    public init() {}

    public struct UtilizationReport: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "utilization",
            abstract: "Capacity reserved and used per priority, and the nodes sharing them saves (Borg's cell compaction).")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Option(help: "How far back: 1s to 1h.") var window = "1h"
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                guard let d = Units.duration(window), d >= .seconds(1), d <= Limits.maxUtilizationWindow else {
                    throw CLIError("--window \"\(window)\" must be a duration from 1s to 1h", exitCode: 2)
                }
                let (summary, raw) = try await client.get(
                    "/v1/report/utilization?window=\(d.components.seconds)s",
                    as: UtilizationSummary.self)
                if json { return printJSON(raw) }
                print(Self.render(summary))
            }
        }

        package static func render(_ s: UtilizationSummary) -> String {
            func cores(_ c: Double) -> String { DemandText.format((c * 10).rounded() / 10) }
            func percent(_ share: Double) -> String { DemandText.format((share * 1000).rounded() / 10) + "%" }
            guard s.samples > 0 else { return "no utilization samples in the last \(s.windowSeconds) s (one is taken every second)" }
            let span = max(0, (s.to - s.from) / 1000)
            var rows = [["PRIORITY", "RESERVED", "PEAK", "RUNNING", "BUSY", "RESERVED%", "RUNNING%", "BUSY%"]]
            for l in s.levels {
                rows.append([
                    "\(l.priority)\(l.andBelow == true ? "+" : "")", cores(l.reservedCores), cores(l.reservedPeakCores),
                    cores(l.runningCores), cores(l.busyCores), percent(l.reservedShare), percent(l.runningShare), percent(l.busyShare),
                ])
            }
            rows.append([
                "all", cores(s.reservedShare * s.capacityCores), "", cores(s.runningShare * s.capacityCores),
                cores(s.busyShare * s.capacityCores), percent(s.reservedShare), percent(s.runningShare), percent(s.busyShare),
            ])
            return "utilization over \(span) s (\(s.samples) samples), capacity \(cores(s.capacityCores)) cores; means in cores\n\n"
                + formatTable(rows) + "\n\n" + s.compactionText
        }
    }
}
