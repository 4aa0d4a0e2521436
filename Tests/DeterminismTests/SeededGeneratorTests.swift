import Determinism
import Testing

@Suite struct SeededGeneratorTests {
    @Test func theSameSeedGivesTheSameSequence() {
        var a = SeededGenerator(seed: 42)
        var b = SeededGenerator(seed: 42)
        for _ in 0..<1000 { #expect(a.next() == b.next()) }
    }

    @Test func differentSeedsGiveDifferentSequences() {
        var a = SeededGenerator(seed: 1)
        var b = SeededGenerator(seed: 2)
        let xs = (0..<16).map { _ in a.next() }
        let ys = (0..<16).map { _ in b.next() }
        #expect(xs != ys)
    }

    @Test func bitsAreRoughlyBalanced() {
        var g = SeededGenerator(seed: 7)
        var ones = 0
        let draws = 10_000
        for _ in 0..<draws { ones += g.next().nonzeroBitCount }
        let mean = Double(ones) / Double(draws)
        #expect(abs(mean - 32) < 0.5, "mean set bits per draw was \(mean)")
    }

    @Test func chanceFollowsItsProbability() {
        var g = SeededGenerator(seed: 99)
        let hits = (0..<20_000).filter { _ in g.chance(0.25) }.count
        #expect(abs(Double(hits) / 20_000 - 0.25) < 0.02)
        #expect(!(0..<100).contains { _ in g.chance(0) })
        #expect((0..<100).allSatisfy { _ in g.chance(1) })
    }

    @Test func aForkIsIndependentOfLaterParentDraws() {
        var parent1 = SeededGenerator(seed: 5)
        var parent2 = SeededGenerator(seed: 5)
        var child1 = parent1.fork()
        var child2 = parent2.fork()
        _ = parent2.next()
        #expect(child1.next() == child2.next())
    }
}
