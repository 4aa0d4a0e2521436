import ArgumentParser
import Bounds
import Consensus
import Foundation

/// Runs a CLI body, turning a `CLIError` into one line on stderr and its exit status (2 for a
/// refused value, 1 otherwise).
func reportingErrors(_ body: () async throws -> Void) async throws {
    do { try await body() } catch let e as CLIError {
        printError("error: \(e)")
        throw ExitCode(e.exitCode)
    }
}

func printJSON(_ data: Data) {
    print(String(decoding: data, as: UTF8.self))
}

/// `microscale leader`: who leads the Raft servers, where, in which term.
public struct LeaderCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "leader", abstract: "Show the Raft leader.")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let (leader, raw) = try await client.get("/v1/leader", as: LeaderView.self)
            if json { return printJSON(raw) }
            print(
                formatTable([
                    ["NAME", "ADDRESS", "TERM", "COMMIT", "VOTERS"],
                    [leader.name, leader.address, "\(leader.term)", "\(leader.commitIndex)", leader.voters.joined(separator: ",")],
                ]))
        }
    }
}

/// `microscale services apply FILE | ls | rm NAME`.
public struct ServicesCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "services", abstract: "Declare, list, remove and roll back services.",
        subcommands: [Apply.self, List.self, Remove.self, Rollback.self])
    public init() {}

    public struct Apply: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "apply", abstract: "Declare (add or replace) the services of a YAML file.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The services file (docs/contracts.md).") var file: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let text: String
                do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                    throw CLIError("cannot read \(file): \(error.localizedDescription)")
                }
                // Checked here first so that the error names this file and its line; the leader
                // checks again, since the API takes files from anyone.
                let specs: [String: ServiceSpec]
                do { specs = try ServicesFile.parse(text, source: file) } catch { throw CLIError("\(error)") }
                let raw = try await client.call("PUT", "/v1/services", body: Data(text.utf8))
                if json { return printJSON(raw) }
                print("applied \(specs.count) service\(specs.count == 1 ? "" : "s"): \(specs.keys.sorted().joined(separator: ", "))")
            }
        }
    }

    public struct List: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the declared services.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let (services, raw) = try await client.get("/v1/services", as: [String: ServiceSpec].self)
                if json { return printJSON(raw) }
                print(ServicesCommand.table(services))
            }
        }
    }

    public struct Remove: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove a service.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The service's name.") var name: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let raw = try await client.call("DELETE", "/v1/services/\(try pathSegment(name, "NAME"))")
                if json { return printJSON(raw) }
                print("removed \(name)")
            }
        }
    }

    public struct Rollback: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "rollback", abstract: "Go back to the service's previous spec (it rolls out like any change).")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The service's name.") var name: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let raw = try await client.call("POST", "/v1/services/\(try pathSegment(name, "NAME"))/rollback")
                if json { return printJSON(raw) }
                print("\(name) rolling back to its previous spec (microscale status shows the rollout)")
            }
        }
    }

    static func table(_ services: [String: ServiceSpec]) -> String {
        var rows = [["NAME", "PRIORITY", "CPU", "MEMORY", "MIN", "MAX", "FILL", "DEMAND", "IMAGE"]]
        for (name, s) in services.sorted(by: { ($0.value.priority, $0.key) < ($1.value.priority, $1.key) }) {
            rows.append([
                name, "\(s.priority)", formatCPU(s.cpu), formatBytes(Int64(s.memory)), "\(s.min)", "\(s.max)",
                s.fill ? "yes" : "no", s.demand?.source ?? "-", s.image,
            ])
        }
        return formatTable(rows)
    }
}

/// `microscale demand set SERVICE VALUE | get`.
public struct DemandCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "demand", abstract: "Set or read static demand values.", subcommands: [Set.self, Get.self])
    public init() {}

    public struct Set: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a service's demand.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The service.") var service: String
        @Argument(help: "The demand, a number >= 0.") var value: String
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                guard let v = Double(value), v.isFinite, v >= 0, v <= Limits.maxDemand else {
                    throw CLIError("VALUE \"\(value)\" is not a number from 0 to \(Limits.text(Limits.maxDemand))", exitCode: 2)
                }
                let body = try JSONEncoder().encode(["value": v])
                let raw = try await client.call("PUT", "/v1/demand/\(try pathSegment(service, "SERVICE"))", body: body)
                if json { return printJSON(raw) }
                print("demand of \(service) set to \(formatNumber(v))")
            }
        }
    }

    public struct Get: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "get", abstract: "Show the demand values set.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                let (demand, raw) = try await client.get("/v1/demand", as: [String: Double].self)
                if json { return printJSON(raw) }
                print(formatTable([["SERVICE", "DEMAND"]] + demand.sorted { $0.key < $1.key }.map { [$0.key, formatNumber($0.value)] }))
            }
        }
    }
}

/// `microscale node drain NAME | undrain NAME`.
public struct NodeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Move work off a node, and back; refuse a node's certificate.",
        subcommands: [Drain.self, Undrain.self, Deny.self, Undeny.self])
    public init() {}

    public struct Drain: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "drain", abstract: "Move all work off a node.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The node's name.") var name: String
        public init() {}
        public func run() async throws { try await NodeCommand.set(name, drained: true, client: client, json: json) }
    }

    public struct Undrain: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "undrain", abstract: "Let a node take work again.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The node's name.") var name: String
        public init() {}
        public func run() async throws { try await NodeCommand.set(name, drained: false, client: client, json: json) }
    }

    public struct Deny: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "deny", abstract: "Make every server refuse the node's certificate name and drop its connections.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The node's name (its certificate's).") var name: String
        public init() {}
        public func run() async throws { try await NodeCommand.deny(name, denied: true, client: client, json: json) }
    }

    public struct Undeny: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(commandName: "undeny", abstract: "Accept the node's certificate again.")
        @OptionGroup var client: HTTPClientOptions
        @Flag(help: "Print JSON.") var json = false
        @Argument(help: "The node's name.") var name: String
        public init() {}
        public func run() async throws { try await NodeCommand.deny(name, denied: false, client: client, json: json) }
    }

    static func deny(_ name: String, denied: Bool, client: HTTPClientOptions, json: Bool) async throws {
        try await reportingErrors {
            let raw = try await client.call("POST", "/v1/nodes/\(try pathSegment(name, "NAME"))/\(denied ? "deny" : "undeny")")
            if json { return printJSON(raw) }
            print(denied ? "\(name) denied: its certificate is refused and its connections dropped" : "\(name) accepted again")
        }
    }

    static func set(_ name: String, drained: Bool, client: HTTPClientOptions, json: Bool) async throws {
        try await reportingErrors {
            let raw = try await client.call("POST", "/v1/nodes/\(try pathSegment(name, "NAME"))/\(drained ? "drain" : "undrain")")
            if json { return printJSON(raw) }
            print("\(name) \(drained ? "drained" : "undrained")")
        }
    }
}

/// Names go into URL paths; refuse what would change the path rather than escape it.
func pathSegment(_ s: String, _ what: String) throws -> String {
    guard !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
        throw CLIError("\(what) \"\(s)\" may hold only letters, digits, '-', '_' and '.'")
    }
    return s
}

/// Demand as people write it (69.1, not 69.09833951060915): the same text as the planner's reasons.
func formatNumber(_ v: Double) -> String {
    DemandText.format(v)
}

/// `microscale status`: per service, demand, desired and running; per node, assigned and running.
public struct StatusCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "status", abstract: "Show services and nodes: wanted and running.")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let (status, raw) = try await client.get("/v1/status", as: StatusView.self)
            if json { return printJSON(raw) }
            print(Self.render(status))
        }
    }

    static func render(_ s: StatusView) -> String {
        // RUNNING is what serves (healthy, or without a check); STARTING and UNHEALTHY run too.
        var rows = [["SERVICE", "PRIORITY", "DEMAND", "DESIRED", "RUNNING", "STARTING", "UNHEALTHY", "UPDATE"]]
        var failures: [String] = []
        for v in s.services {
            rows.append([
                v.name, "\(v.priority)", v.demand.map(formatNumber) ?? "-", "\(v.desired)", "\(v.running)",
                "\(v.starting ?? 0)", "\(v.unhealthy ?? 0)", v.rollout ?? "-",
            ])
            for (node, reason) in (v.pullFailures ?? [:]).sorted(by: { $0.key < $1.key }) {
                failures.append("\(v.name) on \(node): image pull failing: \(reason)")
            }
        }
        var nodes = [["NODE", "STATUS", "ROLE", "ASSIGNED", "RUNNING"]]
        func counts(_ c: [String: Int]) -> String {
            c.isEmpty ? "-" : c.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        for n in s.nodes {
            nodes.append([n.name, n.status.rawValue + (n.drained ? " (drained)" : ""), n.role, counts(n.assigned), counts(n.running)])
        }
        return "leader \(s.leader), term \(s.term), plan \(s.planIndex)\n\n" + formatTable(rows)
            + (failures.isEmpty ? "" : "\n\n" + failures.joined(separator: "\n")) + "\n\n" + formatTable(nodes)
    }
}

/// `microscale decisions [--follow] [--limit N]`: the leader's decisions with their reasons.
public struct DecisionsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "decisions", abstract: "Show the leader's decisions and why.")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Keep printing new decisions as they are made.") var follow = false
    @Option(help: "How many recent decisions (1-1000).") var limit = 20
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            guard (1...1000).contains(limit) else { throw CLIError("--limit \(limit) must be from 1 to 1000") }
            var last: UInt64 = 0
            while true {
                let (list, raw) = try await client.get("/v1/decisions?limit=\(limit)", as: [Consensus.Decision].self)
                let fresh = list.filter { $0.index > last }
                if json && !follow { return printJSON(raw) }
                for d in fresh {
                    if json {
                        let e = JSONEncoder()
                        e.outputFormatting = [.sortedKeys]
                        print(String(decoding: try e.encode(d), as: UTF8.self))
                    } else {
                        let time = Date(timeIntervalSince1970: Double(d.timestampMilliseconds) / 1000)
                        print("\(ISO8601DateFormatter().string(from: time))  #\(d.index)  \(d.summary)")
                        for r in d.reasons { print("    \(r)") }
                    }
                }
                last = max(last, list.last?.index ?? 0)
                guard follow else { return }
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}
