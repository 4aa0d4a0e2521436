import DockerEngine
import Foundation

/// The Docker benchmark: the same work through this client and through the docker CLI, in the same
/// run, against the same daemon. It prints figures; it asserts nothing (tests do that).
public struct DockerBenchmark: Sendable {
    public struct Figures: Sendable, Codable {
        public var containers: Int
        public var clientCreateStartMs: Stats
        public var cliCreateStartMs: Stats
        public var clientStopRemoveMs: Stats
        public var cliStopRemoveMs: Stats
        public var clientScaleUpMs: Double
        public var cliScaleUpMs: Double
        public var clientScaleDownMs: Double
        public var cliScaleDownMs: Double
        public var parallelism: Int
    }
    public struct Stats: Sendable, Codable {
        public var mean: Double
        public var p50: Double
        public var max: Double
        init(_ xs: [Double]) {
            let s = xs.sorted()
            mean = s.isEmpty ? 0 : s.reduce(0, +) / Double(s.count)
            p50 = s.isEmpty ? 0 : s[s.count / 2]
            max = s.last ?? 0
        }
    }

    public var host: String
    public var image: String
    public var containers: Int
    public var parallelism: Int
    public var dockerCLI: String

    public init(host: String, image: String, containers: Int = 20, parallelism: Int = 8, dockerCLI: String = "docker") {
        self.host = host
        self.image = image
        self.containers = containers
        self.parallelism = parallelism
        self.dockerCLI = dockerCLI
    }

    public func run() async throws -> Figures {
        let client = try DockerClient(host: host)
        let node = "bench\(UInt32.random(in: 0...UInt32.max))"
        let spec = ContainerSpec(
            service: "bench", node: node, specHash: "b1", image: image, command: ["sleep", "600"], cpu: 0.05, memoryBytes: 16 << 20,
            stopTimeoutSeconds: 10)
        _ = try await client.negotiatedVersion()

        // One container at a time: per-container latency.
        var cs: [Double] = [], sr: [Double] = [], ids: [String] = []
        for _ in 0..<containers {
            let t = ContinuousClock().now
            let id = try await client.create(spec)
            try await client.start(id)
            cs.append(Self.ms(ContinuousClock().now - t))
            ids.append(id)
        }
        for id in ids {
            let t = ContinuousClock().now
            try await client.stop(id)
            try await client.remove(id)
            sr.append(Self.ms(ContinuousClock().now - t))
        }
        var ccs: [Double] = [], csr: [Double] = [], cids: [String] = []
        for _ in 0..<containers {
            let t = ContinuousClock().now
            let id = try cli(runArgs(node: node))
            ccs.append(Self.ms(ContinuousClock().now - t))
            cids.append(id)
        }
        for id in cids {
            let t = ContinuousClock().now
            _ = try cli(["stop", id])
            _ = try cli(["rm", "-v", id])
            csr.append(Self.ms(ContinuousClock().now - t))
        }

        // Scaling one service 0 → N → 0 through the reconciler, then the CLI with the same parallelism.
        let shell = ReconcilerShell(client: client, node: node, maxInFlight: parallelism)
        await shell.setDesired([spec], counts: ["bench": containers])
        var t = ContinuousClock().now
        try await shell.converge()
        let up = Self.ms(ContinuousClock().now - t)
        let running = try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"], all: false).count
        guard running == containers else { throw BenchmarkError("expected \(containers) running, found \(running)") }
        await shell.setDesired([spec], counts: ["bench": 0])
        t = ContinuousClock().now
        try await shell.converge()
        let down = Self.ms(ContinuousClock().now - t)

        t = ContinuousClock().now
        let cliIDs = try parallelCLI((0..<containers).map { _ in runArgs(node: node) })
        let cliUp = Self.ms(ContinuousClock().now - t)
        t = ContinuousClock().now
        _ = try parallelCLI(cliIDs.map { ["stop", $0] })
        _ = try parallelCLI(cliIDs.map { ["rm", "-v", $0] })
        let cliDown = Self.ms(ContinuousClock().now - t)

        return Figures(
            containers: containers, clientCreateStartMs: Stats(cs), cliCreateStartMs: Stats(ccs),
            clientStopRemoveMs: Stats(sr), cliStopRemoveMs: Stats(csr), clientScaleUpMs: up, cliScaleUpMs: cliUp,
            clientScaleDownMs: down, cliScaleDownMs: cliDown, parallelism: parallelism)
    }

    public static func report(_ f: Figures) -> String {
        func row(_ name: String, _ a: Stats, _ b: Stats) -> String {
            String(
                format: "%@ client mean %7.1f p50 %7.1f max %7.1f | docker CLI mean %7.1f p50 %7.1f max %7.1f ms", name as NSString, a.mean, a.p50,
                a.max, b.mean, b.p50, b.max)
        }
        return [
            "containers: \(f.containers), in flight while scaling: \(f.parallelism) for both (a sliding window, as xargs -P)",
            row("create+start (each)  ", f.clientCreateStartMs, f.cliCreateStartMs),
            row("stop+remove (each)   ", f.clientStopRemoveMs, f.cliStopRemoveMs),
            String(
                format: "scale 0→%d running          reconciler %7.1f ms | docker CLI %7.1f ms (target ≤ 3000)", f.containers, f.clientScaleUpMs,
                f.cliScaleUpMs),
            String(
                format: "scale %d→0                  reconciler %7.1f ms | docker CLI %7.1f ms", f.containers, f.clientScaleDownMs, f.cliScaleDownMs),
        ].joined(separator: "\n")
    }

    private func runArgs(node: String) -> [String] {
        [
            "run", "-d", "--init", "--cpus", "0.05", "-m", "16m", "--network", "none", "--stop-timeout", "10",
            "--label", "\(MicroscaleLabel.managed)=true", "--label", "\(MicroscaleLabel.service)=bench-cli",
            "--label", "\(MicroscaleLabel.node)=\(node)-cli", image, "sleep", "600",
        ]
    }

    private func cli(_ args: [String]) throws -> String {
        let p = try launch(args)
        let out = p.1.fileHandleForReading.readDataToEndOfFile()
        p.0.waitUntilExit()
        guard p.0.terminationStatus == 0 else { throw BenchmarkError("docker \(args.joined(separator: " ")) exited \(p.0.terminationStatus)") }
        return String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func launch(_ args: [String]) throws -> (Process, Pipe) {
        let (p, pipe) = try prepare(args)
        try p.runWithSignalsUnblocked()
        return (p, pipe)
    }

    private func prepare(_ args: [String]) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [dockerCLI, "-H", host] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        return (p, pipe)
    }

    /// Runs the commands with `parallelism` in flight, as `xargs -P` does: a new command starts the
    /// moment any one ends. The reconciler keeps a sliding window of that size, so the CLI gets
    /// the same; waiting for whole batches (as this did before) charged the CLI for the slowest
    /// command of every batch. Outputs come back in the commands' order.
    private func parallelCLI(_ commands: [[String]]) throws -> [String] {
        final class Outcomes: @unchecked Sendable {  // guarded by `lock`
            let lock = NSLock()
            var outputs: [String]
            var failure: String?
            init(_ n: Int) { outputs = Array(repeating: "", count: n) }
        }
        let outcomes = Outcomes(commands.count)
        let slots = DispatchSemaphore(value: Swift.max(1, parallelism))
        let group = DispatchGroup()
        for (i, command) in commands.enumerated() {
            slots.wait()
            if outcomes.lock.withLock({ outcomes.failure != nil }) {
                slots.signal()
                break
            }
            group.enter()
            let (process, pipe) = try prepare(command)
            let reader = pipe.fileHandleForReading
            process.terminationHandler = { p in
                // A container ID or a name: far below a pipe's buffer, so reading after exit is safe.
                let text = String(decoding: reader.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                outcomes.lock.withLock {
                    outcomes.outputs[i] = text
                    if p.terminationStatus != 0, outcomes.failure == nil {
                        outcomes.failure = "docker \(command.joined(separator: " ")) exited \(p.terminationStatus)"
                    }
                }
                slots.signal()
                group.leave()
            }
            do { try process.runWithSignalsUnblocked() } catch {
                slots.signal()
                group.leave()
                throw error
            }
        }
        group.wait()
        if let failure = outcomes.lock.withLock({ outcomes.failure }) { throw BenchmarkError(failure) }
        return outcomes.outputs
    }

    static func ms(_ d: Duration) -> Double {
        let (s, a) = d.components
        return Double(s) * 1000 + Double(a) / 1e15
    }
}

public struct BenchmarkError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
