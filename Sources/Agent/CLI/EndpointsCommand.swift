import ArgumentParser
import Bounds
import Foundation

/// `microscale endpoints NAME [--watch] [--json]`: where the service's serving containers can be
/// reached (issue 17 item 5, docs/endpoints.md).
public struct EndpointsCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "endpoints",
        abstract: "Show the addresses of a service's healthy containers (host and published port).",
        discussion: "With --watch, prints them again at every change (a blocking query: the agent answers as soon as gossip brings the change).")
    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON (with --watch, one object per line).") var json = false
    @Flag(help: "Keep printing, once per change, until interrupted.") var watch = false
    @Argument(help: "The service.") var service: String
    public init() {}

    public func run() async throws {
        try await reportingErrors {
            var index: UInt64? = nil
            while true {
                let (view, raw) = try await EndpointsFollower.fetch(client, service: service, after: index, wait: .seconds(60))
                if json {
                    printJSON(raw)
                } else {
                    if index != nil { print("") }
                    print(Self.table(view))
                }
                flushOutput()
                if !watch { return }
                // An index that went backwards means the agent restarted: start over (Consul's rule).
                index = (index.map { view.index < $0 } ?? false) ? nil : view.index
            }
        }
    }

    static func table(_ v: EndpointsView) -> String {
        if v.endpoints.isEmpty { return "no healthy endpoints for \(v.service) (index \(v.index))" }
        var rows = [["NODE", "ADDRESS", "CONTAINER PORT"]]
        for e in v.endpoints { rows.append([e.node, e.address, "\(e.containerPort)"]) }
        return formatTable(rows)
    }
}

/// Lines reach a pipe (a log, a supervisor) as they are printed, not when a buffer fills.
/// (fflush(NULL) flushes every output stream; naming `stdout`, a C global, is not concurrency-safe.)
func flushOutput() {
    fflush(nil)
}

/// Its values are strings and flags, copied with it; ArgumentParser's property wrappers only
/// keep them from being inferred Sendable. The load balancer's loop carries it into its task.
extension HTTPClientOptions: @unchecked Sendable {}

/// Reads the endpoints API, blocking when given the index of the answer already held.
public enum EndpointsFollower {
    public static func fetch(_ client: HTTPClientOptions, service: String, after: UInt64?, wait: Duration)
        async throws -> (EndpointsView, Data)
    {
        guard let name = service.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) else {
            throw CLIError("service name \(service.prefix(64)) cannot be sent", exitCode: 2)
        }
        var path = "/v1/services/\(name)/endpoints"
        if let after {
            let ms = wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000
            path += "?index=\(after)&wait=\(max(1, ms))ms"
        }
        // The agent answers at the end of the wait at the latest; the connection gets 10 s more.
        let data = try await client.call("GET", path, timeout: wait + .seconds(10))
        do { return (try JSONDecoder().decode(EndpointsView.self, from: data), data) } catch {
            throw CLIError("the agent at \(client.baseURL) sent an unexpected answer: \(error)")
        }
    }
}

/// `microscale lb haproxy`: keeps an HAProxy backend's servers equal to a service's endpoints.
public struct LBCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lb", abstract: "Drive a load balancer from a service's endpoints.", subcommands: [HAProxy.self])
    public init() {}

    public struct HAProxy: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "haproxy",
            abstract: "Keep an HAProxy backend's servers equal to a service's healthy endpoints, over HAProxy's runtime API.",
            discussion: """
                The backend declares a pool of servers, started in maintenance, for example
                  backend web
                    server-template web 1-32 127.0.0.1:9 disabled
                and HAProxy an admin socket ('stats socket /run/haproxy/admin.sock level admin'). Each healthy
                endpoint gets a server (set server ... addr/port, state ready); the others are put in
                maintenance. A change reaches HAProxy as soon as the agent sees it (a blocking query).
                See docs/endpoints.md.
                """)
        @OptionGroup var client: HTTPClientOptions
        @Option(help: "The service whose endpoints HAProxy routes to.") var service: String
        @Option(help: "HAProxy's admin socket (stats socket ... level admin).") var socket: String
        @Option(help: "The HAProxy backend holding the server pool (default: the service's name).") var backend: String?
        @Option(name: .customLong("container-port"), help: "Which container port to route to, when the service publishes several.")
        var containerPort: Int?
        @Option(help: "Longest blocking query, after which HAProxy's state is checked again anyway (a restarted HAProxy is repopulated).")
        var resync: String = "10s"
        public init() {}

        public func run() async throws {
            try await reportingErrors {
                guard let every = Units.duration(resync), every >= .milliseconds(100), every <= Limits.maxBlockingWait else {
                    throw CLIError("--resync: \(resync.prefix(40)) is not a duration from 100ms to \(Limits.maxBlockingWait)", exitCode: 2)
                }
                if let p = containerPort, !(1...65535).contains(p) { throw CLIError("--container-port: \(p) is not a port (1-65535)", exitCode: 2) }
                let driver = HAProxyDriver(socket: HAProxySocket(path: socket), backend: backend ?? service)
                try await HAProxyFollower(
                    client: client, service: service, containerPort: containerPort, driver: driver,
                    resync: every,
                    say: {
                        print($0)
                        flushOutput()
                    }
                ).run()
            }
        }
    }
}

/// The loop behind `microscale lb haproxy`: a blocking query on the endpoints, then HAProxy made
/// equal to the answer; again at once on the next change. Failures (agent or HAProxy away) are
/// said once each and retried every second.
public struct HAProxyFollower: Sendable {
    public var client: HTTPClientOptions
    public var service: String
    public var containerPort: Int?
    public var driver: HAProxyDriver
    public var resync: Duration
    public var say: @Sendable (String) -> Void

    public init(
        client: HTTPClientOptions, service: String, containerPort: Int?, driver: HAProxyDriver,
        resync: Duration, say: @escaping @Sendable (String) -> Void
    ) {
        self.client = client
        self.service = service
        self.containerPort = containerPort
        self.driver = driver
        self.resync = resync
        self.say = say
    }

    /// The endpoints HAProxy should route to: those of `containerPort`, or of the service's only
    /// published container port.
    static func targets(_ v: EndpointsView, containerPort: Int?) -> Result<Set<HAProxyPlan.Target>, CLIError> {
        let ports = Set(v.endpoints.map(\.containerPort))
        let port: Int
        if let containerPort {
            port = containerPort
        } else if ports.count <= 1 {
            port = ports.first ?? 0
        } else {
            return .failure(
                CLIError(
                    "\(v.service) publishes container ports \(ports.sorted().map(String.init).joined(separator: ", ")); choose one with --container-port",
                    exitCode: 2))
        }
        return .success(Set(v.endpoints.filter { $0.containerPort == port }.map { HAProxyPlan.Target(host: $0.host, port: $0.port) }))
    }

    public func run() async throws {
        var index: UInt64? = nil
        var lastProblem: String? = nil
        func problem(_ text: String) {
            if text != lastProblem { say("lb: \(text); retrying every second") }
            lastProblem = text
        }
        while !Task.isCancelled {
            let view: EndpointsView
            do { view = try await EndpointsFollower.fetch(client, service: service, after: index, wait: resync).0 } catch {
                problem("\(error)")
                index = nil
                try await Task.sleep(for: .seconds(1))
                continue
            }
            let targets: Set<HAProxyPlan.Target>
            switch Self.targets(view, containerPort: containerPort) {
            case .success(let t): targets = t
            case .failure(let e): throw e
            }
            do {
                let plan = try driver.sync(targets)
                if lastProblem != nil { say("lb: working again") }
                lastProblem = nil
                if !plan.added.isEmpty || !plan.removed.isEmpty {
                    say(
                        "lb: \(driver.backend): \(targets.count) server\(targets.count == 1 ? "" : "s") ready"
                            + (plan.added.isEmpty ? "" : "; added \(plan.added.map(\.description).joined(separator: " "))")
                            + (plan.removed.isEmpty ? "" : "; removed \(plan.removed.map(\.description).joined(separator: " "))"))
                }
                if !plan.unplaced.isEmpty {
                    say(
                        "lb: \(driver.backend) has no free server for \(plan.unplaced.count) endpoint\(plan.unplaced.count == 1 ? "" : "s"); make its server-template larger"
                    )
                }
            } catch {
                problem("\(error)")
                index = nil
                try await Task.sleep(for: .seconds(1))
                continue
            }
            index = (index.map { view.index < $0 } ?? false) ? nil : view.index
        }
    }
}
