import ArgumentParser

/// The `microscale` command line. The executable only calls `main()`; every subcommand lives in
/// this library so tests can run it directly.
public struct MicroscaleCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "microscale",
        abstract: "Microscale: priority-aware container scheduling on the capacity you already have.",
        version: MicroscaleVersion.current,
        subcommands: [AgentCommand.self, MembersCommand.self, LeaderCommand.self, ServicesCommand.self,
                      DemandCommand.self, NodeCommand.self, StatusCommand.self, DecisionsCommand.self, DevCommand.self,
                      TLSCommand.self])

    public init() {}
}

public enum MicroscaleVersion {
    public static let current = "0.1.0"
}
