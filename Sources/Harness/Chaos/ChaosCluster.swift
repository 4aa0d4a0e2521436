import Agent
import ControlPlane
import DockerEngine
import Foundation
import SecureTransport

/// The chaos harness's cluster: N "hosts" on one machine, each a network namespace with its own
/// address, its own dockerd and one agent (the first `servers` run Raft). The hosts' veths meet on a
/// bridge inside a hub namespace; the harness itself watches from the root namespace through one
/// more veth onto that bridge (the observer link, 10.213.0.254), which no fault ever cuts.
///
/// Every process of a host (agent, dockerd, containerd, shims, containers) lives under one cgroup,
/// `microscale-chaos/hN`, so "the host dies" is SIGKILL to every process in that tree, "the host
/// freezes" is SIGSTOP to all of them, and teardown finds everything by process id even after a
/// failed scenario. Faults on links are iptables rules inside the host's own namespace: dropping
/// INPUT from a peer loses packets silently, as a cut cable does (no RST, no EPERM).
public actor ChaosCluster {
    public struct Options: Sendable {
        public var hosts = 5
        public var servers = 3
        /// Where everything lives; removed by teardown.
        public var root = "/tmp/microscale-chaos"
        /// The `microscale` executable the agents run.
        public var executable: String
        /// The previous commit's `microscale`, for the `upgrade` scenario (nil: not given).
        public var previousExecutable: String?
        public var capacityCPU = 2.0
        public var capacityMemory = "1GiB"
        public var logLevel = "info"
        /// The agents' `--warm-standby-memory` (nil: the agent's default, 0, no warm standbys).
        public var warmStandbyMemory: String?
        public init(executable: String) { self.executable = executable }
    }

    /// Two suites can run side by side on one machine when each has its own CHAOS_PREFIX (names of
    /// namespaces, links and cgroups, so `clean` finds leftovers by name), CHAOS_SUBNET (the first
    /// three octets) and --root.
    static let environment = ProcessInfo.processInfo.environment
    public static let subnet = environment["CHAOS_SUBNET"] ?? "10.213.0"
    public static let observerAddress = "\(subnet).254"
    public static let image = "microscale-chaos:latest"
    public static let prefix = environment["CHAOS_PREFIX"] ?? "msc"
    static let cgroupName = "microscale-chaos-\(prefix)"

    public final class Host: Sendable {
        public let index: Int
        public let name: String
        public let address: String
        public let server: Bool
        public let netns: String
        public let directory: String
        public let dockerHost: String
        /// One client per host for the whole run (it negotiates the API version once).
        public let docker: DockerClient
        init(index: Int, server: Bool, root: String) throws {
            self.index = index
            self.name = "h\(index)"
            self.address = "\(ChaosCluster.subnet).\(index)"
            self.server = server
            self.netns = "\(ChaosCluster.prefix)-h\(index)"
            self.directory = "\(root)/h\(index)"
            self.dockerHost = "unix://\(directory)/docker.sock"
            self.docker = try DockerClient(host: dockerHost)
        }
        var cgroup: String { "\(ChaosCluster.cgroupName)/\(name)" }
    }

    public let options: Options
    public let hosts: [Host]
    public let token: String
    /// Hosts whose processes the harness killed and has not restarted, or froze and not thawed.
    public private(set) var down: Set<String> = []
    /// Hosts whose link a power cut took down; it comes back up when the host restarts.
    private var linkCut: Set<String> = []
    public private(set) var frozen: Set<String> = []
    /// Hosts on the minority side of a partition: alive, but not counted as the cluster's until healed.
    public private(set) var cutOff: Set<String> = []
    private var agentPIDs: [String: Int32] = [:]
    /// Hosts that were clients and run as servers now (the add-server scenario), joining the
    /// running Raft cluster rather than bootstrapping it.
    public private(set) var addedServers: Set<String> = []
    private var sentinels: [String: String] = [:]
    private let shell: Shell

    public init(options: Options) throws {
        self.options = options
        self.hosts = try (1...max(1, options.hosts)).map { try Host(index: $0, server: $0 <= options.servers, root: options.root) }
        self.token = String(UInt64.random(in: 1...UInt64.max), radix: 36)
        self.shell = Shell(log: "\(options.root)/harness.log")
    }

    public var seed: String { hosts[0].address }
    public var serverHosts: [Host] { hosts.filter(\.server) }
    /// Hosts that are up, not frozen and on the majority side: where the cluster's work must run.
    public var liveHosts: [Host] { hosts.filter { !down.contains($0.name) && !frozen.contains($0.name) && !cutOff.contains($0.name) } }
    /// Hosts whose processes run (frozen and cut-off ones included).
    public var runningHosts: [Host] { hosts.filter { !down.contains($0.name) } }
    public func host(named name: String) -> Host? { hosts.first { $0.name == name } }

    // MARK: Setup

    /// Network, cgroups, dockerds (with the test image and a sentinel container each), certificates
    /// and agents; returns once a leader answers.
    public func up() async throws {
        // What a killed run left comes first (its mounts under the root would make the removal
        // fail half way), then the root itself.
        try Self.clean(shell: shell, root: options.root)
        try? FileManager.default.removeItem(atPath: options.root)
        try FileManager.default.createDirectory(atPath: options.root, withIntermediateDirectories: true)
        try makeNetwork()
        try CertificateIssuer.createCA(in: "\(options.root)/ca")
        try makeImageTar()
        for h in hosts {
            try FileManager.default.createDirectory(atPath: "\(h.directory)/agent", withIntermediateDirectories: true)
            try CertificateIssuer.createNodeCertificate(caDir: "\(options.root)/ca", node: h.name, server: h.server, in: "\(options.root)/certs")
            try makeCgroups(h)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for h in hosts { group.addTask { try await self.startDocker(h, fresh: true) } }
            try await group.waitForAll()
        }
        for h in hosts { try startAgent(h) }
        guard try await pollUntil(60, { await self.leader() != nil }) else {
            throw ChaosError("no leader within 60 s; see \(options.root)/h*/agent.log")
        }
    }

    private func makeNetwork() throws {
        let hub = "\(Self.prefix)-hub"
        try shell.run(["ip", "netns", "add", hub])
        try shell.run(["ip", "-n", hub, "link", "set", "lo", "up"])
        try shell.run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
        try shell.run(["ip", "-n", hub, "link", "set", "br0", "up"])
        // The observer link: root namespace ↔ the hub's bridge.
        try shell.run(["ip", "link", "add", "\(Self.prefix)0", "type", "veth", "peer", "name", "obs", "netns", hub])
        try shell.run(["ip", "addr", "add", "\(Self.observerAddress)/24", "dev", "\(Self.prefix)0"])
        try shell.run(["ip", "link", "set", "\(Self.prefix)0", "up"])
        try shell.run(["ip", "-n", hub, "link", "set", "obs", "master", "br0"])
        try shell.run(["ip", "-n", hub, "link", "set", "obs", "up"])
        for h in hosts {
            try shell.run(["ip", "netns", "add", h.netns])
            try shell.run(["ip", "-n", hub, "link", "add", "v\(h.name)", "type", "veth", "peer", "name", "eth0", "netns", h.netns])
            try shell.run(["ip", "-n", hub, "link", "set", "v\(h.name)", "master", "br0"])
            try shell.run(["ip", "-n", hub, "link", "set", "v\(h.name)", "up"])
            try shell.run(["ip", "-n", h.netns, "addr", "add", "\(h.address)/24", "dev", "eth0"])
            try shell.run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
            try shell.run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
        }
    }

    /// The busybox-static root filesystem as a tar, imported into every host's dockerd.
    private func makeImageTar() throws {
        let rootfs = "\(options.root)/rootfs"
        try FileManager.default.createDirectory(atPath: "\(rootfs)/bin", withIntermediateDirectories: true)
        guard let busybox = Shell.which("busybox") else { throw ChaosError("busybox not found (apt-get install busybox-static)") }
        try FileManager.default.copyItem(atPath: busybox, toPath: "\(rootfs)/bin/busybox")
        for a in ["sh", "sleep", "true", "false", "cat", "echo", "kill"] {
            try FileManager.default.createSymbolicLink(atPath: "\(rootfs)/bin/\(a)", withDestinationPath: "busybox")
        }
        try shell.run(["tar", "-C", rootfs, "-cf", "\(options.root)/rootfs.tar", "."])
    }

    // MARK: Cgroups: one tree per host holds all of its processes

    /// The hierarchies the harness uses to find a host's processes: `pids` on cgroup v1, the unified
    /// hierarchy on v2.
    static var cgroupRoots: [String] {
        let v1 = "/sys/fs/cgroup/pids"
        if FileManager.default.fileExists(atPath: "\(v1)/cgroup.procs") {
            return [v1, "/sys/fs/cgroup/freezer"].filter { FileManager.default.fileExists(atPath: $0) }
        }
        return ["/sys/fs/cgroup"]
    }
    static var trackingRoot: String { cgroupRoots[0] }

    private func makeCgroups(_ h: Host) throws {
        for root in Self.cgroupRoots {
            try FileManager.default.createDirectory(atPath: "\(root)/\(h.cgroup)/host", withIntermediateDirectories: true)
        }
    }

    /// Every process of a host: the tree under its cgroup (agent, dockerd, containerd, shims, and
    /// the containers, which dockerd puts under `--cgroup-parent`).
    func pids(of h: Host) -> [Int32] {
        Self.pids(under: "\(Self.trackingRoot)/\(h.cgroup)")
    }

    /// Thaws the cgroup v1 freezer that holds `pid`, if it is frozen (`docker pause`).
    static func thawFreezer(of pid: Int32) {
        guard let lines = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return }
        for line in lines.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2)
            guard parts.count == 3, parts[1].split(separator: ",").contains("freezer") else { continue }
            let state = "/sys/fs/cgroup/freezer\(parts[2])/freezer.state"
            guard let now = try? String(contentsOfFile: state, encoding: .utf8), !now.hasPrefix("THAWED") else { return }
            try? "THAWED".write(toFile: state, atomically: false, encoding: .utf8)
            return
        }
    }

    static func pids(under dir: String) -> [Int32] {
        var out: [Int32] = []
        if let procs = try? String(contentsOfFile: "\(dir)/cgroup.procs", encoding: .utf8) {
            out += procs.split(separator: "\n").compactMap { Int32($0) }
        }
        for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(dir)/\(child)", isDirectory: &isDir), isDir.boolValue {
                out += pids(under: "\(dir)/\(child)")
            }
        }
        return out
    }

    /// The launcher every host process goes through: `ip netns exec` gives it a fresh mount
    /// namespace with /sys mounted again, which hides the cgroup hierarchies dockerd needs, so
    /// they are mounted again first (as the root namespace has them); then the process joins its
    /// host's cgroup and becomes the command.
    private func launcher(_ h: Host) throws -> String {
        let path = "\(h.directory)/launch.sh"
        var script = "#!/bin/sh\nset -e\n"
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        var lines: [String] = []
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count >= 4, f[1].hasPrefix("/sys/fs/cgroup") else { continue }
            if f[1] == "/sys/fs/cgroup" && f[2] == "tmpfs" {
                lines.insert("mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup", at: 0)
            } else if f[2] == "cgroup" || f[2] == "cgroup2" {
                lines.append("mkdir -p \(f[1]) && mount -t \(f[2]) -o \(f[3]) \(f[0]) \(f[1])")
            }
        }
        script += lines.joined(separator: "\n") + "\n"
        for root in Self.cgroupRoots { script += "echo $$ > \(root)/\(h.cgroup)/host/cgroup.procs\n" }
        script += "exec \"$@\"\n"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    private func spawn(_ h: Host, log: String, _ command: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Shell.which("ip") ?? "/usr/sbin/ip")
        p.arguments = ["netns", "exec", h.netns, try launcher(h)] + command
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = FileHandle(forWritingAtPath: log)
        handle?.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.runWithSignalsUnblocked()
        return p
    }

    // MARK: Docker and agents

    private func startDocker(_ h: Host, fresh: Bool) async throws {
        let args = [
            "dockerd", "--data-root=\(h.directory)/docker", "--exec-root=\(h.directory)/exec",
            "--pidfile=\(h.directory)/dockerd.pid", "--host=\(h.dockerHost)", "--storage-driver=vfs",
            "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--cgroup-parent=/\(h.cgroup)/containers",
            "--containerd-namespace=\(h.netns)", "--containerd-plugins-namespace=\(h.netns)-plugins",
        ]
        try? FileManager.default.removeItem(atPath: "\(h.directory)/dockerd.pid")
        _ = try spawn(h, log: "\(h.directory)/dockerd.log", args)
        guard try await pollUntil(60, { (try? await h.docker.ping()) != nil }) else {
            throw ChaosError("\(h.name): dockerd did not answer within 60 s; see \(h.directory)/dockerd.log")
        }
        guard fresh else { return }
        try shell.run(["sh", "-c", "docker -H \(h.dockerHost) import \(options.root)/rootfs.tar \(Self.image) >/dev/null"])
        // The sentinel: a container without Microscale's labels, which nothing may ever touch.
        let (_, id) = try shell.run([
            "docker", "-H", h.dockerHost, "run", "-d", "--name", "sentinel", "--network", "none",
            Self.image, "sleep", "100000000",
        ])
        sentinels[h.name] = id.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The executable a host's agent runs from its next start, when not `options.executable`
    /// (the `upgrade` scenario puts the previous commit's there, then takes it away).
    private var executables: [String: String] = [:]

    public func setExecutable(_ h: Host, _ path: String?) { executables[h.name] = path }

    public func startAgent(_ h: Host) throws {
        var args = [
            executables[h.name] ?? options.executable, "agent", "--name", h.name, "--bind", "\(h.address):7480", "--http", "\(h.address):7481",
            "--api-token", token, "--data-dir", "\(h.directory)/agent",
            "--tls-ca", "\(options.root)/ca/ca.pem", "--tls-cert", "\(options.root)/certs/\(h.name).pem",
            "--tls-key", "\(options.root)/certs/\(h.name)-key.pem", "--docker-socket", h.dockerHost,
            "--capacity-cpu", "\(options.capacityCPU)", "--capacity-memory", options.capacityMemory,
            "--log-level", options.logLevel, "--log-format", "json",
        ]
        if let warm = options.warmStandbyMemory { args += ["--warm-standby-memory", warm] }
        if h.server { args += ["--server", "--bootstrap-expect", "\(min(options.servers, hosts.count))"] }
        if addedServers.contains(h.name) { args += ["--server"] }
        for other in hosts where other !== h { args += ["--join", "\(other.address):7480"] }
        let p = try spawn(h, log: "\(h.directory)/agent.log", args)
        agentPIDs[h.name] = p.processIdentifier
        down.remove(h.name)
    }

    /// Makes a client host a server, or a server added so a client again: a new certificate with
    /// (or without) the server marker; the agent runs with `--server` (and no `--bootstrap-expect`)
    /// from its next start.
    public func setAddedServer(_ h: Host, _ server: Bool) throws {
        guard !h.server else { return }
        try CertificateIssuer.createNodeCertificate(
            caDir: "\(options.root)/ca", node: h.name, server: server,
            in: "\(options.root)/certs", force: true)
        if server { addedServers.insert(h.name) } else { addedServers.remove(h.name) }
    }

    /// The Raft servers as the leader lists them (`GET /v1/operator/raft/peers`).
    public func raftPeers() async -> [RaftPeer]? {
        for h in liveHosts {
            if let d = await get(h, "/v1/operator/raft/peers"), let v = try? JSONDecoder().decode([RaftPeer].self, from: d) { return v }
        }
        return nil
    }

    // MARK: Faults

    /// SIGKILL to every process of the host: agent, dockerd, containerd, shims and containers.
    public func killHost(_ h: Host) async {
        down.insert(h.name)
        for _ in 0..<50 {
            let pids = pids(of: h)
            if pids.isEmpty { break }
            for p in pids { kill(p, SIGKILL) }
            // A paused container (a warm standby, a victim being preempted) is in a frozen cgroup,
            // where a SIGKILL waits for a thaw: thawed, it dies now, as a powerless host's would.
            for p in pids { Self.thawFreezer(of: p) }
            try? await Task.sleep(for: .milliseconds(50))
        }
        agentPIDs[h.name] = nil
    }

    /// A power cut (issue 20's comparable host death): the host's link goes down first, so none of
    /// its connections is reset or closed on the wire, then every process of the host is killed.
    /// A SIGKILLed process on a live kernel makes that kernel send FIN or RST for each of its
    /// sockets, which the peers take as a hint; a host that loses power sends nothing, and the
    /// others learn of it only from probes that go unanswered. The link stays down until
    /// `restartHost`, as a dead machine's would.
    public func powerCut(_ h: Host) async {
        linkCut.insert(h.name)
        _ = try? shell.run(["ip", "-n", h.netns, "link", "set", "eth0", "down"])
        await killHost(h)
    }

    /// Brings a killed host back: its dockerd (containers from before are gone, as after a power
    /// cut) and its agent on the same data directory.
    public func restartHost(_ h: Host) async throws {
        if linkCut.remove(h.name) != nil {
            try shell.run(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
        }
        if let dockerd = try? String(contentsOfFile: "\(h.directory)/dockerd.pid", encoding: .utf8),
            let pid = Int32(dockerd.trimmingCharacters(in: .whitespacesAndNewlines)), kill(pid, 0) == 0
        {
            // Still running: only the agent was killed.
        } else {
            // The exec root is the host's /run: empty after a power cut. Left as it was, dockerd
            // trusts containerd.pid, whose number another process may have by now, and waits for
            // a containerd that never answers.
            try? FileManager.default.removeItem(atPath: "\(h.directory)/exec")
            try await startDocker(h, fresh: false)
        }
        try startAgent(h)
    }

    /// SIGKILL (or another signal) to the agent process only; its containers keep running.
    public func signalAgent(_ h: Host, _ signal: Int32) {
        guard let pid = agentPIDs[h.name] else { return }
        kill(pid, signal)
        if signal == SIGKILL || signal == SIGTERM { down.insert(h.name) }
    }

    /// Waits for a signalled agent to be gone.
    public func waitForAgentExit(_ h: Host, seconds: Double = 15) async -> Bool {
        guard let pid = agentPIDs[h.name] else { return true }
        let gone = (try? await pollUntil(seconds, { kill(pid, 0) != 0 || Self.isZombie(pid) })) ?? false
        if gone { agentPIDs[h.name] = nil }
        return gone
    }

    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return true }
        return stat[stat.index(close, offsetBy: 2)] == "Z"
    }

    /// SIGSTOP to every process of the host (a hung VM: sockets stay open, nothing answers).
    public func freeze(_ h: Host) {
        frozen.insert(h.name)
        for p in pids(of: h) { kill(p, SIGSTOP) }
    }

    public func thaw(_ h: Host) {
        for p in pids(of: h) { kill(p, SIGCONT) }
        frozen.remove(h.name)
    }

    /// Cuts every link between the two groups, both ways, by dropping INPUT in each host's namespace.
    /// `a` is the side counted as cut off (the minority).
    public func partition(_ a: [Host], _ b: [Host]) throws {
        cutOff.formUnion(a.map(\.name))
        for x in a {
            for y in b {
                try shell.run(["ip", "netns", "exec", x.netns, "iptables", "-A", "INPUT", "-s", y.address, "-j", "DROP"])
                try shell.run(["ip", "netns", "exec", y.netns, "iptables", "-A", "INPUT", "-s", x.address, "-j", "DROP"])
            }
        }
    }

    /// Loses `probability` of the packets each host receives from the other hosts.
    public func loss(_ probability: Double, on hs: [Host]) throws {
        for h in hs {
            // The observer's packets first, untouched: the harness must see the hosts throughout.
            try shell.run(["ip", "netns", "exec", h.netns, "iptables", "-A", "INPUT", "-s", Self.observerAddress, "-j", "ACCEPT"])
            try shell.run([
                "ip", "netns", "exec", h.netns, "iptables", "-A", "INPUT", "-s", "\(Self.subnet).0/24",
                "-m", "statistic", "--mode", "random",
                "--probability", String(format: "%.3f", probability), "-j", "DROP",
            ])
        }
    }

    /// Adds latency with netem where the kernel has it; false where it does not (the fault is then
    /// reported as skipped, never faked).
    public func latency(_ milliseconds: Int, on hs: [Host]) -> Bool {
        for h in hs {
            guard
                (try? shell.run([
                    "ip", "netns", "exec", h.netns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem",
                    "delay", "\(milliseconds)ms",
                ])) != nil
            else { return false }
        }
        return true
    }

    /// Every fault that leaves processes running is undone: links healed, frozen hosts thawed.
    public func recover() {
        heal()
        for h in hosts where frozen.contains(h.name) { thaw(h) }
    }

    /// Removes every link fault.
    public func heal() {
        cutOff = []
        for h in hosts {
            _ = try? shell.run(["ip", "netns", "exec", h.netns, "iptables", "-F", "INPUT"])
            _ = try? shell.run(["ip", "netns", "exec", h.netns, "tc", "qdisc", "del", "dev", "eth0", "root"])
        }
    }

    // MARK: Reading the cluster

    public func sentinelID(_ h: Host) -> String? { sentinels[h.name] }
    public func agentPID(_ h: Host) -> Int32? { agentPIDs[h.name] }

    public func get(_ h: Host, _ path: String, timeoutMillis: Int = 1000) async -> Data? {
        await PlainHTTP.get(host: h.address, port: 7481, path: path, timeoutMillis: timeoutMillis, token: token)
    }

    public func send(_ method: String, _ h: Host, _ path: String, _ body: String, timeoutMillis: Int = 3000) async -> (Int, Data)? {
        await PlainHTTP.request(
            method, host: h.address, port: 7481, path: path, body: Array(body.utf8),
            timeoutMillis: timeoutMillis, token: token)
    }

    /// A write through any live host, retried while a leader is being elected; true once acknowledged.
    public func write(_ method: String, _ path: String, _ body: String, seconds: Double = 20) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            for h in liveHosts {
                if let (s, _) = await send(method, h, path, body), s == 200 { return true }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    public func leader() async -> LeaderView? {
        for h in liveHosts {
            if let d = await get(h, "/v1/leader"), let v = try? JSONDecoder().decode(LeaderView.self, from: d) { return v }
        }
        return nil
    }

    public func status() async -> StatusView? {
        for h in liveHosts {
            if let d = await get(h, "/v1/status"), let v = try? JSONDecoder().decode(StatusView.self, from: d) { return v }
        }
        return nil
    }

    public func selfView(_ h: Host) async -> AgentSelfView? {
        guard let d = await get(h, "/v1/agent/self", timeoutMillis: 500) else { return nil }
        return try? JSONDecoder().decode(AgentSelfView.self, from: d)
    }

    public func members(_ h: Host) async -> [MemberView]? {
        guard let d = await get(h, "/v1/members", timeoutMillis: 500) else { return nil }
        return try? JSONDecoder().decode([MemberView].self, from: d)
    }

    // MARK: Teardown

    /// Kills every host's processes, removes namespaces, links, cgroups and files. Safe to call twice.
    public func teardown() async {
        for h in hosts { for p in pids(of: h) { kill(p, SIGCONT) } }
        for h in hosts { await killHost(h) }
        try? Self.clean(shell: shell, root: options.root)
        try? FileManager.default.removeItem(atPath: options.root)
    }

    /// Removes whatever a harness left behind, found by name: processes in the chaos cgroups,
    /// namespaces and links with the prefix, the cgroups, mounts under the root.
    public static func clean(shell: Shell = Shell(log: nil), root: String = "/tmp/microscale-chaos") throws {
        for cgroupRoot in cgroupRoots {
            let base = "\(cgroupRoot)/\(cgroupName)"
            for _ in 0..<50 {
                let pids = pids(under: base)
                if pids.isEmpty { break }
                for p in pids {
                    kill(p, SIGCONT)
                    kill(p, SIGKILL)
                }
                usleep(50_000)
            }
            removeCgroupTree(base)
        }
        if let list = try? shell.run(["ip", "netns", "list"]).1 {
            for line in list.split(separator: "\n") {
                let name = String(line.split(separator: " ").first ?? "")
                if name.hasPrefix("\(prefix)-") { _ = try? shell.run(["ip", "netns", "del", name]) }
            }
        }
        _ = try? shell.run(["ip", "link", "del", "\(prefix)0"])
        if let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) {
            let targets = mounts.split(separator: "\n").map { $0.split(separator: " ") }.filter { $0.count > 1 }
                .map { String($0[1]) }.filter { $0.hasPrefix(root + "/") }.sorted().reversed()
            for t in targets { umount2(t, Int32(MNT_DETACH)) }
        }
    }

    static func removeCgroupTree(_ dir: String) {
        for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: "\(dir)/\(child)", isDirectory: &isDir), isDir.boolValue {
                removeCgroupTree("\(dir)/\(child)")
            }
        }
        rmdir(dir)
    }
}

public struct ChaosError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Runs commands for the harness, logging each with its output, and failing with the output when
/// the command does.
public struct Shell: Sendable {
    let log: String?
    public init(log: String?) { self.log = log }

    @discardableResult
    public func run(_ args: [String]) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        p.standardInput = FileHandle.nullDevice
        try p.runWithSignalsUnblocked()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if let log,
            let h = FileHandle(forWritingAtPath: log)
                ?? {
                    _ = FileManager.default.createFile(atPath: log, contents: nil)
                    return FileHandle(forWritingAtPath: log)
                }()
        {
            h.seekToEndOfFile()
            // Stamped to the millisecond, as the agents' JSON logs are, so a fault lines up with
            // what each agent logged after it.
            let at = Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
            h.write(Data("\(at) $ \(args.joined(separator: " "))  -> \(p.terminationStatus)\n\(text)".utf8))
            try? h.close()
        }
        guard p.terminationStatus == 0 else {
            throw ChaosError(
                "`\(args.joined(separator: " "))` failed (\(p.terminationStatus)): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return (p.terminationStatus, text)
    }

    static func which(_ name: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/local/sbin:/usr/sbin:/sbin"
        for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return nil
    }
}
