import ArgumentParser
import Consensus
import DockerEngine
import Foundation
import Logging
import NIOConcurrencyHelpers
import SecureTransport

/// `microscale dev`: a whole cluster on this machine for trying Microscale: a CA and certificates,
/// three server agents in this process on 127.0.0.1-3 (each a 2-core "host" on the same Docker
/// Engine, told apart by their containers' node label), the demo services, and one status line a
/// second. With no Docker Engine answering, it starts a dockerd of its own under --dir. Ctrl-C (or
/// --seconds) stops everything it started and removes its containers.
public struct DevCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(commandName: "dev", abstract: "Run a local three-agent cluster with the demo workload.")

    @Option(help: "Working directory (certificates, data, a dockerd if one is started).") var dir = ".microscale-dev"
    @Option(name: .customLong("docker-socket"), help: "Docker Engine to use (default: the standard socket if it answers, else a dockerd of our own).")
    var dockerSocket: String?
    @Option(help: "Services file to apply (default: the demo's web and batch).") var services: String?
    @Option(help: "Stop after this many seconds (default: until Ctrl-C).") var seconds: Int?
    public init() {}

    public static let demoServices = """
        services:
          web:
            image: microscale-demo:latest
            command: ["httpd", "-f", "-p", "8080"]
            ports: [ { container: 8080 } ]
            priority: 1
            cpu: 0.5
            memory: 64MiB
            min: 1
            max: 40
            demand: { source: random, per_container: 10, min: 10, max: 100, step: 10 }
            stop_timeout: 5s
          batch:
            image: microscale-demo:latest
            command: ["sleep", "1000000"]
            priority: 2
            cpu: 0.5
            memory: 32MiB
            max: 100
            fill: true
        """

    public func run() async throws {
        let root = URL(fileURLWithPath: dir).standardizedFileURL.path
        try? FileManager.default.removeItem(atPath: "\(root)/data")
        var dockerd: Process?
        let host: String
        if let dockerSocket {
            host = dockerSocket
        } else if (try? await DockerClient(host: "unix:///var/run/docker.sock").ping()) != nil {
            host = "unix:///var/run/docker.sock"
        } else {
            print("==> starting a dockerd of our own (\(root)/docker.sock)")
            try FileManager.default.createDirectory(atPath: "\(root)/docker", withIntermediateDirectories: true)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [
                "dockerd", "--data-root=\(root)/docker/data", "--exec-root=\(root)/docker/exec",
                "--pidfile=\(root)/docker/pid", "--host=unix://\(root)/docker.sock", "--storage-driver=vfs",
                "--iptables=false", "--ip-masq=false", "--bridge=none",
            ]
            var env = ProcessInfo.processInfo.environment
            env["PATH"] = (env["PATH"] ?? "/usr/bin:/bin") + ":/usr/local/sbin:/usr/sbin:/sbin"
            p.environment = env
            FileManager.default.createFile(atPath: "\(root)/dockerd.log", contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: "\(root)/dockerd.log")
            p.standardError = p.standardOutput
            try p.run()
            dockerd = p
            host = "unix://\(root)/docker.sock"
            var up = false
            for _ in 0..<600 where !up {
                up = (try? await DockerClient(host: host).ping()) != nil
                if !up { try await Task.sleep(for: .milliseconds(100)) }
            }
            guard up else { throw CLIError("dockerd did not start; see \(root)/dockerd.log") }
        }
        do {
            try await run(host: host, root: root)
        } catch {
            await stopDockerd(dockerd, host: host)
            throw error
        }
        await stopDockerd(dockerd, host: host)
    }

    func stopDockerd(_ p: Process?, host: String) async {
        guard let p, p.isRunning else { return }
        // The agents' bridge network (docs/docker.md, "Workloads") is a host interface (br-<id>)
        // that outlives the daemon: note its id now and delete the interface once dockerd is gone.
        let bridges = (try? await DockerClient(host: host).bridgeNetworkIDs()) ?? []
        p.terminate()
        p.waitUntilExit()
        for id in bridges {
            let ip = Process()
            ip.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            ip.arguments = ["ip", "link", "delete", "br-\(id.prefix(12))"]
            var env = ProcessInfo.processInfo.environment
            env["PATH"] = (env["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
            ip.environment = env
            ip.standardError = FileHandle.nullDevice
            try? ip.run()
            ip.waitUntilExit()
        }
    }

    func run(host: String, root: String) async throws {
        let docker = try DockerClient(host: host)
        if (try? await docker.inspectImage("microscale-demo:latest")) == nil {
            try importDemoImage(host: host, root: root)
        }

        if !FileManager.default.fileExists(atPath: "\(root)/ca/ca.pem") { try CertificateIssuer.createCA(in: "\(root)/ca") }
        let names = (1...3).map { "node-\($0)" }
        for n in names where !FileManager.default.fileExists(atPath: "\(root)/certs/\(n).pem") {
            try CertificateIssuer.createNodeCertificate(caDir: "\(root)/ca", node: n, server: true, in: "\(root)/certs")
        }
        var agents: [AgentRuntime] = []
        var logger = Logger(label: "microscale.dev")
        logger.logLevel = .warning
        defer {
            let started = agents
            Task { for a in started { await a.shutdown() } }
        }
        for (i, n) in names.enumerated() {
            var s = AgentSettings()
            for (k, v) in [
                ("name", n), ("bind", "127.0.0.\(i + 1):7480"), ("http", "127.0.0.\(i + 1):7481"),
                ("data-dir", "\(root)/data/\(n)"), ("tls-ca", "\(root)/ca/ca.pem"),
                ("tls-cert", "\(root)/certs/\(n).pem"), ("tls-key", "\(root)/certs/\(n)-key.pem"),
                ("server", "true"), ("bootstrap-expect", "3"), ("docker-socket", host),
                ("capacity-cpu", "2"), ("capacity-memory", "2GiB"),
            ] {
                s.set(k, v, origin: "dev")
            }
            if i > 0 { s.append("join", "127.0.0.1:7480", origin: "dev") }
            logger[metadataKey: "node"] = "\(n)"
            let a = try AgentRuntime(configuration: try s.resolve(), logger: logger)
            try await a.start()
            agents.append(a)
        }
        let first = agents[0]
        for _ in 0..<200 where await first.cluster(method: "GET", path: "/v1/leader", body: []).status != 200 {
            try await Task.sleep(for: .milliseconds(100))
        }
        let text: String
        if let services { text = try String(contentsOfFile: services, encoding: .utf8) } else { text = Self.demoServices }
        let applied = await first.cluster(method: "PUT", path: "/v1/services", body: Array(text.utf8))
        print("==> services: \(String(decoding: applied.body, as: UTF8.self))")
        print("==> 3 agents running; dashboard: http://127.0.0.1:7481/ui   CLI: microscale status (MICROSCALE_HTTP_ADDR=127.0.0.1:7481)")

        let signalled = NIOLockedValueBox(false)
        let stop = Task {
            await waitForTerminationSignal()
            signalled.withLockedValue { $0 = true }
        }
        let started = ContinuousClock.now
        while !signalled.withLockedValue({ $0 }) {
            if let seconds, ContinuousClock.now - started >= .seconds(seconds) { break }
            let r = await first.cluster(method: "GET", path: "/v1/status", body: [])
            if r.status == 200, let s = try? JSONDecoder().decode(StatusView.self, from: Data(r.body)) {
                let parts = s.services.map { v in
                    "\(v.name): demand \(v.demand.map(formatNumber) ?? "-") desired \(v.desired) running \(v.running)"
                }
                print("\(Self.clock())  leader \(s.leader)  " + parts.joined(separator: " | "))
            }
            try? await Task.sleep(for: .seconds(1))
        }
        stop.cancel()
        print("==> stopping")
        for a in agents { await a.shutdown() }
        agents = []
        for n in names {
            for c in (try? await docker.list(labels: ["\(MicroscaleLabel.node)=\(n)"])) ?? [] { try? await docker.remove(c.Id, force: true) }
        }
    }

    static func clock() -> String {
        let f = DateFormatter()
        f.dateFormat = "HH:mm:ss"
        return f.string(from: Date())
    }

    /// The demo image: busybox-static as /bin/busybox with its applets linked, by `docker import`
    /// (no registry is needed).
    func importDemoImage(host: String, root: String) throws {
        let script = """
            set -e; r="\(root)/rootfs"; rm -rf "$r"; mkdir -p "$r/bin"; cp "$(command -v busybox)" "$r/bin/busybox"
            for a in sh sleep httpd true false cat echo; do ln -sf busybox "$r/bin/$a"; done
            tar -C "$r" -c . | docker -H "\(host)" import - microscale-demo:latest >/dev/null
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw CLIError("could not make the demo image (needs busybox-static and the docker CLI)") }
    }
}
