import ArgumentParser
import SimulationKit

@main
struct MicroscaleSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "microscale-sim",
        abstract: "Seeded whole-cluster simulation and the scale benchmarks.",
        subcommands: [MembershipCommand.self, RaftCommand.self, ClusterCommand.self, Bench.self, Utilization.self])
}
