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

/// Capacity = what the Engine reports (NCPU, MemTotal), lowered by the cgroup limits of dockerd
/// (the daemon may be confined to a slice or a container's cgroup, and its containers with it),
/// minus what is reserved for the OS, dockerd and the agent (--reserve-cpu, --reserve-memory);
/// replaced by explicit values when the operator gives them (--capacity-cpu, --capacity-memory).
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

    /// What the node offers: the detected figures less the reserve (never below zero); an override
    /// is offered as given, reserve and all (the operator said what to offer).
    public static func offered(
        engineCPUs: Int, engineMemory: Int64, cgroupCPUs: Double?, cgroupMemory: Int64?,
        reserveCPUs: Double, reserveMemory: Int64, overrideCPUs: Double? = nil, overrideMemory: Int64? = nil
    ) -> NodeCapacity {
        let detected = resolve(
            engineCPUs: max(0, engineCPUs), engineMemory: max(0, engineMemory),
            cgroupCPUs: cgroupCPUs, cgroupMemory: cgroupMemory)
        return NodeCapacity(
            cpus: overrideCPUs ?? max(0, detected.cpus - reserveCPUs),
            memoryBytes: overrideMemory ?? max(0, detected.memoryBytes - max(0, reserveMemory)))
    }

    /// cgroup v2 cpu.max: "max 100000" (no limit) or "QUOTA PERIOD" → QUOTA/PERIOD cores.
    public static func parseCPUMax(_ text: String) -> Double? {
        let parts = text.split(whereSeparator: \.isWhitespace)
        guard parts.count == 2, parts[0] != "max", let q = Double(parts[0]), let p = Double(parts[1]), p > 0, q > 0 else { return nil }
        return q / p
    }

    /// cgroup v2 memory.max: "max" or bytes. cgroup v1 memory.limit_in_bytes reports a huge number
    /// (PAGE_COUNTER_MAX) for "no limit"; anything at or above 2^60 is treated so.
    public static func parseMemoryMax(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t != "max", let v = Int64(t), v > 0, v < (1 << 60) else { return nil }
        return v
    }

    /// The limits that bind the process `pid` (default: this one): its cgroup's and every
    /// ancestor's, the lowest of each (a limit on a parent slice binds every child). cgroup v2
    /// (`0::/path`: cpu.max, memory.max) and v1 (`N:cpu,cpuacct:/path`: cpu.cfs_quota_us over
    /// cpu.cfs_period_us; `N:memory:/path`: memory.limit_in_bytes). The roots are parameters so
    /// tests can hand it a tree of their own.
    public static func readCgroupLimits(pid: Int32? = nil, procRoot: String = "/proc", root: String = "/sys/fs/cgroup") -> (
        cpus: Double?, memory: Int64?
    ) {
        func read(_ p: String) -> String? { try? String(contentsOfFile: p, encoding: .utf8) }
        func trimmed(_ p: String) -> String? { read(p)?.trimmingCharacters(in: .whitespacesAndNewlines) }
        /// `dir` and its ancestors up to `base`, deepest first.
        func chain(_ base: String, _ relative: Substring) -> [String] {
            var parts = relative.split(separator: "/").map(String.init)
            var dirs: [String] = []
            while true {
                dirs.append(parts.isEmpty ? base : base + "/" + parts.joined(separator: "/"))
                if parts.isEmpty { break }
                parts.removeLast()
            }
            return dirs
        }
        func lowest<T: Comparable>(_ values: [T?]) -> T? { values.compactMap { $0 }.min() }
        let file = "\(procRoot)/\(pid.map(String.init) ?? "self")/cgroup"
        let lines = read(file)?.split(separator: "\n") ?? []
        var cpus: Double? = nil
        var memory: Int64? = nil
        for line in lines {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let controllers = fields[1].split(separator: ",").map(String.init)
            let path = fields[2]
            if fields[0] == "0", fields[1].isEmpty {
                // v2: the unified hierarchy, mounted at the root itself or at root/unified (hybrid).
                for base in [root, root + "/unified"] where FileManager.default.fileExists(atPath: base + "/cgroup.controllers") {
                    let dirs = chain(base, path)
                    cpus = lowest([cpus] + dirs.map { trimmed($0 + "/cpu.max").flatMap(parseCPUMax) })
                    memory = lowest([memory] + dirs.map { trimmed($0 + "/memory.max").flatMap(parseMemoryMax) })
                }
            } else if controllers.contains("cpu") {
                for mount in [fields[1], "cpu", "cpu,cpuacct"].map({ root + "/" + $0 }) where FileManager.default.fileExists(atPath: mount) {
                    let quotas: [Double?] = chain(mount, path).map { dir in
                        guard let q = trimmed(dir + "/cpu.cfs_quota_us").flatMap(Double.init),
                            let p = trimmed(dir + "/cpu.cfs_period_us").flatMap(Double.init), q > 0, p > 0
                        else { return nil }
                        return q / p
                    }
                    cpus = lowest([cpus] + quotas)
                    break
                }
            } else if controllers.contains("memory") {
                let mount = root + "/memory"
                memory = lowest([memory] + chain(mount, path).map { trimmed($0 + "/memory.limit_in_bytes").flatMap(parseMemoryMax) })
            }
        }
        return (cpus, memory)
    }

    /// The process at the other end of a unix socket (SO_PEERCRED): dockerd, for its socket. nil
    /// when the socket cannot be reached or the peer lives in another PID namespace (pid 0).
    public static func peerPID(socketPath: String) -> Int32? {
        #if os(Linux)
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(socketPath.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard connected == 0 else { return nil }
            // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (socket(7)).
            var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
            var length = socklen_t(MemoryLayout.size(ofValue: credentials))
            guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials.0 > 0 else { return nil }
            return credentials.0
        #else
            return nil
        #endif
    }

    /// What was found, for the agent's log and `microscale members`.
    public struct Detected: Sendable, Hashable {
        public var offered: NodeCapacity
        public var engineCPUs: Int
        public var engineMemory: Int64
        public var cgroupCPUs: Double?
        public var cgroupMemory: Int64?
        /// dockerd's process id, when its socket told it.
        public var dockerdPID: Int32?
    }

    /// The whole detection against a live Engine: /info, then dockerd's cgroup limits found through
    /// its socket (this process's own cgroup when the socket does not say who dockerd is).
    public static func detect(
        client: DockerClient, reserveCPUs: Double = 0, reserveMemory: Int64 = 0,
        overrideCPUs: Double? = nil, overrideMemory: Int64? = nil,
        procRoot: String = "/proc", cgroupRoot: String = "/sys/fs/cgroup"
    ) async throws(DockerError) -> Detected {
        let info = try await client.info()
        let pid = peerPID(socketPath: client.socketPath)
        let cg = readCgroupLimits(pid: pid, procRoot: procRoot, root: cgroupRoot)
        let offered = offered(
            engineCPUs: info.NCPU, engineMemory: info.MemTotal, cgroupCPUs: cg.cpus, cgroupMemory: cg.memory,
            reserveCPUs: reserveCPUs, reserveMemory: reserveMemory,
            overrideCPUs: overrideCPUs, overrideMemory: overrideMemory)
        return Detected(
            offered: offered, engineCPUs: info.NCPU, engineMemory: info.MemTotal,
            cgroupCPUs: cg.cpus, cgroupMemory: cg.memory, dockerdPID: pid)
    }
}
