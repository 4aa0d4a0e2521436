/// Which rules of the replicated state every server applies, from the versions their members'
/// records carry. A rule that changes what `ClusterState.apply` does with an entry must be used
/// only once every server of the configuration applies it: a server of an older version would
/// apply what the others refuse, and the servers' states would differ from that entry on. Nomad
/// gates such features the same way (`ServersMeetMinimumVersion`, from the servers' gossip tags);
/// a rolling upgrade keeps the protocol version, so versions mix for as long as it lasts
/// (docs/operations.md, "Upgrades and protocol versions").
public enum ServerFeatures {
    /// Since this version `ClusterState.apply` refuses a plan whose `basedOnIndex` is older than
    /// the last change of the services, drained nodes or deny list (`Consensus.Plan.basedOnIndex`).
    public static let stalePlanCheck = AgentVersion(major: 0, minor: 2, patch: 0)

    /// Whether every server in `servers` (the Raft configuration, voters and learners: both apply
    /// the log) is known from its record, alive or not, at `minimum` or later. A server with no
    /// record, or a version that does not parse, counts as older: the rule waits for it.
    public static func allServers(_ servers: Set<String>, in members: [MemberView], atLeast minimum: AgentVersion) -> Bool {
        guard !servers.isEmpty else { return false }
        var versions: [String: String] = [:]
        for m in members where servers.contains(m.name) { versions[m.name] = m.agentVersion }
        return servers.allSatisfy { name in
            versions[name].flatMap(AgentVersion.init(parsing:)).map { $0 >= minimum } ?? false
        }
    }
}

/// An agent's version as its record carries it ("0.2.0", "1.4.12-dev"): major, minor and patch;
/// anything after the patch is ignored. The record is a peer's, so the text is hostile: it is
/// bounded where the record is decoded (`Limits.maxAgentVersionBytes`), and anything that is not
/// three decimal numbers of at most nine digits each does not parse.
public struct AgentVersion: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int

    public init(major: Int, minor: Int, patch: Int) {
        self.major = major
        self.minor = minor
        self.patch = patch
    }

    public init?(parsing text: String) {
        var parts: [Int] = []
        var digits = 0
        var value = 0
        for c in text.utf8 {
            if c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
                guard digits < 9 else { return nil }
                value = value * 10 + Int(c - UInt8(ascii: "0"))
                digits += 1
            } else if c == UInt8(ascii: "."), parts.count < 2 {
                guard digits > 0 else { return nil }
                parts.append(value)
                (digits, value) = (0, 0)
            } else {
                break  // a pre-release or build suffix ("-dev", "+abc"), or junk after the patch
            }
        }
        guard parts.count == 2, digits > 0 else { return nil }
        self.init(major: parts[0], minor: parts[1], patch: value)
    }

    public static func < (a: AgentVersion, b: AgentVersion) -> Bool {
        (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
    }

    public var description: String { "\(major).\(minor).\(patch)" }
}
