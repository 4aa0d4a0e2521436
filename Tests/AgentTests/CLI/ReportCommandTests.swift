import Scaling
import Testing

@testable import Agent

/// `microscale report utilization`'s text, from the hand-checked history of UtilizationArithmetic.
@Suite struct ReportCommandTests {
    @Test func theReportPrintsPerPriorityMeansAndTheCompactionFigure() {
        let nodes = (0..<4).map { Node(name: "n\($0)", cpuMillis: 4000, memoryBytes: 8 << 30) }
        let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 1000, memoryBytes: 1 << 30, max: 100, perContainer: 10)
        let batch = ServiceSpec(name: "batch", priority: 2, cpuMillis: 1000, memoryBytes: 512 << 20, max: 100, fill: true)
        func second(_ t: Int64, _ planned: Int, _ running: Int, _ demand: Double, _ b: Int) -> UtilizationSample {
            var n = nodes
            n[0].running = ["web": running, "batch": b]
            return Utilization.sample(
                time: t * 1000, services: [web, batch], assignments: ["n0": ["web": planned, "batch": b]],
                nodes: n, demand: ["web": .known(demand)])
        }
        let summary = Utilization.summarize(
            [second(1, 4, 4, 35, 12), second(2, 10, 8, 95, 6), second(3, 2, 2, 5, 14)],
            window: .seconds(3600), now: 3000)
        let text = ReportCommand.UtilizationReport.render(summary)
        #expect(text.hasPrefix("utilization over 2 s (3 samples), capacity 16 cores"), "\(text)")
        #expect(text.contains("1         5.3       10    4.7      4.3   33.3%"), "\(text)")
        #expect(text.contains("sharing saves 3 nodes, 42.9%"), "\(text)")
        #expect(
            ReportCommand.UtilizationReport.render(Utilization.summarize([], window: .seconds(60), now: 0))
                == "no utilization samples in the last 60 s (one is taken every second)")
    }
}
