import Bounds
import Foundation
import Membership
import NIOCore
import Wire

/// Maps the pure core's messages (Sources/Membership/Messages.swift) to and from their protobuf
/// form (proto/membership.proto). Decoding validates what the core cannot: enum values it does
/// not know and missing required parts are refused with the field named.
public enum MembershipCodec {
    public struct DecodingError: Error, CustomStringConvertible, Equatable {
        public var field: String
        public var problem: String
        public var description: String { "membership message: \(field) \(problem)" }
    }

    public static func frame(_ message: Membership.Message) throws -> Frame {
        try Frame(kind: .membership, message: encode(message))
    }

    public static func message(from frame: Frame) throws -> Membership.Message {
        try decode(frame.decode(Microscale_Membership_MembershipMessage.self))
    }

    // MARK: Encoding

    public static func encode(_ message: Membership.Message) -> Microscale_Membership_MembershipMessage {
        var m = Microscale_Membership_MembershipMessage()
        switch message {
        case let .ping(p):
            var x = Microscale_Membership_Ping()
            x.sequence = p.sequence
            x.from = p.from
            x.fromAddress = p.fromAddress
            x.target = p.target
            if let s = p.suspectedAt { x.suspectedAt = s }
            x.gossip = p.gossip.map(encode)
            m.ping = x
        case let .pingReq(p):
            var x = Microscale_Membership_PingReq()
            x.sequence = p.sequence
            x.from = p.from
            x.fromAddress = p.fromAddress
            x.target = p.target
            x.targetAddress = p.targetAddress
            x.gossip = p.gossip.map(encode)
            m.pingReq = x
        case let .ack(a):
            var x = Microscale_Membership_Ack()
            x.sequence = a.sequence
            x.from = a.from
            x.gossip = a.gossip.map(encode)
            m.ack = x
        case let .nack(n):
            var x = Microscale_Membership_Nack()
            x.sequence = n.sequence
            x.from = n.from
            m.nack = x
        case let .gossip(g):
            var x = Microscale_Membership_GossipPacket()
            x.from = g.from
            x.gossip = g.gossip.map(encode)
            m.gossip = x
        case let .pushPull(p):
            var x = Microscale_Membership_PushPull()
            x.from = p.from
            x.fromAddress = p.fromAddress
            x.isReply = p.isReply
            x.isJoin = p.isJoin
            x.wantsCertificates = p.wantsCertificates
            x.states = p.states.map(encode)
            m.pushPull = x
        case let .recordRequest(r):
            var x = Microscale_Membership_RecordRequest()
            x.from = r.from
            x.fromAddress = r.fromAddress
            x.names = r.names
            m.recordRequest = x
        case let .record(r):
            var x = Microscale_Membership_RecordReply()
            x.incarnation = r.incarnation
            x.record = encode(r.record)
            m.record = x
        }
        return m
    }

    static func encode(_ g: Gossip) -> Microscale_Membership_Gossip {
        var x = Microscale_Membership_Gossip()
        switch g {
        case let .alive(inc, record):
            x.alive = .with {
                $0.incarnation = inc
                $0.record = encode(record)
            }
        case let .suspect(name, inc, from):
            x.suspect = .with {
                $0.name = name
                $0.incarnation = inc
                $0.from = from
            }
        case let .dead(name, inc, from):
            x.dead = .with {
                $0.name = name
                $0.incarnation = inc
                $0.from = from
            }
        case let .left(name, inc):
            x.left = .with {
                $0.name = name
                $0.incarnation = inc
            }
        case let .recordDelta(d):
            var y = Microscale_Membership_NodeRecordDelta()
            y.name = d.name
            y.baseVersion = d.baseVersion
            y.version = d.version
            if let a = d.address { y.address = a }
            if let r = d.role { y.role = encode(r) }
            if let c = d.capacity { y.capacity = encode(c) }
            if let r = d.reserved { y.reserved = encode(r) }
            y.running = d.running.mapValues { Int64($0) }
            if let v = d.agentVersion { y.agentVersion = v }
            y.signature = Data(d.signature)
            if let c = d.certificate { y.certificate = Data(c) }
            if let r = d.restarting { y.restarting = r }
            y.rollouts = d.rollouts.mapValues(encode)
            if let l = d.labels { y.labels = .with { $0.entries = l } }
            if let i = d.imageFailures { y.imageFailures = .with { $0.entries = i } }
            y.starting = d.starting.mapValues { Int64($0) }
            y.unhealthy = d.unhealthy.mapValues { Int64($0) }
            y.endpoints = d.endpoints.mapValues(encode)
            x.recordDelta = y
        }
        return x
    }

    static func encode(_ s: MemberState) -> Microscale_Membership_MemberState {
        .with {
            $0.incarnation = s.incarnation
            $0.status = encode(s.status)
            $0.record = encode(s.record)
        }
    }

    static func encode(_ r: NodeRecord) -> Microscale_Membership_NodeRecord {
        .with {
            $0.name = r.name
            $0.address = r.address
            $0.role = encode(r.role)
            $0.capacity = encode(r.capacity)
            $0.reserved = encode(r.reserved)
            $0.running = r.running.mapValues { Int64($0) }
            $0.agentVersion = r.agentVersion
            $0.version = r.version
            $0.certificate = Data(r.certificate)
            $0.signature = Data(r.signature)
            $0.provenIncarnation = r.provenIncarnation
            $0.restarting = r.restarting
            $0.rollouts = r.rollouts.mapValues(encode)
            $0.labels = r.labels
            $0.imageFailures = r.imageFailures
            $0.starting = r.starting.mapValues { Int64($0) }
            $0.unhealthy = r.unhealthy.mapValues { Int64($0) }
            $0.incarnationSignature = Data(r.incarnationSignature)
            $0.endpoints = r.endpoints.mapValues(encode)
        }
    }

    static func encode(_ list: [Endpoint]) -> Microscale_Membership_Endpoints {
        .with {
            $0.endpoints = list.map { e in
                .with {
                    $0.containerPort = UInt32(clamping: e.containerPort)
                    $0.hostPort = UInt32(clamping: e.hostPort)
                }
            }
        }
    }

    static func encode(_ p: RolloutProgress) -> Microscale_Membership_RolloutProgress {
        .with {
            $0.specHash = p.spec
            $0.serving = Int64(p.serving)
            $0.failed = Int64(p.failed)
        }
    }

    /// Range-checked like `running`; the record's own validation bounds the rest.
    static func rollouts(_ m: [String: Microscale_Membership_RolloutProgress], field: String) throws -> [String: RolloutProgress] {
        var out: [String: RolloutProgress] = [:]
        for (k, v) in m {
            guard v.serving >= 0, v.serving <= Int64(Int32.max), v.failed >= 0, v.failed <= Int64(Int32.max) else {
                throw DecodingError(field: "\(field)[\(k)]", problem: "has a count out of range")
            }
            out[k] = RolloutProgress(spec: v.specHash, serving: Int(v.serving), failed: Int(v.failed))
        }
        return out
    }

    static func encode(_ r: Membership.Resources) -> Microscale_Membership_Resources {
        .with {
            $0.cpuMillicores = r.cpuMillicores
            $0.memoryBytes = r.memoryBytes
        }
    }

    static func encode(_ r: NodeRole) -> Microscale_Membership_Role { r == .server ? .server : .client }

    static func encode(_ s: MemberStatus) -> Microscale_Membership_Status {
        switch s {
        case .alive: return .alive
        case .suspect: return .suspect
        case .dead: return .dead
        case .left: return .left
        }
    }

    // MARK: Decoding

    public static func decode(_ m: Microscale_Membership_MembershipMessage) throws -> Membership.Message {
        switch m.body {
        case .ping(let x)?:
            return .ping(
                Ping(
                    sequence: x.sequence, from: x.from, fromAddress: x.fromAddress, target: x.target,
                    suspectedAt: x.hasSuspectedAt ? x.suspectedAt : nil, gossip: try x.gossip.map(decode)))
        case .pingReq(let x)?:
            return .pingReq(
                PingReq(
                    sequence: x.sequence, from: x.from, fromAddress: x.fromAddress, target: x.target,
                    targetAddress: x.targetAddress, gossip: try x.gossip.map(decode)))
        case .ack(let x)?:
            return .ack(Ack(sequence: x.sequence, from: x.from, gossip: try x.gossip.map(decode)))
        case .nack(let x)?:
            return .nack(Nack(sequence: x.sequence, from: x.from))
        case .gossip(let x)?:
            return .gossip(GossipPacket(from: x.from, gossip: try x.gossip.map(decode)))
        case .pushPull(let x)?:
            return .pushPull(
                PushPull(
                    from: x.from, fromAddress: x.fromAddress, isReply: x.isReply, isJoin: x.isJoin,
                    wantsCertificates: x.wantsCertificates, states: try x.states.map(decode)))
        case .recordRequest(let x)?:
            // The core answers at most `SWIMInstance.maxRecordsPerRequest` of them; more is not a
            // request any member sends.
            guard x.names.count <= SWIMInstance.maxRecordsPerRequest else {
                throw DecodingError(
                    field: "record_request.names",
                    problem: "holds \(x.names.count) names, more than \(SWIMInstance.maxRecordsPerRequest)")
            }
            return .recordRequest(RecordRequest(from: x.from, fromAddress: x.fromAddress, names: x.names))
        case .record(let x)?:
            guard x.hasRecord else { throw DecodingError(field: "record.record", problem: "is missing") }
            return .record(RecordReply(incarnation: x.incarnation, record: try decode(x.record)))
        case nil:
            throw DecodingError(field: "body", problem: "is empty or of a kind this agent does not know")
        }
    }

    static func decode(_ g: Microscale_Membership_Gossip) throws -> Gossip {
        switch g.kind {
        case .alive(let x)?:
            guard x.hasRecord else { throw DecodingError(field: "gossip.alive.record", problem: "is missing") }
            return .alive(incarnation: x.incarnation, record: try decode(x.record))
        case .suspect(let x)?: return .suspect(name: x.name, incarnation: x.incarnation, from: x.from)
        case .dead(let x)?: return .dead(name: x.name, incarnation: x.incarnation, from: x.from)
        case .left(let x)?: return .left(name: x.name, incarnation: x.incarnation)
        case .recordDelta(let y)?:
            var d = NodeRecordDelta(
                name: y.name, baseVersion: y.baseVersion, version: y.version,
                address: y.hasAddress ? y.address : nil,
                role: y.hasRole ? try decode(y.role, field: "gossip.record_delta.role") : nil,
                capacity: y.hasCapacity ? decode(y.capacity) : nil,
                reserved: y.hasReserved ? decode(y.reserved) : nil,
                running: try runningCounts(y.running, field: "gossip.record_delta.running"),
                agentVersion: y.hasAgentVersion ? y.agentVersion : nil)
            d.signature = [UInt8](y.signature)
            d.certificate = y.hasCertificate ? [UInt8](y.certificate) : nil
            d.restarting = y.hasRestarting ? y.restarting : nil
            d.rollouts = try rollouts(y.rollouts, field: "gossip.record_delta.rollouts")
            d.labels = y.hasLabels ? y.labels.entries : nil
            d.imageFailures = y.hasImageFailures ? y.imageFailures.entries : nil
            d.starting = try runningCounts(y.starting, field: "gossip.record_delta.starting")
            d.unhealthy = try runningCounts(y.unhealthy, field: "gossip.record_delta.unhealthy")
            d.endpoints = try endpoints(y.endpoints, field: "gossip.record_delta.endpoints")
            return .recordDelta(d)
        case nil:
            throw DecodingError(field: "gossip", problem: "is empty or of a kind this agent does not know")
        }
    }

    static func decode(_ s: Microscale_Membership_MemberState) throws -> MemberState {
        guard s.hasRecord else { throw DecodingError(field: "push_pull.states.record", problem: "is missing") }
        let status: MemberStatus
        switch s.status {
        case .alive: status = .alive
        case .suspect: status = .suspect
        case .dead: status = .dead
        case .left: status = .left
        case .UNRECOGNIZED(let v): throw DecodingError(field: "push_pull.states.status", problem: "has unknown value \(v)")
        }
        return MemberState(incarnation: s.incarnation, status: status, record: try decode(s.record))
    }

    static func decode(_ r: Microscale_Membership_NodeRecord) throws -> NodeRecord {
        var record = NodeRecord(
            name: r.name, address: r.address, role: try decode(r.role, field: "record.role"),
            capacity: decode(r.capacity), reserved: decode(r.reserved),
            running: try runningCounts(r.running, field: "record.running"),
            agentVersion: r.agentVersion, version: r.version)
        record.certificate = [UInt8](r.certificate)
        record.signature = [UInt8](r.signature)
        record.provenIncarnation = r.provenIncarnation
        record.restarting = r.restarting
        record.rollouts = try rollouts(r.rollouts, field: "record.rollouts")
        record.labels = r.labels
        record.imageFailures = r.imageFailures
        record.starting = try runningCounts(r.starting, field: "record.starting")
        record.unhealthy = try runningCounts(r.unhealthy, field: "record.unhealthy")
        record.incarnationSignature = [UInt8](r.incarnationSignature)
        record.endpoints = try endpoints(r.endpoints, field: "record.endpoints")
        return record
    }

    static func decode(_ r: Microscale_Membership_Resources) -> Membership.Resources {
        Membership.Resources(cpuMillicores: r.cpuMillicores, memoryBytes: r.memoryBytes)
    }

    static func decode(_ r: Microscale_Membership_Role, field: String) throws -> NodeRole {
        switch r {
        case .client: return .client
        case .server: return .server
        case .UNRECOGNIZED(let v): throw DecodingError(field: field, problem: "has unknown value \(v)")
        }
    }

    /// Ports are checked here (1...65535) so the record's own bounds see only what fits an Int;
    /// counts and sizes are the record's `validate`'s.
    static func endpoints(_ m: [String: Microscale_Membership_Endpoints], field: String) throws -> [String: [Endpoint]] {
        var out: [String: [Endpoint]] = [:]
        for (service, list) in m {
            guard list.endpoints.count <= Limits.maxRunningPerService else {
                throw DecodingError(
                    field: "\(field)[\(service.prefix(64))]", problem: "lists \(list.endpoints.count) endpoints, limit \(Limits.maxRunningPerService)"
                )
            }
            out[service] = try list.endpoints.map { e in
                guard (1...65535).contains(e.containerPort), (1...65535).contains(e.hostPort) else {
                    throw DecodingError(
                        field: "\(field)[\(service.prefix(64))]", problem: "has a port out of range: \(e.containerPort)->\(e.hostPort)")
                }
                return Endpoint(containerPort: Int(e.containerPort), hostPort: Int(e.hostPort))
            }
        }
        return out
    }

    static func runningCounts(_ m: [String: Int64], field: String) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for (k, v) in m {
            guard v >= 0, v <= Int64(Int32.max) else { throw DecodingError(field: "\(field)[\(k)]", problem: "is out of range: \(v)") }
            out[k] = Int(v)
        }
        return out
    }
}
