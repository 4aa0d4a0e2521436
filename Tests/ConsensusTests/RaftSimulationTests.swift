import Consensus
import SimulationKit
import Testing

/// Whole clusters of real Raft nodes under seeded faults (loss, delay, reordering, duplication,
/// partitions, crashes losing unsynced writes, restarts, slow disks). A failing seed replays
/// with `microscale-sim raft --seeds N`.
@Suite struct RaftSimulationTests {
    static func options(nodes: Int) -> RaftSimulationOptions {
        var o = RaftSimulationOptions()
        o.nodes = nodes
        o.faultDuration = .seconds(3)
        o.settleDuration = .seconds(3)
        o.recoveryBound = .seconds(3)
        return o
    }

    @Test(arguments: 0..<8)
    func threeServerClustersHoldEverySafetyProperty(block: Int) {
        for seed in UInt64(block * 20 + 1)...UInt64(block * 20 + 20) {
            let r = runRaftSimulation(seed: seed, options: Self.options(nodes: 3))
            #expect(r.violations.isEmpty, "seed \(seed) (3 servers): \(r.violations)")
            #expect(r.acknowledged > 0, "seed \(seed): no write acknowledged")
        }
    }

    @Test(arguments: 0..<4)
    func fiveServerClustersHoldEverySafetyProperty(block: Int) {
        for seed in UInt64(1000 + block * 15 + 1)...UInt64(1000 + block * 15 + 15) {
            let r = runRaftSimulation(seed: seed, options: Self.options(nodes: 5))
            #expect(r.violations.isEmpty, "seed \(seed) (5 servers): \(r.violations)")
            #expect(r.acknowledged > 0, "seed \(seed): no write acknowledged")
        }
    }

    @Test func aSeedReplaysExactly() {
        let a = runRaftSimulation(seed: 77, options: Self.options(nodes: 3))
        let b = runRaftSimulation(seed: 77, options: Self.options(nodes: 3))
        #expect(a == b)
        #expect(a.crashes + a.elections > 0)
    }
}
