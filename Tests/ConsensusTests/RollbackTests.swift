import Consensus
import Testing

/// `services rollback` (issue 17 item 4): the replicated state keeps the spec a change of
/// containers replaced, and a rollback swaps the two.
@Suite struct RollbackTests {
    static let v1 = ServiceSpec(image: "web:1", cpu: 0.5, memory: 64 << 20, max: 4)

    @Test func aChangeOfContainersKeepsTheSpecItReplacedAndARollbackSwapsThem() {
        var state = ClusterState()
        #expect(state.apply(.applyServices(["web": Self.v1]), index: 1) == nil)
        #expect(state.previousServices["web"] == nil)
        var v2 = Self.v1
        v2.image = "web:2"
        #expect(state.apply(.applyServices(["web": v2]), index: 2) == nil)
        #expect(state.previousServices["web"] == Self.v1)
        #expect(state.apply(.rollbackService("web"), index: 3) == nil)
        #expect(state.services["web"] == Self.v1)
        #expect(state.previousServices["web"] == v2)
        // A second rollback undoes the first, as `docker service rollback`.
        #expect(state.apply(.rollbackService("web"), index: 4) == nil)
        #expect(state.services["web"] == v2)
    }

    @Test func aChangeOfCountsPriorityOrPolicyKeepsThePreviousSpecAsItWas() {
        var state = ClusterState()
        _ = state.apply(.applyServices(["web": Self.v1]), index: 1)
        var v2 = Self.v1
        v2.image = "web:2"
        _ = state.apply(.applyServices(["web": v2]), index: 2)
        var scaled = v2
        scaled.max = 8
        scaled.priority = 2
        scaled.update = UpdatePolicy(maxParallel: 2, order: UpdatePolicy.startFirst)
        #expect(state.apply(.applyServices(["web": scaled]), index: 3) == nil)
        #expect(state.previousServices["web"] == Self.v1)
    }

    @Test func aRollbackWithoutAPreviousSpecOrOfAnUnknownServiceIsRefused() {
        var state = ClusterState()
        _ = state.apply(.applyServices(["web": Self.v1]), index: 1)
        #expect(
            state.apply(.rollbackService("web"), index: 2)
                == .invalidService(
                    name: "web", field: "rollback", reason: "has no previous spec: its containers have not changed since it was declared"))
        #expect(state.apply(.rollbackService("nope"), index: 3) == .unknownService("nope"))
        #expect(state.services["web"] == Self.v1)
    }

    @Test func removingAServiceForgetsItsPreviousSpecAndTheStateSurvivesASnapshot() throws {
        var state = ClusterState()
        _ = state.apply(.applyServices(["web": Self.v1, "batch": Self.v1]), index: 1)
        var v2 = Self.v1
        v2.env = ["A": "1"]
        _ = state.apply(.applyServices(["web": v2, "batch": v2]), index: 2)
        _ = state.apply(.removeService("batch"), index: 3)
        #expect(state.previousServices.keys.sorted() == ["web"])
        let restored = try ClusterState.restore(try state.snapshot())
        #expect(restored == state)
        #expect(try ClusterCommand.decode(try ClusterCommand.rollbackService("web").encoded()) == .rollbackService("web"))
    }

    @Test func anUpdatePolicyOutOfItsLimitsIsRefusedNamingTheField() {
        var spec = Self.v1
        spec.update = UpdatePolicy(maxParallel: 0)
        #expect(spec.validationError(name: "web") == .invalidService(name: "web", field: "update.max_parallel", reason: "must be 1 to 1000"))
        spec.update = UpdatePolicy(order: "random")
        #expect(
            spec.validationError(name: "web")
                == .invalidService(name: "web", field: "update.order", reason: "`random` is not one of start-first, stop-first"))
        spec.update = UpdatePolicy(maxParallel: 3, order: "start-first")
        #expect(spec.validationError(name: "web") == nil)
        #expect(Self.v1.updatePolicy.effectiveMaxParallel == 1 && Self.v1.updatePolicy.effectiveOrder == "stop-first")
    }
}
