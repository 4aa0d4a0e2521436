import Bounds
import Scaling
import Testing

/// The utilization report's arithmetic (docs/utilization.md) on a recorded history whose figures can
/// be checked by hand.
@Suite struct UtilizationArithmetic {
    // Four nodes of 4 cores and 8 GiB: 16 cores.
    static let nodes = (0..<4).map { Node(name: "n\($0)", cpuMillis: 4000, memoryBytes: 8 << 30) }
    static let web = ServiceSpec(name: "web", priority: 1, cpuMillis: 1000, memoryBytes: 1 << 30, max: 100, perContainer: 10)
    static let batch = ServiceSpec(name: "batch", priority: 2, cpuMillis: 1000, memoryBytes: 512 << 20, max: 100, fill: true)

    /// One second: web planned/running with its demand, batch planned = running.
    static func second(_ t: Int64, web planned: Int, running: Int, demand: Double, batch: Int) -> UtilizationSample {
        var nodes = Self.nodes
        nodes[0].running = ["web": running, "batch": batch]  // where they run does not matter to the sums
        return Utilization.sample(
            time: t * 1000, services: [web, Self.batch],
            assignments: ["n0": ["web": planned], "n1": ["batch": batch]], nodes: nodes,
            demand: ["web": .known(demand)])
    }

    /// The recorded history: web at 4, then a peak of 10 (8 up yet), then 2; batch fills the rest.
    static let history = [
        second(1, web: 4, running: 4, demand: 35, batch: 12),  // web needs 3.5: 4 busy
        second(2, web: 10, running: 8, demand: 95, batch: 6),  // needs 9.5, 8 running: 8 busy
        second(3, web: 2, running: 2, demand: 5, batch: 14),  // needs 0.5: 1 busy
    ]

    @Test func reservedRunningAndBusyPerPriorityAreMeansOverTheWindow() {
        let s = Utilization.summarize(Self.history, window: .seconds(60), now: 3000)
        #expect(s.samples == 3)
        #expect(s.capacityCores == 16)
        let web = s.levels[0], batch = s.levels[1]
        #expect(web.priority == 1 && batch.priority == 2)
        // web reserved 4, 10, 2 cores: mean 16/3, peak 10; running 4, 8, 2: 14/3; busy 4, 8, 1: 13/3.
        #expect(web.reservedCores == 16.0 / 3 && web.reservedPeakCores == 10)
        #expect(web.runningCores == 14.0 / 3 && web.busyCores == 13.0 / 3)
        #expect(web.reservedShare == 16.0 / 48)
        // batch 12, 6, 14: mean 32/3, all of it running and busy.
        #expect(batch.reservedCores == 32.0 / 3 && batch.busyCores == 32.0 / 3 && batch.reservedPeakCores == 14)
        // Together: reserved 48 of 48 core-seconds, running 46, busy 45.
        #expect(s.reservedShare == 1 && s.runningShare == 46.0 / 48 && s.busyShare == 45.0 / 48)
    }

    @Test func compactionSizesEachPoolForItsOwnPeakAgainstTheSharedNodes() throws {
        let c = try #require(Utilization.summarize(Self.history, window: .seconds(60), now: 3000).compaction)
        #expect(c.nodeCores == 4 && c.nodeMemoryBytes == Double(8 << 30))
        // web's peak: 10 cores (2.5 nodes) and 10 GiB (1.25 nodes): 3 nodes.
        #expect(c.priorityOnePeakCores == 10 && c.priorityOneNodes == 3)
        // batch's peak: 14 cores (3.5 nodes) and 7 GiB: 4 nodes.
        #expect(c.batchPeakCores == 14 && c.batchNodes == 4)
        #expect(c.separateNodes == 7 && c.sharedNodes == 4 && c.savedNodes == 3)
        #expect(c.savedPercent == 300.0 / 7)
        #expect(
            Utilization.summarize(Self.history, window: .seconds(60), now: 3000).compactionText
                == "sharing saves 3 nodes, 42.9%: priority 1 alone needs 3 nodes (peak 10 cores), batch alone 4 (peak 14 cores), separately 7; shared 4 (nodes of 4 cores)"
        )
    }

    @Test func onlySamplesInsideTheWindowCount() {
        // The last 2 s: seconds 2 and 3 only.
        let s = Utilization.summarize(Self.history, window: .seconds(2), now: 3000)
        #expect(s.samples == 2 && s.from == 2000 && s.to == 3000)
        #expect(s.levels[0].reservedCores == 6)
        #expect(Utilization.summarize(Self.history, window: .seconds(60), now: 500).samples == 0)
        #expect(Utilization.summarize([], window: .seconds(60), now: 0).compaction == nil)
    }

    @Test func deadAndDrainedNodesAreNotCapacity() {
        var nodes = Self.nodes
        nodes[0].status = .dead
        nodes[1].drained = true
        nodes[2].status = .suspect
        let s = Utilization.sample(time: 0, services: [Self.web], assignments: [:], nodes: nodes, demand: [:])
        #expect(s.nodes == 2 && s.cpuMillis == 8000)
    }

    @Test func aSampleKeepsAtMostTheBoundedNumberOfPrioritiesSummingTheLeastImportant() {
        let services = (1...40).map { ServiceSpec(name: "s\($0)", priority: $0, cpuMillis: 100, memoryBytes: 1, max: 1, fill: true) }
        let assignments = ["n0": Dictionary(uniqueKeysWithValues: services.map { ($0.name, 1) })]
        let s = Utilization.sample(time: 0, services: services, assignments: assignments, nodes: Self.nodes, demand: [:])
        #expect(s.levels.count == Limits.maxUtilizationLevels)
        #expect(s.levels.last?.andBelow == true && s.levels.last?.priority == Limits.maxUtilizationLevels)
        #expect(s.levels.reduce(0) { $0 + $1.reservedMillis } == 4000, "nothing is lost by summing")
    }

    @Test func theHistoryIsBoundedInTimeAndCount() {
        var h = UtilizationHistory()
        let sample = UtilizationSample(time: 0, nodes: 1, cpuMillis: 1, memoryBytes: 1, levels: [])
        #expect(h.due(at: 0))
        for second in 0..<5000 {
            var s = sample
            s.time = Int64(second) * 1000
            if h.due(at: s.time) { h.append(s) }
            #expect(!h.due(at: s.time + 999))
        }
        #expect(h.samples.count == Limits.maxUtilizationSamples)
        #expect(h.samples.first.map(\.time) == Int64(1_400_000), "the oldest kept is an hour before the newest")
        // A clock that went back drops what came after.
        var back = sample
        back.time = 4_000_000
        h.append(back)
        #expect(h.samples.last?.time == 4_000_000 && h.samples.allSatisfy { $0.time <= 4_000_000 })
    }
}
