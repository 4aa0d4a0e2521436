import Agent
import Bounds
import Consensus
import Foundation
import Scaling

/// One scenario's outcome: passed only if no invariant was violated during the fault and every
/// check after it held within its bound.
public struct ChaosResult: Codable, Sendable {
    public var scenario: String
    public var repetition: Int
    public var passed: Bool
    /// What did not hold (empty when passed).
    public var problems: [String]
    /// Milliseconds from the fault to each milestone.
    public var timings: [String: Double]
    public var notes: [String]
    /// Other measured figures (soak: memory growth, CPU), named with their unit.
    public var figures: [String: Double] = [:]
}

/// Runs the scenarios of the chaos suite on one `ChaosCluster`. Every scenario starts from a
/// healthy baseline (all hosts up, links healed, demand 60, converged), injects its fault, times
/// the milestones, and ends with the invariants checked; the cluster is reused across scenarios
/// and repetitions, since a scenario ends by bringing back what it broke.
public actor ChaosRunner {
    public static let scenarios = [
        "host-kill", "power-cut", "leader-kill", "follower-kill", "frozen-host", "frozen-leader", "partition-one",
        "partition-leader", "partition-heal", "link-loss", "agent-restart", "rolling-restart",
        "rolling-restart-zero-moves", "demand-storm", "two-hosts-die", "full-restart", "add-server", "remove-dead-server",
    ]
    /// Scenarios that `all` leaves out: `upgrade` needs a second binary (the previous commit's),
    /// which `chaos/run upgrade` builds.
    public static let separateScenarios = ["upgrade"]
    /// How long after a fault is over the cluster has to converge before that is a failure.
    public static let settleBound = 60.0
    static let baselineDemand = 60.0

    let cluster: ChaosCluster
    /// What the harness has had acknowledged: the last demand for web, the drain flags.
    private(set) var demand = baselineDemand
    private(set) var drained: Set<String> = ["spare-node"]
    /// Hosts whose dockerd was killed at some point (their sentinel died with them).
    private var everKilled: Set<String> = []
    private var random: SystemRandomNumberGenerator = .init()

    private var problems: [String] = []
    private var timings: [String: Double] = [:]
    private var notes: [String] = []
    private var t0 = ContinuousClock.now

    public init(cluster: ChaosCluster) { self.cluster = cluster }

    /// Declares the services and the committed state every scenario then checks is kept.
    public func prepare() async throws {
        guard await cluster.write("PUT", "/v1/services", ChaosServices.file) else { throw ChaosError("could not apply the services") }
        for n in drained {
            guard await cluster.write("POST", "/v1/nodes/\(n)/drain", "") else { throw ChaosError("could not set the drain flag of \(n)") }
        }
        try await setDemand(Self.baselineDemand)
        try await baseline()
    }

    /// Back to healthy: links healed, frozen hosts thawed, dead hosts restarted, demand at the
    /// baseline, converged.
    func baseline() async throws {
        await cluster.recover()
        for h in cluster.hosts where await cluster.down.contains(h.name) {
            _ = await cluster.waitForAgentExit(h)
            try await cluster.restartHost(h)
        }
        if demand != Self.baselineDemand { try await setDemand(Self.baselineDemand) }
        var last: [String] = []
        let ok = try await pollUntil(Self.settleBound, every: .milliseconds(500)) {
            last = await ChaosChecks.unconverged(cluster, demand: demand)
            return last.isEmpty
        }
        guard ok else { throw ChaosError("the cluster did not settle: \(last.prefix(5).joined(separator: "; "))") }
    }

    public func run(_ scenario: String, repetition: Int) async -> ChaosResult {
        problems = []
        timings = [:]
        notes = []
        do {
            try await baseline()
        } catch {
            return ChaosResult(scenario: scenario, repetition: repetition, passed: false, problems: ["baseline: \(error)"], timings: [:], notes: [])
        }
        let observer = ChaosObserver(
            cluster: cluster, services: ChaosServices.reservations,
            capacity: .init(cpu: cluster.options.capacityCPU, memory: Units.bytes(cluster.options.capacityMemory) ?? 0))
        await observer.start()
        t0 = ContinuousClock.now
        do {
            switch scenario {
            case "host-kill": try await hostKill()
            case "power-cut": try await hostKill(powerCut: true)
            case "leader-kill": try await leaderKill()
            case "follower-kill": try await followerKill()
            case "frozen-host": try await frozenHost(leader: false)
            case "frozen-leader": try await frozenHost(leader: true)
            case "partition-one": try await partitionOne()
            case "partition-leader": try await partitionLeader()
            case "partition-heal": try await partitionHeal()
            case "link-loss": try await linkLoss()
            case "agent-restart": try await agentRestart()
            case "rolling-restart": try await rollingRestart()
            case "rolling-restart-zero-moves": try await rollingRestartZeroMoves()
            case "demand-storm": try await demandStorm()
            case "two-hosts-die": try await twoHostsDie()
            case "full-restart": try await fullRestart()
            case "add-server": try await addServer()
            case "remove-dead-server": try await removeDeadServer()
            case "upgrade": try await upgrade()
            default: problems.append("no such scenario: \(scenario)")
            }
        } catch {
            problems.append("scenario stopped: \(error)")
        }
        await cluster.recover()
        let violations = await observer.stop()
        problems += violations.map { "invariant: \($0)" }
        problems += await ChaosChecks.stateKept(cluster, demand: demand, drained: drained)
        problems += await ChaosChecks.sentinelsUntouched(cluster, killed: everKilled)
        notes.append("\(await observer.sampleCount) invariant samples")
        return ChaosResult(
            scenario: scenario, repetition: repetition, passed: problems.isEmpty, problems: problems,
            timings: timings, notes: notes)
    }

    // MARK: Steps

    private var elapsed: Double { (ContinuousClock.now - t0).inMilliseconds }

    /// Every timing counts from here: the moment the fault is injected, after the victim is chosen.
    /// Choosing it asks every host's agent and dockerd over HTTP, which the figures counted until
    /// 2 Dec 2026.
    private func faultStarts() { t0 = ContinuousClock.now }

    /// Times several milestones of one fault, each polled by a task of its own every `every`
    /// until it holds, so none is timed late because another was checked first. (Waited for in
    /// turn, `dead_everywhere` after `p1_restored` could only ever read a few ms after it, whatever
    /// the detection took; checked in one loop, each reading was late by the others' HTTP calls.)
    private func untilEach(
        _ milestones: [(String, @Sendable () async -> Bool)], seconds: Double, every: Duration = .milliseconds(20)
    ) async throws {
        let start = t0
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        let reached = await withTaskGroup(of: (String, Double?).self) { group in
            for (label, condition) in milestones {
                group.addTask {
                    while ContinuousClock.now < deadline {
                        if await condition() { return (label, (ContinuousClock.now - start).inMilliseconds) }
                        try? await Task.sleep(for: every)
                    }
                    return (label, nil)
                }
            }
            var out: [(String, Double?)] = []
            for await r in group { out.append(r) }
            return out
        }
        for (label, ms) in reached {
            if let ms { timings[label] = ms } else { problems.append("\(label): not within \(Int(seconds)) s") }
        }
    }

    /// Times the milestone `label` from the fault; a problem if it is not reached within `seconds`.
    @discardableResult
    private func until(_ label: String, seconds: Double, every: Duration = .milliseconds(50), _ condition: () async -> Bool) async throws -> Bool {
        if try await pollUntil(seconds, every: every, condition) {
            timings[label] = elapsed
            return true
        }
        problems.append("\(label): not within \(Int(seconds)) s")
        return false
    }

    /// Waits for convergence after a fault, timing it as `label`.
    private func settle(_ label: String) async throws {
        var last: [String] = []
        let d = demand
        if try await pollUntil(
            Self.settleBound, every: .milliseconds(250),
            {
                last = await ChaosChecks.unconverged(cluster, demand: d)
                return last.isEmpty
            })
        {
            timings[label] = elapsed
        } else {
            problems.append("\(label): not converged within \(Int(Self.settleBound)) s: \(last.prefix(5).joined(separator: "; "))")
        }
    }

    private func setDemand(_ value: Double) async throws {
        guard await cluster.write("PUT", "/v1/demand/web", "{\"value\": \(value)}") else {
            throw ChaosError("demand \(value) not acknowledged within 20 s")
        }
        demand = value
    }

    private func leaderHost() async throws -> ChaosCluster.Host {
        guard let l = await cluster.leader(), let h = await cluster.host(named: l.name) else { throw ChaosError("no leader") }
        return h
    }

    /// A live host running priority-1 work, preferring clients and never the leader.
    private func victim(excluding: Set<String> = []) async throws -> ChaosCluster.Host {
        let leader = await cluster.leader()?.name
        var best: ChaosCluster.Host?
        for h in await cluster.liveHosts where h.name != leader && !excluding.contains(h.name) {
            let web = await ChaosChecks.running(on: h, timeoutMillis: 2000)?["web"] ?? 0
            if web > 0 && (best == nil || (best!.server && !h.server)) { best = h }
        }
        guard let best else { throw ChaosError("no non-leader host runs priority-1 work") }
        return best
    }

    private func newLeader(other old: String) async -> Bool {
        guard let l = await cluster.leader() else { return false }
        return l.name != old
    }

    /// Every live host holds each victim dead (or has forgotten it); a suspect is not dead yet.
    private func seenDeadByAll(_ victims: [String]) async -> Bool {
        let hosts = await cluster.liveHosts
        return await withTaskGroup(of: Bool.self) { group in
            for h in hosts { group.addTask { await self.seenDead(victims, by: h) } }
            for await held in group where !held { return false }
            return true
        }
    }

    /// The leader holds `victim` dead: what its plan moves work on.
    private func seenDeadByLeader(_ victim: String) async -> Bool {
        guard let l = await cluster.leader(), l.name != victim, let h = await cluster.host(named: l.name) else { return false }
        return await seenDead([victim], by: h)
    }

    private func seenDead(_ victims: [String], by h: ChaosCluster.Host) async -> Bool {
        guard let members = await cluster.members(h) else { return false }
        for v in victims {
            let status = members.first(where: { $0.name == v })?.status
            if status == .alive || status == .suspect { return false }
        }
        return true
    }

    private func webIDs(_ hosts: [ChaosCluster.Host]) async -> [String: Set<String>] {
        var out: [String: Set<String>] = [:]
        for h in hosts { out[h.name] = await ChaosChecks.ids(on: h, timeoutMillis: 2000)?["web"] ?? [] }
        return out
    }

    private func allIDs(_ hosts: [ChaosCluster.Host]) async -> [String: [String: Set<String>]] {
        var out: [String: [String: Set<String>]] = [:]
        for h in hosts { out[h.name] = await ChaosChecks.ids(on: h, timeoutMillis: 2000) ?? [:] }
        return out
    }

    /// Adoption across an agent restart: of the containers a host runs afterwards, as many as it
    /// ran before must be the very same ones (none stopped and made again). A restart may still
    /// move work (a SIGTERM leaves the cluster gracefully, and the planner places the work of a
    /// member that left elsewhere; the host then gets a fresh assignment), but never recreates it.
    static func recreated(_ host: String, before: [String: Set<String>], after: [String: Set<String>]) -> [String] {
        var out: [String] = []
        for service in Set(before.keys).union(after.keys).sorted() {
            let b = before[service] ?? [], a = after[service] ?? []
            let kept = a.intersection(b).count
            if kept < min(a.count, b.count) {
                out.append("\(host): \(service) containers recreated across the restart (\(b.count) before, \(a.count) after, \(kept) the same)")
            }
        }
        return out
    }

    private func sleep(_ seconds: Double) async throws { try await Task.sleep(for: .milliseconds(Int64(seconds * 1000))) }

    // MARK: Scenarios

    /// SIGKILL of everything on a host: its priority-1 work runs elsewhere; it comes back empty
    /// and receives a fresh assignment.
    /// With `powerCut`, the host's link goes down before its processes die, so no connection is
    /// reset: the figure comparable with Swarm's, Nomad's and Kubernetes' node failures.
    private func hostKill(powerCut: Bool = false) async throws {
        let v = try await victim()
        if powerCut {
            notes.append("power cut on \(v.name): link down, then every process killed")
            faultStarts()
            await cluster.powerCut(v)
        } else {
            notes.append("killed \(v.name)")
            faultStarts()
            await cluster.killHost(v)
        }
        everKilled.insert(v.name)
        let d = demand, name = v.name, cluster = self.cluster
        try await untilEach(
            [
                ("dead_to_leader", { await self.seenDeadByLeader(name) }),
                ("dead_everywhere", { await self.seenDeadByAll([name]) }),
                ("p1_restored", { await ChaosChecks.priorityOneRestored(cluster, demand: d) }),
            ], seconds: 30)
        try await settle("converged")
        try await cluster.restartHost(v)
        try await settle("rejoined")
    }

    /// SIGKILL of the leader's agent: a new leader, the next write committed, no web container of
    /// the survivors restarted; the old leader's agent comes back and adopts its containers.
    private func leaderKill() async throws {
        let l = try await leaderHost()
        let survivors = await cluster.liveHosts.filter { $0 !== l }
        let before = await webIDs(survivors)
        notes.append("killed the agent of leader \(l.name)")
        faultStarts()
        await cluster.signalAgent(l, SIGKILL)
        try await until("new_leader", seconds: 30) { await newLeader(other: l.name) }
        try await setDemand(demand + 10)
        timings["write_committed"] = elapsed
        try await settle("converged")
        let after = await webIDs(survivors)
        for (h, ids) in before where !ids.isSubset(of: after[h] ?? []) {
            problems.append("\(h): web containers restarted or stopped across the failover")
        }
        _ = await cluster.waitForAgentExit(l)
        try await cluster.restartHost(l)
        try await settle("rejoined")
    }

    /// Server membership at runtime (docs/consensus.md, "Server membership"): a client host is
    /// restarted as a server; the leader adds it as a learner and promotes it to voter; a write
    /// commits with four voters. Then it leaves (`POST /v1/agent/leave`: out of the configuration
    /// and the cluster) and comes back as the client it was.
    private func addServer() async throws {
        guard let h = await cluster.hosts.first(where: { !$0.server }) else { throw ChaosError("no client host") }
        let servers = Set(await cluster.serverHosts.map(\.name))
        notes.append("made \(h.name) a server")
        await cluster.signalAgent(h, SIGTERM)
        guard await cluster.waitForAgentExit(h) else { throw ChaosError("\(h.name)'s agent did not exit on SIGTERM") }
        try await cluster.setAddedServer(h, true)
        t0 = ContinuousClock.now
        try await cluster.restartHost(h)
        try await until("learner", seconds: 30) { await cluster.raftPeers()?.contains { $0.name == h.name } == true }
        try await until("voter", seconds: 30) { await cluster.raftPeers()?.contains { $0.name == h.name && $0.voter } == true }
        try await setDemand(demand + 10)
        timings["write_committed"] = elapsed
        try await settle("converged")
        // Back as it was: it leaves the Raft configuration and the cluster, and starts as a client.
        guard let (status, _) = await cluster.send("POST", h, "/v1/agent/leave", "", timeoutMillis: 20_000), status == 200 else {
            throw ChaosError("\(h.name) did not leave")
        }
        try await until("left", seconds: 30) { await cluster.raftPeers().map { Set($0.map(\.name)) == servers } == true }
        await cluster.signalAgent(h, SIGTERM)
        _ = await cluster.waitForAgentExit(h)
        try await cluster.setAddedServer(h, false)
        try await cluster.restartHost(h)
        try await settle("rejoined")
    }

    /// A follower server's host dies for good: the leader's autopilot removes it from the voters
    /// after `--dead-server-cleanup` (30 s), writes commit; it comes back (same data) and is added
    /// back as a learner, then a voter.
    private func removeDeadServer() async throws {
        let leader = try await leaderHost()
        guard let f = await cluster.serverHosts.first(where: { $0 !== leader }) else { throw ChaosError("no follower") }
        notes.append("killed the host of follower \(f.name)")
        faultStarts()
        await cluster.killHost(f)
        everKilled.insert(f.name)
        try await until("removed", seconds: 60, every: .milliseconds(250)) {
            await cluster.raftPeers().map { !$0.contains { $0.name == f.name } } == true
        }
        try await setDemand(demand + 10)
        timings["write_committed"] = elapsed
        try await settle("converged")
        try await cluster.restartHost(f)
        try await until("voter_again", seconds: 60, every: .milliseconds(250)) {
            await cluster.raftPeers()?.contains { $0.name == f.name && $0.voter } == true
        }
        try await settle("rejoined")
    }

    /// SIGKILL of a follower server's agent: writes keep being acknowledged; it catches up.
    private func followerKill() async throws {
        let leader = try await leaderHost()
        guard let f = await cluster.serverHosts.first(where: { $0 !== leader }) else { throw ChaosError("no follower") }
        notes.append("killed the agent of follower \(f.name)")
        faultStarts()
        await cluster.signalAgent(f, SIGKILL)
        try await setDemand(demand + 10)
        timings["write_committed"] = elapsed
        try await settle("converged")
        _ = await cluster.waitForAgentExit(f)
        try await cluster.restartHost(f)
        try await settle("rejoined")
    }

    /// SIGSTOP of every process of a host (or of the leader's host) for 10 s: declared dead from
    /// probe timeouts alone (its sockets stay open), its work placed elsewhere; thawed, it stops
    /// what now runs elsewhere.
    private func frozenHost(leader: Bool) async throws {
        let v = leader ? try await leaderHost() : try await victim()
        notes.append("froze \(v.name) for 10 s")
        faultStarts()
        await cluster.freeze(v)
        if leader { try await until("new_leader", seconds: 10) { await newLeader(other: v.name) } }
        try await until("dead_everywhere", seconds: 10) { await seenDeadByAll([v.name]) }
        try await until("p1_restored", seconds: 10) { await ChaosChecks.priorityOneRestored(cluster, demand: demand) }
        if leader {
            try await setDemand(demand + 10)
            timings["write_committed"] = elapsed
        }
        let left = 10_000 - elapsed
        if left > 0 { try await sleep(left / 1000) }
        await cluster.thaw(v)
        timings["thawed"] = elapsed
        try await settle("converged")
    }

    /// One host cut off from all others for 10 s: its work runs elsewhere; after the heal it
    /// merges back and stops its now-extra containers.
    private func partitionOne() async throws {
        let v = try await victim()
        let others = cluster.hosts.filter { $0 !== v }
        notes.append("isolated \(v.name) for 10 s")
        faultStarts()
        try await cluster.partition([v], others)
        try await until("dead_everywhere", seconds: 10) { await seenDeadByAll([v.name]) }
        try await until("p1_restored", seconds: 10) { await ChaosChecks.priorityOneRestored(cluster, demand: demand) }
        let left = 10_000 - elapsed
        if left > 0 { try await sleep(left / 1000) }
        await cluster.heal()
        timings["healed"] = elapsed
        try await settle("converged")
    }

    /// The leader and one more host cut off from the other three: the majority elects a leader and
    /// commits; the old leader commits nothing (Raft §5.2, checked by the observer); after the
    /// heal everything converges on the majority's state.
    private func partitionLeader() async throws {
        let l = try await leaderHost()
        let hosts = cluster.hosts
        guard hosts.count >= 5 else {
            notes.append("needs 5 hosts; skipped")
            return
        }
        let partner = hosts.first { $0 !== l && !$0.server } ?? hosts.first { $0 !== l }!
        let minority = [l, partner]
        let majority = hosts.filter { h in !minority.contains { $0 === h } }
        notes.append("isolated leader \(l.name) with \(partner.name) for 10 s")
        faultStarts()
        try await cluster.partition(minority, majority)
        try await until("new_leader", seconds: 10) { await newLeader(other: l.name) }
        try await setDemand(demand + 10)
        timings["write_committed"] = elapsed
        try await until("p1_restored", seconds: 15) { await ChaosChecks.priorityOneRestored(cluster, demand: demand) }
        let left = 10_000 - elapsed
        if left > 0 { try await sleep(left / 1000) }
        await cluster.heal()
        timings["healed"] = elapsed
        try await settle("converged")
    }

    /// Two sides long enough for each to declare the other dead, then the heal: membership merges
    /// by itself (dead members are re-dialed for a bounded window) and assignments converge.
    private func partitionHeal() async throws {
        let hosts = cluster.hosts
        let l = try await leaderHost()
        let side = hosts.filter { $0 !== l }.suffix(max(1, (hosts.count - 1) / 2))
        let rest = hosts.filter { h in !side.contains { $0 === h } }
        notes.append("split \(side.map(\.name)) from \(rest.map(\.name)) for 15 s")
        faultStarts()
        try await cluster.partition(Array(side), rest)
        try await until("dead_everywhere", seconds: 15) { await seenDeadByAll(side.map(\.name)) }
        let left = 15_000 - elapsed
        if left > 0 { try await sleep(left / 1000) }
        await cluster.heal()
        let healed = elapsed
        timings["healed"] = healed
        try await until("merged", seconds: 30, every: .milliseconds(100)) {
            for h in await cluster.liveHosts {
                guard let m = await cluster.members(h), m.count >= hosts.count, m.allSatisfy({ $0.status == .alive || $0.name == "spare-node" })
                else { return false }
            }
            return true
        }
        if let m = timings["merged"] { timings["merged_after_heal"] = m - healed }
        try await settle("converged")
    }

    /// 20% of packets between hosts lost (and 50 ms latency where the kernel has netem) for 20 s,
    /// with a demand step inside it.
    private func linkLoss() async throws {
        let hosts = cluster.hosts
        try await cluster.loss(0.2, on: hosts)
        if await cluster.latency(50, on: hosts) {
            notes.append("20% loss and 50 ms latency for 20 s")
        } else {
            notes.append("20% loss for 20 s; latency skipped: this kernel has no sch_netem")
        }
        try await setDemand(demand + 30)
        timings["write_committed"] = elapsed
        try await until("p1_restored", seconds: 20) { await ChaosChecks.priorityOneRestored(cluster, demand: demand) }
        let left = 20_000 - elapsed
        if left > 0 { try await sleep(left / 1000) }
        await cluster.heal()
        timings["healed"] = elapsed
        try await settle("converged")
    }

    /// SIGTERM and start again: the agent adopts its containers (same ids, no duplicates).
    private func agentRestart() async throws {
        let v = try await victim()
        let before = await ChaosChecks.ids(on: v, timeoutMillis: 2000) ?? [:]
        notes.append("restarted the agent of \(v.name)")
        faultStarts()
        await cluster.signalAgent(v, SIGTERM)
        guard await cluster.waitForAgentExit(v) else { throw ChaosError("\(v.name)'s agent did not exit on SIGTERM within 15 s") }
        timings["stopped"] = elapsed
        try await cluster.restartHost(v)
        try await settle("converged")
        let after = await ChaosChecks.ids(on: v, timeoutMillis: 2000) ?? [:]
        problems += Self.recreated(v.name, before: before, after: after)
    }

    /// Every server restarted in turn (SIGTERM), each waiting for the cluster to be whole again;
    /// each adopts its containers; a write is acknowledged at the end.
    private func rollingRestart() async throws {
        for s in await cluster.serverHosts {
            let before = await ChaosChecks.ids(on: s, timeoutMillis: 2000) ?? [:]
            await cluster.signalAgent(s, SIGTERM)
            guard await cluster.waitForAgentExit(s) else { throw ChaosError("\(s.name)'s agent did not exit on SIGTERM") }
            try await cluster.restartHost(s)
            try await until("\(s.name)_back", seconds: 30) {
                let back = await cluster.selfView(s) != nil
                let leader = await cluster.leader()
                return back && leader != nil
            }
            try await settle("\(s.name)_converged")
            problems += Self.recreated(s.name, before: before, after: await ChaosChecks.ids(on: s, timeoutMillis: 2000) ?? [:])
        }
        try await setDemand(demand)
    }

    /// Every agent, servers and clients, SIGTERMed and started again in turn, as a rolling upgrade
    /// does (issue 19, item 2). Restart is not leave: no container anywhere in the cluster may be
    /// stopped, started or moved, so every host's container ids after each restart are the ones
    /// it ran before the first.
    private func rollingRestartZeroMoves() async throws {
        let hosts = await cluster.liveHosts
        let (changed, total) = try await restartEachWithoutMoves(hosts)
        notes.append("restarted \(hosts.count) agents; \(changed) of \(total) containers stopped or started")
    }

    /// An upgrade (issue 19, item 2): every agent first runs the previous commit's binary (a
    /// rolling restart onto it, SIGTERM and start on the same data directory), then each is
    /// replaced in turn by this commit's binary, the same way. No container anywhere may be
    /// stopped, started or moved in either round: the ids on every host after each replacement
    /// are the ones it ran before the first.
    private func upgrade() async throws {
        guard let previous = cluster.options.previousExecutable else {
            throw ChaosError("upgrade needs the previous commit's binary (--previous-binary PATH; chaos/run upgrade builds it)")
        }
        let hosts = await cluster.liveHosts
        do {
            let (down, total) = try await restartEachWithoutMoves(hosts, label: "old_") { h in await self.cluster.setExecutable(h, previous) }
            notes.append("onto the previous binary (\(previous)): \(hosts.count) agents restarted; \(down) of \(total) containers stopped or started")
            let (up, total2) = try await restartEachWithoutMoves(hosts) { h in await self.cluster.setExecutable(h, nil) }
            notes.append("upgraded \(hosts.count) agents to this binary one at a time; \(up) of \(total2) containers stopped or started")
        } catch {
            // Later scenarios run this commit's binary, whatever happened here.
            for h in hosts { await cluster.setExecutable(h, nil) }
            throw error
        }
    }

    /// SIGTERMs and starts every host's agent in turn (after `prepare`, which may change what it
    /// runs), waiting for each to be back and the cluster converged; every container that was
    /// stopped or started anywhere is a problem. Returns (containers moved, containers before).
    private func restartEachWithoutMoves(
        _ hosts: [ChaosCluster.Host], label: String = "",
        prepare: (ChaosCluster.Host) async -> Void = { _ in }
    ) async throws -> (Int, Int) {
        let before = await allIDs(hosts)
        var changed = 0
        for h in hosts {
            await prepare(h)
            await cluster.signalAgent(h, SIGTERM)
            guard await cluster.waitForAgentExit(h) else { throw ChaosError("\(h.name)'s agent did not exit on SIGTERM within 15 s") }
            try await cluster.restartHost(h)
            try await until("\(label)\(h.name)_back", seconds: 30) {
                let back = await cluster.selfView(h) != nil
                let leader = await cluster.leader()
                return back && leader != nil
            }
            try await settle("\(label)\(h.name)_converged")
            let now = await allIDs(hosts)
            for other in hosts {
                for service in Set(before[other.name, default: [:]].keys).union(now[other.name, default: [:]].keys).sorted() {
                    let b = before[other.name]?[service] ?? [], a = now[other.name]?[service] ?? []
                    let moved = b.symmetricDifference(a).count
                    if moved > 0 {
                        changed += moved
                        problems.append(
                            "after restarting \(h.name)\(label.isEmpty ? "" : " (\(label))"): \(other.name) \(service): \(b.subtracting(a).count) stopped, \(a.subtracting(b).count) started"
                        )
                    }
                }
            }
        }
        let total = before.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.count } }
        return (changed, total)
    }

    /// Demand changing every 100 ms for 10 s (the observer checks capacity throughout), then back
    /// to the baseline: the cluster converges on the last value.
    private func demandStorm() async throws {
        var sent = 0, acknowledged = 0
        let hosts = await cluster.liveHosts
        while elapsed < 10_000 {
            let value = Double(Int.random(in: 1...12, using: &random) * 10)
            let h = hosts[sent % hosts.count]
            sent += 1
            if let (s, _) = await cluster.send("PUT", h, "/v1/demand/web", "{\"value\": \(value)}", timeoutMillis: 2000), s == 200 {
                acknowledged += 1
            }
            try await sleep(0.1)
        }
        notes.append("\(acknowledged)/\(sent) demand writes acknowledged")
        try await setDemand(Self.baselineDemand)
        try await settle("converged")
    }

    /// Two hosts (a client and a follower server) killed at once.
    private func twoHostsDie() async throws {
        let leader = try await leaderHost()
        let first = try await victim()
        let live = await cluster.liveHosts
        guard
            let second = live.first(where: { $0 !== first && $0 !== leader && $0.server != first.server })
                ?? live.first(where: { $0 !== first && $0 !== leader })
        else { throw ChaosError("no second host to kill") }
        notes.append("killed \(first.name) and \(second.name)")
        faultStarts()
        await cluster.killHost(first)
        await cluster.killHost(second)
        everKilled.formUnion([first.name, second.name])
        try await until("p1_restored", seconds: 30) { await ChaosChecks.priorityOneRestored(cluster, demand: demand) }
        try await until("dead_everywhere", seconds: 30) { await seenDeadByAll([first.name, second.name]) }
        try await settle("converged")
        try await cluster.restartHost(first)
        try await cluster.restartHost(second)
        try await settle("rejoined")
    }

    /// Every agent SIGKILLed at once and started again: a leader from the persisted logs, the
    /// committed state intact, every container adopted (static stability: nothing restarted).
    private func fullRestart() async throws {
        let hosts = await cluster.liveHosts
        let before = await allIDs(hosts)
        for h in hosts { await cluster.signalAgent(h, SIGKILL) }
        for h in hosts { _ = await cluster.waitForAgentExit(h) }
        timings["all_down"] = elapsed
        for h in hosts { try await cluster.restartHost(h) }
        try await until("leader", seconds: 30) { (await cluster.leader()) != nil }
        try await settle("converged")
        let after = await allIDs(hosts)
        if after != before { problems.append("containers changed across the full restart") }
    }

    // MARK: Crash safety and soak

    /// `crash-writes`: a stream of acknowledged writes (drain flags `cw-K`, one key each, so every
    /// one can be checked) while a server, chosen at random and often the leader, is SIGKILLed
    /// `kills` times and restarted. No acknowledged write may be missing at the end (Raft §5.4:
    /// a committed entry is in every later leader's log).
    public func crashWrites(kills: Int) async -> ChaosResult {
        problems = []
        timings = [:]
        notes = []
        t0 = ContinuousClock.now
        let writer = CrashWriter(cluster: cluster)
        let writing = Task { await writer.run() }
        var done = 0
        do {
            for _ in 0..<kills {
                let servers = await cluster.serverHosts
                let s = servers[Int.random(in: 0..<servers.count, using: &random)]
                await cluster.signalAgent(s, SIGKILL)
                guard await cluster.waitForAgentExit(s) else { throw ChaosError("\(s.name) did not die") }
                try await sleep(Double.random(in: 0.2...1.0, using: &random))
                try await cluster.restartHost(s)
                guard try await pollUntil(20, { await cluster.selfView(s) != nil }) else { throw ChaosError("\(s.name) did not come back") }
                done += 1
                try await sleep(0.3)
            }
        } catch {
            problems.append("stopped after \(done) kills: \(error)")
        }
        await writer.stop()
        _ = await writing.value
        let acknowledged = await writer.acknowledged
        timings["kills_done"] = elapsed
        notes.append("\(done) SIGKILLs, \(acknowledged.count) acknowledged writes of \(await writer.sent) sent")
        var have: Set<String> = []
        if try! await pollUntil(30, { (await cluster.leader()) != nil }) {
            for h in await cluster.liveHosts {
                if let d = await cluster.get(h, "/v1/nodes/drained", timeoutMillis: 5000),
                    let list = try? JSONDecoder().decode([String].self, from: d)
                {
                    have = Set(list)
                    break
                }
            }
        }
        let lost = acknowledged.subtracting(have)
        if have.isEmpty {
            problems.append("could not read the drain flags back")
        } else if !lost.isEmpty {
            problems.append("\(lost.count) acknowledged writes lost: \(lost.sorted().prefix(10).joined(separator: ", "))")
        }
        drained.formUnion(acknowledged)
        return ChaosResult(
            scenario: "crash-writes", repetition: 1, passed: problems.isEmpty, problems: problems,
            timings: timings, notes: notes, figures: ["acknowledged_writes": Double(acknowledged.count), "kills": Double(done)])
    }

    /// `soak`: demand changing every second for `minutes`, each agent's resident memory and CPU
    /// sampled; memory growth is last sample against the one after the first minute of warm-up.
    public func soak(minutes: Double) async -> ChaosResult {
        problems = []
        timings = [:]
        notes = []
        // Warm-up: the servers keep bounded histories (the last 1,000 decisions, ~300 B of JSON each
        // with their reasons; the Raft log between snapshots) that at one write a second take most of
        // the hour to fill, and that ramp read as memory growth. It is not a leak: filled by 20,000
        // fast writes, a leader's heap stopped at its bound after ~4,000 and grew 0.5% over the next
        // 16,000. So the soak first fills the decision history and runs until every server has
        // compacted its log once (from then on each holds a snapshot and between 0 and
        // `compactEvery` entries), then measures. A rise is planned at once, a fall only after the
        // planner's 3 s stabilization window, so each cycle steps demand up through 12 values
        // (12 decisions), drops it, and waits out the window (one more).
        let warmStart = ContinuousClock.now
        var warmupWrites = 0
        var snapshotIndexes: [String: UInt64?] = [:]
        warm: while ContinuousClock.now - warmStart < .seconds(1500) {
            let step = ChaosServices.perContainer
            for value in stride(from: step, through: step * Double(ChaosServices.webMax), by: step) + [step] {
                if await cluster.write("PUT", "/v1/demand/web", "{\"value\": \(value)}", seconds: 5) {
                    demand = value
                    warmupWrites += 1
                }
            }
            try? await Task.sleep(for: Scaling.Planner().stabilizationWindow + .milliseconds(400))
            guard let h = await cluster.liveHosts.first,
                let data = await cluster.get(h, "/v1/decisions?limit=\(ClusterState.maxDecisions)", timeoutMillis: 3000),
                let list = try? JSONSerialization.jsonObject(with: data) as? [Any], list.count >= ClusterState.maxDecisions
            else { continue }
            snapshotIndexes = await serverSnapshotIndexes()
            if snapshotIndexes.values.allSatisfy({ ($0 ?? 0) > 0 }) { break warm }
        }
        let warmupSeconds = Double((ContinuousClock.now - warmStart).components.seconds)
        FileHandle.standardError.write(
            Data(
                ("soak: warm-up: \(warmupWrites) writes in \(Int(warmupSeconds)) s fill the decision history"
                    + " and compact every server's log once (snapshot indexes \(snapshotIndexes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.map(String.init) ?? "-")" }.joined(separator: ", ")))\n")
                    .utf8))
        t0 = ContinuousClock.now
        let end = minutes * 60_000
        let every = max(5_000.0, min(60_000.0, end / 20))
        var samples: [[String: (rss: Double, anon: Double, cpu: Double)]] = []
        var nextSample = 0.0
        var writes = 0
        var firstCPU: [String: Double] = [:]
        while elapsed < end {
            let value = Double(Int.random(in: 1...12, using: &random) * 10)
            if await cluster.write("PUT", "/v1/demand/web", "{\"value\": \(value)}", seconds: 5) {
                demand = value
                writes += 1
            }
            if elapsed >= nextSample {
                nextSample += every
                var row: [String: (rss: Double, anon: Double, cpu: Double)] = [:]
                for h in cluster.hosts {
                    guard let pid = await cluster.agentPID(h), let p = ProcessSample.read(pid) else { continue }
                    row[h.name] = (p.rssBytes / 1_048_576, p.anonBytes / 1_048_576, p.cpuSeconds)
                    if firstCPU[h.name] == nil { firstCPU[h.name] = p.cpuSeconds }
                }
                samples.append(row)
                let rss = row.values.map(\.rss), anon = row.values.map(\.anon)
                // Each server's last snapshot index, so a step in memory can be matched to a compaction.
                let compacted = await serverSnapshotIndexes().sorted { $0.key < $1.key }.map { $0.value.map(String.init) ?? "-" }
                FileHandle.standardError.write(
                    Data(
                        String(
                            format: "soak: %5.0f s: agent RSS %.1f-%.1f MiB (anonymous %.1f-%.1f), servers' snapshot indexes %@\n",
                            elapsed / 1000, rss.min() ?? 0, rss.max() ?? 0, anon.min() ?? 0, anon.max() ?? 0,
                            compacted.joined(separator: "/")
                        ).utf8))
            }
            try? await sleep(1)
        }
        try? await settle("converged")
        var figures: [String: Double] = [
            "demand_writes": Double(writes), "minutes": minutes,
            "warmup_writes": Double(warmupWrites), "warmup_seconds": warmupSeconds,
        ]
        // Growth from the sample after a minute of warm-up (or the first) to the last.
        let warm = samples.firstIndex { _ in true }.map { i in min(samples.count - 1, i + Int((60_000 / every).rounded(.up))) } ?? 0
        if let last = samples.last, samples.count > 1 {
            var worst = -Double.infinity, worstAnon = -Double.infinity
            for (name, l) in last {
                guard let w = samples[warm][name] ?? samples[0][name], w.rss > 0 else { continue }
                worst = max(worst, (l.rss - w.rss) / w.rss * 100)
                if w.anon > 0 { worstAnon = max(worstAnon, (l.anon - w.anon) / w.anon * 100) }
                figures["rss_mib_\(name)"] = l.rss
                figures["anon_mib_\(name)"] = l.anon
                if let c0 = firstCPU[name] { figures["cpu_pct_\(name)"] = (l.cpu - c0) / (elapsed / 1000) * 100 }
            }
            figures["rss_growth_pct_max"] = worst
            figures["anon_growth_pct_max"] = worstAnon
            notes.append(String(format: "worst agent memory growth %.1f%% over the run after warm-up (anonymous memory: %.1f%%)", worst, worstAnon))
        }
        return ChaosResult(
            scenario: "soak", repetition: 1, passed: problems.isEmpty, problems: problems,
            timings: timings, notes: notes, figures: figures)
    }
}

extension ChaosRunner {
    /// Each server's last Raft snapshot index (nil: it did not answer), by host name.
    func serverSnapshotIndexes() async -> [String: UInt64?] {
        var out: [String: UInt64?] = [:]
        for h in cluster.hosts where h.server { out[h.name] = await cluster.selfView(h)?.raft?.snapshotIndex }
        return out
    }
}

/// The crash-writes stream: one write at a time through any live host, each with its own key.
actor CrashWriter {
    let cluster: ChaosCluster
    private(set) var acknowledged: Set<String> = []
    private(set) var sent = 0
    private var stopped = false
    init(cluster: ChaosCluster) { self.cluster = cluster }
    func stop() { stopped = true }
    func run() async {
        var k = 0
        while !stopped {
            let live = await cluster.liveHosts
            guard !live.isEmpty else {
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            k += 1
            sent += 1
            let key = "cw-\(k)"
            if let (s, _) = await cluster.send("POST", live[k % live.count], "/v1/nodes/\(key)/drain", "", timeoutMillis: 2000), s == 200 {
                acknowledged.insert(key)
            } else {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }
}
