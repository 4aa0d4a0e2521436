import Agent
import Bounds
import Demand
import DockerEngine
import Figures
import Foundation
import Scaling
import SecureTransport
import Yams

/// Issue 18 item 4, microscaling's argument measured with real processes: a redis-server, three server
/// agent processes (2-core "hosts" on one real dockerd) running cluster-configs/queue-worker (workers
/// that pop jobs from a Redis list, batch filling the rest). A burst of `jobs` jobs lands in the list;
/// measured: the time until every job is done (and until the list is empty), the workers' reserved
/// capacity over the period, and how much of it did work. Then the same workers at a fixed count with
/// the same mean capacity (the microscaled trials' median mean, rounded): static provisioning.
///
/// Load: one burst per trial, `jobs` jobs of `jobSeconds` each, trials `period` seconds apart. Fault:
/// none. Figures, not assertions: `microscale-bench drain`.
public struct DrainBenchmark: Sendable {
    public struct Trial: Codable, Sendable {
        /// "microscaled" or "static".
        public var mode: String
        /// Seconds from the burst until every job was done (nil: failed).
        public var drainSeconds: Double?
        /// Seconds from the burst until the list was empty (the last job taken).
        public var emptySeconds: Double?
        /// Seconds from the burst until the committed count was at its peak.
        public var peakAfterSeconds: Double?
        /// Over the trial (the period, or until drained when that is longer), in containers.
        public var meanReservedWorkers: Double
        public var peakReservedWorkers: Int
        public var meanRunningWorkers: Double
        /// The work done (jobs × job seconds) over the worker capacity reserved (worker-seconds).
        public var workerUtilization: Double
        public var seconds: Double
        public var failure: String?
    }

    /// A phase's trials. `drain` and `listEmpty` keep the failed trials (`Trials`: a median that lands
    /// on one reads "did not finish"); the capacity figures are medians over the trials that drained.
    public struct Phase: Codable, Sendable {
        public var trials: [Trial]
        public var drain: Trials
        public var listEmpty: Trials
        public var medianMeanReservedWorkers: Double?
        public var medianWorkerUtilization: Double?
        /// The agent's own report over the phase (`GET /v1/report/utilization`), all priorities.
        public var utilization: UtilizationSummary?
    }

    public struct Report: Codable, Sendable {
        public var load: String
        public var fault: String
        public var jobs: Int
        public var jobSeconds: Double
        public var periodSeconds: Double
        public var perContainer: Double
        public var maxWorkers: Int
        public var microscaled: Phase
        /// The fixed worker count of the static phase.
        public var staticWorkers: Int
        public var fixed: Phase
    }

    public var executable: String
    public var workDirectory: String
    public var dockerHost: String
    public var image: String
    /// The example's services file (its redis port and image are replaced).
    public var servicesFile: String
    public var redisServer = "redis-server"
    public var trials = 3
    public var jobs = 300
    public var period: Double = 60
    /// The job length the workers sleep (JOB_SECONDS in the example).
    public var jobSeconds: Double = 0.5
    /// Run only the microscaled phase (the 10-minute utilization run).
    public var microscaledOnly = false

    public init(executable: String, workDirectory: String, dockerHost: String, image: String, servicesFile: String) {
        self.executable = executable
        self.workDirectory = workDirectory
        self.dockerHost = dockerHost
        self.image = image
        self.servicesFile = servicesFile
    }

    /// The example with this run's redis port, image and job length; `fixed` replaces the worker's
    /// demand with a fixed count.
    static func services(_ text: String, redisPort: Int, image: String, jobSeconds: Double, fixed: Int?) throws -> (
        yaml: String, perContainer: Double, max: Int
    ) {
        guard var root = try Yams.load(yaml: text) as? [String: Any], var services = root["services"] as? [String: Any],
            var worker = services["worker"] as? [String: Any], var env = worker["env"] as? [String: Any],
            var demand = worker["demand"] as? [String: Any]
        else {
            throw CLIError("the services file has no services.worker with env and demand (cluster-configs/queue-worker/services.yaml)")
        }
        env["REDIS_HOST"] = "127.0.0.1"
        env["REDIS_PORT"] = "\(redisPort)"
        env["JOB_SECONDS"] = "\(jobSeconds)"
        worker["env"] = env
        demand["address"] = "127.0.0.1:\(redisPort)"
        worker["demand"] = demand
        if let fixed {
            worker["demand"] = nil
            worker["min"] = fixed
            worker["max"] = fixed
        }
        worker["image"] = image
        services["worker"] = worker
        for (name, value) in services where name != "worker" {
            guard var s = value as? [String: Any] else { continue }
            s["image"] = image
            services[name] = s
        }
        root["services"] = services
        let per = (demand["per_container"] as? Double) ?? (demand["per_container"] as? Int).map(Double.init) ?? 1
        return (try Yams.dump(object: root), per, (worker["max"] as? Int) ?? 0)
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let dir = workDirectory
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let example = try String(contentsOfFile: servicesFile, encoding: .utf8)

        // A redis of the benchmark's own (no password, loopback, no persistence).
        let redisPort = AgentPorts.free()
        let redis = Process()
        redis.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        redis.arguments = [redisServer, "--port", "\(redisPort)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir]
        redis.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        try BenchmarkChildren.run(redis)
        // SIGKILL, not SIGTERM: a child of this process inherits a signal mask with SIGTERM blocked
        // (three redis-servers outlived their runs that way); it keeps nothing on disk to lose.
        defer {
            if redis.isRunning {
                kill(redis.processIdentifier, SIGKILL)
                redis.waitUntilExit()
            }
        }
        func r(_ commands: [[String]]) async throws -> [RESPValue] {
            try await RedisDemand.execute(host: "127.0.0.1", port: redisPort, credentials: nil, commands: commands, timeout: .seconds(2))
        }
        guard try await pollUntil(10, { (try? await r([["PING"]])) != nil }) else { throw CLIError("redis-server did not answer on \(redisPort)") }

        let tag = String(UInt32.random(in: 0...UInt32.max) % 100_000)
        let hosts = (1...3).map { ServerProcess(name: "d\(tag)-\($0)", ip: "127.0.6.\($0)", directory: dir, executable: executable) }
        for h in hosts { try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: h.name, server: true, in: "\(dir)/certs") }
        let docker = try DockerClient(host: dockerHost)
        defer { for h in hosts { h.kill9() } }
        for h in hosts {
            try h.start(join: hosts[0].ip, extra: ["--docker-socket", dockerHost, "--capacity-cpu", "2", "--capacity-memory", "2GiB"])
        }
        let cluster = ClusterProcessBenchmark(executable: executable, workDirectory: dir, dockerHost: dockerHost, image: image)
        guard try await pollUntil(30, { await cluster.get(hosts[0], "/v1/leader") != nil }) else {
            throw CLIError("no leader within 30 s; see \(dir)/*.log")
        }
        let names = Set(hosts.map(\.name))
        /// The agents first (a live one would start its containers again), then their containers.
        func removeContainers() async {
            for h in hosts {
                h.kill9()
                h.waitUntilExit()
            }
            for h in hosts {
                for c in (try? await docker.list(labels: ["\(MicroscaleLabel.node)=\(h.name)"])) ?? [] { try? await docker.remove(c.Id, force: true) }
            }
        }
        func runningWorkers() async -> Int {
            let list = (try? await docker.list(labels: ["\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.service)=worker"], all: false)) ?? []
            return list.filter { $0.State == "running" && names.contains($0.Labels?[MicroscaleLabel.node] ?? "") }.count
        }
        func reservedWorkers() async -> Int? {
            for h in hosts {
                if let d = await cluster.get(h, "/v1/status"), let s = try? JSONDecoder().decode(StatusView.self, from: d),
                    let w = s.services.first(where: { $0.name == "worker" })
                {
                    return w.desired
                }
            }
            return nil
        }
        func utilization(since: Date) async -> UtilizationSummary? {
            let seconds = max(1, min(3600, Int(Date().timeIntervalSince(since).rounded(.up))))
            for h in hosts {
                if let d = await cluster.get(h, "/v1/report/utilization?window=\(seconds)s"),
                    let s = try? JSONDecoder().decode(UtilizationSummary.self, from: d)
                {
                    return s
                }
            }
            return nil
        }
        func int(_ v: RESPValue?) -> Int {
            switch v {
            case .integer(let n)?: return Int(clamping: n)
            case .bulk(let b?)?: return Int(String(decoding: b, as: UTF8.self)) ?? 0
            default: return 0
            }
        }

        let trials_ = trials
        let fault = "none: a burst of \(jobs) jobs of \(jobSeconds) s pushed to the list at once (RPUSH), 3 agents on one dockerd"
        func trial(mode: String, number: Int, settled: Int) async throws -> Trial {
            var t = Trial(mode: mode, meanReservedWorkers: 0, peakReservedWorkers: 0, meanRunningWorkers: 0, workerUtilization: 0, seconds: 0)
            _ = try await r([["DEL", "jobs", "jobs:done"]])
            guard
                try await pollUntil(
                    90, every: .milliseconds(200),
                    {
                        let reserved = await reservedWorkers()
                        let running = await runningWorkers()
                        return reserved == settled && running == settled
                    })
            else {
                t.failure = "did not settle at \(settled) worker(s) within 90 s"
                return t
            }
            let start = ContinuousClock.now
            _ = try await r([["RPUSH", "jobs"] + (0..<jobs).map { "job-\(number)-\($0)" }])
            var reservedIntegral = 0.0, runningIntegral = 0.0
            var last = start
            var lastReserved = settled, lastRunning = settled
            let deadline = start + .seconds(max(period, 1) * 5)
            while true {
                try await Task.sleep(for: .milliseconds(200))
                let now = ContinuousClock.now
                let elapsed = (now - start).inSeconds
                let answer = try? await r([["LLEN", "jobs"], ["GET", "jobs:done"]])
                let reserved = await reservedWorkers() ?? lastReserved
                let running = await runningWorkers()
                let dt = (now - last).inSeconds
                reservedIntegral += Double(lastReserved) * dt
                runningIntegral += Double(lastRunning) * dt
                last = now
                lastReserved = reserved
                lastRunning = running
                if reserved > t.peakReservedWorkers {
                    t.peakReservedWorkers = reserved
                    t.peakAfterSeconds = elapsed
                }
                if let answer, answer.count == 2 {
                    if t.emptySeconds == nil, int(answer[0]) == 0 { t.emptySeconds = elapsed }
                    if t.drainSeconds == nil, int(answer[1]) >= jobs { t.drainSeconds = elapsed }
                }
                if t.drainSeconds != nil, elapsed >= period { break }
                if now >= deadline {
                    t.failure =
                        "not drained within \(Int(max(period, 1) * 5)) s (\(answer.map { "\(int($0.first)) waiting, \(int($0.last)) done" } ?? "redis did not answer"))"
                    break
                }
            }
            t.seconds = (last - start).inSeconds
            t.meanReservedWorkers = reservedIntegral / max(t.seconds, 0.001)
            t.meanRunningWorkers = runningIntegral / max(t.seconds, 0.001)
            t.workerUtilization = reservedIntegral > 0 ? Double(jobs) * jobSeconds / reservedIntegral : 0
            return t
        }

        func phase(mode: String, fixed: Int?) async throws -> Phase {
            let s = try Self.services(example, redisPort: redisPort, image: image, jobSeconds: jobSeconds, fixed: fixed)
            guard await cluster.put(hosts, "/v1/services", s.yaml) else { throw CLIError("could not apply the \(mode) services") }
            let began = Date()
            var trials: [Trial] = []
            for n in 1...trials_ {
                let t = try await trial(mode: mode, number: n, settled: fixed ?? 1)
                trials.append(t)
                func f(_ v: Double?) -> String { v.map { String(format: "%.1f s", $0) } ?? "-" }
                progress(
                    "\(mode) trial \(n): drained \(f(t.drainSeconds)) (list empty \(f(t.emptySeconds))), mean \(String(format: "%.2f", t.meanReservedWorkers)) workers reserved, peak \(t.peakReservedWorkers), worker utilization \(String(format: "%.1f%%", t.workerUtilization * 100))\(t.failure.map { ", FAILED: \($0)" } ?? "")"
                )
            }
            let ok = trials.filter { $0.failure == nil }
            var drain = Trials(fault: fault, unit: "s"), empty = Trials(fault: fault, unit: "s")
            for t in trials {
                if let d = t.drainSeconds, t.failure == nil { drain.record(d) } else { drain.fail(t.failure ?? "not drained") }
                if let e = t.emptySeconds { empty.record(e) } else { empty.fail(t.failure ?? "list never empty") }
            }
            return Phase(
                trials: trials, drain: drain, listEmpty: empty,
                medianMeanReservedWorkers: median(ok.map(\.meanReservedWorkers)),
                medianWorkerUtilization: median(ok.map(\.workerUtilization)),
                utilization: await utilization(since: began))
        }

        let shape = try Self.services(example, redisPort: redisPort, image: image, jobSeconds: jobSeconds, fixed: nil)
        let microscaled: Phase
        do { microscaled = try await phase(mode: "microscaled", fixed: nil) } catch {
            await removeContainers()
            throw error
        }
        let fixedCount = max(1, Int(((microscaled.medianMeanReservedWorkers ?? 1)).rounded()))
        let fixed =
            microscaledOnly
            ? Phase(
                trials: [], drain: Trials(fault: fault, unit: "s"), listEmpty: Trials(fault: fault, unit: "s"), medianMeanReservedWorkers: nil,
                medianWorkerUtilization: nil, utilization: nil)
            : try await { () async throws -> Phase in
                do { return try await phase(mode: "static", fixed: fixedCount) } catch {
                    await removeContainers()
                    throw error
                }
            }()
        await removeContainers()
        return Report(
            load: "one burst of \(jobs) jobs of \(jobSeconds) s per trial, trials \(Int(period)) s apart",
            fault: fault, jobs: jobs, jobSeconds: jobSeconds, periodSeconds: period, perContainer: shape.perContainer,
            maxWorkers: shape.max, microscaled: microscaled, staticWorkers: fixedCount, fixed: fixed)
    }
}

extension Duration {
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// A free loopback TCP port, for a child process of a benchmark.
enum AgentPorts {
    static func free() -> Int {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }
}

extension DrainBenchmark {
    /// The figures as a table, with the agents' utilization reports below.
    public static func render(_ r: Report) -> String {
        func s(_ v: Double?) -> String { v.map { String(format: "%.1f s", $0) } ?? "-" }
        func pct(_ v: Double?) -> String { v.map { String(format: "%.1f%%", $0 * 100) } ?? "-" }
        func row(_ name: String, _ p: Phase) -> String {
            let ok = p.drain.count - p.drain.failed
            return "\(name.padding(toLength: 22, withPad: " ", startingAt: 0))\(s(p.drain.median).padding(toLength: 10, withPad: " ", startingAt: 0))"
                + "\(s(p.listEmpty.median).padding(toLength: 12, withPad: " ", startingAt: 0))"
                + "\((p.medianMeanReservedWorkers.map { String(format: "%.2f", $0) } ?? "-").padding(toLength: 14, withPad: " ", startingAt: 0))"
                + "\(pct(p.medianWorkerUtilization).padding(toLength: 13, withPad: " ", startingAt: 0))"
                + "\(pct(p.utilization?.busyShare).padding(toLength: 14, withPad: " ", startingAt: 0))\(ok)/\(p.trials.count)"
        }
        var out = [
            "load: \(r.load); fault: \(r.fault); target \(DemandText.format(r.perContainer)) jobs per worker, at most \(r.maxWorkers) workers",
            "",
            "WORKERS               DRAINED   LIST EMPTY  MEAN WORKERS  WORKER UTIL  CLUSTER BUSY  TRIALS OK",
            row("microscaled (1-\(r.maxWorkers))", r.microscaled),
        ]
        if !r.fixed.trials.isEmpty { out.append(row("static (\(r.staticWorkers))", r.fixed)) }
        out.append("")
        out.append(
            "(medians over every trial, a failed one ranked last; DRAINED: burst → every job done; MEAN WORKERS and WORKER UTIL (job-seconds over reserved worker-seconds): medians of the trials that drained; CLUSTER BUSY: the agents' report over the phase, all priorities)"
        )
        for (name, p) in [("microscaled", r.microscaled), ("static", r.fixed)] where p.drain.count > 0 {
            out.append("\(name) drain: " + p.drain.summary { String(format: "%.1f s", $0) })
            if let u = p.utilization {
                out.append("")
                out.append("utilization report over the \(name) trials (microscale report utilization):")
                out.append(ReportCommand.UtilizationReport.render(u))
            }
        }
        return out.joined(separator: "\n")
    }
}
