import Foundation
import Testing

@testable import Agent

@Suite struct AgentFlagsTests {
    /// What ArgumentParser makes of the same arguments: the reference `AgentFlags` must match.
    func argumentParser(_ arguments: [String]) throws -> AgentFlags {
        let command = try AgentCommand.parse(arguments)
        var flags = AgentFlags()
        flags.settings = command.flagSettings()
        flags.config = command.config
        return flags
    }

    static let wellFormed: [[String]] = [
        [],
        [
            "--name", "node-1", "--bind", "127.0.0.2:7480", "--http", "127.0.0.2:7481", "--data-dir", "/tmp/d",
            "--tls-ca", "ca.pem", "--tls-cert", "n.pem", "--tls-key", "n-key.pem", "--capacity-cpu", "2",
            "--capacity-memory", "4GiB", "--log-level", "warning", "--join", "127.0.0.1:7480",
        ],
        ["--server", "--bootstrap-expect", "3", "--join", "10.0.0.1:7480", "--join=10.0.0.2:7480", "--join", "[::1]:7480"],
        ["--name=a", "--advertise=10.1.1.1:7480", "--config", "agent.yaml", "--cluster", "prod", "--api-token", "s3cret"],
        ["--raft-election-timeout", "300ms", "--raft-heartbeat-interval=50ms", "--docker-socket", "/run/docker.sock"],
        ["--name", ""],
        ["--name", "a=b", "--cluster=x=y"],
        ["--node-label", "zone=a", "--node-label=disk=ssd"],
    ]

    @Test(arguments: wellFormed)
    func wellFormedArgumentsMeanWhatArgumentParserReadsFromThem(_ arguments: [String]) throws {
        let fast = try #require(AgentFlags.parse(arguments), "AgentFlags refused \(arguments)")
        #expect(fast == (try argumentParser(arguments)))
    }

    @Test func everySettingsKeyIsAnAgentFlagOfTheSameName() throws {
        for key in AgentSettings.keys.sorted() {
            let arguments = AgentSettings.booleanKeys.contains(key) ? ["--\(key)"] : ["--\(key)", "v"]
            let fast = try #require(AgentFlags.parse(arguments), "AgentFlags refused --\(key)")
            #expect(fast == (try argumentParser(arguments)), "--\(key)")
            #expect(fast.settings.values[key] != nil || fast.settings.lists[key] != nil, "--\(key) was dropped")
        }
    }

    @Test(arguments: [
        ["--help"], ["-h"], ["--name", "a", "--version"], ["--unknown", "x"], ["--name"], ["--name", "--bind", "a:1"],
        ["--name", "-x"], ["--bind="], ["--name", "a", "--name", "b"], ["--server", "--server"], ["--server=true"],
        ["node-1"], ["--", "--name", "a"], ["-n", "a"], ["--config", "a.yaml", "--config=b.yaml"],
    ])
    func anythingElseIsLeftToArgumentParserForItsMessage(_ arguments: [String]) {
        #expect(AgentFlags.parse(arguments) == nil)
    }

    /// Runs the built `microscale`; its exit status and what it printed (stdout and stderr).
    func microscale(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: RaftCrashTests.executable)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test(arguments: [
        (["agent", "--bogus", "x"], "--bogus"), (["agent", "--name"], "--name"),
        (["agent", "--server=true"], "--server"),
    ])
    func aFlagTheAgentCannotParseIsOneLineNamingItWithExitStatus2(_ arguments: [String], _ named: String) throws {
        let (status, output) = try microscale(arguments)
        #expect(status == 2)
        let lines = output.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains(named), "\(output)")
    }

    @Test func agentHelpIsArgumentParsersUsageUnderTheRootCommand() throws {
        let (status, output) = try microscale(["agent", "--help"])
        #expect(status == 0)
        #expect(output.contains("USAGE: microscale agent"), "\(output)")
    }
}
