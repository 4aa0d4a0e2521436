/// `microscale agent`'s arguments read straight into `AgentSettings`, without ArgumentParser.
///
/// The agent starts on every host, and N at once in a mass join, where start-up CPU is what
/// the join waits for (docs/membership.md, "Where a joiner's CPU goes"). ArgumentParser builds
/// its parser by reflecting over the command's properties, and the Swift runtime's first
/// protocol-conformance lookups for them each scan every conformance record in the binary:
/// ~14% of an agent's start-up instructions (callgrind), more with the whole command tree.
///
/// This reader knows only well-formed arguments: `--flag value`, `--flag=value`, `--server`,
/// `--join` repeated. Anything else (help, an unknown flag, a missing value, a flag given twice)
/// gives nil, and the caller hands the arguments to ArgumentParser, whose help and errors the
/// user sees as before. What this accepts, ArgumentParser accepts with the same meaning
/// (AgentFlagsTests).
public struct AgentFlags: Equatable, Sendable {
    public var settings = AgentSettings()
    /// `--config`: the YAML file whose keys are the flags' names.
    public var config: String?

    public init() {}

    public static func parse(_ arguments: [String]) -> AgentFlags? {
        var flags = AgentFlags()
        var given: Set<String> = []
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            guard argument.hasPrefix("--") else { return nil }
            let body = argument.dropFirst(2)
            let eq = body.firstIndex(of: "=")
            let key = String(body[..<(eq ?? body.endIndex)])
            let inline = eq.map { String(body[body.index(after: $0)...]) }
            i += 1
            if AgentSettings.booleanKeys.contains(key) {
                guard inline == nil, given.insert(key).inserted else { return nil }
                flags.settings.set(key, "true", origin: "--\(key)")
                continue
            }
            guard key == "config" || AgentSettings.keys.contains(key) else { return nil }
            let value: String
            if let inline {
                // ArgumentParser reads "--flag=" as a flag missing its value.
                guard !inline.isEmpty else { return nil }
                value = inline
            } else {
                // ArgumentParser reads a following "-..." as the next flag, not as this one's value.
                guard i < arguments.count, !arguments[i].hasPrefix("-") else { return nil }
                value = arguments[i]
                i += 1
            }
            if AgentSettings.listKeys.contains(key) {
                flags.settings.append(key, value, origin: "--\(key)")
                continue
            }
            guard given.insert(key).inserted else { return nil }
            if key == "config" { flags.config = value } else { flags.settings.set(key, value, origin: "--\(key)") }
        }
        return flags
    }
}
