import ArgumentParser
import Dispatch
import Foundation
import Logging

/// `microscale agent`: runs the daemon. Every flag has a config-file key of the same name.
public struct AgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run the Microscale agent on this host.")

    @Option(help: "This node's name (must match its certificate).") var name: String?
    @Option(help: "Address for agent-to-agent TLS traffic (ADDR:PORT).") var bind: String?
    @Option(help: "Address other agents reach this one at (default: --bind).") var advertise: String?
    @Option(help: "Address of the local HTTP API (default 127.0.0.1:7481).") var http: String?
    @Flag(help: "Run Raft: this agent is a server.") var server = false
    @Option(name: .customLong("bootstrap-expect"), help: "Servers to wait for before the first election.") var bootstrapExpect: String?
    @Option(help: "Address of an agent to join (repeatable).") var join: [String] = []
    @Option(name: .customLong("data-dir"), help: "Directory for this agent's state.") var dataDir: String?
    @Option(name: .customLong("tls-ca"), help: "Cluster CA certificate.") var tlsCA: String?
    @Option(name: .customLong("tls-cert"), help: "This node's certificate.") var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "This node's private key.") var tlsKey: String?
    @Option(name: .customLong("docker-socket"), help: "Docker Engine socket.") var dockerSocket: String?
    @Option(name: .customLong("registry-auth"), help: "Registry credentials for image pulls: a Docker config.json-format file.") var registryAuth:
        String?
    @Option(name: .customLong("capacity-cpu"), help: "CPU cores to offer (default: detected).") var capacityCPU: String?
    @Option(name: .customLong("capacity-memory"), help: "Memory to offer, e.g. 8GiB (default: detected).") var capacityMemory: String?
    @Option(help: "Cluster name; agents of another cluster are refused.") var cluster: String?
    @Option(name: .customLong("api-token"), help: "Token the HTTP API requires (needed beyond loopback).") var apiToken: String?
    @Option(name: .customLong("api-token-file"), help: "File holding the API token (mode 0600; instead of --api-token, which other users see in ps).")
    var apiTokenFile: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, warning, error.") var logLevel: String?
    @Option(name: .customLong("raft-election-timeout"), help: "Raft election timeout T (followers campaign after [T, 2T) of silence; default 300ms).")
    var raftElectionTimeout: String?
    @Option(name: .customLong("raft-heartbeat-interval"), help: "Raft leader heartbeat interval (default 50ms).") var raftHeartbeat: String?
    @Option(name: .customLong("max-members"), help: "Members this agent keeps at most (default 10000).") var maxMembers: String?
    @Option(
        name: .customLong("dead-server-cleanup"),
        help: "Remove a server dead this long from the Raft voters, if the rest keep a quorum (default 30s; off).") var deadServerCleanup: String?
    @Option(
        name: .customLong("server-stabilization-time"), help: "A new server becomes a voter after being healthy and caught up this long (default 5s)."
    ) var serverStabilizationTime: String?
    @Flag(name: .customLong("leave-on-terminate"), help: "On SIGTERM, leave the cluster (its work moves at once) instead of only stopping.")
    var leaveOnTerminate = false
    @Option(
        name: .customLong("dead-node-grace"),
        help:
            "How long the leader keeps the work of a node that announced a restart (SIGTERM without leaving) in place once it is dead (default 5s); a crashed node's work moves at once."
    ) var deadNodeGrace: String?
    @Option(name: .customLong("reserve-cpu"), help: "Cores kept back from the detected capacity (default 0.5).") var reserveCPU: String?
    @Option(name: .customLong("reserve-memory"), help: "Memory kept back from the detected capacity (default 512MiB).") var reserveMemory: String?
    @Option(name: .customLong("log-format"), help: "text or json (default text).") var logFormat: String?
    @Option(name: .customLong("node-label"), help: "A label of this node, key=value (repeatable; services' constraints and spread read them).")
    var nodeLabel: [String] = []
    @Option(
        name: .customLong("standby"),
        help: "Standby containers (created, not started) per priority-1 service on this node, started first by a demand step (default 2; 0 to 4)."
    ) var standby: String?
    @Option(
        name: .customLong("warm-standby-memory"),
        help:
            "Experimental, not yet reliable (docs/scheduling.md, \"Not done yet\"): memory for warm standbys (started, then paused), kept out of the capacity this node advertises; a demand step unpauses them (default 0: standbys stay created)."
    ) var warmStandbyMemory: String?
    @Option(help: "YAML file whose keys are these flags' names.") var config: String?

    public init() {}

    func flagSettings() -> AgentSettings {
        var s = AgentSettings()
        let pairs: [(String, String?)] = [
            ("name", name), ("bind", bind), ("advertise", advertise), ("http", http),
            ("bootstrap-expect", bootstrapExpect), ("data-dir", dataDir), ("tls-ca", tlsCA),
            ("tls-cert", tlsCert), ("tls-key", tlsKey), ("docker-socket", dockerSocket), ("registry-auth", registryAuth),
            ("capacity-cpu", capacityCPU), ("capacity-memory", capacityMemory), ("cluster", cluster),
            ("api-token", apiToken), ("api-token-file", apiTokenFile), ("log-level", logLevel),
            ("raft-election-timeout", raftElectionTimeout), ("raft-heartbeat-interval", raftHeartbeat),
            ("max-members", maxMembers), ("dead-server-cleanup", deadServerCleanup),
            ("server-stabilization-time", serverStabilizationTime),
            ("dead-node-grace", deadNodeGrace), ("reserve-cpu", reserveCPU),
            ("reserve-memory", reserveMemory), ("log-format", logFormat), ("standby", standby),
            ("warm-standby-memory", warmStandbyMemory),
        ]
        for (k, v) in pairs { if let v { s.set(k, v, origin: "--\(k)") } }
        if server { s.set("server", "true", origin: "--server") }
        if leaveOnTerminate { s.set("leave-on-terminate", "true", origin: "--leave-on-terminate") }
        for j in join { s.append("join", j, origin: "--join") }
        for l in nodeLabel { s.append("node-label", l, origin: "--node-label") }
        return s
    }

    /// The configuration from the file (if any) overridden by the flags.
    static func resolve(flags: AgentSettings, config: String?) throws -> AgentConfiguration {
        var settings = AgentSettings()
        if let config {
            let text: String
            do { text = try String(contentsOfFile: config, encoding: .utf8) } catch {
                throw ConfigurationError("--config: cannot read \(config): \(error.localizedDescription)")
            }
            settings = try AgentSettings.fromYAML(text, file: config)
        }
        return try settings.overridden(by: flags).resolve()
    }

    public func run() async throws {
        try await Self.run(flags: flagSettings(), config: config)
    }

    /// The daemon, from the flags' values and the config file's path: `run()` after
    /// ArgumentParser, or `MicroscaleCommand.run(_:)` after `AgentFlags`.
    static func run(flags: AgentSettings, config: String?) async throws {
        #if os(Linux)
            // glibc gives each thread that contends for the heap its own arena (up to 8 per core),
            // each with its own free lists and slack; the agent's few threads allocate little, so two
            // arenas serve them, and resident memory stays lower (MALLOC_ARENA_MAX, set from within).
            _ = glibcMallopt(-8 /* M_ARENA_MAX, malloc.h */, 2)
            // Blocks of 128 KiB and more (a Raft snapshot: ~450 KB of JSON, copied twice on its way to
            // SQLite) are mmapped, and unmapped when freed. By default glibc raises that threshold to
            // the largest block freed so far, so after the first snapshot they came from the heap; the
            // next one, a little larger, fit no hole and grew it. The hour-long soak showed +1.3 MiB at
            // every compaction, and malloc_stats on a server 9.2 MB held for 6.2 MB in use. Setting
            // the threshold also stops glibc moving it (and the trim threshold) after that.
            _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD, malloc.h */, 128 * 1024)
        #endif
        // Whatever the agent writes (the data directory, its files) is its user's only.
        umask(0o077)
        let runtime: AgentRuntime
        do {
            let c = try resolve(flags: flags, config: config)
            // Every logger of the process (the transport's and the reconciler's defaults too)
            // writes in the chosen format, at the chosen level, both changed by a reload.
            LogControl.shared.set(level: Logger.Level(rawValue: c.logLevel) ?? .info, format: c.logFormat)
            LoggingSystem.bootstrap { label in ReloadableLogHandler(label: label) }
            var logger = Logger(label: "microscale.agent")
            logger[metadataKey: "node"] = "\(c.name)"
            runtime = try AgentRuntime(configuration: c, logger: logger)
            try await runtime.start()
            #if os(Linux)
                releaseStartupPagesPeriodically(logger: logger)
            #endif
            // SIGHUP: the TLS files again, and the file's reloadable keys (flags still win).
            runtime.reloadOnHangup(configurationFile: config) { try resolve(flags: flags, config: config) }
        } catch let e as ConfigurationError {
            printError("error: \(e)")
            throw ExitCode(2)
        }
        // A signal, or `microscale leave` (which stops the agent itself).
        let signal = await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await waitForTerminationSignal() }
            group.addTask {
                await runtime.stopped()
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let signal else {
            if let reason = runtime.failStopReason {
                // A service manager restarts it; a disk still broken stops it again.
                printError("error: \(reason); the agent stopped (docs/consensus.md, \"A disk that fails\")")
                throw ExitCode(1)
            }
            return
        }
        // SIGTERM is a restart or an upgrade unless the operator said otherwise; SIGINT (Ctrl-C
        // on `microscale agent` in a terminal) leaves, as before.
        let leave = signal == SIGINT || runtime.configuration.leaveOnTerminate
        runtime.logger.info(
            leave ? "signal received: leaving the cluster" : "signal received: stopping without leaving (--leave-on-terminate to leave)")
        await runtime.stop(leave: leave)
    }
}

/// Suspends until SIGINT or SIGTERM; which one came.
@discardableResult
func waitForTerminationSignal() async -> Int32 {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
    let sources = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { continuation.yield(sig) }
        s.resume()
        return s
    }
    var received = SIGTERM
    for await s in stream {
        received = s
        break
    }
    sources.forEach { $0.cancel() }
    return received
}

#if os(Linux)
    /// Start-up's pages of the binary and libraries out of the resident set (ResidentMemory,
    /// docs/footprint.md): 10 s after start (joined, probing), 30 s (the mesh of connections has
    /// formed: each agent opens its connections over its first probe round, N·0.2 s, and a TLS
    /// handshake maps much of libcrypto), then every five minutes: a burst of work (an API
    /// request, a plan, a reload) maps more code, which an idle agent no longer runs.
    /// MICROSCALE_KEEP_STARTUP_PAGES=1 turns it off, to measure the difference.
    private func releaseStartupPagesPeriodically(logger: Logger) {
        guard ProcessInfo.processInfo.environment["MICROSCALE_KEEP_STARTUP_PAGES"] != "1" else { return }
        Task.detached(priority: .background) {
            var delays: [Duration] = [.seconds(10), .seconds(20)]
            while !Task.isCancelled {
                try? await Task.sleep(for: delays.isEmpty ? .seconds(300) : delays.removeFirst())
                let kib = ResidentMemory.releaseStartupPages()
                logger.debug("released start-up pages", metadata: ["KiB": "\(kib)"])
            }
        }
    }

    /// glibc's mallopt(3); Swift's Glibc module does not export malloc.h.
    @_silgen_name("mallopt")
    private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
