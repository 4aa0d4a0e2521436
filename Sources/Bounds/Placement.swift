/// Placement (issue 17 item 6, docs/scheduling.md "Constraints and spread"): node labels and the
/// constraints a service puts on them. Here, in the leaf module, because the flag reader, the
/// services file, the replicated state's validation and the planner must read them alike.

/// Node labels: `zone=a`, `disk=ssd`. Keys and values as Kubernetes spells them, shorter: a key is
/// 1-63 bytes of letters, digits, '-', '_', '.' and '/', starting and ending with a letter or
/// digit; a value is 0-63 bytes of the same.
public enum NodeLabels {
    static func isLabelByte(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x5F || b == 0x2E || b == 0x2F
    }

    static func isAlphanumeric(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
    }

    /// What is wrong with `key` as a label key, or nil.
    public static func keyProblem(_ key: String) -> String? {
        let u = Array(key.utf8)
        if u.isEmpty { return "a label key must not be empty" }
        if u.count > Limits.maxNodeLabelKeyBytes { return "a label key is at most \(Limits.maxNodeLabelKeyBytes) bytes" }
        if !u.allSatisfy(isLabelByte) || !isAlphanumeric(u[0]) || !isAlphanumeric(u[u.count - 1]) {
            return "a label key is letters, digits, '-', '_', '.' or '/', starting and ending with a letter or digit"
        }
        return nil
    }

    /// What is wrong with `value` as a label value, or nil (empty is allowed: `gpu=`).
    public static func valueProblem(_ value: String) -> String? {
        let u = Array(value.utf8)
        if u.count > Limits.maxNodeLabelValueBytes { return "a label value is at most \(Limits.maxNodeLabelValueBytes) bytes" }
        if !u.allSatisfy(isLabelByte) { return "a label value is letters, digits, '-', '_', '.' or '/'" }
        return nil
    }

    /// `key=value` as a flag gives it; an error that says what is wrong.
    public static func parse(_ text: String) -> Result<(key: String, value: String), LabelError> {
        guard let eq = text.firstIndex(of: "=") else {
            return .failure(LabelError("\"\(text.prefix(80))\" is not key=value"))
        }
        let key = String(text[..<eq]), value = String(text[text.index(after: eq)...])
        if let p = keyProblem(key) { return .failure(LabelError("\"\(text.prefix(80))\": \(p)")) }
        if let p = valueProblem(value) { return .failure(LabelError("\"\(text.prefix(80))\": \(p)")) }
        return .success((key, value))
    }

    /// Labels from `key=value` strings: each checked, at most `Limits.maxNodeLabels`, a key once.
    public static func parse(_ items: [String]) -> Result<[String: String], LabelError> {
        var out: [String: String] = [:]
        for item in items {
            switch parse(item) {
            case .failure(let e): return .failure(e)
            case .success(let (k, v)):
                guard out[k] == nil else { return .failure(LabelError("label \(k) is given twice")) }
                out[k] = v
            }
        }
        if out.count > Limits.maxNodeLabels {
            return .failure(LabelError("\(out.count) labels; at most \(Limits.maxNodeLabels)"))
        }
        return .success(out)
    }
}

public struct LabelError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// One `constraints:` entry: `zone == a` (the node's label `zone` is `a`) or `disk != hdd` (the
/// node has no label `disk`, or it is not `hdd`), as Nomad's `constraint` operators `=` and `!=`
/// read them: a node without the label fails `==` and passes `!=`.
public struct PlacementConstraint: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Operator: String, Sendable, Hashable, Codable {
        case equal = "=="
        case notEqual = "!="
    }

    public var key: String
    public var op: Operator
    public var value: String

    public init(key: String, op: Operator, value: String) {
        self.key = key
        self.op = op
        self.value = value
    }

    public var description: String { "\(key) \(op.rawValue) \(value)" }

    /// Whether a node with `labels` satisfies this constraint.
    public func admits(_ labels: [String: String]) -> Bool {
        switch op {
        case .equal: return labels[key] == value
        case .notEqual: return labels[key] != value
        }
    }

    /// `key == value` or `key != value` (spaces around the operator optional); an error that
    /// says what is wrong.
    public static func parse(_ text: String) -> Result<PlacementConstraint, LabelError> {
        let shown = text.prefix(80)
        for op in [Operator.equal, .notEqual] {
            guard let r = text.range(of: op.rawValue) else { continue }
            let key = String(text[..<r.lowerBound]).trimmingSpaces
            let value = String(text[r.upperBound...]).trimmingSpaces
            if let p = NodeLabels.keyProblem(key) { return .failure(LabelError("\"\(shown)\": \(p)")) }
            if let p = NodeLabels.valueProblem(value) { return .failure(LabelError("\"\(shown)\": \(p)")) }
            return .success(PlacementConstraint(key: key, op: op, value: value))
        }
        return .failure(LabelError("\"\(shown)\" is not `key == value` or `key != value`"))
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
