/// How servers started with `--bootstrap-expect N` agree on one voter set before the first election
/// (docs/consensus.md, "Bootstrap"). Pure: the shell feeds it the servers it sees, the time and the
/// messages it receives, and carries out what it returns.
///
/// Taking "myself and the first N-1 others I see" let two servers with different partial views
/// bootstrap different sets whose majorities do not intersect: two leaders in one term. Here a
/// server *pledges* to one candidate set, at most once and for good (the shell persists the pledge
/// before anyone hears of it), and starts Raft only when every member of that set has pledged to
/// the same set. A server pledges to a set only when it is the candidate of its own view too:
/// the N lowest names among the servers it sees, once that view has been the same for
/// `stableFor` (servers started together see each other within a few probe rounds, and then all
/// compute the same set). Two different sets can both start only if no server pledged to both,
/// that is if they are disjoint: impossible with N > half the servers, which is what N must be.
///
/// A server not in the candidate set never starts Raft by itself; it waits for runtime server
/// membership to add it. A reply from a server that already runs Raft with voters that include
/// this one lets it start with those voters (it restarted before writing them down).
struct BootstrapAgreement: Sendable {
    enum Reply: Sendable, Equatable {
        case pledged([String])
        case hasState(voters: [String])
        /// Not pledged: the set this server would choose from what it sees (empty: none yet).
        case candidate([String])
    }

    enum Effect: Sendable, Equatable {
        /// Write the pledge to disk before anything else goes out.
        case persistPledge([String])
        /// Ask these members whether they pledged to the set.
        case propose([String], to: [String])
        /// Everyone agreed: start Raft with these voters.
        case bootstrap([String])
    }

    static let stableFor: Duration = .seconds(1)

    let name: String
    let expect: Int
    private(set) var pledge: [String]?
    private var confirmed: Set<String> = []
    private var view: [String] = []
    private var viewSince: Duration = .zero

    init(name: String, expect: Int, pledge: [String]? = nil) {
        self.name = name
        self.expect = expect
        self.pledge = pledge
    }

    /// The N lowest names among the servers seen, if this server is among them.
    func candidate() -> [String]? {
        guard expect > 0, view.count >= expect else { return nil }
        let set = Array(view.prefix(expect))
        return set.contains(name) ? set : nil
    }

    /// The servers this one sees now (itself included or not); called every few hundred ms.
    mutating func observe(servers: Set<String>, now: Duration) -> [Effect] {
        let sorted = servers.union([name]).sorted()
        if sorted != view {
            view = sorted
            viewSince = now
        }
        var effects: [Effect] = []
        if pledge == nil, now - viewSince >= Self.stableFor, let c = candidate() {
            pledge = c
            confirmed = []
            effects.append(.persistPledge(c))
        }
        guard let p = pledge else { return effects }
        let waiting = p.filter { $0 != name && !confirmed.contains($0) }
        if waiting.isEmpty { return effects + [.bootstrap(p)] }
        return effects + [.propose(p, to: waiting)]
    }

    /// A proposal from another server; `hasState` are this server's voters if it runs Raft.
    mutating func receiveProposal(_ set: [String], hasState: [String]?) -> (Reply, [Effect]) {
        if let voters = hasState { return (.hasState(voters: voters), []) }
        if let p = pledge { return (.pledged(p), []) }
        // Agreeing with someone else's view is as good as our own being stable: both say this set.
        if let c = candidate(), c == set.sorted() {
            pledge = c
            confirmed = []
            return (.pledged(c), [.persistPledge(c)])
        }
        return (.candidate(candidate() ?? []), [])
    }

    /// An answer to one of our proposals.
    mutating func receiveReply(_ reply: Reply, from peer: String) -> [Effect] {
        switch reply {
        case .pledged(let set):
            guard let p = pledge, set == p, p.contains(peer) else { return [] }
            confirmed.insert(peer)
            return p.allSatisfy { $0 == name || confirmed.contains($0) } ? [.bootstrap(p)] : []
        case .hasState(let voters):
            // A cluster exists. If it counts us as a voter we pledged to it (it could only start
            // once we had) and lost the rest in a restart: start with it. Otherwise we wait to be
            // added, and never start a second one.
            return voters.contains(name) && (pledge == nil || pledge == voters.sorted()) ? [.bootstrap(voters.sorted())] : []
        case .candidate:
            return []
        }
    }
}
