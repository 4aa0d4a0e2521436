import DockerEngine

/// A simulated Docker Engine for the whole-cluster simulation (docs/simulation.md): the containers
/// one host's daemon holds, as plain data. The simulation's driver decides when each call the
/// executor makes completes (latencies drawn from the run's seed) and calls the mutating functions
/// below at that simulated time; the engine itself reads no clock and draws nothing.
///
/// What it models of the real daemon: containers outlive the agent (a crashed agent's containers
/// keep running); a daemon restart without live-restore stops every container; a call made while
/// the daemon is down fails; a start whose image is not on the host fails (`imageMissing`). It
/// records every call that touched a container not managed by this node's agent, which the
/// "no unmanaged container touched" invariant reads.
public struct SimulatedEngine: Sendable {
    public struct Container: Sendable, Hashable {
        public var id: String
        public var labels: [String: String]
        public var state: ObservedContainer.State
        public var startedAt: Duration?
        public var finishedAt: Duration?
        public var cpuMillis: Int
        public var memoryBytes: Int
        public var image: String
    }

    public let node: String
    public private(set) var containers: [String: Container] = [:]
    /// False while the daemon is down (a `dockerd` restart): every call fails.
    public private(set) var up = true
    /// Bumped by each daemon restart: a call issued before it completes against a daemon that no
    /// longer knows it, and fails.
    public private(set) var generation = 0
    /// Images on the host.
    public var images: Set<String> = []
    /// Calls that touched a container this node's agent does not manage, as text (should stay empty).
    public private(set) var touchedUnmanaged: [String] = []
    private var nextID = 0

    public init(node: String) { self.node = node }

    /// What `docker ps -a --filter label=io.microscale.managed=true` and an inspect give the
    /// executor: nil while the daemon is down.
    public func list(now: Duration) -> [ObservedContainer]? {
        guard up else { return nil }
        return containers.values.sorted { $0.id < $1.id }.map { c in
            var ranFor: Duration?
            if c.state == .exited, let a = c.startedAt, let b = c.finishedAt { ranFor = b - a }
            return ObservedContainer(id: c.id, labels: c.labels, state: c.state, ranFor: ranFor)
        }
    }

    /// Containers running, by service, of this node's agent (the node's report to the leader).
    public func runningManaged() -> [String: Int] {
        var out: [String: Int] = [:]
        for c in containers.values where c.state == .running && isMine(c) {
            if let s = c.labels[MicroscaleLabel.service] { out[s, default: 0] += 1 }
        }
        return out
    }

    /// CPU and memory held by this agent's running containers.
    public func reserved() -> (cpuMillis: Int, memoryBytes: Int) {
        var cpu = 0, memory = 0
        for c in containers.values where c.state == .running && isMine(c) {
            cpu += c.cpuMillis
            memory += c.memoryBytes
        }
        return (cpu, memory)
    }

    func isMine(_ c: Container) -> Bool {
        c.labels[MicroscaleLabel.managed] == "true" && c.labels[MicroscaleLabel.node] == node
    }

    /// A container someone else made on this host: not the agent's to touch.
    public mutating func addForeign(labels: [String: String], image: String) {
        nextID += 1
        let id = "\(node)-x\(nextID)"
        containers[id] = Container(
            id: id, labels: labels, state: .running, startedAt: .zero, cpuMillis: 0, memoryBytes: 0, image: image)
    }

    private mutating func touch(_ id: String, _ what: String) -> Container? {
        guard let c = containers[id] else { return nil }
        if !isMine(c) { touchedUnmanaged.append("\(what) \(id) (labels \(c.labels.sorted { $0.key < $1.key }))") }
        return c
    }

    /// `docker create`: a container in state created.
    public mutating func create(service: String, specHash: String, image: String, cpuMillis: Int, memoryBytes: Int) -> String? {
        guard up else { return nil }
        nextID += 1
        let id = "\(node)-c\(nextID)"
        containers[id] = Container(
            id: id,
            labels: [
                MicroscaleLabel.managed: "true", MicroscaleLabel.service: service, MicroscaleLabel.node: node,
                MicroscaleLabel.spec: specHash,
            ],
            state: .created, cpuMillis: cpuMillis, memoryBytes: memoryBytes, image: image)
        return id
    }

    public enum StartOutcome: Sendable, Hashable { case started, failed, imageMissing, daemonDown }

    /// `docker start`; `crashes` makes the process exit at once (a start failure, as a bad
    /// entrypoint): the container is left exited with a zero run time.
    public mutating func start(_ id: String, now: Duration, crashes: Bool, issuedIn generation: Int) -> StartOutcome {
        guard up, generation == self.generation else { return .daemonDown }
        guard var c = touch(id, "start") else { return .failed }
        guard c.state == .created else { return .failed }
        guard images.contains(c.image) else {
            // The executor removes a container that cannot start (ReconcilerShell).
            containers[id] = nil
            return .imageMissing
        }
        c.startedAt = now
        if crashes {
            c.state = .exited
            c.finishedAt = now
            containers[id] = c
            return .failed
        }
        c.state = .running
        containers[id] = c
        return .started
    }

    /// `docker stop` then `docker rm`, or `docker rm -f`.
    @discardableResult
    public mutating func stopAndRemove(_ id: String, issuedIn generation: Int) -> Bool {
        guard up, generation == self.generation else { return false }
        guard touch(id, "stop/remove") != nil else { return false }
        containers[id] = nil
        return true
    }

    /// The daemon stops (a `systemctl restart docker` without live-restore): every container
    /// exits, and calls fail until `daemonUp`.
    public mutating func daemonDown(now: Duration) {
        up = false
        generation += 1
        for (id, var c) in containers where c.state == .running || c.state == .created {
            if c.state == .running { c.finishedAt = now }
            c.state = .exited
            containers[id] = c
        }
    }

    public mutating func daemonUp() { up = true }
}
