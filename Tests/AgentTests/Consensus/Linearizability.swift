/// A linearizability checker for histories of one register: Wing & Gong's search ("Testing and
/// Verifying Concurrent Objects", 1993) with Lowe's memoization of (linearized set, state)
/// ("Testing for linearizability", 2017), the algorithm of porcupine, which etcd's robustness
/// tests use. It lives in the test suite: the agent never needs it.
///
/// A history is operations with the times they were called and returned (any monotonic clock).
/// A write whose outcome the client does not know (a timeout, a lost connection, a 503 after it
/// may have been proposed) has no return time: it may take effect at any moment after its call,
/// or never. Reads that failed are left out (they change nothing).
struct RegisterHistory: Sendable {
    enum Kind: Sendable, Hashable {
        case write(Double)
        /// nil: the register held no value.
        case read(Double?)
    }

    struct Operation: Sendable, Hashable, CustomStringConvertible {
        var kind: Kind
        var call: UInt64
        /// nil: never known to have returned (a write of unknown outcome).
        var ret: UInt64?
        var client: Int

        var description: String {
            let r = ret.map { "\($0)" } ?? "?"
            switch kind {
            case .write(let v): return "c\(client) write \(v) [\(call), \(r)]"
            case .read(let v): return "c\(client) read \(v.map { "\($0)" } ?? "nil") [\(call), \(r)]"
            }
        }
    }

    var operations: [Operation] = []

    /// Whether some order of the operations, each taking effect at one instant between its call and
    /// its return, is a legal sequence of a register starting empty.
    func isLinearizable() -> Bool {
        // A write of unknown outcome that no read saw can take effect after everything else (its
        // return is unbounded): it constrains nothing, and dropping it keeps the search small.
        let seen = Set(operations.compactMap { if case .read(let v?) = $0.kind { return v } else { return nil } })
        let ops = operations.filter { op in
            if op.ret == nil, case .write(let v) = op.kind { return seen.contains(v) }
            return true
        }
        return Self.search(ops)
    }

    /// Porcupine's search: a list of call and return events in time order; at each call, try to
    /// linearize that operation now (if the register allows its result and the resulting
    /// (set, state) was not already explored), else move on to the next event; at a return whose
    /// call was not linearized, undo the last choice.
    private static func search(_ ops: [Operation]) -> Bool {
        let n = ops.count
        if n == 0 { return true }
        let infinity = UInt64.max
        // Events: (time, isReturn, op). At equal times, calls come first: two operations that
        // touch at an instant may be ordered either way.
        var events: [(time: UInt64, isReturn: Bool, op: Int)] = []
        for (i, o) in ops.enumerated() {
            events.append((o.call, false, i))
            events.append((o.ret ?? infinity, true, i))
        }
        events.sort { ($0.time, $0.isReturn ? 1 : 0, $0.op) < ($1.time, $1.isReturn ? 1 : 0, $1.op) }
        // A doubly linked list over the events, with a sentinel head at index `count`.
        let count = events.count
        let head = count
        var next = [Int](repeating: -1, count: count + 1)
        var prev = [Int](repeating: -1, count: count + 1)
        var returnOf = [Int](repeating: -1, count: n)
        var callOf = [Int](repeating: -1, count: n)
        for (i, e) in events.enumerated() {
            if e.isReturn { returnOf[e.op] = i } else { callOf[e.op] = i }
        }
        var last = head
        for i in 0..<count {
            next[last] = i
            prev[i] = last
            last = i
        }
        next[last] = -1

        func unlink(_ i: Int) {
            next[prev[i]] = next[i]
            if next[i] >= 0 { prev[next[i]] = prev[i] }
        }
        func relink(_ i: Int) {
            next[prev[i]] = i
            if next[i] >= 0 { prev[next[i]] = i }
        }

        struct Key: Hashable {
            var bits: [UInt64]
            var state: Double?
        }
        var linearized = [UInt64](repeating: 0, count: (n + 63) / 64)
        var cache: Set<Key> = []
        var state: Double? = nil
        var stack: [(op: Int, state: Double?)] = []
        var entry = next[head]
        while next[head] >= 0 {
            guard entry >= 0 else { return false }
            let e = events[entry]
            if !e.isReturn {
                let op = ops[e.op]
                var ok = false
                var newState = state
                switch op.kind {
                case .write(let v):
                    ok = true
                    newState = v
                case .read(let v):
                    ok = v == state
                }
                if ok {
                    var bits = linearized
                    bits[e.op / 64] |= 1 << UInt64(e.op % 64)
                    if cache.insert(Key(bits: bits, state: newState)).inserted {
                        stack.append((e.op, state))
                        linearized = bits
                        state = newState
                        unlink(callOf[e.op])
                        unlink(returnOf[e.op])
                        entry = next[head]
                        continue
                    }
                }
                entry = next[entry]
            } else {
                // The return of an operation not yet linearized: the last choice was wrong.
                guard let (op, before) = stack.popLast() else { return false }
                relink(returnOf[op])
                relink(callOf[op])
                linearized[op / 64] &= ~(1 << UInt64(op % 64))
                state = before
                entry = next[callOf[op]]
            }
        }
        return true
    }
}
