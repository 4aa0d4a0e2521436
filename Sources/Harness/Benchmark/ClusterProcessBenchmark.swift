import Agent
import Bounds
import DockerEngine
import Figures
import Foundation
import NIOConcurrencyHelpers
import SecureTransport

/// The product end to end: three server agent processes on 127.0.5.1-3, each a 2-core "host" on one
/// real dockerd (containers carry their node's label), running web (priority 1, demand-driven) and
/// batch (priority 2, filling). Measured from the event, on what the Docker Engine reports:
/// - a demand step that needs 6 more web containers (preempting batch) → all running (a web
///   container runs on its `start`, or on its `unpause` when it was a warm standby);
/// - a host killed (SIGKILL of its agent, its containers removed) → its web containers running elsewhere;
/// - the leader's agent killed together with a demand step → the next plan committed.
/// Figures, not assertions: `microscale-bench cluster`.
public struct ClusterProcessBenchmark: Sendable {
    /// Every trial is kept, failed ones with their reason (`Trials`): a figure over the trials that
    /// went well would hide a scenario that fails one time in three.
    public struct Report: Codable, Sendable {
        public var trials: Int
        public var demandStep: Trials
        /// Where a demand step's time goes: each milestone's time after the write, per trial (ms).
        public var demandStepBreakdown: [Milestone] = []
        public var hostKill: Trials
        public var leaderKill: Trials
    }

    /// A point of the demand step, read from the Engine's events or the API, and its times after the
    /// write over the finished trials.
    public struct Milestone: Codable, Sendable {
        public var name: String
        public var trials: Trials
    }

    public var executable: String
    public var workDirectory: String
    public var dockerHost: String
    public var image: String
    public var trials = 20
    /// The agents' `--warm-standby-memory` (docs/scheduling.md, "Warm standbys"): 64MiB holds the
    /// two 16 MiB web standbys (`--standby` 2) of each agent warm; "0" keeps every standby
    /// created, the behaviour before warm standbys, so before/after is one flag of the bench.
    public var warmStandbyMemory = "64MiB"

    public init(executable: String, workDirectory: String, dockerHost: String, image: String) {
        self.executable = executable
        self.workDirectory = workDirectory
        self.dockerHost = dockerHost
        self.image = image
    }

    public func run(progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        let dir = workDirectory
        try? FileManager.default.removeItem(atPath: dir)
        try CertificateIssuer.createCA(in: "\(dir)/ca")
        let tag = String(UInt32.random(in: 0...UInt32.max) % 100_000)
        let hosts = (1...3).map { ServerProcess(name: "b\(tag)-\($0)", ip: "127.0.5.\($0)", directory: dir, executable: executable) }
        for h in hosts { try CertificateIssuer.createNodeCertificate(caDir: "\(dir)/ca", node: h.name, server: true, in: "\(dir)/certs") }
        let docker = try DockerClient(host: dockerHost)
        defer {
            for h in hosts { h.kill9() }
        }
        for h in hosts { try start(h, join: hosts[0].ip) }
        guard try await pollUntil(30, { await self.get(hosts[0], "/v1/leader") != nil }) else {
            throw CLIError("no leader within 30 s; see \(dir)/*.log")
        }
        let services = """
            services:
              web: { image: \(image), command: [sleep, "3600"], priority: 1, cpu: 0.5, memory: 16MiB, min: 1, max: 12,
                     demand: { source: static, per_container: 10 }, stop_timeout: 1s, network: none }
              batch: { image: \(image), command: [sleep, "3600"], priority: 2, cpu: 0.5, memory: 16MiB, max: 20, fill: true, stop_timeout: 1s, network: none }
            """
        guard await put(hosts, "/v1/services", services) else { throw CLIError("could not declare the services") }

        func running(_ service: String, on names: [String]) async -> Int {
            var n = 0
            for name in names {
                // A warm standby being made runs for a moment for no plan: not counted.
                let list =
                    (try? await runningForPlan(
                        docker,
                        labels: [
                            "\(MicroscaleLabel.managed)=true", "\(MicroscaleLabel.node)=\(name)",
                            "\(MicroscaleLabel.service)=\(service)",
                        ])) ?? []
                n += list.count
            }
            return n
        }
        let all = hosts.map(\.name)
        func steady(web: Int, batch: Int, on names: [String], seconds: Double = 60) async throws -> Bool {
            try await pollUntil(
                seconds, every: .milliseconds(100),
                {
                    let w = await running("web", on: names)
                    let b = await running("batch", on: names)
                    return w == web && b == batch
                })
        }

        // 1. Demand steps: 20 → 80 needs 6 more web containers, which take batch's place. The time is
        // read from the Engine's own `start` events (their timeNano against the wall clock at the
        // write), not from polling: polling three lists every few milliseconds loads the one daemon
        // that is starting the containers, and its granularity adds to the figure.
        let events = EngineEvents()
        let watcher = Task {
            for await e in docker.events(labels: ["\(MicroscaleLabel.managed)=true"]) {
                guard let t = e.timeNano, let service = e.Actor.Attributes?[MicroscaleLabel.service] else { continue }
                events.append(
                    service: service, action: e.Action, at: t, id: e.Actor.ID,
                    standby: e.Actor.Attributes?[MicroscaleLabel.standby] == "true")
            }
        }
        defer { watcher.cancel() }
        var steps = Trials(
            fault:
                "none: demand written 20 → 80 through the API (6 more web, preempting 6 batch), 3 agents on one dockerd, --warm-standby-memory \(warmStandbyMemory)"
        )
        // The milestones, in the order they happen when nothing overlaps. A stop shows as the Engine's
        // `kill` (the SIGTERM) and `die` (the exit); the batch's `kill` is the first sign that an
        // executor acted on the new assignment (the push, its list of containers and the call).
        // A web container runs on its `start` or, a warm standby, on its `unpause`; the `start`
        // of a standby created after the write is the pool's refill (started, then paused), not
        // one of the step's, and neither is its create.
        let names = [
            "write answered (committed)", "plan decided (leader's clock, ms)", "first batch kill (executor acts)",
            "sixth batch exit", "sixth web create (not a standby's refill)", "first web running (start or unpause)",
            "sixth web running (start or unpause)",
        ]
        var milestones = names.map { Milestone(name: $0, trials: Trials(fault: steps.fault)) }
        for trial in 1...trials {
            guard await put(hosts, "/v1/demand/web", #"{"value": 20}"#), try await steady(web: 2, batch: 10, on: all) else {
                steps.fail("did not settle at 2 web + 10 batch")
                progress("demand trial \(trial): did not settle at 2 web + 10 batch")
                continue
            }
            let wall0 = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
            guard await put(hosts, "/v1/demand/web", #"{"value": 80}"#) else {
                steps.fail("demand write not committed")
                continue
            }
            let answered = Int64(Date().timeIntervalSince1970 * 1_000_000_000)
            // Confirmed by the containers' state, then timed by the sixth start or unpause event
            // after the write, which the event stream may deliver a moment after the state shows.
            let reached = try await pollUntil(20, every: .milliseconds(100), { await running("web", on: all) >= 8 })
            if reached { _ = try await pollUntil(2, every: .milliseconds(20), { events.webRunning(after: wall0).count >= 6 }) }
            if reached, let sixth = events.webRunning(after: wall0).dropFirst(5).first {
                let elapsed = Double(sixth - wall0) / 1e6
                steps.record(elapsed)
                let ms = { (t: Int64?) in t.map { Double($0 - wall0) / 1e6 } }
                let planned = await lastDecisionTime(hosts).map { $0 - Double(wall0) / 1e6 }
                let times: [Double?] = [
                    ms(answered), planned, ms(events.after(wall0, service: "batch", action: "kill").first),
                    ms(events.after(wall0, service: "batch", action: "die").dropFirst(5).first),
                    ms(events.after(wall0, service: "web", action: "create", standby: false).dropFirst(5).first),
                    ms(events.webRunning(after: wall0).first), elapsed,
                ]
                for (i, t) in times.enumerated() {
                    if let t { milestones[i].trials.record(t) } else { milestones[i].trials.fail("no such event") }
                }
                let text = zip(names, times).map { "\($0) \($1.map { String(format: "%.0f", $0) } ?? "-")" }.joined(separator: ", ")
                progress(String(format: "demand trial %d: %.0f ms (", trial, elapsed) + text + ")")
            } else {
                let why =
                    reached ? "8 web running, but the Engine reported fewer than 6 starts or unpauses" : "web did not reach 8 running within 20 s"
                steps.fail(why)
                progress("demand trial \(trial): \(why)")
            }
        }

        // 2. A host dies: its agent is SIGKILLed and its containers go with it.
        // Loopback SIGKILL: the kernel resets the dead agent's connections at once and the others take
        // that as a hint, which a host that loses power never sends (chaos's power-cut scenario).
        var hostKills = Trials(fault: "SIGKILL of a non-leader agent on loopback (kernel resets its connections), its containers removed")
        for trial in 1...trials {
            guard await put(hosts, "/v1/demand/web", #"{"value": 60}"#), try await steady(web: 6, batch: 6, on: all) else {
                hostKills.fail("did not settle at 6 web + 6 batch")
                progress("host trial \(trial): did not settle at 6 web + 6 batch")
                continue
            }
            let leader = await leaderName(hosts)
            guard let victim = hosts.first(where: { $0.name != leader && $0.isRunning }) else {
                hostKills.fail("no victim running")
                continue
            }
            let others = all.filter { $0 != victim.name }
            let t0 = ContinuousClock.now
            victim.kill9()
            for c in (try? await docker.list(labels: ["\(MicroscaleLabel.node)=\(victim.name)"])) ?? [] {
                try? await docker.remove(c.Id, force: true)
            }
            if try await pollUntil(20, every: .milliseconds(20), { await running("web", on: others) >= 6 }) {
                let elapsed = (ContinuousClock.now - t0).inMilliseconds
                hostKills.record(elapsed)
                progress(String(format: "host trial %d: %.0f ms", trial, elapsed))
            } else {
                hostKills.fail("6 web not running on the others within 20 s")
                progress("host trial \(trial): 6 web not running on the others within 20 s")
            }
            victim.waitUntilExit()
            try start(victim, join: hosts.first { $0 !== victim }!.ip)
            _ = try await pollUntil(20) { await self.get(victim, "/v1/leader") != nil }
        }

        // 3. The leader's agent dies as demand steps: time to the next committed plan.
        var leaderKills = Trials(fault: "SIGKILL of the leader's agent on loopback, demand written to a survivor at once")
        for trial in 1...trials {
            // Settle at 30 (3 web), then step to 50 as the leader dies: an increase, so the plan must
            // change at once (a decrease would wait out the planner's stabilization window).
            guard await put(hosts, "/v1/demand/web", #"{"value": 30}"#), try await steady(web: 3, batch: 9, on: all) else {
                leaderKills.fail("did not settle at 3 web + 9 batch")
                progress("leader trial \(trial): did not settle")
                continue
            }
            guard let leader = await leaderName(hosts), let victim = hosts.first(where: { $0.name == leader }) else {
                leaderKills.fail("no leader seen")
                continue
            }
            let survivors = hosts.filter { $0 !== victim }
            let before = await lastDecision(survivors[0]) ?? 0
            let next = 50
            let t0 = ContinuousClock.now
            victim.kill9()
            var committed = false
            while ContinuousClock.now - t0 < .seconds(20), !committed {
                if await put(survivors, "/v1/demand/web", "{\"value\": \(next)}", attempts: 1) {
                    committed = try await pollUntil(10, every: .milliseconds(5)) { (await self.lastDecision(survivors[0]) ?? 0) > before }
                }
            }
            if committed {
                let elapsed = (ContinuousClock.now - t0).inMilliseconds
                leaderKills.record(elapsed)
                progress(String(format: "leader trial %d: %.0f ms", trial, elapsed))
            } else {
                leaderKills.fail("no plan committed within 20 s")
                progress("leader trial \(trial): no plan committed within 20 s")
            }
            victim.waitUntilExit()
            try start(victim, join: survivors[0].ip)
            _ = try await pollUntil(20) { await self.get(victim, "/v1/leader") != nil }
            try await Task.sleep(for: .seconds(1))
        }
        for h in hosts {
            for c in (try? await docker.list(labels: ["\(MicroscaleLabel.node)=\(h.name)"])) ?? [] { try? await docker.remove(c.Id, force: true) }
        }
        return Report(trials: trials, demandStep: steps, demandStepBreakdown: milestones, hostKill: hostKills, leaderKill: leaderKills)
    }

    func start(_ h: ServerProcess, join: String) throws {
        try h.start(
            join: join,
            extra: [
                "--docker-socket", dockerHost, "--capacity-cpu", "2", "--capacity-memory", "2GiB", "--warm-standby-memory", warmStandbyMemory,
            ])
    }

    func get(_ h: ServerProcess, _ path: String) async -> Data? {
        await PlainHTTP.get(host: h.ip, port: 7481, path: path, timeoutMillis: 1000)
    }

    /// PUT through any running host, retrying briefly (a leader change answers 503 for a moment).
    func put(_ hosts: [ServerProcess], _ path: String, _ body: String, attempts: Int = 50) async -> Bool {
        for i in 0..<attempts {
            for h in hosts where h.isRunning {
                if let (s, _) = await PlainHTTP.request("PUT", host: h.ip, port: 7481, path: path, body: Array(body.utf8), timeoutMillis: 2000),
                    s == 200
                {
                    return true
                }
            }
            if i + 1 < attempts { try? await Task.sleep(for: .milliseconds(100)) }
        }
        return false
    }

    func leaderName(_ hosts: [ServerProcess]) async -> String? {
        for h in hosts where h.isRunning {
            if let d = await get(h, "/v1/leader"), let v = try? JSONDecoder().decode(LeaderView.self, from: d) { return v.name }
        }
        return nil
    }

    func lastDecisionTime(_ hosts: [ServerProcess]) async -> Double? {
        struct D: Decodable { var timestampMilliseconds: Int64 }
        for h in hosts where h.isRunning {
            if let d = await get(h, "/v1/decisions?limit=1"), let list = try? JSONDecoder().decode([D].self, from: d) {
                return list.last.map { Double($0.timestampMilliseconds) }
            }
        }
        return nil
    }

    func lastDecision(_ h: ServerProcess) async -> UInt64? {
        struct D: Decodable { var index: UInt64 }
        guard let d = await get(h, "/v1/decisions?limit=1"), let list = try? JSONDecoder().decode([D].self, from: d) else { return nil }
        return list.last?.index
    }
}

/// The Engine's events of the managed containers seen by the benchmark's watcher: (service, action,
/// time in ns since the epoch, container, whether it carries the standby label), bounded.
final class EngineEvents: Sendable {
    typealias Event = (service: String, action: String, at: Int64, id: String, standby: Bool)
    private let events = NIOLockedValueBox<[Event]>([])
    func append(service: String, action: String, at t: Int64, id: String = "", standby: Bool = false) {
        events.withLockedValue {
            $0.append((service, action, t, id, standby))
            if $0.count > 10_000 { $0.removeFirst($0.count - 10_000) }
        }
    }
    /// The times of `service`'s `action` events at or after `t`, earliest first, of standby
    /// containers or not only when `standby` says. An action with detail ("kill" is reported as
    /// "kill", the signal in the attributes) matches by name.
    func after(_ t: Int64, service: String, action: String, standby: Bool? = nil) -> [Int64] {
        events.withLockedValue {
            $0.filter { $0.at >= t && $0.service == service && $0.action == action && (standby == nil || $0.standby == standby) }
                .map(\.at).sorted()
        }
    }
    /// The times web containers began running at or after `t`, earliest first: an `unpause` (a
    /// warm standby), or a `start` that is not a standby's refill. A refill is a standby created
    /// at or after `t` (docs/scheduling.md, "Warm standbys": create, start, pause); a standby
    /// created before `t` and started is a cold standby the step started.
    func webRunning(after t: Int64) -> [Int64] {
        events.withLockedValue { all in
            let refills = Set(all.filter { $0.at >= t && $0.service == "web" && $0.action == "create" && $0.standby }.map(\.id))
            return all.filter { e in
                e.at >= t && e.service == "web"
                    && (e.action == "unpause" || (e.action == "start" && !(e.standby && refills.contains(e.id))))
            }.map(\.at).sorted()
        }
    }
}
