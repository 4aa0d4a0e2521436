import PropertyBased
import SimulationKit
import Testing

@testable import Scaling

/// The planner's dense form of a plan keeps the same counts twice (by node and by service) and
/// carries free room and totals from plan to plan instead of summing them again; and a level placed
/// in one go is undone from a journal rather than from a copy. Each of these could drift from what
/// a computation from scratch gives without changing a plan at once, so they are held to it
/// directly, over the moving cells of PlannerIncrementalProperties (docs/scaling.md,
/// "Incremental re-planning").
@Suite struct PlanIndexProperties {
    /// Counts by node and by service agree with each other and with the plan's assignments, totals
    /// are their sums, and free room is what the node's size leaves after them.
    static func disagreement(_ plan: Plan, _ cell: MovingCell) -> String? {
        guard let index = plan.index else { return "no index" }
        for (n, node) in index.sortedNodes.enumerated() {
            for (s, spec) in index.svc.enumerated() {
                let c = index.count[n][s]
                if index.column[s][n] != c { return "column[\(s)][\(n)] \(index.column[s][n]), count \(c)" }
                if plan.count(spec.name, on: node.name) != c {
                    return "\(spec.name) on \(node.name): assignments \(plan.count(spec.name, on: node.name)), index \(c)"
                }
            }
            let (cpu, mem) = Work.free(of: node, counts: index.count[n], index.svc)
            if (cpu, mem) != (index.freeCPU[n], index.freeMem[n]) {
                return "\(node.name): free \(index.freeCPU[n]), \(index.freeMem[n]) carried, \(cpu), \(mem) summed"
            }
        }
        for s in index.svc.indices where index.totals[s] != index.column[s].reduce(0, +) {
            return "\(index.svc[s].name): total \(index.totals[s]), column sums to \(index.column[s].reduce(0, +))"
        }
        return nil
    }

    @Test func theKeptIndexAgreesWithThePlanItDescribes() async {
        await propertyCheck(count: 100, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var cell = MovingCell(seed: seed)
            var previous = cell.plan(from: nil).plan
            #expect(Self.disagreement(previous, cell) == nil, "seed \(seed), from nothing: \(Self.disagreement(previous, cell) ?? "")")
            for step in 1...8 {
                let what = cell.move()
                let next = cell.plan(from: previous).plan
                guard next.isIndexed else { return }  // names repeated: no index to check
                let wrong = Self.disagreement(next, cell)
                #expect(wrong == nil, "seed \(seed), step \(step) (\(what.joined(separator: ", "))): \(wrong ?? "")")
                if wrong != nil { return }
                previous = next
            }
        }
    }

    @Test func anAttemptRolledBackLeavesTheWorkAsItWas() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var cell = MovingCell(seed: seed)
            let plan = cell.plan(from: nil).plan
            _ = cell.move()
            var w = Work(services: cell.services, nodes: cell.nodes, current: cell.rng.next() % 2 == 0 ? plan : plan.withoutIndex)
            // Some changes before the attempt, so that rolling back must stop at the mark.
            if let s = w.svc.indices.randomElement(using: &cell.rng) { w.place(s, need: Int(cell.rng.next() % 5), reason: "before") }
            let saved = w
            let mark = w.begin()
            for s in w.svc.indices where cell.rng.next() % 2 == 0 {
                w.place(s, need: Int(cell.rng.next() % 20), reason: "attempt")
                if let n = (0..<w.nodeCount).first(where: { w.count[$0][s] > 0 }), cell.rng.next() % 3 == 0 {
                    w.remove(s, from: n, k: 1, reason: "attempt")
                }
            }
            w.rollback(to: mark)
            let context = "seed \(seed)"
            #expect(w.count == saved.count, "\(context): counts")
            #expect(w.column == saved.column, "\(context): columns")
            #expect(w.totals == saved.totals, "\(context): totals")
            #expect(w.freeCPU == saved.freeCPU && w.freeMem == saved.freeMem, "\(context): free room")
            #expect(w.touched == saved.touched && w.touchedNodes == saved.touchedNodes, "\(context): touched nodes")
            let reasons = { (w: Work) in w.reasonLog.map { "\($0.n) \($0.s) \($0.reason)" } }
            #expect(reasons(w) == reasons(saved), "\(context): reasons")
            #expect(w.journal == nil, "\(context): still journaling")
        }
    }
}
