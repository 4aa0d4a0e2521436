import Agent
import Bounds
import DockerEngine
import Foundation

/// The invariants the chaos suite holds the cluster to (issue "Chaos", docs/chaos.md), checked two
/// ways: continuously while a fault runs (this observer: at most one leader per term, no host over
/// its capacity), and once the fault is over (`ChaosChecks`: convergence, priority-1 counts, no
/// service over its desired count, committed state kept, sentinels untouched).
public actor ChaosObserver {
    public struct Violation: Codable, Sendable, CustomStringConvertible {
        public var atMilliseconds: Double
        public var what: String
        public var description: String { String(format: "[%.0f ms] ", atMilliseconds) + what }
    }

    let cluster: ChaosCluster
    let services: [String: ChaosServices.Reservation]
    let capacity: ChaosServices.Reservation
    let started = ContinuousClock.now
    private(set) var violations: [Violation] = []
    /// Raft §5.2 Election Safety: the leaders each term has had, as the servers themselves claim.
    private(set) var leadersByTerm: [UInt64: Set<String>] = [:]
    private var task: Task<Void, Never>?
    private var samples = 0

    init(cluster: ChaosCluster, services: [String: ChaosServices.Reservation], capacity: ChaosServices.Reservation) {
        self.cluster = cluster
        self.services = services
        self.capacity = capacity
    }

    func start(every: Duration = .milliseconds(200)) {
        task = Task { [weak self] in
            while !Task.isCancelled {
                await self?.sample()
                try? await Task.sleep(for: every)
            }
        }
    }

    /// Stops watching and returns what was violated (bounded to the first 100).
    func stop() -> [Violation] {
        task?.cancel()
        task = nil
        return violations
    }

    var sampleCount: Int { samples }

    private func note(_ what: String) {
        guard violations.count < 100 else { return }
        violations.append(Violation(atMilliseconds: (ContinuousClock.now - started).inMilliseconds, what: what))
    }

    private func sample() async {
        samples += 1
        let live = await cluster.liveHosts
        await withTaskGroup(of: Void.self) { group in
            for h in live where h.server {
                group.addTask {
                    guard let v = await self.cluster.selfView(h), let raft = v.raft, raft.role == "leader" else { return }
                    await self.sawLeader(raft.term, h.name)
                }
            }
            for h in live {
                group.addTask {
                    guard let running = await ChaosChecks.running(on: h, timeoutMillis: 1000) else { return }
                    await self.checkCapacity(h.name, running)
                }
            }
        }
    }

    private func sawLeader(_ term: UInt64, _ name: String) {
        leadersByTerm[term, default: []].insert(name)
        if leadersByTerm[term]!.count == 2 {
            note("two leaders in term \(term): \(leadersByTerm[term]!.sorted().joined(separator: ", "))")
        }
        if leadersByTerm.count > 1000 { leadersByTerm.removeValue(forKey: leadersByTerm.keys.min()!) }
    }

    private func checkCapacity(_ host: String, _ running: [String: Int]) {
        var used = ChaosServices.Reservation(cpu: 0, memory: 0)
        for (service, n) in running {
            guard let r = services[service] else { continue }
            used.cpu += r.cpu * Double(n)
            used.memory += r.memory * Int64(n)
        }
        if used.cpu > capacity.cpu + 1e-9 || used.memory > capacity.memory {
            note(
                "\(host) over capacity: \(running.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) reserves \(used.cpu) CPU, \(used.memory) bytes"
            )
        }
    }
}

/// The services every scenario runs, and what the harness has had acknowledged.
public enum ChaosServices {
    public struct Reservation: Sendable, Hashable {
        public var cpu: Double
        public var memory: Int64
    }
    public static let perContainer = 10.0
    public static let webMax = 12
    public static let reservations: [String: Reservation] = [
        "web": Reservation(cpu: 0.5, memory: 16 << 20),
        "batch": Reservation(cpu: 0.5, memory: 16 << 20),
    ]
    public static let file = """
        services:
          web: { image: \(ChaosCluster.image), command: [sleep, "100000000"], priority: 1, cpu: 0.5, memory: 16MiB, min: 1,
                 max: \(webMax), demand: { source: static, per_container: \(Int(perContainer)) }, stop_timeout: 1s, network: none }
          batch: { image: \(ChaosCluster.image), command: [sleep, "100000000"], priority: 2, cpu: 0.5, memory: 16MiB, max: 40,
                   fill: true, stop_timeout: 1s, network: none }
        """

    /// Containers of either service one host has room for (both reserve the same).
    public static func slotsPerHost(capacityCPU: Double) -> Int {
        Int((capacityCPU / reservations["web"]!.cpu).rounded(.down))
    }

    /// Priority-1 containers a demand needs (docs/scaling.md: ceil(demand / per_container) within [min, max]).
    public static func webNeeded(_ demand: Double) -> Int {
        min(webMax, max(1, Int((demand / perContainer).rounded(.up))))
    }
}

/// The checks run once a fault is over. Each returns what does not hold yet (empty: it holds).
enum ChaosChecks {
    /// Running managed containers per service on a host, from its own dockerd; nil if it does not answer.
    static func running(on h: ChaosCluster.Host, timeoutMillis: Int) async -> [String: Int]? {
        guard let list = await ids(on: h, timeoutMillis: timeoutMillis) else { return nil }
        return list.mapValues(\.count)
    }

    /// Managed container ids per service running for the plan on a host (`runningForPlan`: a warm
    /// standby being made is not counted).
    static func ids(on h: ChaosCluster.Host, timeoutMillis: Int) async -> [String: Set<String>]? {
        await withTaskGroup(of: [String: Set<String>]?.self) { group in
            group.addTask {
                guard let list = try? await runningForPlan(h.docker, labels: ["\(MicroscaleLabel.managed)=true"]) else { return nil }
                var out: [String: Set<String>] = [:]
                for c in list {
                    if let s = c.Labels?[MicroscaleLabel.service] { out[s, default: []].insert(c.Id) }
                }
                return out
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(timeoutMillis))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Convergence after a fault: the plan places priority-1 work for the current demand on live
    /// hosts; every live host runs exactly its assignment; no service runs more than desired; every
    /// live agent sees every live host alive and every down host not alive.
    static func unconverged(_ cluster: ChaosCluster, demand: Double) async -> [String] {
        var problems: [String] = []
        let live = await cluster.liveHosts
        let liveNames = Set(live.map(\.name))
        guard let status = await cluster.status() else { return ["no leader answers /v1/status"] }
        var total: [String: Int] = [:]
        for h in live {
            guard let running = await running(on: h, timeoutMillis: 2000) else {
                problems.append("\(h.name): dockerd does not answer")
                continue
            }
            for (s, n) in running { total[s, default: 0] += n }
            let assigned = status.nodes.first { $0.name == h.name }?.assigned.filter { $0.value > 0 } ?? [:]
            if running.filter({ $0.value > 0 }) != assigned {
                problems.append("\(h.name) runs \(running) but is assigned \(assigned)")
            }
        }
        for row in status.nodes where !liveNames.contains(row.name) && row.assigned.values.contains(where: { $0 > 0 }) {
            problems.append("down host \(row.name) still assigned \(row.assigned)")
        }
        for s in status.services {
            let n = total[s.name] ?? 0
            if n > s.desired { problems.append("\(s.name) runs \(n) > desired \(s.desired)") }
            if s.priority == 1 {
                let slots = live.count * ChaosServices.slotsPerHost(capacityCPU: cluster.options.capacityCPU)
                let needed = min(ChaosServices.webNeeded(demand), slots)
                if s.desired < needed { problems.append("\(s.name) desired \(s.desired) < needed \(needed) for demand \(demand)") }
                if n < s.desired { problems.append("\(s.name) runs \(n) < desired \(s.desired)") }
            }
        }
        for h in live {
            guard let members = await cluster.members(h) else {
                problems.append("\(h.name): /v1/members does not answer")
                continue
            }
            for m in members {
                let shouldLive = liveNames.contains(m.name)
                if shouldLive && m.status != .alive { problems.append("\(h.name) sees live \(m.name) as \(m.status)") }
                if !shouldLive && m.status == .alive { problems.append("\(h.name) sees down \(m.name) as alive") }
            }
            for name in liveNames where !members.contains(where: { $0.name == name }) {
                problems.append("\(h.name) does not know \(name)")
            }
        }
        return problems
    }

    /// Priority-1 restored: the live hosts run at least what the demand needs (capacity allowing).
    static func priorityOneRestored(_ cluster: ChaosCluster, demand: Double) async -> Bool {
        let live = await cluster.liveHosts
        // Every host asked at once: a milestone timed by this check is late by its slowest dockerd,
        // not by the sum of them.
        let counts = await withTaskGroup(of: Int?.self) { group in
            for h in live { group.addTask { await running(on: h, timeoutMillis: 1000).map { $0["web"] ?? 0 } } }
            var out: [Int?] = []
            for await c in group { out.append(c) }
            return out
        }
        guard !counts.contains(where: { $0 == nil }) else { return false }
        let n = counts.reduce(0) { $0 + ($1 ?? 0) }
        return n >= min(ChaosServices.webNeeded(demand), live.count * ChaosServices.slotsPerHost(capacityCPU: cluster.options.capacityCPU))
    }

    /// Committed state kept: the services, the last acknowledged demand, the drain flags. Read
    /// through each live host in turn for up to 20 s: a read may meet an election (503) right
    /// after a fault; "kept" is about what the state says once it answers, not how soon.
    static func stateKept(_ cluster: ChaosCluster, demand: Double, drained: Set<String>) async -> [String] {
        func read(_ path: String) async -> Data? {
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                for h in await cluster.liveHosts {
                    if let d = await cluster.get(h, path, timeoutMillis: 3000) { return d }
                }
                try? await Task.sleep(for: .milliseconds(200))
            }
            return nil
        }
        var problems: [String] = []
        if let d = await read("/v1/services"), let text = String(data: d, encoding: .utf8) {
            for s in ["web", "batch"] where !text.contains("\"\(s)\"") { problems.append("service \(s) lost") }
        } else {
            problems.append("GET /v1/services: no answer within 20 s")
        }
        if let d = await read("/v1/demand"), let map = try? JSONDecoder().decode([String: Double].self, from: d) {
            let web = map["web"]
            if web != demand { problems.append("demand for web is \(web.map { "\($0)" } ?? "missing"), acknowledged \(demand)") }
        } else {
            problems.append("GET /v1/demand: no answer within 20 s")
        }
        if let d = await read("/v1/nodes/drained"), let list = try? JSONDecoder().decode([String].self, from: d) {
            let have = Set(list)
            for n in drained where !have.contains(n) { problems.append("drain flag of \(n) lost") }
        } else {
            problems.append("GET /v1/nodes/drained: no answer within 20 s")
        }
        return problems
    }

    /// The sentinel (no Microscale labels) still exists on every host, and runs on every host whose
    /// dockerd was never killed.
    static func sentinelsUntouched(_ cluster: ChaosCluster, killed: Set<String>) async -> [String] {
        var problems: [String] = []
        for h in await cluster.liveHosts {
            guard let id = await cluster.sentinelID(h) else { continue }
            do {
                let i = try await h.docker.inspect(id)
                if !killed.contains(h.name) && i.State.Running != true { problems.append("\(h.name): the sentinel is not running") }
            } catch {
                problems.append("\(h.name): the sentinel is gone (\(error))")
            }
        }
        return problems
    }
}
