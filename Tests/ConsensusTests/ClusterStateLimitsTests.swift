import Bounds
import Consensus
import Foundation
import Testing

/// The limits of docs/limits.md, as the replicated state machine applies them: a committed entry
/// whose values are out of range is refused alike on every server, recorded, and never stops one.
@Suite struct ClusterStateLimitsTests {
    static let web = ClusterStateTests.web

    func state() -> ClusterState {
        var s = ClusterState()
        s.apply(.applyServices(["web": Self.web]), index: 1)
        return s
    }

    @Test func aDemandAboveTheLimitIsRefusedOnApplyAndRecordedAsARefusedDecision() {
        var s = state()
        let r = s.apply(ClusterCommand.setDemand(service: "web", value: 1e30).encodedForTest, index: 2)
        #expect(r == .invalidDemand(service: "web", value: 1e30))
        #expect(s.demand["web"] == nil)
        #expect(s.decisions.last?.refused == true)
        #expect(s.decisions.last?.index == 2)
        #expect(s.appliedIndex == 2)
        #expect(s.apply(.setDemand(service: "web", value: Limits.maxDemand), index: 3) == nil)
        #expect(s.demand["web"] == Limits.maxDemand)
    }

    @Test func theProposerSeesTheSameRefusalBeforeProposing() {
        #expect(ClusterCommand.setDemand(service: "web", value: 1e30).validationError() == .invalidDemand(service: "web", value: 1e30))
        #expect(ClusterCommand.setDemand(service: "web", value: -0.0).validationError() == nil)
        #expect(ClusterCommand.setDemand(service: "web", value: .nan).validationError() != nil)
        #expect(ClusterCommand.setDemand(service: "web", value: .infinity).validationError() != nil)
        #expect(ClusterCommand.setDrain(node: String(repeating: "n", count: 65), drained: true).validationError() != nil)
    }

    static let outOfLimits: [(String, ServiceSpec)] = {
        func changed(_ change: (inout ServiceSpec) -> Void) -> ServiceSpec {
            var spec = web
            change(&spec)
            return spec
        }
        return [
            ("cpu", changed { $0.cpu = 9_223_372_036_854_775.807 }),
            ("cpu", changed { $0.cpu = 1025 }),
            ("cpu", changed { $0.cpu = .nan }),
            ("cpu", changed { $0.cpu = 0.0001 }),
            ("memory", changed { $0.memory = UInt64.max }),
            ("max", changed { $0.max = Int.max }),
            ("priority", changed { $0.priority = Int.max }),
            ("stop_timeout", changed { $0.stopTimeoutMilliseconds = Int64.max }),
            ("command", changed { $0.command = Array(repeating: "x", count: 257) }),
            ("demand.per_container", changed { $0.demand = DemandSourceConfig(source: "static", perContainer: 1e-300) }),
            ("demand.step", changed { $0.demand = DemandSourceConfig(source: "random", options: ["step": "-1"]) }),
            ("demand.step", changed { $0.demand = DemandSourceConfig(source: "random", options: ["step": "0"]) }),
            ("demand.max", changed { $0.demand = DemandSourceConfig(source: "random", options: ["min": "10", "max": "1"]) }),
            ("demand.max", changed { $0.demand = DemandSourceConfig(source: "random", options: ["max": "1e300"]) }),
            ("demand.interval", changed { $0.demand = DemandSourceConfig(source: "random", options: ["interval": "10ms"]) }),
        ]
    }()

    @Test(arguments: outOfLimits)
    func aServiceOutsideTheLimitsIsRefusedNamingTheField(field: String, spec: ServiceSpec) {
        guard case .invalidService(let name, let f, let reason)? = spec.validationError(name: "web") else {
            Issue.record("accepted: \(field)")
            return
        }
        #expect(name == "web")
        #expect(f == field)
        #expect(!reason.isEmpty)
        var s = state()
        let before = s.services
        #expect(s.apply(.applyServices(["web": spec]), index: 2) != nil)
        #expect(s.services == before)
    }

    @Test func aPlanWithImpossibleCountsIsRefused() {
        var s = state()
        let plan = Plan(assignments: ["h1": ["web": Int.max]])
        let r = s.apply(.setPlan(plan, Decision(timestampMilliseconds: 1, summary: "x", reasons: [])), index: 2)
        #expect(r != nil)
        #expect(s.plan == Plan())
        #expect(s.planIndex == 0)
    }

    @Test func aSnapshotWithValuesAnOlderVersionAcceptedLeavesThemOutAlikeOnEveryServer() throws {
        // What an older version could have written: a spec of 9.2e15 cores and a demand of 1e30.
        var bad = Self.web
        bad.cpu = 9.2e15
        let json = """
            {"appliedIndex":7,"decisions":[{"index":5,"reasons":[],"summary":"p","timestampMilliseconds":3}],\
            "demand":{"api":1e30,"web":4},"drainedNodes":[],"plan":{"assignments":{"h1":{"web":2}}},\
            "services":{"api":\(String(decoding: try JSONEncoder().encode(bad), as: UTF8.self)),\
            "web":\(String(decoding: try JSONEncoder().encode(Self.web), as: UTF8.self))}}
            """
        let restored = try ClusterState.restore([1] + Array(json.utf8))
        #expect(restored.services.keys.sorted() == ["web"])
        #expect(restored.demand == ["web": 4])
        // Written before planIndex existed: it was the last decision's index.
        #expect(restored.planIndex == 5)
        #expect(try ClusterState.restore(restored.snapshot()) == restored)
    }

    @Test func aSnapshotThatDoesNotDecodeIsAnErrorNotAnEmptyState() {
        #expect(throws: ClusterStateError.self) { try ClusterState.restore([1] + Array("{\"services\":".utf8)) }
    }
}
