import Bounds

/// The planner's dense form of a plan it made, kept inside the `Plan` so that the next plan starts
/// from it (docs/scaling.md, "Incremental re-planning").
///
/// A re-plan after one node's loss or one service's demand step changes a few hundred cells of a
/// 5,000 × 1,000 matrix; rebuilding that matrix from a million string-keyed entries and emitting it
/// back cost 200-400 ms (`perf`), the change itself a few. With the index, `Work` starts from the
/// previous pass's arrays, checks only the nodes whose inputs changed, and emits only the rows it
/// touched. Pure data: no clock, no randomness; the planner decides from the inputs alone whether
/// the index applies (same services, same node names in the same order), and plans in full when not.
final class PlanIndex: Sendable {
    /// The inputs as the caller gave them (services in their order; nodes in theirs), to compare
    /// the next inputs with.
    let services: [ServiceSpec]
    let nodes: [Node]
    /// Input node i is `sortedNodes[position[i]]`.
    let position: [Int]
    /// The working order: services by (priority, name), nodes by name, sizes bounded.
    let svc: [ServiceSpec]
    let sortedNodes: [Node]
    let eligible: [[Bool]]
    /// The plan's counts, [node][service], and what they leave free per node and total per service.
    let count: [[Int]]
    /// The same counts by service, [service][node] (`Work.column`).
    let column: [[Int]]
    let freeCPU: [Int]
    let freeMem: [Int]
    let totals: [Int]

    init(
        services: [ServiceSpec], nodes: [Node], position: [Int], svc: [ServiceSpec], sortedNodes: [Node],
        eligible: [[Bool]], count: [[Int]], column: [[Int]], freeCPU: [Int], freeMem: [Int], totals: [Int]
    ) {
        self.services = services
        self.nodes = nodes
        self.position = position
        self.svc = svc
        self.sortedNodes = sortedNodes
        self.eligible = eligible
        self.count = count
        self.column = column
        self.freeCPU = freeCPU
        self.freeMem = freeMem
        self.totals = totals
    }
}

/// Which services a node may hold: their constraints admit its labels and their image is not
/// blocked there. Most nodes block nothing and most services have no constraints: only the
/// constrained services' cells are evaluated, and a node's blocked images only where it has any.
/// (Going through every spec for every node copied each spec, names and arrays, 5 million times
/// on a 5,000 × 1,000 cell.)
struct EligibilityRule {
    let names: [String]
    let constraints: [[PlacementConstraint]]
    let constrained: [Int]
    let everywhere: [Bool]

    init(_ svc: [ServiceSpec]) {
        names = svc.map(\.name)
        let constraints = svc.map(\.constraints)
        self.constraints = constraints
        constrained = constraints.indices.filter { !constraints[$0].isEmpty }
        everywhere = [Bool](repeating: true, count: svc.count)
    }

    /// The rows of `nodes`: nodes with the same labels and nothing blocked share one row (a cell
    /// has a handful of label sets over thousands of nodes), computed once and stored once.
    func rows(_ nodes: [Node]) -> [[Bool]] {
        var byLabels: [[String: String]: [Bool]] = [:]
        return nodes.map { node in
            guard node.blocked.isEmpty else { return row(node) }
            if let shared = byLabels[node.labels] { return shared }
            let r = row(node)
            byLabels[node.labels] = r
            return r
        }
    }

    func row(_ node: Node) -> [Bool] {
        var row = everywhere
        for s in constrained where !constraints[s].allSatisfy({ $0.admits(node.labels) }) { row[s] = false }
        if !node.blocked.isEmpty {
            for s in row.indices where node.blocked[names[s]] != nil { row[s] = false }
        }
        return row
    }
}
