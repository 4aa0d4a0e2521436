import ArgumentParser
import Foundation
import SimulationKit

/// `microscale-sim membership`: the SWIM + Lifeguard scenario of issue 3 on the simulated network.
struct MembershipCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "membership",
        abstract: "Join, state spread, crash and freeze detection, bandwidth, for N simulated nodes.")

    @Option(help: "Number of nodes (at least 6).") var nodes = 50
    @Option(help: "Seed; the same seed replays the same run.") var seed: UInt64 = 1
    @Option(help: "Message loss probability, 0...1.") var loss = 0.0
    @Flag(help: "Sign records as the agent does (simulated certificates of the agent's sizes): every certificate path runs.")
    var signedRecords = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard nodes >= 6 else { throw ValidationError("--nodes must be at least 6 (got \(nodes))") }
        guard (0.0..<1.0).contains(loss) else { throw ValidationError("--loss must be in [0, 1) (got \(loss))") }
    }

    func run() throws {
        var o = MembershipBenchmark.Options(nodes: nodes, seed: seed)
        o.loss = loss
        o.signedRecords = signedRecords
        let wall = ContinuousClock.now
        let r = MembershipBenchmark.run(o)
        let elapsed = (ContinuousClock.now - wall).seconds
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            print(String(decoding: try enc.encode(r), as: UTF8.self))
            return
        }
        func s(_ v: Double?) -> String { v.map { String(format: "%.3f s", $0) } ?? "n/a" }
        print("membership: \(r.nodes) nodes, seed \(r.seed), loss \(loss), records \(signedRecords ? "signed" : "unsigned")")
        print(
            "  join convergence (all join one seed) : \(r.joinConvergenceSeconds.map { String(format: "%.3f s", $0) } ?? "n/a (started converged)")")
        print("  bytes sent per node until converged  : \(r.joinBytesPerNode.map { String(format: "%.0f B", $0) } ?? "n/a")")
        print("  record change reaches 99.9% / 100%   : \(s(r.recordSpread999Seconds)) / \(s(r.recordSpreadAllSeconds))")
        print("  crashed member dead at all survivors : \(s(r.crashDetectionSeconds))")
        print("  same, with the connection-reset hint : \(s(r.crashWithResetHintDetectionSeconds))")
        print("  frozen member dead at all survivors  : \(s(r.freezeDetectionSeconds))")
        print("  false positives (dead) / suspicions  : \(r.falsePositives) / \(r.falseSuspicions)")
        print(
            String(
                format: "  at rest, per node (over %.0f s)      : %.1f msg/s, %.0f B/s", r.idleWindowSeconds, r.messagesPerNodePerSecond,
                r.bytesPerNodePerSecond))
        print(String(format: "  simulated %.1f s in %.1f s wall", r.simulatedSeconds, elapsed))
    }
}
