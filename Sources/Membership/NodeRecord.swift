import Bounds

/// Item 2 of issue 3: every member carries a versioned, size-bounded record of what it is and
/// what it runs. The owner bumps `version` on every change; a change travels as a
/// `NodeRecordDelta` piggybacked on probes, and the full record travels in push-pull and in
/// `alive` gossip (joins and refutations, which are rare).

public enum NodeRole: String, Sendable, Hashable, CaseIterable {
    case server, client
}

/// CPU in millicores (1 core = 1000) so that sums stay exact integers.
public struct Resources: Sendable, Hashable {
    public var cpuMillicores: Int64
    public var memoryBytes: Int64

    public init(cpuMillicores: Int64 = 0, memoryBytes: Int64 = 0) {
        self.cpuMillicores = cpuMillicores
        self.memoryBytes = memoryBytes
    }

    public static let zero = Resources()
}

/// What a node reports of one service's new containers during a rolling update (docs/rollouts.md):
/// the spec hash they are of, how many serve, how many failed since the node was told to run them.
public struct RolloutProgress: Sendable, Hashable {
    public var spec: String
    public var serving: Int
    public var failed: Int

    public init(spec: String, serving: Int, failed: Int = 0) {
        self.spec = spec
        self.serving = serving
        self.failed = failed
    }

    /// Bound on `spec` (a hash: 16 hex digits today).
    public static let maxSpecBytes = 64
}

/// Hard bounds on a record. A record is gossiped to everyone and held by everyone, so its size
/// multiplies by N twice (memory, push-pull bytes): 2 KiB × 10,000 members = 20 MB per node,
/// the most we accept for the largest cluster we simulate.
public struct NodeRecordLimits: Sendable, Hashable {
    public var maxNameBytes = 64
    public var maxAddressBytes = 128
    public var maxServiceNameBytes = 64
    public var maxServices = 64
    public var maxAgentVersionBytes = 32
    public var maxEncodedBytes = 2048
    /// The owner's proof (docs/ARCHITECTURE.md, "Records are signed"), bounded apart from the
    /// content: a node certificate from `microscale tls` is ~500 bytes DER, an ECDSA P-256
    /// signature at most 72.
    public var maxCertificateBytes = 4096
    public var maxSignatureBytes = 144
    /// Capacity and reservations a node may declare, and containers of one service it may report
    /// (Limits, docs/limits.md): the planner adds these up.
    public var maxCPUMillicores = Limits.maxNodeCPUMillicores
    public var maxMemoryBytes = Limits.maxNodeMemoryBytes
    public var maxRunningPerService = Limits.maxRunningPerService
    /// Labels (`--node-label`) and images failing to pull, with their reasons (docs/limits.md).
    public var maxLabels = Limits.maxNodeLabels
    public var maxLabelKeyBytes = Limits.maxNodeLabelKeyBytes
    public var maxLabelValueBytes = Limits.maxNodeLabelValueBytes
    public var maxImageFailures = Limits.maxImageFailures
    public var maxImageFailureImageBytes = Limits.maxImageFailureImageBytes
    public var maxImageFailureReasonBytes = Limits.maxImageFailureReasonBytes

    public init() {}
    public static let standard = NodeRecordLimits()
}

/// Where one serving container of a service can be reached on its node: a container port and the
/// host port it is published on (issue 17 item 5). The host is the node's advertised address, so
/// the record carries only the ports; a container that serves on the host network has its port on
/// both sides.
public struct Endpoint: Sendable, Hashable, Comparable, Codable {
    public var containerPort: Int
    public var hostPort: Int
    public init(containerPort: Int, hostPort: Int) {
        self.containerPort = containerPort
        self.hostPort = hostPort
    }
    public static func < (a: Endpoint, b: Endpoint) -> Bool {
        (a.containerPort, a.hostPort) < (b.containerPort, b.hostPort)
    }
}

public enum NodeRecordError: Error, Sendable, Hashable, CustomStringConvertible {
    case emptyName
    case fieldTooLong(field: String, bytes: Int, limit: Int)
    case tooManyServices(count: Int, limit: Int)
    case tooMany(field: String, count: Int, limit: Int)
    case negative(field: String, value: Int64)
    case aboveLimit(field: String, value: Int64, limit: Int64)
    case tooLarge(bytes: Int, limit: Int)
    case nameChanged(from: String, to: String)
    case baseVersionMismatch(name: String, have: UInt64, base: UInt64)

    public var description: String {
        switch self {
        case .emptyName: return "node record: name is empty"
        case let .fieldTooLong(field, bytes, limit):
            return "node record: \(field) is \(bytes) bytes, limit \(limit)"
        case let .tooManyServices(count, limit):
            return "node record: running lists \(count) services, limit \(limit)"
        case let .tooMany(field, count, limit):
            return "node record: \(field) has \(count) entries, limit \(limit)"
        case let .negative(field, value): return "node record: \(field) is negative (\(value))"
        case let .aboveLimit(field, value, limit): return "node record: \(field) is \(value), limit \(limit)"
        case let .tooLarge(bytes, limit):
            return "node record: encoded size \(bytes) bytes exceeds limit \(limit)"
        case let .nameChanged(from, to): return "node record: name cannot change (\(from) -> \(to))"
        case let .baseVersionMismatch(name, have, base):
            return "node record delta for \(name): based on version \(base), have \(have)"
        }
    }
}

/// The record is held by every member about every member (10,000² copies in the largest
/// simulation), so the fields live in one immutable shared box: copying a record copies a
/// pointer, and a change allocates a new box (records change rarely).
@dynamicMemberLookup
public struct NodeRecord: Sendable, Hashable {
    public struct Fields: Sendable, Hashable {
        public var name: String
        public var address: String
        public var role: NodeRole
        public var capacity: Resources
        public var reserved: Resources
        /// Running container count per service name; a service with none is absent.
        public var running: [String: Int]
        public var agentVersion: String
        /// Bumped by the owner on every change; receivers keep the highest.
        public var version: UInt64
        /// The owner said it is stopping to restart (not leaving, not failing): a leader that
        /// then sees it dead waits a grace period before moving its work ("Restart is not leave",
        /// docs/ARCHITECTURE.md). A crash or a power cut says nothing, so its work moves at once.
        public var restarting: Bool = false
        /// Per service under a rolling update, what this node runs of the new spec; empty otherwise.
        public var rollouts: [String: RolloutProgress] = [:]
        /// The node's labels (`--node-label zone=a`): services' `constraints:` and `spread:` read them.
        public var labels: [String: String] = [:]
        /// Images this node fails to pull, with the registry's reason (bounded): the leader places
        /// none of the services using one here until the entry goes (a retry worked).
        public var imageFailures: [String: String] = [:]
        /// Running containers per service still starting (health check not yet passed) and
        /// unhealthy; the healthy ones (or those without a check) are `running`.
        public var starting: [String: Int] = [:]
        public var unhealthy: [String: Int] = [:]
        /// The owner's certificate (DER) and its signature over `signedBytes`: a record reaches
        /// most members through third parties, and this is what lets them tell the owner's
        /// record from one a relay made up. Empty where records are not signed (the protocol
        /// simulations, which run `UnsignedRecords`).
        public var certificate: [UInt8] = []
        public var signature: [UInt8] = []
        /// The highest incarnation the owner has signed, and that signature (over
        /// `NodeRecord.incarnationBytes`). SWIM §4.2: only a member raises its own incarnation,
        /// and a higher one overrides suspect and dead; so a relay that says "alive at a higher
        /// incarnation" must show the member's own word for it, or one liar could keep a dead
        /// node alive. Not part of `signedBytes`: it changes without a new record version.
        public var provenIncarnation: UInt64 = 0
        public var incarnationSignature: [UInt8] = []
        /// Per service, where its serving (running and healthy) containers listen, sorted: what
        /// `GET /v1/services/{name}/endpoints` and load balancers read, from gossip on any agent
        /// (issue 17 item 5). A service with none is absent.
        public var endpoints: [String: [Endpoint]] = [:]
    }

    private final class Box: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var box: Box

    public init(
        name: String, address: String, role: NodeRole = .client,
        capacity: Resources = .zero, reserved: Resources = .zero,
        running: [String: Int] = [:], agentVersion: String = "", version: UInt64 = 1
    ) {
        box = Box(
            Fields(
                name: name, address: address, role: role, capacity: capacity,
                reserved: reserved, running: running, agentVersion: agentVersion, version: version))
    }

    public init(_ fields: Fields) { box = Box(fields) }

    public var fields: Fields {
        get { box.fields }
        set { box = Box(newValue) }
    }

    public subscript<T>(dynamicMember keyPath: WritableKeyPath<Fields, T>) -> T {
        get { box.fields[keyPath: keyPath] }
        set {
            var f = box.fields
            f[keyPath: keyPath] = newValue
            box = Box(f)
        }
    }

    public static func == (a: NodeRecord, b: NodeRecord) -> Bool {
        a.box === b.box || a.box.fields == b.box.fields
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(box.fields) }

    /// Estimated protobuf size (tags, varints and string bytes as protobuf lays them out), the
    /// owner's proof included: what a message carrying the record costs.
    public var estimatedSize: Int {
        let f = box.fields
        return contentSize + (f.certificate.isEmpty ? 0 : 3 + f.certificate.count) + (f.signature.isEmpty ? 0 : 2 + f.signature.count)
            + varintField(f.provenIncarnation) + (f.incarnationSignature.isEmpty ? 0 : 2 + f.incarnationSignature.count)
    }

    /// The size of what the owner says about itself, without the proof: what `maxEncodedBytes` bounds.
    public var contentSize: Int {
        let f = box.fields
        var n =
            stringField(f.name) + stringField(f.address) + 2 + stringField(f.agentVersion) + varintField(f.version)
            + (f.restarting ? 2 : 0)
        for (k, v) in f.labels { n += 2 + stringField(k) + stringField(v) }
        for (k, v) in f.imageFailures { n += 2 + stringField(k) + stringField(v) }
        for (k, v) in f.starting { n += 2 + stringField(k) + varintField(UInt64(bitPattern: Int64(v))) }
        for (k, v) in f.unhealthy { n += 2 + stringField(k) + varintField(UInt64(bitPattern: Int64(v))) }
        n += 2 * 2 + varintField(UInt64(bitPattern: Int64(f.capacity.cpuMillicores))) + varintField(UInt64(bitPattern: Int64(f.capacity.memoryBytes)))
        n += 2 * 2 + varintField(UInt64(bitPattern: Int64(f.reserved.cpuMillicores))) + varintField(UInt64(bitPattern: Int64(f.reserved.memoryBytes)))
        for (service, count) in f.running { n += 2 + stringField(service) + varintField(UInt64(bitPattern: Int64(count))) }
        for (service, p) in f.rollouts { n += 4 + stringField(service) + Self.progressSize(p) }
        n += Self.endpointsSize(f.endpoints)
        return n
    }

    /// Protobuf bytes of the endpoints map (entry, key, a message of endpoints of two varints each).
    static func endpointsSize(_ e: [String: [Endpoint]]) -> Int {
        var n = 0
        for (service, list) in e {
            n += 6 + stringField(service)
            for p in list {
                n += 2 + varintField(UInt64(clamping: max(0, p.containerPort))) + varintField(UInt64(clamping: max(0, p.hostPort)))
            }
        }
        return n
    }

    static func progressSize(_ p: RolloutProgress) -> Int {
        stringField(p.spec) + varintField(UInt64(bitPattern: Int64(p.serving))) + varintField(UInt64(bitPattern: Int64(p.failed)))
    }

    /// Checks every bound; the error names the field.
    public func validate(_ limits: NodeRecordLimits = .standard) throws(NodeRecordError) {
        let f = box.fields
        if f.name.isEmpty { throw .emptyName }
        try Self.check("name", f.name, limits.maxNameBytes)
        try Self.check("address", f.address, limits.maxAddressBytes)
        try Self.check("agentVersion", f.agentVersion, limits.maxAgentVersionBytes)
        try Self.inRange("capacity.cpuMillicores", f.capacity.cpuMillicores, limits.maxCPUMillicores)
        try Self.inRange("capacity.memoryBytes", f.capacity.memoryBytes, limits.maxMemoryBytes)
        try Self.inRange("reserved.cpuMillicores", f.reserved.cpuMillicores, limits.maxCPUMillicores)
        try Self.inRange("reserved.memoryBytes", f.reserved.memoryBytes, limits.maxMemoryBytes)
        if f.running.count > limits.maxServices {
            throw .tooManyServices(count: f.running.count, limit: limits.maxServices)
        }
        for (service, count) in f.running {
            try Self.check("running[\(service.prefix(limits.maxServiceNameBytes))…] service name", service, limits.maxServiceNameBytes)
            try Self.inRange("running[\(service)]", Int64(count), Int64(limits.maxRunningPerService))
        }
        if f.rollouts.count > limits.maxServices {
            throw .tooManyServices(count: f.rollouts.count, limit: limits.maxServices)
        }
        for (service, p) in f.rollouts {
            try Self.check("rollouts[\(service.prefix(limits.maxServiceNameBytes))…] service name", service, limits.maxServiceNameBytes)
            try Self.check("rollouts[\(service)].spec", p.spec, RolloutProgress.maxSpecBytes)
            try Self.inRange("rollouts[\(service)].serving", Int64(p.serving), Int64(limits.maxRunningPerService))
            try Self.inRange("rollouts[\(service)].failed", Int64(p.failed), Int64(limits.maxRunningPerService))
        }
        if f.labels.count > limits.maxLabels { throw .tooMany(field: "labels", count: f.labels.count, limit: limits.maxLabels) }
        for (k, v) in f.labels {
            try Self.check("labels key", k, limits.maxLabelKeyBytes)
            try Self.check("labels[\(k)]", v, limits.maxLabelValueBytes)
        }
        if f.imageFailures.count > limits.maxImageFailures {
            throw .tooMany(field: "imageFailures", count: f.imageFailures.count, limit: limits.maxImageFailures)
        }
        for (k, v) in f.imageFailures {
            try Self.check("imageFailures image", k, limits.maxImageFailureImageBytes)
            try Self.check("imageFailures[\(k.prefix(64))]", v, limits.maxImageFailureReasonBytes)
        }
        for (field, map) in [("starting", f.starting), ("unhealthy", f.unhealthy)] {
            if map.count > limits.maxServices { throw .tooMany(field: field, count: map.count, limit: limits.maxServices) }
            for (service, count) in map {
                try Self.check("\(field)[\(service.prefix(limits.maxServiceNameBytes))…] service name", service, limits.maxServiceNameBytes)
                try Self.inRange("\(field)[\(service)]", Int64(count), Int64(limits.maxRunningPerService))
            }
        }
        if f.endpoints.count > limits.maxServices {
            throw .tooManyServices(count: f.endpoints.count, limit: limits.maxServices)
        }
        for (service, list) in f.endpoints {
            try Self.check("endpoints[\(service.prefix(limits.maxServiceNameBytes))…] service name", service, limits.maxServiceNameBytes)
            try Self.inRange("endpoints[\(service)] count", Int64(list.count), Int64(limits.maxRunningPerService))
            for p in list {
                try Self.port("endpoints[\(service)] container port", p.containerPort)
                try Self.port("endpoints[\(service)] host port", p.hostPort)
            }
        }
        let size = contentSize
        if size > limits.maxEncodedBytes { throw .tooLarge(bytes: size, limit: limits.maxEncodedBytes) }
        try Self.check(bytes: "certificate", f.certificate.count, limits.maxCertificateBytes)
        try Self.check(bytes: "signature", f.signature.count, limits.maxSignatureBytes)
        try Self.check(bytes: "incarnationSignature", f.incarnationSignature.count, limits.maxSignatureBytes)
    }

    private static func port(_ field: String, _ p: Int) throws(NodeRecordError) {
        if p < 1 { throw .negative(field: field, value: Int64(p)) }
        if p > 65535 { throw .aboveLimit(field: field, value: Int64(p), limit: 65535) }
    }

    private static func check(bytes field: String, _ n: Int, _ limit: Int) throws(NodeRecordError) {
        if n > limit { throw .fieldTooLong(field: field, bytes: n, limit: limit) }
    }

    /// What the owner signs to prove it reached `incarnation` (see `Fields.provenIncarnation`).
    public static func incarnationBytes(name: String, incarnation: UInt64) -> [UInt8] {
        var out: [UInt8] = Array("microscale-incarnation-v1".utf8)
        withUnsafeBytes(of: UInt64(name.utf8.count).bigEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: name.utf8)
        withUnsafeBytes(of: incarnation.bigEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// What the owner signs: every field but the proof, in one fixed order with lengths, the
    /// services sorted, behind a domain tag so no other message of ours can pass for a record.
    public var signedBytes: [UInt8] {
        let f = box.fields
        var out: [UInt8] = Array("microscale-record-v1".utf8)
        out.reserveCapacity(64 + estimatedSize)
        func put(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
        func put(_ s: String) {
            put(UInt64(s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
        put(f.name)
        put(f.address)
        put(f.role.rawValue)
        for v in [f.capacity.cpuMillicores, f.capacity.memoryBytes, f.reserved.cpuMillicores, f.reserved.memoryBytes] {
            put(UInt64(bitPattern: v))
        }
        put(f.agentVersion)
        put(f.version)
        put(f.restarting ? 1 : 0)
        put(UInt64(f.running.count))
        for (service, count) in f.running.sorted(by: { $0.key < $1.key }) {
            put(service)
            put(UInt64(bitPattern: Int64(count)))
        }
        // Only when there are any, so a record without rollouts signs the bytes it signed before
        // the field existed (agents of the previous version still check it). Every field above is
        // length-prefixed, so the extra bytes cannot be read as something else.
        if !f.rollouts.isEmpty {
            put(UInt64(f.rollouts.count))
            for (service, p) in f.rollouts.sorted(by: { $0.key < $1.key }) {
                put(service)
                put(p.spec)
                put(UInt64(bitPattern: Int64(p.serving)))
                put(UInt64(bitPattern: Int64(p.failed)))
            }
        }
        // Added after protocol 2 shipped: written only when present, so a record without them
        // signs the bytes it always did and agents that predate them still check it. The tag
        // keeps them apart from the rollouts above.
        for (tag, map) in [("labels", f.labels), ("image-failures", f.imageFailures)] where !map.isEmpty {
            put(tag)
            put(UInt64(map.count))
            for (k, v) in map.sorted(by: { $0.key < $1.key }) {
                put(k)
                put(v)
            }
        }
        for (tag, map) in [("starting", f.starting), ("unhealthy", f.unhealthy)] where !map.isEmpty {
            put(tag)
            put(UInt64(map.count))
            for (k, v) in map.sorted(by: { $0.key < $1.key }) {
                put(k)
                put(UInt64(bitPattern: Int64(v)))
            }
        }
        // Endpoints (issue 17 item 5) are signed only when there are some, so a record without
        // any signs the same bytes as before they existed: agents of the earlier build take it.
        if !f.endpoints.isEmpty {
            put("endpoints")
            put(UInt64(f.endpoints.count))
            for (service, list) in f.endpoints.sorted(by: { $0.key < $1.key }) {
                put(service)
                put(UInt64(list.count))
                for p in list.sorted() {
                    put(UInt64(clamping: max(0, p.containerPort)))
                    put(UInt64(clamping: max(0, p.hostPort)))
                }
            }
        }
        return out
    }

    private static func check(_ field: String, _ value: String, _ limit: Int) throws(NodeRecordError) {
        let n = value.utf8.count
        if n > limit { throw .fieldTooLong(field: field, bytes: n, limit: limit) }
    }

    private static func inRange(_ field: String, _ value: Int64, _ limit: Int64) throws(NodeRecordError) {
        if value < 0 { throw .negative(field: field, value: value) }
        if value > limit { throw .aboveLimit(field: field, value: value, limit: limit) }
    }
}

/// A change to a record: the fields that changed between `baseVersion` and `version`. A
/// receiver holding any version in `baseVersion..<version` can apply it, because merging two
/// deltas keeps every field touched by either (with the later value), not just the net diff.
public struct NodeRecordDelta: Sendable, Hashable {
    public var name: String
    public var baseVersion: UInt64
    public var version: UInt64
    public var address: String?
    public var role: NodeRole?
    public var capacity: Resources?
    public var reserved: Resources?
    /// Changed entries only; 0 means the service no longer runs here.
    public var running: [String: Int]
    public var agentVersion: String?
    public var restarting: Bool?
    /// Changed entries only; one with an empty spec means the service's rollout report is gone.
    public var rollouts: [String: RolloutProgress] = [:]
    /// The whole map when it changed (labels and failures change rarely and are small).
    public var labels: [String: String]?
    public var imageFailures: [String: String]?
    /// Changed entries only; 0 means none of the service's containers is starting (unhealthy) now.
    public var starting: [String: Int] = [:]
    public var unhealthy: [String: Int] = [:]
    /// Changed services' endpoints only; an empty list means the service has none here now.
    public var endpoints: [String: [Endpoint]] = [:]
    /// The owner's signature over the record this delta produces (`NodeRecord.signedBytes` at
    /// `version`), so a receiver checks the result, not the delta; and its certificate when it
    /// changed.
    public var signature: [UInt8] = []
    public var certificate: [UInt8]?

    public init(
        name: String, baseVersion: UInt64, version: UInt64, address: String? = nil,
        role: NodeRole? = nil, capacity: Resources? = nil, reserved: Resources? = nil,
        running: [String: Int] = [:], agentVersion: String? = nil
    ) {
        self.name = name
        self.baseVersion = baseVersion
        self.version = version
        self.address = address
        self.role = role
        self.capacity = capacity
        self.reserved = reserved
        self.running = running
        self.agentVersion = agentVersion
    }

    /// The delta that turns `old` into `new`.
    public static func between(_ old: NodeRecord, _ new: NodeRecord) -> NodeRecordDelta {
        var d = NodeRecordDelta(name: new.name, baseVersion: old.version, version: new.version)
        if old.address != new.address { d.address = new.address }
        if old.role != new.role { d.role = new.role }
        if old.capacity != new.capacity { d.capacity = new.capacity }
        if old.reserved != new.reserved { d.reserved = new.reserved }
        if old.agentVersion != new.agentVersion { d.agentVersion = new.agentVersion }
        if old.certificate != new.certificate { d.certificate = new.certificate }
        if old.restarting != new.restarting { d.restarting = new.restarting }
        if old.labels != new.labels { d.labels = new.labels }
        if old.imageFailures != new.imageFailures { d.imageFailures = new.imageFailures }
        for (k, v) in new.starting where old.starting[k] != v { d.starting[k] = v }
        for (k, _) in old.starting where new.starting[k] == nil { d.starting[k] = 0 }
        for (k, v) in new.unhealthy where old.unhealthy[k] != v { d.unhealthy[k] = v }
        for (k, _) in old.unhealthy where new.unhealthy[k] == nil { d.unhealthy[k] = 0 }
        d.signature = new.signature
        let o = old.running, n = new.running
        for (k, v) in n where o[k] != v { d.running[k] = v }
        for (k, _) in o where n[k] == nil { d.running[k] = 0 }
        for (k, v) in new.rollouts where old.rollouts[k] != v { d.rollouts[k] = v }
        for (k, _) in old.rollouts where new.rollouts[k] == nil { d.rollouts[k] = RolloutProgress(spec: "", serving: 0) }
        for (k, v) in new.endpoints where old.endpoints[k] != v { d.endpoints[k] = v }
        for (k, _) in old.endpoints where new.endpoints[k] == nil { d.endpoints[k] = [] }
        return d
    }

    /// `self` followed by `later` (which must start where `self` ends).
    public func merged(with later: NodeRecordDelta) -> NodeRecordDelta {
        var d = self
        d.version = later.version
        if let a = later.address { d.address = a }
        if let r = later.role { d.role = r }
        if let c = later.capacity { d.capacity = c }
        if let r = later.reserved { d.reserved = r }
        if let v = later.agentVersion { d.agentVersion = v }
        if let c = later.certificate { d.certificate = c }
        if let r = later.restarting { d.restarting = r }
        if let l = later.labels { d.labels = l }
        if let i = later.imageFailures { d.imageFailures = i }
        for (k, v) in later.starting { d.starting[k] = v }
        for (k, v) in later.unhealthy { d.unhealthy[k] = v }
        d.signature = later.signature
        for (k, v) in later.running { d.running[k] = v }
        for (k, v) in later.rollouts { d.rollouts[k] = v }
        for (k, v) in later.endpoints { d.endpoints[k] = v }
        return d
    }

    /// The record after this delta, or an error when `record` is outside `baseVersion..<version`.
    public func apply(to record: NodeRecord) throws(NodeRecordError) -> NodeRecord {
        guard record.version >= baseVersion, record.version < version else {
            throw .baseVersionMismatch(name: name, have: record.version, base: baseVersion)
        }
        var f = record.fields
        f.version = version
        if let a = address { f.address = a }
        if let r = role { f.role = r }
        if let c = capacity { f.capacity = c }
        if let r = reserved { f.reserved = r }
        if let v = agentVersion { f.agentVersion = v }
        if let c = certificate { f.certificate = c }
        if let r = restarting { f.restarting = r }
        if let l = labels { f.labels = l }
        if let i = imageFailures { f.imageFailures = i }
        for (k, v) in starting { f.starting[k] = v > 0 ? v : nil }
        for (k, v) in unhealthy { f.unhealthy[k] = v > 0 ? v : nil }
        f.signature = signature
        for (k, v) in running { f.running[k] = v > 0 ? v : nil }
        for (k, v) in rollouts { f.rollouts[k] = v.spec.isEmpty ? nil : v }
        for (k, v) in endpoints { f.endpoints[k] = v.isEmpty ? nil : v }
        return NodeRecord(f)
    }

    public var estimatedSize: Int {
        var n = stringField(name) + varintField(baseVersion) + varintField(version)
        if let a = address { n += stringField(a) }
        if role != nil { n += 2 }
        if let c = capacity {
            n += 2 + varintField(UInt64(bitPattern: Int64(c.cpuMillicores))) + varintField(UInt64(bitPattern: Int64(c.memoryBytes)))
        }
        if let r = reserved {
            n += 2 + varintField(UInt64(bitPattern: Int64(r.cpuMillicores))) + varintField(UInt64(bitPattern: Int64(r.memoryBytes)))
        }
        if let v = agentVersion { n += stringField(v) }
        if restarting != nil { n += 2 }
        for map in [labels, imageFailures] {
            guard let map else { continue }
            n += 2
            for (k, v) in map { n += 2 + stringField(k) + stringField(v) }
        }
        for (k, v) in starting { n += 2 + stringField(k) + varintField(UInt64(bitPattern: Int64(v))) }
        for (k, v) in unhealthy { n += 2 + stringField(k) + varintField(UInt64(bitPattern: Int64(v))) }
        for (k, v) in running { n += 2 + stringField(k) + varintField(UInt64(bitPattern: Int64(v))) }
        for (k, v) in rollouts { n += 4 + stringField(k) + NodeRecord.progressSize(v) }
        n += NodeRecord.endpointsSize(endpoints)
        n += 2 + signature.count + (certificate.map { 3 + $0.count } ?? 0)
        return n
    }
}
