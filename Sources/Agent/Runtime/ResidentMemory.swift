import Foundation

#if os(Linux)
    import Glibc

    /// The agent's resident set after start-up (docs/footprint.md).
    ///
    /// Most of an idle agent's resident memory is not heap but pages of its own executable and of
    /// libcrypto, libc and libstdc++, mapped while it started. The kernel maps file pages around
    /// each fault (`fault_around_bytes`, 64 KiB: 16 pages for every page touched), so start-up
    /// code spread over a 26 MB .text (argument parsing, TLS and SQLite set-up, the HTTP server's
    /// start, the first protocol-conformance lookups) left ~18 MiB of it mapped, though an idle
    /// agent runs a small part of it. `releaseStartupPages` unmaps the clean, read-only file pages
    /// once start-up is over; the ones the idle agent uses come back on their first touch (a minor
    /// fault: they are still in the page cache, shared with every other process mapping the file).
    enum ResidentMemory {
        /// Unmaps every read-only, file-backed mapping that holds no page copied on write
        /// (MADV_DONTNEED: the next touch reads the page cache again), and hands glibc's free heap
        /// back to the kernel (malloc_trim). Returns the KiB no longer resident.
        ///
        /// Only mappings without write permission and with `Anonymous: 0` in smaps are touched:
        /// their every resident page is the file's own content, so dropping one loses nothing.
        /// (A writable mapping, or RELRO after its relocations, holds private copies: never those.)
        @discardableResult
        static func releaseStartupPages() -> Int {
            // Read to the end: /proc reports a size of 0, and `String(contentsOfFile:)` stopped
            // after the first part of a long smaps.
            guard let file = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return 0 }
            defer { try? file.close() }
            guard let data = try? file.readToEnd() else { return 0 }
            let smaps = String(decoding: data, as: UTF8.self)
            struct Candidate {
                var start: UInt
                var end: UInt
                var eligible: Bool
                var rss = 0
                var anonymous = 0
            }
            var mappings: [Candidate] = []
            for line in smaps.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard let first = fields.first else { continue }
                if first == "Rss:" || first == "Anonymous:" {
                    guard !mappings.isEmpty, fields.count >= 2, let kib = Int(fields[1]) else { continue }
                    if first == "Rss:" { mappings[mappings.count - 1].rss = kib } else { mappings[mappings.count - 1].anonymous = kib }
                } else if !first.hasSuffix(":"), let dash = first.firstIndex(of: "-"), let start = UInt(first[..<dash], radix: 16),
                    let end = UInt(first[first.index(after: dash)...], radix: 16), fields.count >= 5
                {
                    // "r-xp" or "r--p", a path: a private read-only file mapping (not [vdso] and the like).
                    let permissions = fields[1]
                    let path = fields.count > 5 ? fields[5] : ""
                    let eligible = permissions.hasPrefix("r") && permissions.dropFirst().hasPrefix("-") && path.hasPrefix("/")
                    mappings.append(Candidate(start: start, end: end, eligible: eligible))
                }
            }
            var released = 0
            for m in mappings where m.eligible && m.anonymous == 0 && m.rss > 0 {
                guard let address = UnsafeMutableRawPointer(bitPattern: m.start) else { continue }
                if madvise(address, Int(m.end - m.start), MADV_DONTNEED) == 0 { released += m.rss }
            }
            _ = glibcMallocTrim(0)
            return released
        }
    }

    /// glibc's malloc_trim(3); Swift's Glibc module does not export malloc.h.
    @_silgen_name("malloc_trim")
    private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
