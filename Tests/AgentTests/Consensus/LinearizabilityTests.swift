import Testing

/// The checker on histories whose answer is known, so that "linearizable" from the Jepsen-style
/// test means something.
@Suite struct LinearizabilityTests {
    typealias Op = RegisterHistory.Operation

    func history(_ ops: [Op]) -> RegisterHistory { RegisterHistory(operations: ops) }
    func w(_ v: Double, _ call: UInt64, _ ret: UInt64?, client: Int = 0) -> Op { Op(kind: .write(v), call: call, ret: ret, client: client) }
    func r(_ v: Double?, _ call: UInt64, _ ret: UInt64, client: Int = 1) -> Op { Op(kind: .read(v), call: call, ret: ret, client: client) }

    @Test func anEmptyHistoryAndASequentialOneAreLinearizable() {
        #expect(history([]).isLinearizable())
        #expect(history([r(nil, 0, 1), w(1, 2, 3), r(1, 4, 5), w(2, 6, 7), r(2, 8, 9)]).isLinearizable())
    }

    @Test func aReadOfTheInitialValueAfterACompletedWriteIsNot() {
        #expect(!history([w(1, 0, 1), r(nil, 2, 3)]).isLinearizable())
    }

    @Test func aStaleReadAfterTheNextWriteCompletedIsNot() {
        // The anomaly of issue 19: a deposed leader answers with a value older than a completed write.
        #expect(!history([w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)]).isLinearizable())
    }

    @Test func aReadConcurrentWithAWriteMaySeeEitherValue() {
        #expect(history([w(1, 0, 1), w(2, 2, 10), r(1, 3, 4)]).isLinearizable())
        #expect(history([w(1, 0, 1), w(2, 2, 10), r(2, 3, 4)]).isLinearizable())
        // ... but once it saw the new value, a later read may not see the old one.
        #expect(!history([w(1, 0, 1), w(2, 2, 10), r(2, 3, 4), r(1, 5, 6, client: 2)]).isLinearizable())
    }

    @Test func concurrentWritesMustBeSeenInOneOrder() {
        // 1 and 2 written concurrently; reads see 1, then 2, then 1 again: no order explains it.
        let ops = [w(1, 0, 10), w(2, 0, 10, client: 3), r(1, 1, 2), r(2, 3, 4), r(1, 5, 6)]
        #expect(!history(ops).isLinearizable())
        // 1, 2, 2 is fine (1 then 2).
        #expect(history([w(1, 0, 10), w(2, 0, 10, client: 3), r(1, 1, 2), r(2, 3, 4), r(2, 5, 6)]).isLinearizable())
    }

    @Test func aWriteOfUnknownOutcomeMayTakeEffectLateOrNever() {
        // Seen long after its call: it took effect late.
        #expect(history([w(1, 0, nil), w(2, 5, 6), r(2, 7, 8), r(1, 20, 21)]).isLinearizable())
        // Never seen: it never took effect (or after everything).
        #expect(history([w(1, 0, nil), r(nil, 5, 6)]).isLinearizable())
        // But not before its call.
        #expect(!history([r(1, 0, 1), w(1, 5, nil)]).isLinearizable())
    }

    @Test func aReadOfAValueNeverWrittenIsNot() {
        #expect(!history([w(1, 0, 1), r(7, 2, 3)]).isLinearizable())
    }

    @Test func manyConcurrentClientsStayTractable() {
        // 12 clients, 300 operations each, overlapping in pairs: a legal history the search must
        // settle without exploring every interleaving.
        var ops: [Op] = []
        var t: UInt64 = 0
        var value = 0.0
        for _ in 0..<300 {
            for c in 0..<12 {
                value += 1
                ops.append(w(value, t, t + 3, client: c))
                ops.append(r(value, t + 4, t + 6, client: c + 100))
                t += 7
            }
        }
        #expect(history(ops).isLinearizable())
    }
}
