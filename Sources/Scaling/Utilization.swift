import Bounds

/// Utilization: what the capacity was reserved for and used by, per priority, and what sharing the
/// nodes between priority 1 and batch saves (docs/utilization.md). Pure arithmetic on samples the
/// shell takes once a second from the committed plan and the members' records; the time comes in as
/// data.

/// One moment of the cluster, summed per priority. CPU in millicores, memory in bytes.
public struct UtilizationSample: Sendable, Hashable, Codable {
    public struct Level: Sendable, Hashable, Codable {
        /// The priority; with `andBelow`, the sum of this and every less important priority (only when
        /// a cluster has more than `Limits.maxUtilizationLevels` priorities).
        public var priority: Int
        public var andBelow: Bool?
        /// What the committed plan holds for this priority: planned containers × their reservation.
        public var reservedMillis: Int
        public var reservedBytes: Int
        /// Containers the members report running × their reservation.
        public var runningMillis: Int
        /// Running containers that have work: for a demand-driven service min(running, demand /
        /// per_container); a fill service's running containers all have work (batch is work that
        /// waits); unknown demand counts every running container.
        public var busyMillis: Int

        public init(
            priority: Int, andBelow: Bool? = nil, reservedMillis: Int = 0, reservedBytes: Int = 0,
            runningMillis: Int = 0, busyMillis: Int = 0
        ) {
            self.priority = priority
            self.andBelow = andBelow
            self.reservedMillis = reservedMillis
            self.reservedBytes = reservedBytes
            self.runningMillis = runningMillis
            self.busyMillis = busyMillis
        }
    }

    /// Milliseconds since the Unix epoch.
    public var time: Int64
    /// Nodes that can hold work (alive or suspect, not drained), and their capacity.
    public var nodes: Int
    public var cpuMillis: Int
    public var memoryBytes: Int
    /// Most important first.
    public var levels: [Level]

    public init(time: Int64, nodes: Int, cpuMillis: Int, memoryBytes: Int, levels: [Level]) {
        self.time = time
        self.nodes = nodes
        self.cpuMillis = cpuMillis
        self.memoryBytes = memoryBytes
        self.levels = levels
    }
}

/// What `microscale report utilization` prints (and `GET /v1/report/utilization` answers).
public struct UtilizationSummary: Sendable, Hashable, Codable {
    public struct Level: Sendable, Hashable, Codable {
        public var priority: Int
        public var andBelow: Bool?
        /// Means over the samples, in cores, and as a share of the capacity (0 to 1).
        public var reservedCores: Double
        public var reservedPeakCores: Double
        public var runningCores: Double
        public var busyCores: Double
        public var reservedShare: Double
        public var runningShare: Double
        public var busyShare: Double
    }

    /// Borg's cell compaction (Verma et al., EuroSys 2015, §5.1–5.2): the nodes the same work needs if
    /// priority 1 and the rest ran on separate machines, each pool sized for its own peak.
    public struct Compaction: Sendable, Hashable, Codable {
        /// The mean node the pools are made of (the window's capacity over its node count).
        public var nodeCores: Double
        public var nodeMemoryBytes: Double
        public var priorityOnePeakCores: Double
        public var batchPeakCores: Double
        public var priorityOneNodes: Int
        public var batchNodes: Int
        public var separateNodes: Int
        /// The most nodes the shared cluster had in the window.
        public var sharedNodes: Int
        /// separate − shared (negative when the shared cluster had nodes no work needed).
        public var savedNodes: Int
        /// savedNodes / separateNodes × 100.
        public var savedPercent: Double
    }

    public var from: Int64
    public var to: Int64
    public var windowSeconds: Int
    public var samples: Int
    /// Mean capacity over the window.
    public var capacityCores: Double
    public var levels: [Level]
    /// All priorities together.
    public var reservedShare: Double
    public var runningShare: Double
    public var busyShare: Double
    /// nil without samples or nodes.
    public var compaction: Compaction?

    /// "sharing saves 2 nodes, 33%: priority 1 alone needs 2 nodes, batch alone 4, separately 6; shared 4".
    public var compactionText: String {
        guard let c = compaction else { return "no samples in the window" }
        return "sharing saves \(c.savedNodes) node\(abs(c.savedNodes) == 1 ? "" : "s"), \(DemandText.format((c.savedPercent * 10).rounded() / 10))%: "
            + "priority 1 alone needs \(c.priorityOneNodes) node\(c.priorityOneNodes == 1 ? "" : "s") (peak \(DemandText.format(c.priorityOnePeakCores)) cores), "
            + "batch alone \(c.batchNodes) (peak \(DemandText.format(c.batchPeakCores)) cores), separately \(c.separateNodes); "
            + "shared \(c.sharedNodes) (nodes of \(DemandText.format(c.nodeCores)) cores)"
    }
}

public enum Utilization {
    /// One sample from the planner's view of the cluster: the committed assignments (node → service →
    /// count), the nodes with the counts their records report running, and the demand in use.
    public static func sample(
        time: Int64, services: [ServiceSpec], assignments: [String: [String: Int]], nodes: [Node],
        demand: [String: DemandValue]
    ) -> UtilizationSample {
        let working = nodes.map(Work.bounded).filter(\.keepsWork)
        var cpu = 0, memory = 0
        for n in working {
            cpu = saturating(cpu, n.cpuMillis)
            memory = saturating(memory, n.memoryBytes)
        }
        var planned: [String: Int] = [:]
        for (_, counts) in assignments {
            for (service, c) in counts {
                planned[service] = saturating(planned[service] ?? 0, Swift.min(Swift.max(c, 0), Limits.maxContainersPerService))
            }
        }
        var running: [String: Int] = [:]
        for n in working {
            for (service, c) in n.running {
                running[service] = saturating(running[service] ?? 0, Swift.min(Swift.max(c, 0), Limits.maxRunningPerService))
            }
        }
        var byPriority: [Int: UtilizationSample.Level] = [:]
        for spec in services.map(Work.bounded) {
            let p = Swift.max(spec.priority, 1)
            var level = byPriority[p] ?? UtilizationSample.Level(priority: p)
            let plannedCount = planned[spec.name] ?? 0
            let runningCount = running[spec.name] ?? 0
            var busyCount = runningCount
            if !spec.fill, case .known(let d) = demand[spec.name] ?? .unknown, !d.isNaN, spec.perContainer > 0 {
                let need = Swift.max(d, 0) / spec.perContainer
                busyCount = need < Double(runningCount) ? Int(need.rounded(.up)) : runningCount
            }
            level.reservedMillis = saturating(level.reservedMillis, saturating(plannedCount, times: spec.cpuMillis))
            level.reservedBytes = saturating(level.reservedBytes, saturating(plannedCount, times: spec.memoryBytes))
            level.runningMillis = saturating(level.runningMillis, saturating(runningCount, times: spec.cpuMillis))
            level.busyMillis = saturating(level.busyMillis, saturating(busyCount, times: spec.cpuMillis))
            byPriority[p] = level
        }
        var levels = byPriority.values.sorted { $0.priority < $1.priority }
        // Bounded per sample, whatever the number of priorities: the least important are summed.
        if levels.count > Limits.maxUtilizationLevels {
            var rest = levels[(Limits.maxUtilizationLevels - 1)...].reduce(
                into: UtilizationSample.Level(priority: levels[Limits.maxUtilizationLevels - 1].priority, andBelow: true)
            ) {
                $0.reservedMillis = saturating($0.reservedMillis, $1.reservedMillis)
                $0.reservedBytes = saturating($0.reservedBytes, $1.reservedBytes)
                $0.runningMillis = saturating($0.runningMillis, $1.runningMillis)
                $0.busyMillis = saturating($0.busyMillis, $1.busyMillis)
            }
            rest.andBelow = true
            levels = Array(levels.prefix(Limits.maxUtilizationLevels - 1)) + [rest]
        }
        return UtilizationSample(time: time, nodes: working.count, cpuMillis: cpu, memoryBytes: memory, levels: levels)
    }

    /// The summary of the samples in (now − window, now]. Every sample weighs the same: the shell
    /// takes them at a steady cadence (one a second).
    public static func summarize(_ all: [UtilizationSample], window: Duration, now: Int64) -> UtilizationSummary {
        let windowMillis = window.components.seconds.multipliedReportingOverflow(by: 1000)
        let from = windowMillis.overflow ? Int64.min : now.subtractingReportingOverflow(windowMillis.partialValue).partialValue
        let samples = all.filter { $0.time > from && $0.time <= now }
        var summary = UtilizationSummary(
            from: samples.first?.time ?? now, to: samples.last?.time ?? now, windowSeconds: Int(clamping: window.components.seconds),
            samples: samples.count, capacityCores: 0, levels: [], reservedShare: 0, runningShare: 0, busyShare: 0, compaction: nil)
        guard !samples.isEmpty else { return summary }
        let count = Double(samples.count)
        let capacity = samples.reduce(0.0) { $0 + Double($1.cpuMillis) }
        summary.capacityCores = capacity / count / 1000
        func share(_ millis: Double) -> Double { capacity > 0 ? millis / capacity : 0 }

        // Per priority: means over all samples (a priority absent from a sample counts 0 there).
        var keys: [Int: Bool] = [:]
        for s in samples { for l in s.levels { keys[l.priority] = (keys[l.priority] ?? false) || (l.andBelow ?? false) } }
        var allReserved = 0.0, allRunning = 0.0, allBusy = 0.0
        for (priority, andBelow) in keys.sorted(by: { $0.key < $1.key }) {
            var reserved = 0.0, running = 0.0, busy = 0.0, peak = 0
            for s in samples {
                guard let l = s.levels.first(where: { $0.priority == priority }) else { continue }
                reserved += Double(l.reservedMillis)
                running += Double(l.runningMillis)
                busy += Double(l.busyMillis)
                peak = Swift.max(peak, l.reservedMillis)
            }
            allReserved += reserved
            allRunning += running
            allBusy += busy
            summary.levels.append(
                UtilizationSummary.Level(
                    priority: priority, andBelow: andBelow ? true : nil, reservedCores: reserved / count / 1000,
                    reservedPeakCores: Double(peak) / 1000, runningCores: running / count / 1000, busyCores: busy / count / 1000,
                    reservedShare: share(reserved), runningShare: share(running), busyShare: share(busy)))
        }
        summary.reservedShare = share(allReserved)
        summary.runningShare = share(allRunning)
        summary.busyShare = share(allBusy)

        // Compaction: each pool's peak of what it reserved, in nodes of the window's mean size (by CPU
        // and by memory, whichever needs more), against the most nodes the shared cluster had.
        let nodeSamples = samples.reduce(0) { $0 + $1.nodes }
        guard nodeSamples > 0 else { return summary }
        let nodeCPU = capacity / Double(nodeSamples)
        let nodeMemory = samples.reduce(0.0) { $0 + Double($1.memoryBytes) } / Double(nodeSamples)
        var onePeak = (cpu: 0, memory: 0), batchPeak = (cpu: 0, memory: 0)
        for s in samples {
            var one = (cpu: 0, memory: 0), batch = (cpu: 0, memory: 0)
            for l in s.levels {
                if l.priority == 1 && l.andBelow != true {
                    one = (saturating(one.cpu, l.reservedMillis), saturating(one.memory, l.reservedBytes))
                } else {
                    batch = (saturating(batch.cpu, l.reservedMillis), saturating(batch.memory, l.reservedBytes))
                }
            }
            onePeak = (Swift.max(onePeak.cpu, one.cpu), Swift.max(onePeak.memory, one.memory))
            batchPeak = (Swift.max(batchPeak.cpu, batch.cpu), Swift.max(batchPeak.memory, batch.memory))
        }
        func nodes(_ peak: (cpu: Int, memory: Int)) -> Int {
            let byCPU = nodeCPU > 0 ? Double(peak.cpu) / nodeCPU : 0
            let byMemory = nodeMemory > 0 ? Double(peak.memory) / nodeMemory : 0
            // A hair under a whole node is that node: sums of millicores divided by a mean are not exact.
            let need = (Swift.max(byCPU, byMemory) - 1e-9).rounded(.up)
            return need < 1e15 ? Swift.max(Int(need), 0) : Int(1e15)
        }
        let one = nodes(onePeak), batch = nodes(batchPeak)
        let shared = samples.map(\.nodes).max() ?? 0
        let separate = one + batch
        summary.compaction = UtilizationSummary.Compaction(
            nodeCores: nodeCPU / 1000, nodeMemoryBytes: nodeMemory, priorityOnePeakCores: Double(onePeak.cpu) / 1000,
            batchPeakCores: Double(batchPeak.cpu) / 1000, priorityOneNodes: one, batchNodes: batch, separateNodes: separate,
            sharedNodes: shared, savedNodes: separate - shared,
            savedPercent: separate > 0 ? Double(separate - shared) / Double(separate) * 100 : 0)
        return summary
    }
}

/// The samples a server keeps: one a second at most, for at most `Limits.maxUtilizationWindow`, and
/// never more than `Limits.maxUtilizationSamples` of them (each holds at most
/// `Limits.maxUtilizationLevels` levels, so the whole is bounded: about 3,600 × 16 × 48 bytes).
public struct UtilizationHistory: Sendable, Hashable {
    public private(set) var samples: [UtilizationSample] = []
    public var every: Duration

    public init(every: Duration = .seconds(1)) {
        self.every = every
    }

    /// Whether a sample taken at `time` (ms) is due.
    public func due(at time: Int64) -> Bool {
        guard let last = samples.last?.time else { return true }
        let everyMillis = every.components.seconds * 1000 + every.components.attoseconds / 1_000_000_000_000_000
        return time < last || time - last >= everyMillis
    }

    public mutating func append(_ s: UtilizationSample) {
        // A clock that went back: what came after it is dropped, not sorted in.
        if let last = samples.last?.time, s.time < last { samples.removeAll { $0.time > s.time } }
        samples.append(s)
        let windowMillis = Limits.maxUtilizationWindow.components.seconds * 1000
        let oldest = s.time - windowMillis
        let expired = samples.prefix { $0.time <= oldest }.count
        let excess = Swift.max(0, samples.count - expired - Limits.maxUtilizationSamples)
        if expired + excess > 0 { samples.removeFirst(expired + excess) }
    }
}
