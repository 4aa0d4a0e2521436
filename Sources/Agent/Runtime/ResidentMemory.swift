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
            var released = 0
            for m in mappings(smaps: [UInt8](data)) where m.eligible && m.anonymous == 0 && m.rss > 0 {
                guard let address = UnsafeMutableRawPointer(bitPattern: m.start) else { continue }
                if madvise(address, Int(m.end - m.start), MADV_DONTNEED) == 0 { released += m.rss }
            }
            _ = glibcMallocTrim(0)
            return released
        }

        /// One mapping of /proc/self/smaps: its address range, whether it is a private read-only
        /// file mapping ("r--p" or "r-xp" and a path, not [vdso] and the like), and its Rss and
        /// Anonymous (KiB).
        struct Mapping: Equatable {
            var start: UInt
            var end: UInt
            var eligible: Bool
            var rss = 0
            var anonymous = 0
        }

        /// smaps read byte by byte. It is ~200 KB of text (a hundred mappings, two dozen lines
        /// each); split into Strings and Characters it took ~50 million instructions, more than
        /// an idle agent's membership protocol spends in a minute, and the 30 s release falls in
        /// every idle measurement (docs/footprint.md, "CPU").
        static func mappings(smaps text: [UInt8]) -> [Mapping] {
            var out: [Mapping] = []
            // The line's fields, separated by runs of spaces (one array for every line).
            var fields: [Range<Int>] = []
            fields.reserveCapacity(6)
            var lineStart = 0
            let n = text.count
            while lineStart < n {
                var lineEnd = lineStart
                while lineEnd < n && text[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
                defer { lineStart = lineEnd + 1 }
                fields.removeAll(keepingCapacity: true)
                var i = lineStart
                while i < lineEnd && fields.count < 6 {
                    while i < lineEnd && text[i] == UInt8(ascii: " ") { i += 1 }
                    if i == lineEnd { break }
                    let f = i
                    while i < lineEnd && text[i] != UInt8(ascii: " ") { i += 1 }
                    fields.append(f..<i)
                }
                guard let first = fields.first else { continue }
                if equals(text, first, "Rss:") || equals(text, first, "Anonymous:") {
                    guard !out.isEmpty, fields.count >= 2, let kib = decimal(text, fields[1]) else { continue }
                    if equals(text, first, "Rss:") { out[out.count - 1].rss = kib } else { out[out.count - 1].anonymous = kib }
                } else if text[first.upperBound - 1] != UInt8(ascii: ":"), fields.count >= 5,
                    let dash = first.first(where: { text[$0] == UInt8(ascii: "-") }),
                    let start = hex(text, first.lowerBound..<dash), let end = hex(text, (dash + 1)..<first.upperBound)
                {
                    let permissions = fields[1]
                    let eligible =
                        permissions.count >= 2 && text[permissions.lowerBound] == UInt8(ascii: "r")
                        && text[permissions.lowerBound + 1] == UInt8(ascii: "-")
                        && fields.count > 5 && text[fields[5].lowerBound] == UInt8(ascii: "/")
                    out.append(Mapping(start: start, end: end, eligible: eligible))
                }
            }
            return out
        }

        private static func equals(_ text: [UInt8], _ r: Range<Int>, _ s: StaticString) -> Bool {
            guard r.count == s.utf8CodeUnitCount else { return false }
            let p = s.utf8Start
            for k in 0..<r.count where text[r.lowerBound + k] != p[k] { return false }
            return true
        }

        /// A decimal field; nil if it is not one (or does not fit).
        private static func decimal(_ text: [UInt8], _ r: Range<Int>) -> Int? {
            guard !r.isEmpty, r.count <= 18 else { return nil }
            var v = 0
            for k in r {
                let d = Int(text[k]) - 48
                guard d >= 0 && d <= 9 else { return nil }
                v = v * 10 + d
            }
            return v
        }

        /// A hexadecimal field (an address); nil if it is not one (or does not fit).
        private static func hex(_ text: [UInt8], _ r: Range<Int>) -> UInt? {
            guard !r.isEmpty, r.count <= 16 else { return nil }
            var v: UInt = 0
            for k in r {
                let c = text[k]
                let d: UInt
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt(c - UInt8(ascii: "A") + 10)
                default: return nil
                }
                v = v << 4 | d
            }
            return v
        }
    }

    /// glibc's malloc_trim(3); Swift's Glibc module does not export malloc.h.
    @_silgen_name("malloc_trim")
    private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
