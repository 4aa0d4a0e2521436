import Foundation

/// How much of this host Microscale may hand out: cores and bytes.
public struct NodeCapacity: Sendable, Hashable, Codable {
    public var cpus: Double
    public var memoryBytes: Int64
    public init(cpus: Double, memoryBytes: Int64) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
    }
}

/// Capacity = what the Engine reports (NCPU, MemTotal), lowered by the cgroup limits of the
/// agent's own cgroup when they are lower (a host run inside a container or a systemd slice sees the
/// machine's totals but may only use its limit), and replaced by explicit values when the operator
/// gives them (--capacity-cpu, --capacity-memory).
public enum CapacityDetection {
    public static func resolve(
        engineCPUs: Int, engineMemory: Int64, cgroupCPUs: Double?, cgroupMemory: Int64?,
        overrideCPUs: Double? = nil, overrideMemory: Int64? = nil
    ) -> NodeCapacity {
        var cpus = Double(engineCPUs)
        if let c = cgroupCPUs, c > 0, c < cpus { cpus = c }
        var memory = engineMemory
        if let m = cgroupMemory, m > 0, m < memory { memory = m }
        return NodeCapacity(cpus: overrideCPUs ?? cpus, memoryBytes: overrideMemory ?? memory)
    }

    /// cgroup v2 cpu.max: "max 100000" (no limit) or "QUOTA PERIOD" → QUOTA/PERIOD cores.
    public static func parseCPUMax(_ text: String) -> Double? {
        let parts = text.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, parts[0] != "max", let q = Double(parts[0]), let p = Double(parts[1]), p > 0 else { return nil }
        return q / p
    }

    /// cgroup v2 memory.max: "max" or bytes. cgroup v1 memory.limit_in_bytes reports a huge number
    /// (PAGE_COUNTER_MAX) for "no limit"; anything at or above 2^60 is treated so.
    public static func parseMemoryMax(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t != "max", let v = Int64(t), v > 0, v < (1 << 60) else { return nil }
        return v
    }

    /// Reads the limits of the cgroup this process lives in: v2 first (cpu.max, memory.max), then the
    /// v1 controllers (cfs quota/period, memory.limit_in_bytes).
    public static func readCgroupLimits(root: String = "/sys/fs/cgroup") -> (cpus: Double?, memory: Int64?) {
        func read(_ p: String) -> String? { try? String(contentsOfFile: p, encoding: .utf8) }
        var cpus: Double? = nil
        var memory: Int64? = nil
        var v2Dir = root
        if let own = read("/proc/self/cgroup")?.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) {
            let rel = own.dropFirst(3)
            if rel != "/" { v2Dir = root + rel }
        }
        for dir in [v2Dir, root] {
            if cpus == nil, let t = read(dir + "/cpu.max") { cpus = parseCPUMax(t) }
            if memory == nil, let t = read(dir + "/memory.max") { memory = parseMemoryMax(t) }
        }
        if cpus == nil, let q = read(root + "/cpu/cpu.cfs_quota_us"), let p = read(root + "/cpu/cpu.cfs_period_us"),
            let qv = Double(q.trimmingCharacters(in: .whitespacesAndNewlines)),
            let pv = Double(p.trimmingCharacters(in: .whitespacesAndNewlines)), qv > 0, pv > 0
        {
            cpus = qv / pv
        }
        if memory == nil, let t = read(root + "/memory/memory.limit_in_bytes") { memory = parseMemoryMax(t) }
        return (cpus, memory)
    }

    /// The whole detection against a live Engine.
    public static func detect(
        client: DockerClient, overrideCPUs: Double? = nil, overrideMemory: Int64? = nil, cgroupRoot: String = "/sys/fs/cgroup"
    ) async throws(DockerError) -> NodeCapacity {
        if let overrideCPUs, let overrideMemory { return NodeCapacity(cpus: overrideCPUs, memoryBytes: overrideMemory) }
        let info = try await client.info()
        let cg = readCgroupLimits(root: cgroupRoot)
        return resolve(
            engineCPUs: info.NCPU, engineMemory: info.MemTotal, cgroupCPUs: cg.cpus, cgroupMemory: cg.memory,
            overrideCPUs: overrideCPUs, overrideMemory: overrideMemory)
    }
}
