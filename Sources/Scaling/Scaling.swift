import Bounds

/// Scaling: the pure microscaling planner: (services, demand, nodes, current plan, now) -> new plan
/// and the reason for every change.
///
/// Pure: no clock, no random source. The time comes in as `now`; the state the stabilization window
/// needs travels inside the returned `Plan`, so the shell only hands the last plan back.

/// A declared service, as the planner needs it. CPU is in millicores so sums never drift.
public struct ServiceSpec: Sendable, Hashable {
    public var name: String
    /// 1 is the most important.
    public var priority: Int
    public var cpuMillis: Int
    public var memoryBytes: Int
    public var min: Int
    public var max: Int
    /// Demand one container absorbs (demand-driven services); ignored for fill services.
    public var perContainer: Double
    /// A fill service wants everything that is left, up to `max`.
    public var fill: Bool
    public var stopTimeout: Duration
    public var specHash: String
    /// How demand becomes a count beyond the proportional rule (band, PD, max change): Control.swift.
    public var control: Control
    /// Host ports each container holds fixed (`ports: [{host: 80}]`, docs/contracts.md, "The services file"): a resource of
    /// the node, so no two containers needing one of them are placed on one node.
    public var hostPorts: [Int]
    /// Labels a node must (`zone == a`) or must not (`disk != hdd`) have to hold a container of
    /// this service (docs/scheduling.md, "Constraints and spread"). Hard: a node that does not
    /// match gets none, in placement and in preemption, and loses those it has.
    public var constraints: [PlacementConstraint]
    /// A label whose values the containers are spread across evenly (`spread: zone`): the next
    /// container goes to the value with fewest, then to that value's node with fewest. Nodes
    /// without the label are one more value. Soft: a value with no room is left behind.
    public var spread: String?

    public init(
        name: String, priority: Int, cpuMillis: Int, memoryBytes: Int, min: Int = 0, max: Int,
        perContainer: Double = 1, fill: Bool = false, stopTimeout: Duration = .seconds(5),
        specHash: String = "", control: Control = Control(), hostPorts: [Int] = [],
        constraints: [PlacementConstraint] = [], spread: String? = nil
    ) {
        self.hostPorts = hostPorts
        self.constraints = constraints
        self.spread = spread
        self.name = name
        self.priority = priority
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.min = min
        self.max = max
        self.perContainer = perContainer
        self.fill = fill
        self.stopTimeout = stopTimeout
        self.specHash = specHash
        self.control = control
    }
}

public enum NodeStatus: String, Sendable, Hashable { case alive, suspect, dead, left }

public struct Node: Sendable, Hashable {
    public var name: String
    public var cpuMillis: Int
    public var memoryBytes: Int
    public var status: NodeStatus
    public var drained: Bool
    /// Containers the node reports running, per service.
    public var running: [String: Int]
    /// The node's labels (`--node-label zone=a`), which services' constraints and spread read.
    public var labels: [String: String]
    /// Services this node cannot run for now, with why (their image fails to pull here, with the
    /// registry's reason): it gets none of their containers until the node says otherwise.
    public var blocked: [String: String]

    public init(
        name: String, cpuMillis: Int, memoryBytes: Int, status: NodeStatus = .alive,
        drained: Bool = false, running: [String: Int] = [:], labels: [String: String] = [:],
        blocked: [String: String] = [:]
    ) {
        self.labels = labels
        self.blocked = blocked
        self.name = name
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.status = status
        self.drained = drained
        self.running = running
    }

    /// Work may stay on, and be placed on, this node. A suspect node keeps its work (it may be only
    /// slow; Lifeguard IV.A) but does not receive new containers.
    var keepsWork: Bool { (status == .alive || status == .suspect) && !drained }
    var acceptsWork: Bool { status == .alive && !drained }
}

public enum DemandValue: Sendable, Hashable {
    case known(Double)
    case unknown
}

public struct Plan: Sendable, Hashable {
    /// node -> service -> containers. Counts, not containers: 1M containers are 5,000 small maps.
    /// Changing them from outside drops the planner's indexed form (`index`), which describes
    /// these counts and no others.
    public var assignments: [String: [String: Int]] = [:] { didSet { index = nil } }
    /// Desired count per service as last decided (the base the stabilization window compares to).
    public var desired: [String: Int] = [:]
    /// Since when a demand-driven service has wanted fewer containers than `desired`.
    public var scaleDownSince: [String: Duration] = [:]
    /// What each PD-controlled service's controller remembers (the queue's trend): Control.swift.
    public var control: [String: ControlState] = [:]
    /// The planner's dense form of `assignments` and of the inputs it planned them for, kept so that
    /// the next plan starts from it instead of a million string-keyed entries (PlanIndex.swift).
    /// A cache: not part of the plan's value (equality and hashing ignore it).
    var index: PlanIndex?

    public init() {}

    public static func == (a: Plan, b: Plan) -> Bool {
        a.assignments == b.assignments && a.desired == b.desired
            && a.scaleDownSince == b.scaleDownSince && a.control == b.control
    }

    public func hash(into h: inout Hasher) {
        h.combine(assignments)
        h.combine(desired)
        h.combine(scaleDownSince)
        h.combine(control)
    }

    /// Whether the planner's indexed form travels with this plan (the next plan will be incremental
    /// if its inputs allow). For tests and benchmarks.
    public var isIndexed: Bool { index != nil }

    /// The same plan without the planner's indexed form: planning from it takes the full path.
    public var withoutIndex: Plan {
        var p = self
        p.index = nil
        return p
    }

    public func count(_ service: String, on node: String) -> Int { assignments[node]?[service] ?? 0 }
    public func total(_ service: String) -> Int {
        assignments.values.reduce(0) { $0 + ($1[service] ?? 0) }
    }
}

public struct Decision: Sendable, Hashable, CustomStringConvertible {
    public var service: String
    public var node: String?
    public var from: Int
    public var to: Int
    public var reason: String
    public var description: String {
        if let node {
            let d = to - from
            return "\(service) \(d >= 0 ? "+\(d)" : "−\(-d)") on \(node): \(reason)"
        }
        return "\(service) \(from)→\(to): \(reason)"
    }
}

public struct Shortfall: Sendable, Hashable, CustomStringConvertible {
    public var service: String
    public var wanted: Int
    public var placed: Int
    /// Why, when the service's constraints or nodes that cannot run it narrowed where it could
    /// go: "constraint zone == a matches 1 of 3 nodes". nil when room alone was short.
    public var why: String?
    public init(service: String, wanted: Int, placed: Int, why: String? = nil) {
        self.service = service
        self.wanted = wanted
        self.placed = placed
        self.why = why
    }
    public var description: String {
        if let why { return "\(service): \(wanted - placed) not placed: \(why) (wanted \(wanted), placed \(placed))" }
        return "\(service) short by \(wanted - placed): wanted \(wanted), room for \(placed)"
    }
}

public struct PlanResult: Sendable {
    public var plan: Plan
    public var decisions: [Decision]
    public var shortfalls: [Shortfall]
}

public struct Planner: Sendable {
    /// Scale-down of a demand-driven service waits this long so a flickering metric does not thrash.
    public var stabilizationWindow: Duration
    /// The PD controller measures a queue's trend over at least this long, so a plan made a moment
    /// after another (a member changed) does not see a flat queue.
    public var trendSpan: Duration

    public init(stabilizationWindow: Duration = .seconds(3), trendSpan: Duration = .seconds(1)) {
        self.stabilizationWindow = stabilizationWindow
        self.trendSpan = trendSpan
    }

    public func plan(
        services: [ServiceSpec], demand: [String: DemandValue], nodes: [Node], currentPlan: Plan?,
        now: Duration
    ) -> PlanResult {
        var w = Work(services: services, nodes: nodes, current: currentPlan)
        var newPlan = Plan()
        var decisions: [Decision] = []

        // 1. Desired counts (demand-driven: the control rules of Control.swift, from
        //    clamp(ceil(demand / per_container), min, max)).
        var wanted = [Int](repeating: 0, count: w.svc.count)
        var demandReason = [String](repeating: "", count: w.svc.count)
        // Sized once: a thousand services grown one by one rehash every name several times.
        newPlan.desired.reserveCapacity(w.svc.count)
        newPlan.scaleDownSince.reserveCapacity(w.svc.count)
        newPlan.control.reserveCapacity(w.svc.count)
        for (s, spec) in w.svc.enumerated() {
            let before = currentPlan?.desired[spec.name] ?? w.total(s)
            if spec.fill {
                wanted[s] = spec.max
                continue
            }
            var target: Int
            switch demand[spec.name] ?? .unknown {
            case .known(let d) where !d.isNaN:
                let outcome = control(
                    spec, demand: d, before: before, state: currentPlan?.control[spec.name],
                    since: currentPlan?.scaleDownSince[spec.name], now: now)
                target = outcome.count
                demandReason[s] = outcome.reason
                newPlan.scaleDownSince[spec.name] = outcome.scaleDownSince
                newPlan.control[spec.name] = outcome.state
            case .known, .unknown:  // NaN is no reading
                target = Swift.min(Swift.max(before, spec.min), spec.max)
                demandReason[s] = "demand unknown, holding"
                // The controller's memory survives a gap in the readings; the trend is measured across it.
                newPlan.control[spec.name] = currentPlan?.control[spec.name]
            }
            wanted[s] = target
            newPlan.desired[spec.name] = target
            if target != before {
                decisions.append(
                    Decision(service: spec.name, node: nil, from: before, to: target, reason: demandReason[s]))
            }
        }

        // 2. Containers on nodes that may not keep work go away at once.
        var healCause = [String](repeating: "", count: w.svc.count)
        for n in 0..<w.nodeCount where !w.nodes[n].keepsWork {
            let why = w.nodes[n].drained ? "\(w.nodes[n].name) drained" : "\(w.nodes[n].name) \(w.nodes[n].status.rawValue)"
            for s in 0..<w.svc.count where w.count[n][s] > 0 {
                if healCause[s].isEmpty { healCause[s] = why }
                w.remove(s, from: n, k: w.count[n][s], reason: why)
            }
        }

        // 2b. Containers on nodes the service may not use: constraints are hard (a node relabelled
        //     or a service newly constrained loses them), and a node whose pull of the service's
        //     image fails holds assignments it cannot start.
        //     From a kept index only the nodes that changed can hold such containers: the previous
        //     plan left none anywhere else.
        for n in w.incremental ? w.recheck : Array(0..<w.nodeCount) where w.nodes[n].keepsWork {
            for s in 0..<w.svc.count where w.count[n][s] > 0 && !w.eligible[n][s] {
                let why = w.ineligibility(s, n)
                if healCause[s].isEmpty { healCause[s] = why }
                w.remove(s, from: n, k: w.count[n][s], reason: why)
            }
        }

        // 3. Scale down: remove surplus, from the nodes holding most (keeps spread, frees whole nodes for packing).
        for s in 0..<w.svc.count where w.total(s) > wanted[s] {
            var surplus = w.total(s) - wanted[s]
            let reason = w.svc[s].fill ? "above max \(w.svc[s].max)" : demandReason[s]
            if w.svc[s].fill {
                // Fill services shed from their emptiest nodes first, so the rest stay packed.
                let held = w.column[s]
                let order = (0..<w.nodeCount).filter { held[$0] > 0 }.sorted {
                    (held[$0], w.nodes[$0].name) < (held[$1], w.nodes[$1].name)
                }
                for n in order where surplus > 0 {
                    let k = Swift.min(surplus, w.count[n][s])
                    w.remove(s, from: n, k: k, reason: reason)
                    surplus -= k
                }
            }
            // Spread services shed one at a time from the fullest node (of the fullest label value,
            // with `spread:`): repeat until done.
            while surplus > 0 {
                let group = w.groupCounts(s)
                let g = { (n: Int) in w.svc[s].spread == nil ? 0 : group[w.group(s, n)] ?? 0 }
                let held = w.column[s]
                guard
                    let n = (0..<w.nodeCount).filter({ held[$0] > 0 }).max(by: {
                        (g($0), held[$0], w.nodes[$1].name) < (g($1), held[$1], w.nodes[$0].name)
                    })
                else { break }
                w.remove(s, from: n, k: 1, reason: reason)
                surplus -= 1
            }
        }

        // 4. Place by priority level, most important first; equal priorities share fairly.
        var shortfalls: [Shortfall] = []
        let levels = Dictionary(grouping: 0..<w.svc.count, by: { w.svc[$0].priority }).sorted { $0.key < $1.key }
        let causes = (0..<w.svc.count).map { s in
            !healCause[s].isEmpty ? healCause[s] : w.svc[s].fill ? "filling free capacity" : demandReason[s]
        }
        let cause: @Sendable (Int) -> String = { causes[$0] }
        for (priority, members) in levels {
            w.placeFairly(members, wanted: wanted, cause: cause)
            // Preempt lower priorities for what is still short: lowest priority first, fewest stops.
            // Equal priorities take turns, one node's worth each, so they share what preemption frees.
            var preempted = false
            var turn = members.filter { w.total($0) < wanted[$0] && !w.svc[$0].fill }
            while !turn.isEmpty {
                turn = turn.filter {
                    w.preempt(for: $0, upTo: wanted[$0], priority: priority, cause: cause($0), once: true)
                        && w.total($0) < wanted[$0]
                }
                preempted = true
            }
            // Room the stops freed beyond what the short services used goes to this level's fill services.
            if preempted { w.placeFairly(members, wanted: wanted, cause: cause) }
            for s in members where w.total(s) < wanted[s] && !w.svc[s].fill {
                shortfalls.append(Shortfall(service: w.svc[s].name, wanted: wanted[s], placed: w.total(s), why: w.narrowing(s)))
            }
        }
        // Room that preemption at a lower level freed but that level could not use (too small for
        // its short services) goes to the fill services of every level, most important first.
        // Without this the next plan from the same inputs would hand it out, so a plan would not
        // be a fixed point of its own inputs (PlannerProperties.unchangedInputsChangeNothing,
        // seed 3843169673).
        for (_, members) in levels {
            let fills = members.filter { w.svc[$0].fill }
            if !fills.isEmpty { w.placeFairly(fills, wanted: wanted, cause: cause) }
        }

        // 5. Emit the plan and the per-node decisions (what to stop before what to start is the
        //    executor's to work out from the counts: docs/ARCHITECTURE.md, Principles 3). From a kept index only
        //    the rows this pass touched can differ from the previous plan's (a touched node that
        //    ends as it began emits what it had), so the rest of the assignments are kept as they are.
        if w.incremental, let previous = currentPlan {
            newPlan.assignments = previous.assignments
        } else {
            newPlan.assignments.reserveCapacity(w.nodeCount)
        }
        for n in w.incremental ? w.touchedNodes : Array(0..<w.nodeCount) {
            let name = w.nodes[n].name
            let row = w.count[n], was = w.before[n]
            // Sized once: growing a dictionary of a few hundred services rehashes every name
            // several times, which was most of a re-plan on a 5,000-node cell.
            var held = 0, changed = false
            for s in 0..<w.svc.count {
                if row[s] > 0 { held += 1 }
                if row[s] != was[s] { changed = true }
            }
            var counts: [String: Int]
            if w.incremental {
                // The node's counts as the previous plan left them (which the kept index
                // describes), with the changed cells changed: a few names hashed, not hundreds.
                counts = currentPlan?.assignments[name] ?? [:]
                if changed {
                    counts.reserveCapacity(held)
                    for s in 0..<w.svc.count where row[s] != was[s] { counts[w.svc[s].name] = row[s] > 0 ? row[s] : nil }
                }
            } else {
                counts = [:]
                counts.reserveCapacity(held)
                for s in 0..<w.svc.count where row[s] > 0 { counts[w.svc[s].name] = row[s] }
            }
            newPlan.assignments[name] = counts.isEmpty ? nil : counts
        }
        w.nodeDecisions(into: &decisions)
        newPlan.index = w.index()
        return PlanResult(plan: newPlan, decisions: decisions, shortfalls: shortfalls)
    }
}

/// Mutable working state of one planning pass: dense arrays indexed by node and service.
struct Work {
    let svc: [ServiceSpec]
    let nodes: [Node]
    var nodeCount: Int { nodes.count }
    /// `nodes[n].acceptsWork`, read once per node per service by `fits`.
    let accepts: [Bool]
    /// [node][service]. An array of rows, so that a plan made from a kept index copies only the
    /// rows it changes (copy on write per row), not 5,000 × 1,000 counts.
    var count: [[Int]]
    /// The same counts by service, [service][node]: `column[s][n] == count[n][s]` always. Looking
    /// for room for one service reads its count on every node; from the rows that is a cache miss
    /// per node (most of a node's loss re-planned, `perf annotate`), from here a contiguous scan.
    var column: [[Int]]
    let before: [[Int]]
    var freeCPU: [Int]
    var freeMem: [Int]
    var totals: [Int]
    /// The reasons for changes, in the order noted: a cell's first reason wins in the decision
    /// text. A cell is noted when a change starts from its count before this pass (which its
    /// first change always does), so the log holds about one entry per changed cell. (A
    /// dictionary per node cost a hash insert per change: 140 ms of a full plan on the
    /// 5,000 × 1,000 cell of docs/scaling.md.)
    var reasonLog: [(n: Int, s: Int, reason: String)] = []
    /// While a level is placed in one go (`placeFairly`): each change, with the node's free room
    /// before it, so that the attempt can be undone exactly.
    var journal: [(n: Int, s: Int, k: Int, cpu: Int, mem: Int)]? = nil
    /// [node][service]: the node matches the service's constraints and can run it (not blocked).
    let eligible: [[Bool]]
    /// Nodes whose counts this pass changed (then changed back, perhaps): only these rows are
    /// emitted again when the plan is made from a kept index.
    var touched: [Bool]
    var touchedNodes: [Int] = []
    /// Made from the previous plan's index: only the nodes in `recheck` can hold containers they
    /// may no longer hold (their labels, blocked images, status or size changed).
    let incremental: Bool
    let recheck: [Int]
    /// The inputs as given, and where each input node sits in `nodes`: the next plan's index.
    let inputServices: [ServiceSpec]
    let inputNodes: [Node]
    let position: [Int]
    /// Node and service names are unique, so an index can describe the plan.
    let indexable: Bool

    init(services: [ServiceSpec], nodes: [Node], current: Plan?) {
        if let index = current?.index, let w = Work(services: services, nodes: nodes, index: index) {
            self = w
            return
        }
        // Deterministic order regardless of input order. Every size and count is clamped to the
        // limits the shells check on entry, so that what the planner adds up stays small.
        self.svc = services.map(Self.bounded).sorted { ($0.priority, $0.name) < ($1.priority, $1.name) }
        let order = nodes.indices.sorted { nodes[$0].name < nodes[$1].name }
        self.nodes = order.map { Self.bounded(nodes[$0]) }
        self.accepts = self.nodes.map(\.acceptsWork)
        var position = [Int](repeating: 0, count: nodes.count)
        for (k, i) in order.enumerated() { position[i] = k }
        self.position = position
        self.inputServices = services
        self.inputNodes = nodes
        self.incremental = false
        self.recheck = []
        self.touched = [Bool](repeating: false, count: nodes.count)
        let index = Dictionary(svc.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.indexable = index.count == svc.count && Set(nodes.map(\.name)).count == nodes.count
        var count = [[Int]](repeating: [Int](repeating: 0, count: svc.count), count: self.nodes.count)
        var column = [[Int]](repeating: [Int](repeating: 0, count: self.nodes.count), count: svc.count)
        var freeCPU = [Int](repeating: 0, count: self.nodes.count)
        var freeMem = freeCPU
        var totals = [Int](repeating: 0, count: svc.count)
        for (n, node) in self.nodes.enumerated() {
            freeCPU[n] = node.cpuMillis
            freeMem[n] = node.memoryBytes
            let source = current?.assignments[node.name] ?? (current == nil ? node.running : [:])
            for (name, reported) in source where reported > 0 {
                guard let s = index[name] else { continue }
                let c = Swift.min(reported, Limits.maxContainersPerService)
                count[n][s] = c
                column[s][n] = c
                totals[s] += c
                freeCPU[n] = saturating(freeCPU[n], -saturating(c, times: svc[s].cpuMillis))
                freeMem[n] = saturating(freeMem[n], -saturating(c, times: svc[s].memoryBytes))
            }
        }
        self.count = count
        self.column = column
        self.before = count
        self.eligible = EligibilityRule(svc).rows(self.nodes)
        self.freeCPU = freeCPU
        self.freeMem = freeMem
        self.totals = totals
    }

    /// The working state from the previous plan's index, when the inputs allow: the same services
    /// (any change of spec plans in full) and the same node names in the same order (a node added,
    /// removed or reordered plans in full). Nodes whose size, status, drain, labels or blocked
    /// images changed get their row of eligibility and free room again and are re-checked in step
    /// 2b; every other row is the one the previous plan left, which is what the full path would
    /// rebuild from its assignments (docs/scaling.md, "Incremental re-planning").
    init?(services: [ServiceSpec], nodes: [Node], index: PlanIndex) {
        guard nodes.count == index.nodes.count, services == index.services else { return nil }
        var changed: [(input: Int, at: Int)] = []
        // Field by field in place: binding each node to a local copied its name and three
        // dictionaries, twice, for every node of every plan.
        let kept = index.nodes
        for i in nodes.indices {
            guard nodes[i].name == kept[i].name else { return nil }
            if nodes[i].cpuMillis != kept[i].cpuMillis || nodes[i].memoryBytes != kept[i].memoryBytes
                || nodes[i].status != kept[i].status || nodes[i].drained != kept[i].drained
                || nodes[i].labels != kept[i].labels || nodes[i].blocked != kept[i].blocked
            {
                changed.append((i, index.position[i]))
            }
        }
        svc = index.svc
        var sorted = index.sortedNodes
        var eligible = index.eligible
        var freeCPU = index.freeCPU
        var freeMem = index.freeMem
        if !changed.isEmpty {
            let rule = EligibilityRule(svc)
            for (i, n) in changed {
                sorted[n] = Self.bounded(nodes[i])
                eligible[n] = rule.row(sorted[n])
                (freeCPU[n], freeMem[n]) = Self.free(of: sorted[n], counts: index.count[n], svc)
            }
        }
        self.nodes = sorted
        self.accepts = sorted.map(\.acceptsWork)
        self.eligible = eligible
        self.freeCPU = freeCPU
        self.freeMem = freeMem
        self.count = index.count
        self.column = index.column
        self.before = index.count
        self.totals = index.totals
        self.touched = [Bool](repeating: false, count: sorted.count)
        self.incremental = true
        self.recheck = changed.map(\.at).sorted()
        self.inputServices = services
        self.inputNodes = nodes
        self.position = index.position
        self.indexable = true
    }

    /// A node's free room with these counts on it, summed as the full path sums it.
    static func free(of node: Node, counts: [Int], _ svc: [ServiceSpec]) -> (Int, Int) {
        var cpu = node.cpuMillis, mem = node.memoryBytes
        for s in counts.indices where counts[s] > 0 {
            cpu = saturating(cpu, -saturating(counts[s], times: svc[s].cpuMillis))
            mem = saturating(mem, -saturating(counts[s], times: svc[s].memoryBytes))
        }
        return (cpu, mem)
    }

    /// The index the next plan starts from (nil when names repeat, so counts by name would not
    /// round-trip).
    func index() -> PlanIndex? {
        guard indexable else { return nil }
        return PlanIndex(
            services: inputServices, nodes: inputNodes, position: position, svc: svc, sortedNodes: nodes,
            eligible: eligible, count: count, column: column, freeCPU: freeCPU, freeMem: freeMem, totals: totals)
    }

    func total(_ s: Int) -> Int { totals[s] }

    static func bounded(_ s: ServiceSpec) -> ServiceSpec {
        var s = s
        s.cpuMillis = Swift.min(Swift.max(s.cpuMillis, 0), Int(Limits.maxContainerCPUMillicores))
        s.memoryBytes = Swift.min(Swift.max(s.memoryBytes, 0), Int(Limits.maxContainerMemoryBytes))
        s.max = Swift.min(Swift.max(s.max, 0), Limits.maxContainersPerService)
        s.min = Swift.min(Swift.max(s.min, 0), s.max)
        return s
    }

    static func bounded(_ n: Node) -> Node {
        var n = n
        n.cpuMillis = Swift.min(Swift.max(n.cpuMillis, 0), Int(Limits.maxNodeCPUMillicores))
        n.memoryBytes = Swift.min(Swift.max(n.memoryBytes, 0), Int(Limits.maxNodeMemoryBytes))
        return n
    }

    func fits(_ s: Int, on n: Int) -> Int {
        let cpu = svc[s].cpuMillis, mem = svc[s].memoryBytes
        // Most nodes of a busy cell have no room for most services: that is two comparisons.
        guard freeCPU[n] >= cpu || cpu == 0, freeMem[n] >= mem || mem == 0, accepts[n], eligible[n][s], portsFree(s, on: n) else { return 0 }
        let c = cpu > 0 ? freeCPU[n] / cpu : Int.max
        let m = mem > 0 ? freeMem[n] / mem : Int.max
        // A container holding fixed host ports fits once per node.
        let p = svc[s].hostPorts.isEmpty ? Int.max : 1
        return Swift.max(0, Swift.min(c, m, p, 1 << 40))
    }

    /// No container on `n` (of `s` or another service) holds one of the host ports `s` needs.
    func portsFree(_ s: Int, on n: Int) -> Bool {
        guard !svc[s].hostPorts.isEmpty else { return true }
        for t in 0..<svc.count where count[n][t] > 0 && !svc[t].hostPorts.isEmpty {
            if t == s || !Set(svc[t].hostPorts).isDisjoint(with: svc[s].hostPorts) { return false }
        }
        return true
    }

    /// Notes why cell (n, s) is about to change, if it still holds its count from before this pass.
    mutating func note(_ s: Int, _ n: Int, _ reason: String) {
        if count[n][s] == before[n][s] { reasonLog.append((n, s, reason)) }
    }

    mutating func touch(_ n: Int) {
        if !touched[n] {
            touched[n] = true
            touchedNodes.append(n)
        }
    }

    mutating func remove(_ s: Int, from n: Int, k: Int, reason: String) {
        touch(n)
        note(s, n, reason)
        journal?.append((n, s, -k, freeCPU[n], freeMem[n]))
        count[n][s] -= k
        column[s][n] -= k
        totals[s] -= k
        freeCPU[n] = saturating(freeCPU[n], saturating(k, times: svc[s].cpuMillis))
        freeMem[n] = saturating(freeMem[n], saturating(k, times: svc[s].memoryBytes))
    }

    mutating func add(_ s: Int, to n: Int, k: Int, reason: String) {
        touch(n)
        note(s, n, reason)
        journal?.append((n, s, k, freeCPU[n], freeMem[n]))
        count[n][s] += k
        column[s][n] += k
        totals[s] += k
        freeCPU[n] = saturating(freeCPU[n], -saturating(k, times: svc[s].cpuMillis))
        freeMem[n] = saturating(freeMem[n], -saturating(k, times: svc[s].memoryBytes))
    }

    /// Where an attempt that may be undone starts: changes from here on are journaled.
    mutating func begin() -> (touched: Int, log: Int) {
        journal = []
        return (touchedNodes.count, reasonLog.count)
    }

    /// Keeps the changes since `begin`.
    mutating func commit() { journal = nil }

    /// Undoes every change since `begin`, as if it had not been made: counts, totals and free room
    /// (restored, not recomputed, so no saturated sum can drift), the nodes touched, the reasons.
    mutating func rollback(to mark: (touched: Int, log: Int)) {
        guard let changes = journal else { return }
        journal = nil
        for c in changes.reversed() {
            count[c.n][c.s] -= c.k
            column[c.s][c.n] -= c.k
            totals[c.s] -= c.k
            freeCPU[c.n] = c.cpu
            freeMem[c.n] = c.mem
        }
        for n in touchedNodes[mark.touched...] { touched[n] = false }
        touchedNodes.removeLast(touchedNodes.count - mark.touched)
        reasonLog.removeLast(reasonLog.count - mark.log)
    }

    /// Places up to `need` containers of `s` in free room. Spread services water-fill (the nodes with
    /// fewest of `s` get the next ones; binary search on the level, O(nodes log max)); fill services
    /// pack best-fit (the fullest nodes that still fit, O(nodes log nodes)).
    @discardableResult
    mutating func place(_ s: Int, need: Int, reason: String) -> Int {
        guard need > 0 else { return 0 }
        // The nodes with room for `s`, with their room and count of `s`, in node order: a node
        // without room takes no part in the water-fill (it gets none, and moves no level).
        var among: [Int] = [], counts: [Int] = [], room: [Int] = []
        let held = column[s]
        for n in 0..<nodeCount {
            let r = fits(s, on: n)
            guard r > 0 else { continue }
            among.append(n)
            counts.append(held[n])
            room.append(r)
        }
        guard svc[s].spread != nil else { return place(s, need: need, among: among, counts: counts, room: room, reason: reason) }
        // `spread: KEY`: the same water-filling one level up, over the label's values (a value's
        // count is its nodes' containers of `s`, its room theirs), then within each value.
        var members: [String: [Int]] = [:]
        for (i, n) in among.enumerated() { members[group(s, n), default: []].append(i) }
        let names = members.keys.sorted()
        let have = groupCounts(s)
        let cnt = names.map { have[$0] ?? 0 }
        let gRoom = names.map { g in members[g]!.reduce(0) { Swift.min($0 + room[$1], 1 << 50) } }
        let quota = waterFill(counts: cnt, room: gRoom, need: need)
        var placed = 0
        for (i, g) in names.enumerated() where quota[i] > 0 {
            let m = members[g]!
            placed += place(
                s, need: quota[i], among: m.map { among[$0] }, counts: m.map { counts[$0] }, room: m.map { room[$0] }, reason: reason)
        }
        return placed
    }

    /// The label value of `n` that `s` spreads over ("" when the node lacks the label).
    func group(_ s: Int, _ n: Int) -> String {
        guard let key = svc[s].spread else { return "" }
        return nodes[n].labels[key] ?? ""
    }

    /// Containers of `s` per value of its spread label, over the nodes that keep work.
    func groupCounts(_ s: Int) -> [String: Int] {
        var out: [String: Int] = [:]
        let held = column[s]
        for n in 0..<nodeCount where held[n] > 0 { out[group(s, n), default: 0] += held[n] }
        return out
    }

    /// Why `s` may not use node `n`, for the decisions.
    func ineligibility(_ s: Int, _ n: Int) -> String {
        if let why = nodes[n].blocked[svc[s].name] { return "\(nodes[n].name) cannot run it: \(why)" }
        if let c = svc[s].constraints.first(where: { !$0.admits(nodes[n].labels) }) {
            return "\(nodes[n].name) does not match \(c)"
        }
        return "\(nodes[n].name) may not run it"
    }

    /// What narrowed where `s` could go, when something did: the constraint that admits fewest of
    /// the nodes that take work, and the nodes that cannot run it (its image failing to pull).
    func narrowing(_ s: Int) -> String? {
        let open = (0..<nodeCount).filter { nodes[$0].acceptsWork }
        var parts: [String] = []
        if !svc[s].constraints.isEmpty {
            let matching = open.filter { n in svc[s].constraints.allSatisfy { $0.admits(nodes[n].labels) } }
            let tightest = svc[s].constraints.map { c in (c, open.filter { c.admits(nodes[$0].labels) }.count) }
                .min { ($0.1, $0.0.description) < ($1.1, $1.0.description) }!
            let withRoom = matching.filter { n in eligible[n][s] && count[n][s] > 0 || fits(s, on: n) > 0 }.count
            let what =
                svc[s].constraints.count == 1
                ? "constraint \(tightest.0) matches \(matching.count) of \(open.count) node\(open.count == 1 ? "" : "s")"
                : "constraints \(svc[s].constraints.map(\.description).joined(separator: ", ")) match \(matching.count) of \(open.count) node\(open.count == 1 ? "" : "s") (\(tightest.0) alone \(tightest.1))"
            parts.append(matching.isEmpty ? what : "\(what), \(withRoom) with room")
        }
        let blocked = open.filter { nodes[$0].blocked[svc[s].name] != nil }
        if let first = blocked.first {
            parts.append(
                "\(blocked.count) node\(blocked.count == 1 ? "" : "s") cannot run it (\(nodes[first].name): \(nodes[first].blocked[svc[s].name]!))")
        }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }

    /// Places up to `need` containers of `s` on the nodes `among` (in node order, each with room;
    /// its count of `s` and its room at the same place in `counts` and `room`).
    mutating func place(_ s: Int, need: Int, among: [Int], counts: [Int], room: [Int], reason: String) -> Int {
        guard need > 0 else { return 0 }
        if svc[s].fill {
            let order = among.indices.sorted {
                (freeCPU[among[$0]], nodes[among[$0]].name) < (freeCPU[among[$1]], nodes[among[$1]].name)
            }
            var left = need
            for i in order where left > 0 {
                let k = Swift.min(left, room[i])
                add(s, to: among[i], k: k, reason: reason)
                left -= k
            }
            return need - left
        }
        // Water level L: node n ends with min(max(count, L), count + room); the remainder goes one
        // each to the nodes at the level that gained fewest, then by name order (deterministic).
        let quota = waterFill(counts: counts, room: room, need: need)
        var placed = 0
        for (i, n) in among.enumerated() where quota[i] > 0 {
            add(s, to: n, k: quota[i], reason: reason)
            placed += quota[i]
        }
        return placed
    }

    /// Equal priorities share fairly: if all fit, place all; otherwise place in rounds of equal chunks.
    mutating func placeFairly(_ members: [Int], wanted: [Int], cause: (Int) -> String) {
        if members.count == 1 {
            let s = members[0]
            place(s, need: wanted[s] - totals[s], reason: cause(s))
            return
        }
        var active = members.filter { wanted[$0] > totals[$0] }
        // Most of the time a level is not short: then there is nothing to share, and each service
        // is placed in full, one after the other. Rounds of equal chunks are for a level that is
        // short; run for one that is not, they cost a pass over every node per service per round
        // (52 s for 1,000 services on 5,000 nodes, where this takes about one). So the level is
        // placed in one go first, and only if some member ends short is that undone and the
        // level shared in rounds. (Undoing is cheap: the copy shares storage until it is written.)
        // (Undone from a journal of the changes: a copy of the whole state to go back to made
        // every row it shared be copied on its first change.)
        let mark = begin()
        for s in active { place(s, need: wanted[s] - totals[s], reason: cause(s)) }
        if active.allSatisfy({ totals[$0] >= wanted[$0] }) {
            commit()
            return
        }
        rollback(to: mark)
        while !active.isEmpty {
            let smallest = active.map { wanted[$0] - totals[$0] }.min() ?? 1
            let chunk = Swift.max(1, Swift.min(smallest, (active.map { wanted[$0] - totals[$0] }.reduce(0, +)) / (active.count * 32)))
            var next: [Int] = []
            for s in active {
                let want = Swift.min(chunk, wanted[s] - totals[s])
                let got = place(s, need: want, reason: cause(s))
                if got == want && totals[s] < wanted[s] { next.append(s) }
            }
            active = next
        }
    }

    /// Stops lower-priority containers to make room for `s`. For each container still short, picks the
    /// node where room is made by stopping only the lowest priority possible, and the fewest of them.
    /// Returns whether it placed a container.
    @discardableResult
    mutating func preempt(for s: Int, upTo target: Int, priority: Int, cause: String, once: Bool = false) -> Bool {
        let victims = (0..<svc.count).filter { svc[$0].priority > priority }
            .sorted { (svc[$0].priority, svc[$0].name) > (svc[$1].priority, svc[$1].name) }
        guard !victims.isEmpty else { return false }
        let why = "room for \(svc[s].name) (priority \(svc[s].priority))"
        while totals[s] < target {
            var best: (n: Int, worst: Int, stops: Int, list: [(Int, Int)])? = nil
            // Preemption frees cores and memory, not host ports: a node whose port is taken is skipped.
            // Constraints and blocked images hold in preemption too: stopping work on a node the
            // service may not use frees nothing for it.
            let group = svc[s].spread == nil ? [:] : groupCounts(s)
            func spreadKey(_ n: Int) -> Int { svc[s].spread == nil ? 0 : group[self.group(s, n)] ?? 0 }
            for n in 0..<nodeCount where nodes[n].acceptsWork && eligible[n][s] && portsFree(s, on: n) {
                var cpu = freeCPU[n], mem = freeMem[n]
                var list: [(Int, Int)] = []
                var stops = 0
                var worst = Int.max
                for v in victims where cpu < svc[s].cpuMillis || mem < svc[s].memoryBytes {
                    let have = count[n][v]
                    guard have > 0 else { continue }
                    let needC = svc[v].cpuMillis > 0 ? ceilDiv(Swift.max(0, svc[s].cpuMillis - cpu), svc[v].cpuMillis) : 0
                    let needM = svc[v].memoryBytes > 0 ? ceilDiv(Swift.max(0, svc[s].memoryBytes - mem), svc[v].memoryBytes) : 0
                    let k = Swift.min(have, Swift.max(needC, needM, 1))
                    cpu = saturating(cpu, saturating(k, times: svc[v].cpuMillis))
                    mem = saturating(mem, saturating(k, times: svc[v].memoryBytes))
                    list.append((v, k))
                    stops += k
                    worst = Swift.min(worst, svc[v].priority)
                }
                // No stops at all is best: room an earlier preemption freed and left over.
                guard cpu >= svc[s].cpuMillis && mem >= svc[s].memoryBytes else { continue }
                // Prefer touching only the least important priority, then the fewest stops, then spread
                // (across the `spread:` label's values first, then nodes).
                if let b = best {
                    if (-worst, stops, spreadKey(n), count[n][s]) >= (-b.worst, b.stops, spreadKey(b.n), count[b.n][s]) { continue }
                }
                best = (n, worst, stops, list)
            }
            guard let b = best else { return false }
            for (v, k) in b.list { remove(v, from: b.n, k: k, reason: why) }
            add(s, to: b.n, k: 1, reason: cause)
            // Use the rest of the room the stops freed before looking elsewhere.
            let extra = Swift.min(fits(s, on: b.n), target - totals[s])
            if extra > 0 { add(s, to: b.n, k: extra, reason: cause) }
            if once { return true }
        }
        return true
    }

    /// The per-node decisions, appended to `out`: by node, then service, each changed cell with
    /// its first reason.
    func nodeDecisions(into out: inout [Decision]) {
        guard !reasonLog.isEmpty else { return }
        // The log grouped by node, keeping each node's entries in the order noted (counting sort).
        var start = [Int](repeating: 0, count: nodeCount + 1)
        for e in reasonLog { start[e.n + 1] += 1 }
        for n in 0..<nodeCount { start[n + 1] += start[n] }
        var order = [Int](repeating: 0, count: reasonLog.count)
        var next = start
        for (i, e) in reasonLog.enumerated() {
            order[next[e.n]] = i
            next[e.n] += 1
        }
        out.reserveCapacity(out.count + reasonLog.count)
        var seen = [Int](repeating: -1, count: svc.count)
        var cells: [(s: Int, at: Int)] = []
        for n in 0..<nodeCount where start[n] < start[n + 1] {
            cells.removeAll(keepingCapacity: true)
            var ordered = true
            for k in start[n]..<start[n + 1] {
                let i = order[k]
                let s = reasonLog[i].s
                guard seen[s] != n else { continue }  // a later reason for the same cell
                seen[s] = n
                if let last = cells.last, last.s > s { ordered = false }
                cells.append((s, i))
            }
            if !ordered { cells.sort { $0.s < $1.s } }
            let row = count[n], was = before[n]
            for (s, i) in cells where row[s] != was[s] {
                out.append(
                    Decision(service: svc[s].name, node: nodes[n].name, from: was[s], to: row[s], reason: reasonLog[i].reason))
            }
        }
    }
}

private func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }

/// How many of `need` each bucket gets so the fullest ends as low as possible: bucket i ends
/// with min(max(counts[i], L), counts[i] + room[i]) for the highest level L whose total stays
/// within `need`; what remains goes one each to buckets at L, in order.
func waterFill(counts: [Int], room: [Int], need: Int) -> [Int] {
    // When the buckets at the lowest count (among those with room) are at least `need`, the level
    // does not rise: one each to the first `need` of them, in order. That is every service of a
    // plan from nothing (all counts 0), in one pass instead of a heap.
    var low = Int.max, atLow = 0
    for i in counts.indices where room[i] > 0 {
        if counts[i] < low {
            low = counts[i]
            atLow = 1
        } else if counts[i] == low {
            atLow += 1
        }
    }
    if need <= atLow { return waterFillAtLowest(counts: counts, room: room, need: need, low: low) }
    // A need small beside the buckets (a node's loss, a demand step, most services of a large
    // cell) is met one container at a time, which gives the same result (a tested identity:
    // WaterFillTests) in O((M + need) log M) where the level search costs O(M log C).
    return need <= counts.count / 2
        ? waterFillByTurns(counts: counts, room: room, need: need) : waterFillByLevel(counts: counts, room: room, need: need)
}

/// One each to the first `need` buckets with room whose count is `low`, the lowest with room:
/// `waterFill` when those are at least `need`.
func waterFillAtLowest(counts: [Int], room: [Int], need: Int, low: Int) -> [Int] {
    var out = [Int](repeating: 0, count: counts.count)
    var left = need
    for i in counts.indices where left > 0 && room[i] > 0 && counts[i] == low {
        out[i] = 1
        left -= 1
    }
    return out
}

/// `waterFill` by a binary search on the level L.
func waterFillByLevel(counts: [Int], room: [Int], need: Int) -> [Int] {
    func gained(_ level: Int) -> Int {
        var sum = 0
        for i in counts.indices where room[i] > 0 && counts[i] < level {
            sum = Swift.min(sum + Swift.min(level - counts[i], room[i]), 1 << 60)
        }
        return sum
    }
    var lo = 0
    var hi = (counts.max() ?? 0) + (room.max() ?? 0) + 1
    while lo < hi {
        let mid = (lo + hi + 1) / 2
        if gained(mid) <= need { lo = mid } else { hi = mid - 1 }
    }
    var out = counts.indices.map { i in room[i] > 0 && counts[i] < lo ? Swift.min(lo - counts[i], room[i]) : 0 }
    var left = need - out.reduce(0, +)
    guard left > 0 else { return out }
    // The remainder, one each, to the buckets at the level that gained fewest here, then in order:
    // a node that had more of the service gets the next rather than one that had none (0/1/1 plus
    // 6 is 2/3/3, not 3/3/2), so a step's starts spread over more nodes and each node's share
    // stays within its standby pool (docs/scheduling.md, "Not done yet").
    let atLevel = counts.indices.filter { counts[$0] + out[$0] == lo && out[$0] < room[$0] }.sorted { (out[$0], $0) < (out[$1], $1) }
    for i in atLevel.prefix(left) { out[i] += 1 }
    return out
}

/// `waterFill`, one container at a time: the bucket with fewest so far that still has room takes
/// the next (among equals, the one that gained fewest here, then the lowest index). Every bucket
/// below the level is raised to it before any at the level is touched, and those at the level
/// are then taken by what they gained and index: the level search's result exactly.
func waterFillByTurns(counts: [Int], room: [Int], need: Int) -> [Int] {
    var out = [Int](repeating: 0, count: counts.count)
    var heap: [(value: Int, gained: Int, at: Int)] = []
    heap.reserveCapacity(counts.count)
    for i in counts.indices where room[i] > 0 { heap.append((counts[i], 0, i)) }
    var k = heap.count / 2
    while k > 0 {
        k -= 1
        siftDown(&heap, from: k)
    }
    var left = need
    while left > 0 && !heap.isEmpty {
        let i = heap[0].at
        out[i] += 1
        left -= 1
        if out[i] < room[i] {
            heap[0].value += 1
            heap[0].gained += 1
        } else {
            heap[0] = heap[heap.count - 1]
            heap.removeLast()
        }
        siftDown(&heap, from: 0)
    }
    return out
}

/// A binary min-heap's sift-down, ordered by (value, gained, index).
private func siftDown(_ heap: inout [(value: Int, gained: Int, at: Int)], from start: Int) {
    var i = start
    let n = heap.count
    func key(_ k: Int) -> (Int, Int, Int) { (heap[k].value, heap[k].gained, heap[k].at) }
    while true {
        let l = 2 * i + 1
        guard l < n else { return }
        var m = l
        if l + 1 < n && key(l + 1) < key(l) { m = l + 1 }
        guard key(m) < key(i) else { return }
        heap.swapAt(i, m)
        i = m
    }
}

/// Resource sums saturate at ±2^62. Every input is bounded (Limits), but a committed plan that puts
/// a million of the largest containers on one node multiplies past Int.max; saturated, that node
/// is simply full, and no sum traps. 2^62 leaves room for any one bounded size on either side.
let saturationBound = 1 << 62

func saturating(_ a: Int, times b: Int) -> Int {
    let (r, overflow) = a.multipliedReportingOverflow(by: b)
    if overflow { return (a < 0) != (b < 0) ? -saturationBound : saturationBound }
    return Swift.min(Swift.max(r, -saturationBound), saturationBound)
}

func saturating(_ a: Int, _ b: Int) -> Int {
    let (r, overflow) = a.addingReportingOverflow(b)
    if overflow { return b < 0 ? -saturationBound : saturationBound }
    return Swift.min(Swift.max(r, -saturationBound), saturationBound)
}
