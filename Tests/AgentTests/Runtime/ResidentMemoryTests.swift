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

        @Test func smapsIsReadMappingByMappingWithItsRssAndAnonymousPages() {
            let text = """
                7f00a000-7f00c000 r-xp 00000000 fd:01 42                         /usr/lib/libc.so.6
                Size:                  8 kB
                Rss:                   8 kB
                Anonymous:             0 kB
                VmFlags: rd ex mr mw me sd
                7f00c000-7f00d000 rw-p 00002000 fd:01 42                         /usr/lib/libc.so.6
                Rss:                   4 kB
                Anonymous:             4 kB
                7f00d000-7f00e000 r--p 00003000 fd:01 42                         /usr/lib/libc.so.6
                Rss:                   4 kB
                Anonymous:             4 kB
                7FFD0000-7ffd2000 r--p 00000000 00:00 0                          [vvar]
                Rss:                   0 kB
                7ffd3000-7ffd4000 r--p 00000000 00:00 0
                Rss:                   4 kB
                """
            #expect(
                ResidentMemory.mappings(smaps: Array(text.utf8)) == [
                    .init(start: 0x7f00a000, end: 0x7f00c000, eligible: true, rss: 8, anonymous: 0),
                    .init(start: 0x7f00c000, end: 0x7f00d000, eligible: false, rss: 4, anonymous: 4),
                    // Read-only but holding copies (RELRO after its relocations): eligible by its
                    // permissions, left alone by its Anonymous pages.
                    .init(start: 0x7f00d000, end: 0x7f00e000, eligible: true, rss: 4, anonymous: 4),
                    .init(start: 0x7ffd0000, end: 0x7ffd2000, eligible: false, rss: 0, anonymous: 0),
                    .init(start: 0x7ffd3000, end: 0x7ffd4000, eligible: false, rss: 4, anonymous: 0),
                ])
        }

        @Test func thisProcessSmapsHasItsExecutableAmongTheMappingsItMayRelease() throws {
            let file = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
            let data = try #require(try file.readToEnd())
            let mappings = ResidentMemory.mappings(smaps: [UInt8](data))
            #expect(mappings.count > 10)
            #expect(mappings.contains { $0.eligible && $0.rss > 0 && $0.anonymous == 0 })
        }

        @Test func releasingTwiceInARowIsHarmless() throws {
            ResidentMemory.releaseStartupPages()
            ResidentMemory.releaseStartupPages()
            #expect(try Self.work().1.count == 1000)
        }
    }
#endif
