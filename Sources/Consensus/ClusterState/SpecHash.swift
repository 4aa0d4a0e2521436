import Foundation  // JSONEncoder, as the entries are encoded; no clock is read here

extension ServiceSpec {
    /// A stable hash of what a container is made from (image, command, limits, stop timeout and
    /// the workload keys): a change replaces the containers (the reconciler compares it with the
    /// `io.microscale.spec` label). FNV-1a over sorted-key JSON, so every agent and every version
    /// computes the same value (Swift's `Hasher` is seeded per process). Computed once per spec
    /// applied (`ClusterState.specHashes`); everything downstream reads it from there.
    public var containerHash: String {
        struct Identity: Encodable {
            var image: String
            var command: [String]
            var cpu: Double
            var memory: UInt64
            var stop: Int64
            // The workload keys (docs/contracts.md, "The services file") are left out when undeclared (nil encodes to
            // nothing), so a service written before they existed keeps its hash and its containers.
            var env: [String: String]?
            var network: String?
            var ports: [PortMapping]?
            var health: HealthCheck?
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let bytes =
            (try? e.encode(
                Identity(
                    image: image, command: command, cpu: cpu, memory: memory,
                    stop: stopTimeoutMilliseconds, env: env, network: network,
                    ports: ports, health: health))) ?? Data()
        return String(StableHash.fnv1a(bytes), radix: 16)
    }
}

/// Hashes that are the same in every process and every version, unlike `Hasher` (seeded per
/// process): what one agent computes, another compares.
public enum StableHash {
    /// FNV-1a, 64 bits.
    public static func fnv1a<S: Sequence>(_ bytes: S) -> UInt64 where S.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }
}
