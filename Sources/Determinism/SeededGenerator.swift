/// A deterministic random source: xoshiro256** seeded through SplitMix64
/// (Blackman & Vigna, "Scrambled linear pseudorandom number generators", 2021).
///
/// The pure cores (Membership, Consensus) own one of these, seeded by their shell, instead of
/// calling the system random source: the same seed and the same events give the same effects,
/// which is what lets a failing simulation seed replay exactly (docs/ARCHITECTURE.md, Principles 5).
public struct SeededGenerator: RandomNumberGenerator, Sendable, Hashable {
    private var s0: UInt64
    private var s1: UInt64
    private var s2: UInt64
    private var s3: UInt64

    public init(seed: UInt64) {
        var sm = seed
        s0 = Self.splitMix64(&sm)
        s1 = Self.splitMix64(&sm)
        s2 = Self.splitMix64(&sm)
        s3 = Self.splitMix64(&sm)
        // xoshiro's state must not be all zero; SplitMix64 makes that astronomically unlikely,
        // but one guard is cheap.
        if s0 | s1 | s2 | s3 == 0 { s0 = 0x9E37_79B9_7F4A_7C15 }
    }

    private static func splitMix64(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    private static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = Self.rotl(s3, 45)
        return result
    }

    /// A generator for a sub-component whose draws must not perturb this one's sequence
    /// (a simulated node's own core, say), derived deterministically from this one.
    public mutating func fork() -> SeededGenerator {
        SeededGenerator(seed: next())
    }

    /// Bernoulli trial with probability `p` (clamped to 0...1).
    public mutating func chance(_ p: Double) -> Bool {
        if p <= 0 { return false }
        if p >= 1 { return true }
        return Double(next() >> 11) * 0x1.0p-53 < p
    }
}
