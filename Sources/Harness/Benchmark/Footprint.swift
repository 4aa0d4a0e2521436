import Agent
import Foundation

/// Where a process's resident memory goes (Linux): /proc/PID/smaps by mapping, and for the
/// executable, which of its sections and which modules' code have pages resident
/// (/proc/PID/pagemap, read page by page). What `microscale-bench idle` prints.
public struct Footprint: Codable, Sendable {
    /// One line of a breakdown: a name and its resident KiB.
    public struct Part: Codable, Sendable, Hashable {
        public var name: String
        public var kib: Double
    }

    public var rssKiB: Double
    /// Proportional set size: shared pages divided among the processes that map them (what N
    /// agents on one host cost together, divided by N).
    public var pssKiB: Double
    /// Private anonymous memory: heap, stacks, pages of the binary written to (relocations).
    public var anonymousKiB: Double
    /// The process's threads by name (NIO-ELT-..., the cooperative pool, Dispatch workers).
    public var threads: [String]
    /// Resident KiB by kind of mapping: the executable, each shared library, the main heap,
    /// thread arenas, thread stacks, other anonymous mappings.
    public var byMapping: [Part]
    /// The executable's resident pages by ELF section (ICU's data apart from the rest of .rodata);
    /// "(written)" parts are pages copied on write (relocations, .data, .bss).
    public var binaryBySection: [Part]
    /// The executable's resident .text by module, from the symbol table (pages shared by two
    /// modules' functions are split by bytes).
    public var textByModule: [Part]
}

/// Reads `Footprint`s of processes running one executable; parses its ELF sections and symbol
/// table once.
public final class FootprintReader: Sendable {
    struct Section: Sendable {
        var name: String
        var address: UInt64
        var size: UInt64
    }
    struct Symbol: Sendable {
        var address: UInt64
        var size: UInt64
        var module: String
    }

    let executable: String
    let sections: [Section]
    /// Function symbols in .text, sorted by address.
    let textSymbols: [Symbol]
    /// ICU's common data (`icudt*_dat`), apart from the rest of .rodata.
    let icuData: Range<UInt64>?
    let imageEnd: UInt64

    public init(executable: String) throws {
        self.executable = URL(fileURLWithPath: executable).resolvingSymlinksInPath().path
        let elf = try ELFFile(path: self.executable)
        sections = elf.sections.filter { $0.address != 0 && $0.size > 0 }
        imageEnd = sections.map { $0.address + $0.size }.max() ?? 0
        var icu: Range<UInt64>?
        var symbols: [Symbol] = []
        let text = sections.first { $0.name == ".text" }
        for s in elf.symbols {
            if s.name.hasPrefix("icudt"), s.name.hasSuffix("_dat"), s.size > 0 { icu = s.address..<(s.address + s.size) }
            guard s.isFunction, s.size > 0, let text, s.address >= text.address, s.address < text.address + text.size else { continue }
            symbols.append(Symbol(address: s.address, size: s.size, module: Self.module(of: s.name)))
        }
        icuData = icu
        textSymbols = symbols.sorted { $0.address < $1.address }
    }

    /// The module a symbol belongs to, from its (mangled) name: Swift's `$s<len><Module>`, the
    /// runtime's `swift_`, ICU's versioned C++ namespace, CoreFoundation's `CF`/`__CF` prefixes.
    static func module(of name: String) -> String {
        if name.hasPrefix("$s") {
            let rest = name.dropFirst(2)
            if rest.hasPrefix("s") || rest.hasPrefix("S") { return "Swift (stdlib, and specialisations of its types)" }
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            if let n = Int(digits), n > 0, !digits.hasPrefix("0") {
                let module = rest.dropFirst(digits.count).prefix(n)
                if module.count == n { return String(module) }
            }
            return "Swift (other)"
        }
        if name.contains("icu_7") || name.hasPrefix("u_") || name.hasPrefix("ucal_") || name.hasPrefix("udat_") { return "_FoundationICU" }
        if name.hasPrefix("swift_") || name.hasPrefix("_swift") || name.hasPrefix("_ZN5swift") || name.hasPrefix("_ZNK5swift") {
            return "Swift runtime"
        }
        if name.hasPrefix("CF") || name.hasPrefix("_CF") || name.hasPrefix("__CF") { return "CoreFoundation" }
        if name.hasPrefix("_Z") { return "C++ (other)" }
        return "C (other)"
    }

    struct Mapping {
        var start: UInt64
        var end: UInt64
        var permissions: String
        var path: String
        var fields: [String: Double] = [:]
    }

    /// The footprint of process `pid` now; nil if it is gone.
    public func read(pid: Int32) -> Footprint? {
        guard let smaps = Self.readProcFile("/proc/\(pid)/smaps") else { return nil }
        var maps: [Mapping] = []
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.hasSuffix(":") {
                guard !maps.isEmpty, fields.count >= 2, let v = Double(fields[1]) else { continue }
                maps[maps.count - 1].fields[String(first.dropLast())] = v
            } else if let dash = first.firstIndex(of: "-"), let s = UInt64(first[..<dash], radix: 16),
                let e = UInt64(first[first.index(after: dash)...], radix: 16), fields.count >= 5
            {
                let path = fields.count > 5 ? fields[5...].joined(separator: " ") : ""
                maps.append(Mapping(start: s, end: e, permissions: String(fields[1]), path: path))
            }
        }
        guard let base = maps.first(where: { $0.path == executable })?.start else { return nil }

        // Thread stacks: the mapping holding each thread's stack pointer (/proc/PID/task/TID/syscall).
        var stackStarts = Set<UInt64>()
        var threads: [String] = []
        for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/comm", encoding: .utf8)) ?? "?"
            threads.append(comm.trimmingCharacters(in: .whitespacesAndNewlines))
            guard let sc = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/syscall", encoding: .utf8) else { continue }
            let f = sc.split(separator: " ")
            guard f.count >= 3, let sp = UInt64(f[f.count - 2].dropFirst(2), radix: 16) else { continue }
            if let m = maps.first(where: { $0.start <= sp && sp < $0.end }) { stackStarts.insert(m.start) }
        }

        var byMapping: [String: Double] = [:]
        for (i, m) in maps.enumerated() {
            let rss = m.fields["Rss"] ?? 0
            guard rss > 0 else { continue }
            let kind: String
            if m.start >= base && m.end <= base + imageEnd + 4096 && (m.path == executable || m.path.isEmpty) {
                kind = "executable (\(URL(fileURLWithPath: executable).lastPathComponent))"
            } else if m.path == "[heap]" {
                kind = "heap: main arena ([heap])"
            } else if m.path == "[stack]" || stackStarts.contains(m.start) {
                kind = "thread stacks"
            } else if m.path.hasPrefix("[") {
                kind = "kernel (\(m.path))"
            } else if m.path.hasPrefix("/") {
                let name = URL(fileURLWithPath: m.path).lastPathComponent
                kind = "library: " + (name.split(separator: ".so").first.map(String.init) ?? name)
            } else if m.start % (64 << 20) == 0, i + 1 < maps.count, maps[i + 1].start == m.end, maps[i + 1].permissions.hasPrefix("---") {
                // glibc's thread arenas: 64 MiB-aligned heaps, the unused rest reserved PROT_NONE.
                kind = "heap: thread arenas"
            } else {
                kind = "other anonymous (large malloc blocks, runtime allocations)"
            }
            byMapping[kind, default: 0] += rss
        }
        let total = { (k: String) in maps.reduce(0.0) { $0 + ($1.fields[k] ?? 0) } }

        // The executable page by page: resident or not, file page or written copy.
        var bySection: [String: Double] = [:]
        var byModule: [String: Double] = [:]
        if let pagemap = FileHandle(forReadingAtPath: "/proc/\(pid)/pagemap") {
            defer { try? pagemap.close() }
            let page: UInt64 = 4096
            for m in maps where m.start >= base && m.end <= base + imageEnd + page && (m.fields["Rss"] ?? 0) > 0 {
                let pages = Int((m.end - m.start) / page)
                guard (try? pagemap.seek(toOffset: m.start / page * 8)) != nil, let data = try? pagemap.read(upToCount: pages * 8),
                    data.count == pages * 8
                else { continue }
                for p in 0..<pages {
                    let entry = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: p * 8, as: UInt64.self) }
                    guard entry & (1 << 63) != 0 else { continue }
                    let written = entry & (1 << 61) == 0
                    let address = m.start + UInt64(p) * page - base
                    bySection[sectionName(address, written: written), default: 0] += 4
                    if let text = sections.first(where: { $0.name == ".text" }), address + page > text.address, address < text.address + text.size {
                        attributeText(address..<(address + page), into: &byModule)
                    }
                }
            }
        }
        func parts(_ d: [String: Double]) -> [Footprint.Part] {
            d.map { Footprint.Part(name: $0.key, kib: $0.value) }.sorted { ($0.kib, $1.name) > ($1.kib, $0.name) }
        }
        return Footprint(
            rssKiB: total("Rss"), pssKiB: total("Pss"), anonymousKiB: total("Anonymous"), threads: threads.sorted(),
            byMapping: parts(byMapping), binaryBySection: parts(bySection), textByModule: parts(byModule))
    }

    /// A /proc file whole. (/proc reports a size of 0, and `String(contentsOfFile:)` read only
    /// the first part of a large smaps.)
    static func readProcFile(_ path: String) -> String? {
        guard let f = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? f.close() }
        guard let data = try? f.readToEnd() else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// The section a page of the image starts in (pages straddling two go to the first); ICU's
    /// data is named apart from the rest of .rodata.
    func sectionName(_ address: UInt64, written: Bool) -> String {
        var name = "(between sections)"
        if let icuData, icuData.overlaps(address..<(address + 4096)) {
            name = "ICU data (icudt*_dat in .rodata)"
        } else if let s = sections.last(where: { $0.address <= address + 4095 && address < $0.address + $0.size }) {
            name = s.name.hasPrefix("swift5_") ? "swift5_* (Swift metadata records)" : s.name
        }
        return written ? name + " (written)" : name
    }

    /// Splits a resident page of .text among the functions in it, by bytes.
    func attributeText(_ page: Range<UInt64>, into byModule: inout [String: Double]) {
        // The first symbol that ends after the page starts.
        var lo = 0, hi = textSymbols.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if textSymbols[mid].address + textSymbols[mid].size <= page.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        var covered: UInt64 = 0
        var i = lo
        while i < textSymbols.count, textSymbols[i].address < page.upperBound {
            let s = textSymbols[i]
            let from = max(s.address, page.lowerBound), to = min(s.address + s.size, page.upperBound)
            if to > from {
                byModule[s.module, default: 0] += Double(to - from) / 1024
                covered += to - from
            }
            i += 1
        }
        if covered < 4096 { byModule["(padding, unnamed code)", default: 0] += Double(4096 - min(covered, 4096)) / 1024 }
    }
}

/// The section headers and symbol table of a 64-bit little-endian ELF file.
struct ELFFile {
    struct Symbol {
        var name: String
        var address: UInt64
        var size: UInt64
        var isFunction: Bool
    }
    var sections: [FootprintReader.Section] = []
    var symbols: [Symbol] = []

    init(path: String) throws {
        guard let file = FileHandle(forReadingAtPath: path) else { throw CLIError("cannot open \(path)") }
        defer { try? file.close() }
        func read(_ offset: UInt64, _ count: Int) throws -> Data {
            try file.seek(toOffset: offset)
            guard let d = try file.read(upToCount: count), d.count == count else { throw CLIError("\(path): short read at \(offset)") }
            return d
        }
        let header = try read(0, 64)
        guard header.prefix(4) == Data([0x7f, 0x45, 0x4c, 0x46]), header[4] == 2, header[5] == 1 else {
            throw CLIError("\(path) is not a 64-bit little-endian ELF file")
        }
        func u16(_ d: Data, _ o: Int) -> UInt16 { d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt16.self) } }
        func u32(_ d: Data, _ o: Int) -> UInt32 { d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) } }
        func u64(_ d: Data, _ o: Int) -> UInt64 { d.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) } }
        let shoff = u64(header, 0x28), shentsize = Int(u16(header, 0x3A)), shnum = Int(u16(header, 0x3C)), shstrndx = Int(u16(header, 0x3E))
        guard shentsize == 64, shnum < 1000, shstrndx < shnum else { throw CLIError("\(path): unexpected section headers") }
        let table = try read(shoff, shnum * 64)
        struct Raw {
            var name: UInt32, type: UInt32, address: UInt64, offset: UInt64, size: UInt64, link: UInt32
        }
        let raw = (0..<shnum).map { i in
            let o = i * 64
            return Raw(
                name: u32(table, o), type: u32(table, o + 4), address: u64(table, o + 16), offset: u64(table, o + 24),
                size: u64(table, o + 32), link: u32(table, o + 40))
        }
        func string(_ d: Data, _ o: Int) -> String {
            guard o < d.count else { return "" }
            let end = d[(d.startIndex + o)...].firstIndex(of: 0) ?? d.endIndex
            return String(decoding: d[(d.startIndex + o)..<end], as: UTF8.self)
        }
        let names = try read(raw[shstrndx].offset, Int(raw[shstrndx].size))
        sections = raw.map { FootprintReader.Section(name: string(names, Int($0.name)), address: $0.address, size: $0.size) }
        // SHT_SYMTAB = 2; without one (a stripped binary) there is no breakdown by module.
        guard let symtab = raw.first(where: { $0.type == 2 }), Int(symtab.link) < raw.count, symtab.size < 1 << 31 else { return }
        let strtab = raw[Int(symtab.link)]
        let entries = try read(symtab.offset, Int(symtab.size))
        let strings = try read(strtab.offset, Int(strtab.size))
        for i in 0..<(entries.count / 24) {
            let o = i * 24
            let info = entries[entries.startIndex + o + 4]
            // STT_FUNC = 2.
            guard info & 0xf == 2 else { continue }
            symbols.append(
                Symbol(name: string(strings, Int(u32(entries, o))), address: u64(entries, o + 8), size: u64(entries, o + 16), isFunction: true))
        }
    }
}
