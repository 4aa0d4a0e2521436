import Bounds
import Membership
import Scaling

/// A member as `GET /v1/members` and `microscale members` show it.
public struct MemberView: Codable, Sendable, Equatable {
    public var name: String
    public var address: String
    /// Typed, not a string: what the leader plans with and what `GET /v1/members` shows are the
    /// same four values, and JSON with any other status does not decode.
    public var status: MemberStatus
    public var role: String
    public var incarnation: UInt64
    public var capacity: ResourceView
    public var reserved: ResourceView
    public var running: [String: Int]
    public var agentVersion: String
    /// For a dead or left member: whether this agent has seen it gone itself (its own probe went
    /// unanswered, or the member said it leaves), not only heard so from others. The leader moves
    /// a node's work only then (docs/ARCHITECTURE.md, "Trust"). nil for the others.
    public var confirmedDown: Bool?
    /// The member said it is stopping to restart (true; absent otherwise): the leader keeps its
    /// work in place for --dead-node-grace once it looks dead.
    public var restarting: Bool?
    /// Per service under a rolling update: the node's containers of the new spec (absent otherwise).
    public var rollouts: [String: RolloutView]?

    public struct RolloutView: Codable, Sendable, Hashable {
        public var spec: String
        public var serving: Int
        public var failed: Int
    }
    /// The member's labels (`--node-label`); absent when it has none.
    public var labels: [String: String]?
    /// Images the member fails to pull, with the registry's reason; absent when none.
    public var imageFailures: [String: String]?
    /// Running containers per service whose health check has not passed yet, and that fail it;
    /// absent when none.
    public var starting: [String: Int]?
    public var unhealthy: [String: Int]?
    /// Per service, the ports of the member's serving containers (absent when it has none):
    /// what `GET /v1/services/NAME/endpoints` is made of.
    public var endpoints: [String: [Endpoint]]?

    public struct ResourceView: Codable, Sendable, Equatable {
        /// As the node's signed record carries it: what the planner reads, so no Double stands
        /// between the record and the plan.
        public var cpuMillicores: Int64
        public var memoryBytes: Int64
        /// Cores, for people (`microscale members`) and the API's `cpu`, derived from millicores.
        public var cpu: Double { Double(cpuMillicores) / 1000 }

        public init(cpuMillicores: Int64, memoryBytes: Int64) {
            self.cpuMillicores = cpuMillicores
            self.memoryBytes = memoryBytes
        }

        enum CodingKeys: String, CodingKey { case cpu, cpuMillicores, memoryBytes }

        /// JSON from an agent before `cpuMillicores` existed has only `cpu`: its cores become
        /// millicores once, here, and a value that is no whole number of millicores in range is
        /// an error naming the field.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            memoryBytes = try c.decode(Int64.self, forKey: .memoryBytes)
            if let m = try c.decodeIfPresent(Int64.self, forKey: .cpuMillicores) {
                cpuMillicores = m
            } else {
                let cores = try c.decode(Double.self, forKey: .cpu)
                guard let m = (cores * 1000).exactlyRoundedInt, (0...Int(Limits.maxNodeCPUMillicores)).contains(m) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .cpu, in: c, debugDescription: "cpu: \(cores) is not 0 to \(Limits.maxNodeCPUMillicores / 1000) cores")
                }
                cpuMillicores = Int64(m)
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(cpu, forKey: .cpu)
            try c.encode(cpuMillicores, forKey: .cpuMillicores)
            try c.encode(memoryBytes, forKey: .memoryBytes)
        }
    }

    public init(_ r: NodeRecord, status: MemberStatus, incarnation: UInt64) {
        name = r.name
        address = r.address
        self.status = status
        role = r.role.rawValue
        self.incarnation = incarnation
        capacity = ResourceView(cpuMillicores: r.capacity.cpuMillicores, memoryBytes: r.capacity.memoryBytes)
        reserved = ResourceView(cpuMillicores: r.reserved.cpuMillicores, memoryBytes: r.reserved.memoryBytes)
        running = r.running
        agentVersion = r.agentVersion
        restarting = r.restarting ? true : nil
        rollouts = r.rollouts.isEmpty ? nil : r.rollouts.mapValues { RolloutView(spec: $0.spec, serving: $0.serving, failed: $0.failed) }
        labels = r.labels.isEmpty ? nil : r.labels
        imageFailures = r.imageFailures.isEmpty ? nil : r.imageFailures
        starting = r.starting.isEmpty ? nil : r.starting
        unhealthy = r.unhealthy.isEmpty ? nil : r.unhealthy
        endpoints = r.endpoints.isEmpty ? nil : r.endpoints
    }
}

extension MemberView {
    /// Every member `instance` knows, itself included, sorted by name: what `GET /v1/members`
    /// shows and what the leader plans with (`MembershipService.members()` in the agent, and the
    /// leader's view in `microscale-sim cluster`, so both read SWIM the same way). A dead or left
    /// member says whether this instance saw it gone itself (`confirmedDown`); hearsay does not
    /// move work (docs/ARCHITECTURE.md, "Trust").
    public static func members(of instance: SWIMInstance) -> [MemberView] {
        var out = instance.knownMembers.map { m in
            var v = MemberView(m.record, status: m.status, incarnation: m.incarnation)
            if m.status == .dead || m.status == .left { v.confirmedDown = instance.isConfirmedDown(m.name) }
            return v
        }
        out.append(MemberView(instance.record, status: instance.isLeaving ? .left : .alive, incarnation: instance.incarnation))
        return out.sorted { $0.name < $1.name }
    }
}

extension NodeStatus {
    /// The planner's name for a member's status: an exhaustive switch, so a status added to
    /// Membership does not compile until the planner says what it means.
    public init(_ status: MemberStatus) {
        switch status {
        case .alive: self = .alive
        case .suspect: self = .suspect
        case .dead: self = .dead
        case .left: self = .left
        }
    }
}
