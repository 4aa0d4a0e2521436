import Foundation
import Testing

@testable import Agent

#if os(Linux)
    /// The agent drops start-up's pages of its binary and libraries from its resident set
    /// (docs/footprint.md); nothing it computes may change by it.
    struct ResidentMemoryTests {
        struct Sample: Codable, Equatable {
            var name: String
            var values: [Double]
        }

        static func work() throws -> (Data, [Int], String) {
            // Sorted keys: the encoder's key order otherwise follows a dictionary's, which may
            // differ between two encodings in one process.
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            let json = try encoder.encode(Sample(name: "node-1", values: [0.5, 1e6, -3]))
            let sorted = (0..<1000).map { ($0 * 7919) % 1000 }.sorted()
            return (json, sorted, String(format: "%.3f", 2.0 / 3.0))
        }

        @Test func releasingStartupPagesUnmapsCodeAndLeavesEveryResultAsItWas() throws {
            let before = try Self.work()
            // This process runs code from its own executable: those pages were resident.
            let released = ResidentMemory.releaseStartupPages()
            #expect(released > 0)
            let after = try Self.work()
            #expect(after.0 == before.0)
            #expect(after.1 == before.1)
            #expect(after.2 == before.2)
            #expect(try JSONDecoder().decode(Sample.self, from: after.0) == Sample(name: "node-1", values: [0.5, 1e6, -3]))
        }

        @Test func releasingTwiceInARowIsHarmless() throws {
            ResidentMemory.releaseStartupPages()
            ResidentMemory.releaseStartupPages()
            #expect(try Self.work().1.count == 1000)
        }
    }
#endif
