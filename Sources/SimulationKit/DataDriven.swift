import Foundation

/// Golden trace files in the manner of etcd-io/raft's `testdata/` (cockroachdb/datadriven): a
/// file is a list of cases, each a command line, a `----` line and the output the command must
/// print, ended by a blank line. Lines before a command that start with `#`, and blank lines,
/// are commentary and kept as they are.
///
///     # The first election: node 1's timer fires.
///     campaign 1
///     ----
///     1: became pre-candidate at term 0
///
/// A test runs each command through an interpreter and compares what it prints with the file.
/// With `MICROSCALE_REWRITE=1` in the environment the file is written back with what the
/// interpreter printed instead (then read the diff: it is the change in behaviour).
public enum DataDriven {
    public struct Case: Sendable, Equatable {
        /// Commentary lines before the command, kept on rewrite.
        public var preamble: [String]
        public var command: String
        /// 1-based line of the command in the file.
        public var line: Int
        public var expected: String
    }

    public struct Mismatch: Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var command: String
        public var expected: String
        public var actual: String
        public var description: String {
            "\(file):\(line): \(command)\n--- expected\n\(expected)\n--- actual\n\(actual)"
        }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// A command split into its name, positional arguments and `key=value` arguments.
    public struct Command: Sendable {
        public var name: String
        public var positional: [String]
        public var keyed: [String: String]

        public init(_ line: String) {
            let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            name = words.first ?? ""
            positional = []
            keyed = [:]
            for w in words.dropFirst() {
                if let eq = w.firstIndex(of: "=") {
                    keyed[String(w[..<eq])] = String(w[w.index(after: eq)...])
                } else {
                    positional.append(w)
                }
            }
        }
    }

    public static func parse(_ text: String, file: String) throws(ParseError) -> (cases: [Case], trailer: [String]) {
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        var cases: [Case] = []
        var preamble: [String] = []
        var i = 0
        while i < lines.count {
            let line = lines[i]
            if line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty {
                preamble.append(line)
                i += 1
                continue
            }
            let commandLine = i + 1
            guard i + 1 < lines.count, lines[i + 1] == "----" else {
                throw ParseError(description: "\(file):\(commandLine): a command must be followed by a line '----'")
            }
            var output: [String] = []
            i += 2
            while i < lines.count, !lines[i].isEmpty {
                output.append(lines[i])
                i += 1
            }
            cases.append(Case(preamble: preamble, command: line, line: commandLine, expected: output.joined(separator: "\n")))
            preamble = []
        }
        return (cases, preamble)
    }

    /// Runs every case of `path` through `interpret` (which returns the command's output; it may
    /// not contain a blank line) and returns the cases whose output differs from the file's.
    /// With MICROSCALE_REWRITE=1 the file is rewritten with the outputs and nothing differs.
    public static func run(_ path: String, _ interpret: (Command) -> String) throws -> [Mismatch] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let file = (path as NSString).lastPathComponent
        let (cases, trailer) = try parse(text, file: file)
        var mismatches: [Mismatch] = []
        var rewritten: [String] = []
        for c in cases {
            let actual = interpret(Command(c.command))
                .split(separator: "\n", omittingEmptySubsequences: true).joined(separator: "\n")
            if actual != c.expected {
                mismatches.append(Mismatch(file: file, line: c.line, command: c.command, expected: c.expected, actual: actual))
            }
            rewritten += c.preamble + [c.command, "----"] + (actual.isEmpty ? [] : [actual]) + [""]
        }
        if ProcessInfo.processInfo.environment["MICROSCALE_REWRITE"] == "1" {
            // Commentary after the last case is kept; consecutive blank lines collapse to one.
            var out: [String] = []
            for l in rewritten + trailer where !(l.isEmpty && out.last?.isEmpty == true) { out.append(l) }
            try (out.joined(separator: "\n").trimmingCharacters(in: .newlines) + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            return []
        }
        return mismatches
    }
}
