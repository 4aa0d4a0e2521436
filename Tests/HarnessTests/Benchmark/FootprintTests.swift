import Foundation
import Testing

@testable import Harness

/// `microscale-bench idle`'s breakdown of a process's resident memory (docs/footprint.md).
struct FootprintTests {
    @Test func aSwiftSymbolBelongsToTheModuleItsMangledNameStartsWith() {
        #expect(FootprintReader.module(of: "$s10Membership12SWIMInstanceV4tick3nowAA10DirectivesVs8DurationV_tF") == "Membership")
        #expect(FootprintReader.module(of: "$s7NIOCore10ByteBufferV5clearyyF") == "NIOCore")
        #expect(FootprintReader.module(of: "$sSS4hash4intoys6HasherVz_tF") == "Swift (stdlib, and specialisations of its types)")
        #expect(FootprintReader.module(of: "$ss6HasherV9_finalizeSiyF") == "Swift (stdlib, and specialisations of its types)")
    }

    @Test func theRuntimeICUCoreFoundationAndCAreNamedByTheirPrefixes() {
        #expect(FootprintReader.module(of: "swift_retain") == "Swift runtime")
        #expect(FootprintReader.module(of: "_ZN5swift7runtime9AccessSet6insertEPNS0_6AccessEPvS4_NS_16ExclusivityFlagsE") == "Swift runtime")
        #expect(FootprintReader.module(of: "_ZN6icu_7613UnicodeString8doAppendEPKDsii") == "_FoundationICU")
        #expect(FootprintReader.module(of: "__CFStringCreateImmutableFunnel3") == "CoreFoundation")
        #expect(FootprintReader.module(of: "_ZNSt6vectorIiSaIiEE9push_backERKi") == "C++ (other)")
        #expect(FootprintReader.module(of: "lz4_compress") == "C (other)")
    }

    @Test func malformedSwiftNamesFallIntoOtherInsteadOfTrapping() {
        #expect(FootprintReader.module(of: "$s") == "Swift (other)")
        #expect(FootprintReader.module(of: "$s99Short") == "Swift (other)")
        #expect(FootprintReader.module(of: "$s0abc") == "Swift (other)")
    }

    @Test func threadsOfOneKindAreCountedTogether() {
        let s = IdleFootprintBenchmark.threadSummary(["NIO-ELT-1-#1", "NIO-ELT-1-#2", "NIO-ELT-2-#1", "TP-#0", "microscale"])
        #expect(s == "NIO-ELT-N-#N ×3, TP-#N, microscale")
    }

    #if os(Linux)
        /// This test process itself: every resident KiB lands in one part of the breakdown, and
        /// the executable's pages are split by section.
        @Test func theBreakdownOfARunningProcessAddsUpToItsResidentSet() throws {
            let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            let f = try #require(try FootprintReader(executable: exe).read(pid: getpid()))
            #expect(f.rssKiB > 0)
            #expect(f.pssKiB <= f.rssKiB)
            #expect(abs(f.byMapping.reduce(0) { $0 + $1.kib } - f.rssKiB) < 1)
            #expect(f.binaryBySection.contains { $0.name == ".text" && $0.kib > 0 })
            #expect(f.byMapping.contains { $0.name.hasPrefix("executable") })
            #expect(!f.threads.isEmpty)
            // (The pages by section are read from pagemap a moment after smaps; tests running
            // beside this one, ResidentMemoryTests among them, map and unmap pages meanwhile, so
            // the two totals are not compared.)
            #expect(f.binaryBySection.allSatisfy { $0.kib > 0 })
        }

        @Test func aProcessThatIsGoneHasNoFootprint() throws {
            let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
            // Above /proc/sys/kernel/pid_max's largest possible value (2^22).
            #expect(try FootprintReader(executable: exe).read(pid: 5_000_000) == nil)
        }
    #endif
}
