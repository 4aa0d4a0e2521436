import Scaling

/// Replays a seeded random-walk demand trace for web (priority 1) and batch (priority 2, fill) against a
/// simulated cluster where a started container becomes useful only after `startDelay` seconds (stops are
/// immediate). Measures the share of reserved capacity in use and the share of seconds in which web's
/// demand was met by running containers.
public struct UtilizationReport: Sendable, Equatable {
    public var seconds: Int
    public var seed: UInt64
    /// Mean over seconds of (CPU reserved by running containers) / (cluster CPU).
    public var utilization: Double
    /// Share of seconds at whose end running web containers covered web's demand.
    public var priorityOneMet: Double
    /// The same arithmetic as `microscale report utilization` (Scaling.Utilization), over the run,
    /// one sample per tick: per priority, and what sharing the nodes saves.
    public var summary: UtilizationSummary
}

public enum UtilizationReplay {
    public static func run(
        seconds: Int, seed: UInt64, nodes nodeCount: Int = 20, ticksPerSecond: Int = 10,
        startDelayTicks: Int = 3
    ) -> UtilizationReport {
        var rng = SeededGenerator(seed: seed)
        let web = ServiceSpec(
            name: "web", priority: 1, cpuMillis: 500, memoryBytes: 64 << 20, min: 1, max: 10_000,
            perContainer: 10)
        let batch = ServiceSpec(
            name: "batch", priority: 2, cpuMillis: 500, memoryBytes: 32 << 20, max: 100_000, fill: true)
        let services = [web, batch]
        var nodes = (0..<nodeCount).map {
            Node(name: "node-\($0)", cpuMillis: 4000, memoryBytes: 8 << 30)
        }
        let capacityContainers = nodeCount * 8
        var demand = Double(capacityContainers) * 10 * 0.4
        let planner = Planner(stabilizationWindow: .seconds(3))
        var plan: Plan? = nil
        // Containers per (node, service) and the ticks at which pending starts become running.
        var pending: [[Int: Int]] = Array(repeating: [:], count: nodeCount * 2)
        var met = 0
        var samples: [UtilizationSample] = []
        samples.reserveCapacity(seconds * ticksPerSecond)
        for second in 0..<seconds {
            // Random walk, bounded to [5%, 90%] of what the cluster could serve.
            demand += (Double(rng.next() % 2001) / 1000 - 1) * Double(capacityContainers) * 0.4
            demand = Swift.min(Swift.max(demand, Double(capacityContainers) * 0.5), Double(capacityContainers) * 9)
            var okTicks = 0
            for tick in 0..<ticksPerSecond {
                let t = second * ticksPerSecond + tick
                // Started containers come up after the delay.
                for n in 0..<nodeCount {
                    for s in 0..<2 {
                        if let k = pending[n * 2 + s][t] {
                            nodes[n].running[services[s].name, default: 0] += k
                            pending[n * 2 + s][t] = nil
                        }
                    }
                }
                let now = Duration.milliseconds(t * 1000 / ticksPerSecond)
                let result = planner.plan(
                    services: services, demand: ["web": .known(demand)], nodes: nodes, currentPlan: plan,
                    now: now)
                plan = result.plan
                // The reconciler: stops at once; starts scheduled after the delay. Cancel pending starts
                // the plan no longer wants.
                for n in 0..<nodeCount {
                    for s in 0..<2 {
                        let name = services[s].name
                        let want = result.plan.count(name, on: nodes[n].name)
                        var running = nodes[n].running[name] ?? 0
                        var inflight = pending[n * 2 + s].values.reduce(0, +)
                        if running > want {
                            running = want
                            pending[n * 2 + s] = [:]
                            inflight = 0
                        } else if running + inflight > want {
                            pending[n * 2 + s] = want - running > 0 ? [t + startDelayTicks: want - running] : [:]
                            inflight = want - running
                        }
                        nodes[n].running[name] = running
                        if running + inflight < want {
                            pending[n * 2 + s][t + startDelayTicks, default: 0] += want - running - inflight
                        }
                    }
                }
                let webRunning = nodes.reduce(0) { $0 + ($1.running["web"] ?? 0) }
                samples.append(
                    Utilization.sample(
                        time: Int64(t) * 1000 / Int64(ticksPerSecond), services: services, assignments: result.plan.assignments,
                        nodes: nodes, demand: ["web": .known(demand)]))
                // A second counts as met when, by its end, running web containers cover its demand:
                // the start delay is part of the second, as it is for a real container start.
                if tick == ticksPerSecond - 1 && Double(webRunning) * web.perContainer >= demand { okTicks += 1 }
            }
            if okTicks > 0 { met += 1 }
        }
        // Mean over ticks of (CPU reserved by running containers) / (cluster CPU): the running share.
        let summary = Utilization.summarize(
            samples, window: .seconds(Int64(seconds) + 1), now: Int64(seconds) * 1000)
        return UtilizationReport(
            seconds: seconds, seed: seed, utilization: summary.runningShare,
            priorityOneMet: Double(met) / Double(Swift.max(1, seconds)), summary: summary)
    }
}
