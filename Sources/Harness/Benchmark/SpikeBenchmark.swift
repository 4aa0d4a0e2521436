import Agent
import Bounds
import DockerEngine
import Figures
import Foundation
import SecureTransport
import Yams

/// Issue 17's spike, with real processes: HAProxy (Debian's) in front of `web`, `microscale lb
/// haproxy` keeping its servers equal to web's healthy endpoints, three server agent processes
/// (2-core "hosts" on one real dockerd) running the demo's services (cluster-configs/demo-services.yaml:
/// web's demand is the request rate at HAProxy's frontend, batch fills the rest), and scripts/loadgen
/// offering requests open-loop. Each trial offers `base` requests/s (settling web at
/// `base / per_container` containers) and then, at once, `step` requests/s, which needs 6 more web
/// containers, preempting batch. Measured from the load generator's record of every request: the
/// time from the step until requests are answered within 100 ms again, p50/p99 latency and failed
/// requests across the step; from the agents' status, when web's serving count reached its target.
///
/// Load: the step, `trials` times. Fault: none (a load step). Figures, not assertions:
/// `microscale-bench spike`.
public struct SpikeBenchmark: Sendable {
    /// One request as scripts/loadgen records it: seconds from the start of the run it was due,
    /// its latency from then, and its status (0: no connection, -1: timeout, -2: not sent).
    public struct Request: Sendable, Equatable {
        public var sent: Double
        public var latencyMs: Double
        public var status: Int
        public init(sent: Double, latencyMs: Double, status: Int) {
            self.sent = sent
            self.latencyMs = latencyMs
            self.status = status
        }
        public var ok: Bool { (200..<400).contains(status) }
    }

    /// What one trial's requests say about the step (pure).
    public struct Analysis: Codable, Sendable, Equatable {
        /// Seconds from the step until the first of `hold` consecutive windows in which every
        /// request succeeded and the p99 was within the threshold (nil: not within the step).
        public var recoverySeconds: Double?
        public var requests: Int
        public var failed: Int
        public var p50Ms: Double?
        public var p99Ms: Double?
        public var maxMs: Double?
    }

    /// Pure: the requests due in `[step, step + length)`, in windows of `window` seconds from the
    /// step. A window with no requests counts as answered (nothing waited); `hold` good windows in
    /// a row mark recovery, so one quick window inside a queue still draining does not.
    public static func analyze(
        _ requests: [Request], step: Double, length: Double, thresholdMs: Double = 100, window: Double = 0.5, hold: Int = 4
    ) -> Analysis {
        let inStep = requests.filter { $0.sent >= step && $0.sent < step + length }
        let latencies = inStep.filter(\.ok).map(\.latencyMs)
        let windows = max(1, Int((length / window).rounded(.down)))
        var bad = [Bool](repeating: false, count: windows)
        var byWindow = [[Double]](repeating: [], count: windows)
        for r in inStep {
            let i = min(windows - 1, Int(((r.sent - step) / window).rounded(.down)))
            if r.ok { byWindow[i].append(r.latencyMs) } else { bad[i] = true }
        }
        for i in 0..<windows where !bad[i] {
            if let p = percentile(byWindow[i], 0.99), p > thresholdMs { bad[i] = true }
        }
        var recovery: Double?
        var run = 0
        for i in 0..<windows {
            run = bad[i] ? 0 : run + 1
            if run >= hold {
                recovery = Double(i + 1 - hold) * window
                break
            }
        }
        return Analysis(
            recoverySeconds: recovery, requests: inStep.count, failed: inStep.count - latencies.count,
            p50Ms: percentile(latencies, 0.5), p99Ms: percentile(latencies, 0.99), maxMs: latencies.max())
    }

    /// Parses scripts/loadgen's `--out` file; lines that do not parse are skipped (a line cut by
    /// a kill), at most 10 million.
    public static func parseRequests(_ text: String) -> [Request] {
        var out: [Request] = []
        for line in text.split(separator: "\n").prefix(10_000_000) {
            let f = line.split(separator: ",")
            guard f.count == 3, let s = Double(f[0]), let l = Double(f[1]), let st = Int(f[2]), s.isFinite, l.isFinite else { continue }
            out.append(Request(sent: s, latencyMs: l, status: st))
        }
        return out
    }

    public struct Trial: Codable, Sendable {
        public var analysis: Analysis
        /// Web's serving containers just before the step, and the count the step needs.
        public var servingAtStep: Int?
        public var target: Int
        /// Seconds from the step until web's serving containers reached the target (status).
        public var servingSeconds: Double?
        public var failure: String?
    }

    public struct Report: Codable, Sendable {
        public var load: String
        public var fault: String
        public var perContainer: Double
        public var base: Double
        public var step: Double
        public var trials: [Trial]
        /// Step → answered within 100 ms again (failed trials ranked last).
        public var recovery: Trials
        /// Step → the target number of web containers serving.
        public var serving: Trials
        /// Medians over the trials of each trial's p50 and p99 across the step; requests failed
        /// in all trials together, and requests offered.
        public var medianP50Ms: Double?
        public var medianP99Ms: Double?
        public var failedRequests: Int
        public var requests: Int
    }

    public var executable: String
    public var workDirectory: String
    public var dockerHost: String
    public var image: String
    public var servicesFile: String
    public var loadgen: String
    public var haproxy = "haproxy"
    public var trials = 10
    /// Requests/s before and after the step; the default step needs 6 more containers at the
    /// services file's 10 requests/s per container (25 → 85: 3 → 9; not 30, on the boundary between
    /// 3 and 4, where the rate's noise moves the count).
    public var base: Double = 25
    public var step: Double = 85
    /// Seconds at `base` before each step (web settles), and seconds measured after it.
    public var warmup: Double = 25
    public var length: Double = 30

    public init(executable: String, workDirectory: String, dockerHost: String, image: String, servicesFile: String, loadgen: String) {
        self.executable = executable
        self.workDirectory = workDirectory
        self.dockerHost = dockerHost
        self.image = image
        self.servicesFile = servicesFile
        self.loadgen = loadgen
    }

    /// The demo's services with this run's HAProxy stats URL and image.
    static func services(_ text: String, statsPort: Int, image: String) throws -> (yaml: String, perContainer: Double) {
        guard var root = try Yams.load(yaml: text) as? [String: Any], var services = root["services"] as? [String: Any],
            var web = services["web"] as? [String: Any], var demand = web["demand"] as? [String: Any]
        else {
            throw CLIError("the services file has no services.web with demand (cluster-configs/demo-services.yaml)")
        }
        demand["stats"] = "http://127.0.0.1:\(statsPort)/stats"
        web["demand"] = demand
        services["web"] = web
        for (name, value) in services {
            guard var s = value as? [String: Any] else { continue }
            s["image"] = image
            services[name] = s
        }
        root["services"] = services
        let per = (demand["per_container"] as? Double) ?? (demand["per_container"] as? Int).map(Double.init) ?? 1
        return (try Yams.dump(object: root), per)
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let dir = workDirectory
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let (frontendPort, statsPort) = (AgentPorts.free(), AgentPorts.free())
        let shape = try Self.services(try String(contentsOfFile: servicesFile, encoding: .utf8), statsPort: statsPort, image: image)
        let target = Int((step / shape.perContainer).rounded(.up))
        let baseCount = Int((base / shape.perContainer).rounded(.up))

        // HAProxy as the demo runs it (scripts/demo): one request at a time per container, the rest
        // waiting in the backend's queue for at most 10 s (then a 503, a failed request).
        let config = """
            global
              maxconn 4000
              stats socket \(dir)/haproxy.sock mode 600 level admin
            defaults
              mode http
              timeout connect 500ms
              # A request whose container stopped under it (a 502, a refused connection) is tried again
              # on another server: the idempotent GETs of this load may be. Round robin, not leastconn:
              # a stopped container fails fast, holds no connection and would draw every request.
              retries 3
              option redispatch 1
              retry-on all-retryable-errors
              timeout client 30s
              timeout server 30s
              timeout queue 10s
            frontend web
              bind 127.0.0.1:\(frontendPort)
              default_backend web
            backend web
              balance roundrobin
              # Defence in depth while a planned stop can precede the endpoint's withdrawal: the first
              # failed answer takes a server out (observe layer7, on-error mark-down) until its check
              # passes again; a server made ready by `lb haproxy` is up at once.
              option httpchk GET /
              server-template web 1-40 127.0.0.1:9 disabled maxconn 1 check inter 1s observe layer7 error-limit 1 on-error mark-down
            listen stats
              bind 127.0.0.1:\(statsPort)
              stats enable
              stats uri /stats

            """
        try config.write(toFile: "\(dir)/haproxy.cfg", atomically: true, encoding: .utf8)
        var children: [Process] = []
        // SIGKILL and wait: children inherit a signal mask with SIGTERM blocked (DrainBenchmark).
        defer {
            for p in children where p.isRunning {
                kill(p.processIdentifier, SIGKILL)
                p.waitUntilExit()
            }
        }
        func spawn(_ path: String, _ args: [String], log: String) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [path] + args
            FileManager.default.createFile(atPath: "\(dir)/\(log)", contents: nil)
            p.standardOutput = FileHandle(forWritingAtPath: "\(dir)/\(log)")
            p.standardError = p.standardOutput
            try BenchmarkChildren.run(p)
            children.append(p)
            return p
        }
        _ = try spawn(haproxy, ["-db", "-f", "\(dir)/haproxy.cfg"], log: "haproxy.log")
        guard try await pollUntil(10, { await PlainHTTP.get(host: "127.0.0.1", port: statsPort, path: "/stats;csv") != nil }) else {
            throw CLIError("HAProxy did not answer on 127.0.0.1:\(statsPort); see \(dir)/haproxy.log")
        }

        let tag = String(UInt32.random(in: 0...UInt32.max) % 100_000)
        let hosts = (1...3).map { ServerProcess(name: "s\(tag)-\($0)", ip: "127.0.9.\($0)", directory: dir, executable: executable) }
        for h in hosts { try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: h.name, server: true, in: "\(dir)/certs") }
        let docker = try DockerClient(host: dockerHost)
        defer { for h in hosts { h.kill9() } }
        for h in hosts {
            try h.start(join: hosts[0].ip, extra: ["--docker-socket", dockerHost, "--capacity-cpu", "2", "--capacity-memory", "2GiB"])
        }
        let cluster = ClusterProcessBenchmark(executable: executable, workDirectory: dir, dockerHost: dockerHost, image: image)
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
        do {
            guard try await pollUntil(30, { await cluster.get(hosts[0], "/v1/leader") != nil }) else {
                throw CLIError("no leader within 30 s; see \(dir)/*.log")
            }
            _ = try spawn(
                executable, ["lb", "haproxy", "--service", "web", "--socket", "\(dir)/haproxy.sock", "--http-addr", "\(hosts[0].ip):7481"],
                log: "lb.log")
            guard await cluster.put(hosts, "/v1/services", shape.yaml) else { throw CLIError("could not apply the services") }
            guard
                try await pollUntil(
                    90, { await PlainHTTP.get(host: "127.0.0.1", port: frontendPort, path: "/cgi-bin/work", timeoutMillis: 2000) != nil })
            else {
                throw CLIError("web did not answer through HAProxy within 90 s; see \(dir)/*.log")
            }
            func serving() async -> Int? {
                for h in hosts {
                    if let d = await cluster.get(h, "/v1/status"), let s = try? JSONDecoder().decode(StatusView.self, from: d),
                        let w = s.services.first(where: { $0.name == "web" })
                    {
                        return w.running
                    }
                }
                return nil
            }

            var results: [Trial] = []
            for n in 1...trials {
                // Web back at (or below) the base count before the warm-up: without load it shrinks
                // to its minimum, and the warm-up brings it to the base count, so the step starts from
                // there and not from a scale-down of the previous step still under way.
                guard try await pollUntil(120, every: .milliseconds(500), { (await serving() ?? .max) <= baseCount }) else {
                    throw CLIError("web did not come back to \(baseCount) containers within 120 s of trial \(n - 1); see \(dir)/*.log")
                }
                let out = "\(dir)/trial-\(n).csv"
                let gen = try spawn(
                    "python3",
                    [
                        loadgen, "--target", "127.0.0.1:\(frontendPort)", "--path", "/cgi-bin/work",
                        "--seconds", "\(Int(warmup + length))", "--step", "\(warmup)", "\(base)", "\(step)", "--seed", "\(n)",
                        "--out", out, "--summary", "\(dir)/trial-\(n).json",
                    ], log: "loadgen-\(n).log")
                let began = ContinuousClock.now
                let stepAt = began + .milliseconds(Int64(warmup * 1000))
                var atStep: Int?
                var reached: Double?
                while gen.isRunning {
                    try await Task.sleep(for: .milliseconds(200))
                    let now = ContinuousClock.now
                    let count = await serving()
                    if now < stepAt {
                        if let count { atStep = count }
                    } else if reached == nil, let count, count >= target {
                        reached = (now - stepAt).inSeconds
                    }
                }
                var trial = Trial(
                    analysis: Self.analyze(
                        Self.parseRequests((try? String(contentsOfFile: out, encoding: .utf8)) ?? ""), step: warmup, length: length),
                    servingAtStep: atStep, target: target, servingSeconds: reached)
                if gen.terminationStatus != 0 {
                    trial.failure = "the load generator exited with \(gen.terminationStatus); see \(dir)/loadgen-\(n).log"
                } else if atStep == nil || (atStep ?? 0) > baseCount + 1 {
                    // The base rate's Poisson noise may move the count by one.
                    trial.failure = "web served with \(atStep.map(String.init) ?? "unknown") containers at the step, not \(baseCount) (or one more)"
                } else if trial.analysis.recoverySeconds == nil {
                    trial.failure = "requests not answered within 100 ms again within \(Int(length)) s of the step"
                }
                results.append(trial)
                func f(_ v: Double?, _ unit: String) -> String { v.map { String(format: "%.1f\(unit)", $0) } ?? "-" }
                let a = trial.analysis
                progress(
                    "trial \(n): within 100 ms again after \(f(a.recoverySeconds, " s")), \(target) serving after \(f(reached, " s")) (from \(atStep.map(String.init) ?? "?")), "
                        + "p50 \(f(a.p50Ms, " ms")) p99 \(f(a.p99Ms, " ms")), \(a.failed) of \(a.requests) failed"
                        + (trial.failure.map { ", FAILED: \($0)" } ?? ""))
                // Back to the base count before the next step: the next trial's warm-up does it.
            }
            await removeContainers()
            let fault =
                "none: a step of offered load from \(DemandText.format(base)) to \(DemandText.format(step)) requests/s through HAProxy (\(target - baseCount) more web containers, preempting batch), 3 agents on one dockerd"
            var recovery = Trials(fault: fault, unit: "s"), servingT = Trials(fault: fault, unit: "s")
            for t in results {
                if t.failure == nil, let r = t.analysis.recoverySeconds { recovery.record(r) } else { recovery.fail(t.failure ?? "not recovered") }
                if let s = t.servingSeconds { servingT.record(s) } else { servingT.fail(t.failure ?? "target not reached") }
            }
            return Report(
                load:
                    "open-loop Poisson arrivals (scripts/loadgen), \(DemandText.format(base)) requests/s for \(Int(warmup)) s then \(DemandText.format(step)) for \(Int(length)) s; each request 40 ms of work, one at a time per container",
                fault: fault, perContainer: shape.perContainer, base: base, step: step, trials: results, recovery: recovery, serving: servingT,
                medianP50Ms: median(results.compactMap(\.analysis.p50Ms)), medianP99Ms: median(results.compactMap(\.analysis.p99Ms)),
                failedRequests: results.map(\.analysis.failed).reduce(0, +), requests: results.map(\.analysis.requests).reduce(0, +))
        } catch {
            await removeContainers()
            throw error
        }
    }

    /// The figures as lines.
    public static func render(_ r: Report) -> String {
        let s: (Double) -> String = { String(format: "%.1f s", $0) }
        func ms(_ v: Double?) -> String { v.map { String(format: "%.0f ms", $0) } ?? "-" }
        return [
            "load: \(r.load)",
            "fault: \(r.fault)",
            "step -> requests answered within 100 ms again (p99 of each 0.5 s, 2 s in a row): \(r.recovery.summary(s))",
            "step -> the target web containers serving: \(r.serving.summary(s))",
            "across the step (\(Int(r.trials.count)) trials, median of each trial's figure): p50 \(ms(r.medianP50Ms)), p99 \(ms(r.medianP99Ms)); failed requests \(r.failedRequests) of \(r.requests)",
        ].joined(separator: "\n")
    }
}
