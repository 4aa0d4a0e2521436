import PropertyBased
import SimulationKit
import Testing

@testable import Scaling

/// The planner water-fills a small need one container at a time (a heap) and a large one by a
/// search on the level: the two must give every bucket the same, or which one ran would show in
/// the plan (docs/scaling.md, "Incremental re-planning").
@Suite struct WaterFillTests {
    @Test func oneContainerAtATimeGivesWhatTheLevelSearchGives() async {
        await propertyCheck(count: 2000, input: Gen.uint64(in: 0...UInt64(UInt32.max))) { seed in
            var rng = SeededGenerator(seed: seed)
            let m = Int(rng.next() % 12)
            let counts = (0..<m).map { _ in Int(rng.next() % 7) }
            let room = (0..<m).map { _ in Int(rng.next() % 6) }
            let need = Int(rng.next() % 40)
            #expect(
                waterFillByTurns(counts: counts, room: room, need: need) == waterFillByLevel(counts: counts, room: room, need: need),
                "seed \(seed): counts \(counts), room \(room), need \(need)")
            // And what the planner calls, which first gives one each at the lowest level when
            // that is enough.
            #expect(
                waterFill(counts: counts, room: room, need: need) == waterFillByLevel(counts: counts, room: room, need: need),
                "seed \(seed): counts \(counts), room \(room), need \(need)")
        }
    }

    @Test func theRemainderGoesToTheBucketsAtTheLevelThatGainedFewestThenInOrder() {
        // Levels 1, 0, 0, 2 with room everywhere: two raise the zeros to 1, the third goes to the
        // bucket at 1 that gained none (index 0).
        let counts = [1, 0, 0, 2], room = [5, 5, 5, 5]
        #expect(waterFillByTurns(counts: counts, room: room, need: 3) == [1, 1, 1, 0])
        #expect(waterFillByLevel(counts: counts, room: room, need: 3) == [1, 1, 1, 0])
        // 0/1/1 plus 6: the level is 2 (2 + 1 + 1 placed), and the two left go to the buckets that
        // gained one, not to the first, which gained two: 2/3/3, a share of at most 2 each.
        for fill in [waterFillByTurns, waterFillByLevel, waterFill] {
            #expect(fill([0, 1, 1], [5, 5, 5], 6) == [2, 2, 2])
        }
        // A bucket without room is passed over.
        #expect(waterFillByTurns(counts: [0, 0], room: [0, 3], need: 2) == [0, 2])
    }
}
