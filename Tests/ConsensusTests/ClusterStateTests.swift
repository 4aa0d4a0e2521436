import Consensus
import Testing

@Suite struct ClusterStateTests {
    static let web = ServiceSpec(
        image: "mini:latest", command: ["httpd", "-f"], priority: 1, cpu: 0.5,
        memory: 64 << 20, min: 1, max: 40,
        demand: DemandSourceConfig(source: "random", perContainer: 10), stopTimeoutMilliseconds: 5000)
    static let batch = ServiceSpec(
        image: "mini:latest", command: ["sleep", "1000000"], priority: 2, cpu: 0.5,
        memory: 32 << 20, max: 100, fill: true)

    @Test func commandsApplyThroughTheirEncoding() throws {
        var s = ClusterState()
        let commands: [ClusterCommand] = [
            .applyServices(["web": Self.web, "batch": Self.batch]),
            .setDemand(service: "web", value: 120),
            .setDrain(node: "h2", drained: true),
            .setPlan(
                Plan(assignments: ["h1": ["web": 12, "batch": 3]]),
                Decision(timestampMilliseconds: 1, summary: "web 0 -> 12", reasons: ["demand 120 / 10 per container"])),
        ]
        for (i, c) in commands.enumerated() {
            #expect(try ClusterCommand.decode(c.encoded()) == c)
            #expect(s.apply(c.encodedForTest, index: UInt64(i + 1)) == nil)
        }
        #expect(s.services.keys.sorted() == ["batch", "web"])
        #expect(s.demand["web"] == 120)
        #expect(s.isDrained("h2"))
        #expect(s.plan.count(service: "web") == 12)
        #expect(s.decisions.map(\.index) == [4])
        #expect(s.appliedIndex == 4)
        s.apply(ClusterCommand.removeService("web").encodedForTest, index: 5)
        #expect(s.services["web"] == nil)
        #expect(s.demand["web"] == nil)
    }

    @Test func anInvalidCommandChangesNothingAndNamesTheField() {
        var s = ClusterState()
        s.apply(ClusterCommand.applyServices(["web": Self.web]).encodedForTest, index: 1)
        let before = s
        var bad = Self.batch
        bad.max = -1
        let r = s.apply(ClusterCommand.applyServices(["batch": bad, "web": Self.web]).encodedForTest, index: 2)
        #expect(r == .invalidService(name: "batch", field: "max", reason: "must be at least min (0)"))
        #expect(s.services == before.services)
        #expect(s.apply(ClusterCommand.setDemand(service: "nope", value: 1).encodedForTest, index: 3) == (.unknownService("nope")))
        #expect(throws: ClusterStateError.self) { try ClusterCommand.setDemand(service: "web", value: .nan).encoded() }
        #expect(
            s.apply(ClusterCommand.setDemand(service: "web", value: -.infinity), index: 4)
                == (.invalidDemand(service: "web", value: -.infinity)))
        if case .malformed? = s.apply([1, 0x7b], index: 5) {} else { Issue.record("garbage accepted") }
        #expect(s.apply([9, 0x7b], index: 6) == (.unsupportedVersion(9)))
        #expect(s.appliedIndex == 6)
    }

    @Test func theDecisionHistoryIsBounded() {
        var s = ClusterState()
        for i in 1...(ClusterState.maxDecisions + 25) {
            s.apply(.setPlan(Plan(), Decision(timestampMilliseconds: Int64(i), summary: "d\(i)", reasons: [])), index: UInt64(i))
        }
        #expect(s.decisions.count == ClusterState.maxDecisions)
        #expect(s.decisions.first?.summary == "d26")
    }

    @Test func aSnapshotRestoresTheSameStateAndIsIdenticalAcrossServers() throws {
        var a = ClusterState(), b = ClusterState()
        let cmds: [ClusterCommand] = [
            .applyServices(["web": Self.web, "batch": Self.batch]), .setDrain(node: "z", drained: true),
            .setDrain(node: "a", drained: true), .setDemand(service: "batch", value: 3),
        ]
        for (i, c) in cmds.enumerated() { a.apply(c, index: UInt64(i + 1)) }
        for (i, c) in cmds.enumerated() { b.apply(c.encodedForTest, index: UInt64(i + 1)) }
        #expect(try a.snapshot() == b.snapshot())
        let restored = try ClusterState.restore(a.snapshot())
        #expect(restored == a)
        #expect(restored.drainedNodes == ["a", "z"])
        #expect(try ClusterState.restore([]) == ClusterState())
    }
}

extension ClusterCommand {
    /// Every command these tests encode holds finite numbers only.
    var encodedForTest: [UInt8] { (try? encoded()) ?? [] }
}
