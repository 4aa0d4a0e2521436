import ArgumentParser

/// The `microscale` command line. The executable only calls `main()`; every subcommand lives in
/// this library so tests can run it directly.
public struct MicroscaleCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "microscale",
        abstract: "Microscale: priority-aware container scheduling on the capacity you already have.",
        version: MicroscaleVersion.current,
        subcommands: [
            AgentCommand.self, MembersCommand.self, LeaderCommand.self, ServicesCommand.self,
            DemandCommand.self, NodeCommand.self, StatusCommand.self, DecisionsCommand.self, ReportCommand.self, EndpointsCommand.self,
            LBCommand.self, OperatorCommand.self, LeaveCommand.self, ForceLeaveCommand.self, DevCommand.self,
            TLSCommand.self, VersionCommand.self,
        ])

    public init() {}
}

public enum MicroscaleVersion {
    public static let current = "0.2.0"
}

extension MicroscaleCommand {
    /// The executable's entry point. `microscale agent` starts on every host, N at once in a
    /// mass join, so its start-up CPU counts N times: its arguments are read by `AgentFlags`
    /// instead of ArgumentParser's reflection over the whole command tree (together ~17% of an
    /// agent's start-up instructions, callgrind). What `AgentFlags` does not accept goes
    /// through ArgumentParser: its help as before, and a flag it cannot parse as every other
    /// bad agent configuration is reported (docs/contracts.md): one line, exit status 2.
    public static func run(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) async {
        guard arguments.first == "agent" else { return await main(arguments) }
        if let flags = AgentFlags.parse(Array(arguments.dropFirst())) {
            do { try await AgentCommand.run(flags: flags.settings, config: flags.config) } catch { exit(withError: error) }
            return
        }
        // Parsed once here only to tell a bad flag (one line, status 2) from help (as usual).
        do { _ = try parseAsRoot(arguments) } catch  where exitCode(for: error) != .success {
            printError("error: \(message(for: error))")
            exit(withError: ExitCode(2))
        } catch {}
        await main(arguments)
    }
}
