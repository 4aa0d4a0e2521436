import Agent
import ArgumentParser
import Foundation

/// `microscale-chaos SCENARIO [--hosts N] [--repeat K] [--json]`, run through `chaos/run`: builds a
/// cluster of network-namespace hosts, runs the scenarios on it, prints each result with its
/// timings, tears everything down (also on failure and on Ctrl-C), and exits 1 if any failed.
public struct ChaosCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "microscale-chaos",
        abstract: "Fault scenarios against real agents, each host in its own network namespace with its own dockerd (needs root).",
        discussion: """
            SCENARIO is one of: \(ChaosRunner.scenarios.joined(separator: ", ")); `upgrade` (with --previous-binary; left out
            of `all`); or `all` (every other scenario),
            `smoke` (host-kill, leader-kill, partition-one and agent-restart once each, for make test), `crash-writes`,
            `soak`, `bench` (the figures table from the real-process benchmarks; the cluster figures use
            the dockerd named by MICROSCALE_TEST_DOCKER_HOST, which chaos/run starts), or `clean` (remove
            what an interrupted run left behind).
            """)

    @Argument(help: "The scenario to run.") var scenario: String
    @Option(help: "Hosts in the cluster.") var hosts = 5
    @Option(help: "Of those, servers running Raft.") var servers = 3
    @Option(name: .customLong("repeat"), help: "Repetitions of each scenario.") var repetitions = 1
    @Option(help: "crash-writes: SIGKILLs of a server during the writes.") var kills = 100
    @Option(help: "soak: minutes to run.") var minutes = 10.0
    @Option(help: "bench: trials of the Raft and cluster figures.") var trials = 20
    @Option(help: "bench: agent counts of the membership figures, comma-separated.") var sizes = "10,25,50,100"
    @Option(help: "bench: members silenced in turn at each size.") var silentTrials = 10
    @Option(help: "bench: power cuts on the namespace hosts (0: none).") var powerCutTrials = 10
    @Option(
        name: .customLong("warm-standby-memory"),
        help: "The agents' --warm-standby-memory (default: theirs, 0); bench's power cuts use it too.")
    var warmStandbyMemory: String?
    @Option(help: "The microscale executable the agents run (default: next to this one).") var executable: String?
    @Option(
        name: .customLong("previous-binary"),
        help: "upgrade: the previous commit's microscale executable, which the agents run before they are upgraded to --executable.")
    var previousBinary: String?
    @Option(help: "Where the hosts' files live.") var root = "/tmp/microscale-chaos"
    @Flag(help: "Print JSON instead of lines.") var json = false
    @Flag(help: "Leave the cluster up after the run (for looking around; `clean` removes it).") var keep = false

    public init() {}

    public func validate() throws {
        guard
            scenario == "clean" || scenario == "bench" || scenario == "all" || scenario == "smoke" || scenario == "crash-writes"
                || scenario == "soak" || ChaosRunner.scenarios.contains(scenario) || ChaosRunner.separateScenarios.contains(scenario)
        else {
            throw ValidationError(
                "scenario: no such scenario \"\(scenario)\"; one of \(ChaosRunner.scenarios.joined(separator: ", ")), upgrade, all, smoke, crash-writes, soak, clean"
            )
        }
        guard hosts >= 3, hosts <= 50 else { throw ValidationError("--hosts: must be between 3 and 50") }
        guard servers >= 1, servers <= hosts else { throw ValidationError("--servers: must be between 1 and --hosts") }
        guard repetitions >= 1 else { throw ValidationError("--repeat: must be at least 1") }
    }

    public func run() async throws {
        guard getuid() == 0 else { throw CLIError("the chaos suite needs root (network namespaces, cgroups, dockerd)") }
        if scenario == "clean" {
            try ChaosCluster.clean(root: root)
            try? FileManager.default.removeItem(atPath: root)
            return
        }
        let exe = executable ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("microscale").path
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw CLIError("--executable: \(exe) is not an executable") }
        if scenario == "bench" {
            let env = ProcessInfo.processInfo.environment
            var figures = ChaosFigures(executable: exe, dockerHost: env["MICROSCALE_TEST_DOCKER_HOST"], image: env["MICROSCALE_TEST_IMAGE"])
            figures.trials = trials
            figures.silentTrials = silentTrials
            figures.sizes = try Self.sizes(sizes)
            var rows = try await figures.run(progress: { FileHandle.standardError.write(Data("  \($0)\n".utf8)) })
            if powerCutTrials > 0 {
                log("power cut, \(powerCutTrials) trials on \(hosts) hosts")
                rows += ChaosFigures.powerCutRows(
                    try await repeatScenario("power-cut", times: powerCutTrials, executable: exe, warmStandbyMemory: warmStandbyMemory),
                    hosts: hosts, standbys: warmStandbyMemory.map { "--warm-standby-memory \($0)" } ?? "standbys created, not warm (the default)")
            }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(rows), as: UTF8.self))
            } else {
                print(ChaosFigures.table(rows), terminator: "")
            }
            return
        }
        var options = ChaosCluster.Options(executable: exe)
        options.hosts = hosts
        options.servers = servers
        options.root = root
        options.warmStandbyMemory = warmStandbyMemory
        if let previousBinary {
            guard FileManager.default.isExecutableFile(atPath: previousBinary) else {
                throw CLIError("--previous-binary: \(previousBinary) is not an executable")
            }
            options.previousExecutable = previousBinary
        } else if scenario == "upgrade" {
            throw CLIError("upgrade: --previous-binary PATH is needed (chaos/run upgrade builds the previous commit's binary)")
        }
        let cluster = try ChaosCluster(options: options)
        let interrupted = ChaosInterrupt.install(root: root)
        defer { interrupted.cancel() }

        var results: [ChaosResult] = []
        var failure: Error?
        do {
            log("setting up \(hosts) hosts (\(servers) servers) under \(root)")
            try await cluster.up()
            let runner = ChaosRunner(cluster: cluster)
            try await runner.prepare()
            let names: [String] =
                switch scenario {
                case "all": ChaosRunner.scenarios
                case "smoke": ["host-kill", "leader-kill", "partition-one", "agent-restart"]
                default: [scenario]
                }
            for name in names {
                for k in 1...repetitions {
                    let r: ChaosResult =
                        switch name {
                        case "crash-writes": await runner.crashWrites(kills: kills)
                        case "soak": await runner.soak(minutes: minutes)
                        default: await runner.run(name, repetition: k)
                        }
                    results.append(r)
                    // Lines go to stdout, or to stderr as progress when stdout carries the JSON.
                    (json ? FileHandle.standardError : FileHandle.standardOutput).write(Data((Self.line(r) + "\n").utf8))
                }
            }
        } catch {
            failure = error
        }
        if !keep { await cluster.teardown() }
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(results), as: UTF8.self))
        } else if !results.isEmpty {
            print(Self.summary(results))
        }
        if let failure { throw CLIError("chaos: \(failure)") }
        if results.contains(where: { !$0.passed }) { throw ExitCode(1) }
    }

    /// One scenario repeated on a cluster of `hosts` namespace hosts set up for it and removed after.
    func repeatScenario(_ name: String, times: Int, executable: String, warmStandbyMemory: String?) async throws -> [ChaosResult] {
        var options = ChaosCluster.Options(executable: executable)
        options.warmStandbyMemory = warmStandbyMemory
        options.hosts = hosts
        options.servers = servers
        options.root = root
        let cluster = try ChaosCluster(options: options)
        let interrupted = ChaosInterrupt.install(root: root)
        defer { interrupted.cancel() }
        var results: [ChaosResult] = []
        do {
            try await cluster.up()
            let runner = ChaosRunner(cluster: cluster)
            try await runner.prepare()
            for k in 1...times {
                let r = await runner.run(name, repetition: k)
                FileHandle.standardError.write(Data(("  " + Self.line(r) + "\n").utf8))
                results.append(r)
            }
        } catch {
            await cluster.teardown()
            throw error
        }
        await cluster.teardown()
        return results
    }

    static func sizes(_ text: String) throws -> [Int] {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.count <= 8, parts.allSatisfy({ ($0 ?? 0) >= 3 && ($0 ?? 0) <= 250 }) else {
            throw ValidationError("--sizes: comma-separated agent counts, each 3-250 (at most 8)")
        }
        return parts.compactMap { $0 }
    }

    func log(_ s: String) {
        FileHandle.standardError.write(Data("chaos: \(s)\n".utf8))
    }

    static func line(_ r: ChaosResult) -> String {
        let times = r.timings.sorted { $0.value < $1.value }.map { "\($0.key) \(format($0.value))" }.joined(separator: ", ")
        var s = "\(r.passed ? "PASS" : "FAIL") \(r.scenario) #\(r.repetition): \(times)"
        if !r.notes.isEmpty { s += "  (\(r.notes.joined(separator: "; ")))" }
        for p in r.problems { s += "\n    - \(p)" }
        return s
    }

    static func format(_ ms: Double) -> String { ms < 10_000 ? String(format: "%.0f ms", ms) : String(format: "%.1f s", ms / 1000) }

    /// Per scenario: passes, and the median of each timing.
    static func summary(_ results: [ChaosResult]) -> String {
        var out = "==> \(results.filter(\.passed).count)/\(results.count) passed"
        var order: [String] = []
        for r in results where !order.contains(r.scenario) { order.append(r.scenario) }
        for name in order {
            let rs = results.filter { $0.scenario == name }
            var keys: [String] = []
            for r in rs { for k in r.timings.sorted(by: { $0.value < $1.value }).map(\.key) where !keys.contains(k) { keys.append(k) } }
            let medians = keys.compactMap { k -> String? in
                let v = rs.compactMap { $0.timings[k] }.sorted()
                guard !v.isEmpty else { return nil }
                return "\(k) \(format(v[v.count / 2]))"
            }
            out += "\n    \(name): \(rs.filter(\.passed).count)/\(rs.count) passed; median \(medians.joined(separator: ", "))"
        }
        return out
    }
}

/// On SIGINT or SIGTERM: remove everything the run made, then exit (a scenario never leaves hosts behind).
enum ChaosInterrupt {
    static func install(root: String) -> DispatchSourceGroup {
        var sources: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                FileHandle.standardError.write(Data("chaos: interrupted; cleaning up\n".utf8))
                try? ChaosCluster.clean(root: root)
                try? FileManager.default.removeItem(atPath: root)
                exit(130)
            }
            s.resume()
            sources.append(s)
        }
        return DispatchSourceGroup(sources)
    }
}

final class DispatchSourceGroup: Sendable {
    nonisolated(unsafe) let sources: [DispatchSourceSignal]
    init(_ s: [DispatchSourceSignal]) { sources = s }
    func cancel() { for s in sources { s.cancel() } }
}
