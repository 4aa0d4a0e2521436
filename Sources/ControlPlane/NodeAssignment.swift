import Consensus

/// One node's share of a committed plan: every declared service with its count here (0 included,
/// so the agent stops what it should no longer run) and its settings.
public struct NodeAssignment: Sendable, Equatable {
    public var planIndex: UInt64
    public var services: [String: (count: Int, spec: Consensus.ServiceSpec)]
    /// When the leader decided the plan (its wall clock, ms since 1970), where known: a server
    /// reads it from the plan's decision; a push from a server does not carry it.
    public var decidedAtMilliseconds: Int64?
    /// Services under a rolling update (docs/rollouts.md), every one of them (a count of 0
    /// included, so the node reports its progress): besides `count` containers of `spec`, keep
    /// up to `count` running containers of spec hash `spec` here (and never start one).
    public var keep: [String: Kept]
    /// Each service's `containerHash`: the state's (computed once when the spec was applied) on a
    /// server; computed once here for an assignment pushed to a client agent, which does not take
    /// a peer's word for the hash its containers are labelled with.
    public var specHashes: [String: String]

    public struct Kept: Sendable, Hashable {
        /// The hashes whose containers may be kept: the rollout's `from`, then older ones (a
        /// change made while another rolled out).
        public var specs: [String]
        public var count: Int
        public init(specs: [String], count: Int) {
            self.specs = specs
            self.count = count
        }
    }

    public init(
        planIndex: UInt64, services: [String: (count: Int, spec: Consensus.ServiceSpec)], decidedAtMilliseconds: Int64? = nil,
        keep: [String: Kept] = [:], specHashes: [String: String]? = nil
    ) {
        self.planIndex = planIndex
        self.services = services
        self.decidedAtMilliseconds = decidedAtMilliseconds
        self.keep = keep
        self.specHashes = specHashes ?? services.mapValues(\.spec.containerHash)
    }

    public static func == (a: NodeAssignment, b: NodeAssignment) -> Bool {
        a.planIndex == b.planIndex && a.keep == b.keep && a.services.keys.sorted() == b.services.keys.sorted()
            && a.services.allSatisfy { b.services[$0.key]?.count == $0.value.count && b.services[$0.key]?.spec == $0.value.spec }
    }

    /// The share of `node` in the state's committed plan; the plan's index is that of its entry.
    public static func of(_ state: ClusterState, node: String) -> NodeAssignment {
        var services: [String: (Int, Consensus.ServiceSpec)] = [:]
        var keep: [String: Kept] = [:]
        for (name, spec) in state.services {
            let hash = state.specHashes[name] ?? spec.containerHash
            if let r = state.plan.rollouts?[name], r.to == hash {
                // A rollout splits the planner's count between new and old containers.
                services[name] = (r.new[node] ?? 0, spec)
                keep[name] = Kept(specs: [r.from] + (r.alsoFrom ?? []), count: r.old[node] ?? 0)
            } else if let r = state.plan.rollouts?[name] {
                // A spec applied since the plan was made, which the next plan (a moment later)
                // rolls out: until then the node keeps what the plan runs and starts nothing,
                // rather than replacing every container at once with the new spec.
                keep[name] = Kept(specs: [r.to, r.from] + (r.alsoFrom ?? []), count: (r.new[node] ?? 0) + (r.old[node] ?? 0))
                services[name] = (0, spec)
            } else if let planned = state.plan.specs?[name], planned != hash {
                // The same, without a rollout under way.
                keep[name] = Kept(specs: [planned], count: state.plan.assignments[node]?[name] ?? 0)
                services[name] = (0, spec)
            } else {
                services[name] = (state.plan.assignments[node]?[name] ?? 0, spec)
            }
        }
        let decided = state.decisions.last { $0.index == state.planIndex }?.timestampMilliseconds
        return NodeAssignment(
            planIndex: state.planIndex, services: services, decidedAtMilliseconds: decided, keep: keep,
            specHashes: services.keys.reduce(into: [:]) { $0[$1] = state.specHashes[$1] ?? state.services[$1]?.containerHash })
    }
}
