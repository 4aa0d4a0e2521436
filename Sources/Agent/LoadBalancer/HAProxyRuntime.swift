import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Drives a running HAProxy from the endpoints (issue 17 item 5, docs/endpoints.md): its backend
/// declares a pool of servers with `server-template NAME 1-N ... disabled`, and each endpoint of
/// the service gets one, by HAProxy's runtime API on its admin socket (`set server B/S addr A port
/// P`, `set server B/S state ready|maint`). HAProxy then routes to exactly the endpoints, without
/// a reload (which would drop its counters and, in master-worker mode, fork a new process).
public enum HAProxyPlan {
    /// One server of the backend as `show servers state` lists it.
    public struct Slot: Sendable, Equatable {
        public var name: String
        public var address: String
        public var port: Int
        /// Not in maintenance (HAProxy's forced, inherited or resolution maintenance flags):
        /// HAProxy may route to it. The flag a `disabled` server starts with (configured, 0x04)
        /// stays set after `state ready` and does not stop routing.
        public var ready: Bool
        public init(name: String, address: String, port: Int, ready: Bool) {
            self.name = name
            self.address = address
            self.port = port
            self.ready = ready
        }
        var target: Target { Target(host: address, port: port) }
    }

    public struct Target: Sendable, Hashable, Comparable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
        public static func < (a: Target, b: Target) -> Bool { (a.host, a.port) < (b.host, b.port) }
        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public struct Plan: Sendable, Equatable {
        /// Runtime API commands, in order: new servers first (ready before anything is taken
        /// away), then the ones to take out of rotation.
        public var commands: [String] = []
        public var added: [Target] = []
        public var removed: [Target] = []
        /// Endpoints left out because the backend has no free server for them.
        public var unplaced: [Target] = []
    }

    /// Pure: what to send so that exactly `desired` are ready in `backend`. A server that already
    /// points at an endpoint keeps it (no connection is moved); a free server that pointed at it
    /// before is reused first, then the free server with the lowest name.
    public static func plan(backend: String, slots: [Slot], desired: Set<Target>) -> Plan {
        var p = Plan()
        var wanted = desired
        var free: [Slot] = []
        var seenReady: Set<Target> = []
        for s in slots {
            if s.ready, wanted.contains(s.target), !seenReady.contains(s.target) {
                seenReady.insert(s.target)
                wanted.remove(s.target)
            } else if s.ready {
                // Not reused in this plan: new servers go ready before old ones leave, so a
                // server leaving now is free only from the next plan on.
                p.commands.append("set server \(backend)/\(s.name) state maint")
                p.removed.append(s.target)
            } else {
                free.append(s)
            }
        }
        var adds: [String] = []
        // Reuse a free server that pointed at the endpoint before: nothing about it changes.
        for t in wanted.sorted() {
            if let i = free.firstIndex(where: { $0.target == t }) {
                adds.append("set server \(backend)/\(free[i].name) state ready")
                free.remove(at: i)
                wanted.remove(t)
                p.added.append(t)
            }
        }
        free.sort { ($0.name.count, $0.name) < ($1.name.count, $1.name) }
        for t in wanted.sorted() {
            guard !free.isEmpty else {
                p.unplaced.append(t)
                continue
            }
            let s = free.removeFirst()
            adds.append("set server \(backend)/\(s.name) addr \(t.host) port \(t.port)")
            adds.append("set server \(backend)/\(s.name) state ready")
            p.added.append(t)
        }
        p.commands = adds + p.commands
        return p
    }

    /// Parses `show servers state BACKEND` (format 1: a version line, a `#` header naming the
    /// columns, one line per server). Unknown columns are ignored; a missing one is an error.
    public static func parseServersState(_ text: String, backend: String) throws(HAProxyError) -> [Slot] {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let first = lines.first else { throw HAProxyError("show servers state: empty answer") }
        if first.trimmingCharacters(in: .whitespaces) == "1" { lines.removeFirst() }
        guard let header = lines.first, header.hasPrefix("#") else {
            throw HAProxyError("show servers state: \(String(first.prefix(200)))")
        }
        let columns = header.dropFirst().split(separator: " ").map(String.init)
        func col(_ name: String) throws(HAProxyError) -> Int {
            guard let i = columns.firstIndex(of: name) else { throw HAProxyError("show servers state: no column \(name)") }
            return i
        }
        let (be, name, addr, admin, port) = (
            try col("be_name"), try col("srv_name"), try col("srv_addr"),
            try col("srv_admin_state"), try col("srv_port")
        )
        var out: [Slot] = []
        for line in lines.dropFirst() where !line.hasPrefix("#") {
            let f = line.split(separator: " ").map(String.init)
            guard f.count > max(be, name, addr, admin, port), f[be] == backend else { continue }
            guard let a = Int(f[admin]), let p = Int(f[port]) else {
                throw HAProxyError("show servers state: a line that does not parse: \(String(line.prefix(200)))")
            }
            // SRV_ADMF_MAINT = FMAINT 0x01 | IMAINT 0x02 | RMAINT 0x20 (haproxy's server.h); CMAINT
            // 0x04 is where a server started ('disabled'), seen still set on a ready server (2.6).
            out.append(Slot(name: f[name], address: f[addr], port: p, ready: a & 0x23 == 0))
        }
        return out
    }
}

public struct HAProxyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// HAProxy's admin socket (`stats socket PATH level admin`): one command per connection, as its
/// non-interactive mode expects; each answer is bounded (1 MiB) and each exchange timed out (2 s).
public struct HAProxySocket: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    static let maxAnswerBytes = 1 << 20

    public func send(_ command: String) throws(HAProxyError) -> String {
        guard !command.contains("\n") else { throw HAProxyError("a runtime API command cannot contain a newline") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HAProxyError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            throw HAProxyError("--socket \(path): the path is longer than a UNIX socket path may be")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw HAProxyError("cannot reach HAProxy's admin socket \(path): \(String(cString: strerror(errno)).lowercased())")
        }
        let line = Array((command + "\n").utf8)
        var sent = 0
        while sent < line.count {
            let n = line[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw HAProxyError("writing to \(path): \(String(cString: strerror(errno)))") }
            sent += n
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            guard n > 0 else { throw HAProxyError("reading from \(path): \(String(cString: strerror(errno)))") }
            answer.append(contentsOf: buffer[0..<n])
            guard answer.count <= Self.maxAnswerBytes else { throw HAProxyError("HAProxy's answer to '\(command)' exceeds 1 MiB") }
        }
        return String(decoding: answer, as: UTF8.self)
    }
}

/// Brings one HAProxy backend to a set of endpoints: reads the servers' state, plans, sends.
public struct HAProxyDriver: Sendable {
    public let socket: HAProxySocket
    public let backend: String

    public init(socket: HAProxySocket, backend: String) {
        self.socket = socket
        self.backend = backend
    }

    public func slots() throws(HAProxyError) -> [HAProxyPlan.Slot] {
        let slots = try HAProxyPlan.parseServersState(try socket.send("show servers state \(backend)"), backend: backend)
        guard !slots.isEmpty else {
            throw HAProxyError("backend \(backend) has no servers; declare a pool with 'server-template' (docs/endpoints.md)")
        }
        return slots
    }

    @discardableResult
    public func sync(_ desired: Set<HAProxyPlan.Target>) throws(HAProxyError) -> HAProxyPlan.Plan {
        let plan = HAProxyPlan.plan(backend: backend, slots: try slots(), desired: desired)
        for c in plan.commands {
            let answer = try socket.send(c).trimmingCharacters(in: .whitespacesAndNewlines)
            // Success is silent, or says what changed ("IP changed from ... to ...", "no need to
            // change the addr"); anything else is HAProxy refusing.
            if !answer.isEmpty, !answer.contains("changed from"), !answer.contains("no need to change") {
                throw HAProxyError("HAProxy refused '\(c)': \(String(answer.prefix(300)))")
            }
        }
        return plan
    }
}
