import Foundation
import NIOConcurrencyHelpers
import Prometheus

/// `GET /metrics` (Prometheus text format) through swift-prometheus, one registry per agent (several
/// agents can live in one test process). Levels (members, term, desired, running, demand) are read at
/// scrape time; what only grows (leader changes, plans, reconciler actions, gossip bytes) is kept by
/// the services and carried into counters by the difference since the last scrape; the decision
/// loop records its own latency into a histogram.
public final class AgentMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// Time from the decision loop waking to its plan being committed (or found unchanged).
    public let decisionLatency: DurationHistogram
    private let seen = NIOLockedValueBox<[String: Double]>([:])

    public init() {
        decisionLatency = registry.makeDurationHistogram(
            name: "microscale_decision_loop_duration_seconds",
            buckets: [
                .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
            ],
            help: "Decision loop runs on the leader: read state, plan, commit")
    }

    /// Adds what a cumulative value grew by since the last scrape to its counter.
    func advance(_ name: String, labels: [(String, String)] = [], to total: Double, help: String) {
        let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let delta = seen.withLockedValue { d -> Double in
            let before = d[key] ?? 0
            d[key] = max(before, total)
            return max(0, total - before)
        }
        let counter = registry.makeCounter(name: name, labels: labels, help: help)
        if delta > 0 { counter.increment(by: delta) }
    }

    func set(_ name: String, labels: [(String, String)] = [], _ value: Double, help: String) {
        registry.makeGauge(name: name, labels: labels, help: help).set(value)
    }

    /// Refreshes every level from the runtime and renders the registry.
    func render(_ r: AgentRuntime) async -> String {
        let members = await r.membership.members()
        var byStatus: [String: Int] = ["alive": 0, "suspect": 0, "dead": 0, "left": 0]
        for m in members { byStatus[m.status.rawValue, default: 0] += 1 }
        for (status, n) in byStatus {
            set("microscale_members", labels: [("status", status)], Double(n), help: "Members by status, as this agent sees them")
        }
        let (messages, bytes) = await r.membership.traffic()
        advance("microscale_gossip_messages_sent_total", to: Double(messages), help: "Membership messages sent")
        advance("microscale_gossip_bytes_sent_total", to: Double(bytes), help: "Membership bytes sent (framed, before TLS)")
        let reconciler = await r.executor.totals
        advance(
            "microscale_reconciler_actions_total", labels: [("action", "start")], to: Double(reconciler.started),
            help: "Containers started or stopped by this agent")
        advance(
            "microscale_reconciler_actions_total", labels: [("action", "stop")], to: Double(reconciler.stopped),
            help: "Containers started or stopped by this agent")
        advance("microscale_docker_errors_total", to: Double(reconciler.errors), help: "Docker Engine calls that failed")
        for (rule, n) in r.refusals.all {
            advance(
                "microscale_refused_messages_total", labels: [("rule", rule.rawValue)], to: Double(n),
                help: "Messages from peers dropped by a trust rule (docs/ARCHITECTURE.md, Trust)")
        }
        let tls = r.transport.tlsContext
        set(
            "microscale_tls_certificate_expiry_seconds", tls.notAfter,
            help: "When this agent's TLS certificate expires, in seconds since 1970 (the one in use after the last reload)")
        if let raft = r.raft, let s = await raft.status() {
            set("microscale_raft_term", Double(s.term), help: "Current Raft term")
            set("microscale_raft_commit_index", Double(s.commitIndex), help: "Raft commit index")
            set("microscale_raft_snapshot_index", Double(s.snapshotIndex), help: "Last Raft index folded into a snapshot (log compacted up to it)")
            set("microscale_raft_is_leader", s.role == "leader" ? 1 : 0, help: "1 on the Raft leader")
            advance("microscale_raft_leader_changes_total", to: Double(await raft.leaderChanges), help: "Changes of known leader seen by this server")
            advance(
                "microscale_raft_linearizable_reads_total", to: Double(await raft.linearizableReads),
                help: "API reads this server answered after a ReadIndex round (docs/consensus.md)")
            let state = await raft.state
            var running: [String: Int] = [:]
            for m in members where m.status == .alive || m.status == .suspect {
                for (svc, n) in m.running { running[svc, default: 0] += n }
            }
            let demand = await r.decisions?.demandInUse ?? [:]
            for name in state.services.keys {
                set(
                    "microscale_service_desired", labels: [("service", name)], Double(state.plan.count(service: name)),
                    help: "Containers the committed plan wants")
                set(
                    "microscale_service_running", labels: [("service", name)], Double(running[name] ?? 0),
                    help: "Containers running, as the members report")
                if let d = demand[name] ?? state.demand[name] {
                    set("microscale_service_demand", labels: [("service", name)], d, help: "Demand the planner last used")
                }
            }
            advance(
                "microscale_plans_committed_total", to: Double(await r.decisions?.plansCommitted ?? 0), help: "Plans this server committed as leader")
        }
        return registry.emitToString()
    }
}
