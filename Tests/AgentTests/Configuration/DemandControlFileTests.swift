import Consensus
import Scaling
import Testing

@testable import Agent

/// The control keys of `demand:` (docs/demand.md, docs/scaling.md "Control"): what the file accepts,
/// what the planner gets, and that every refusal names the field, its line and the limit.
@Suite struct DemandControlFileTests {
    static func file(_ demand: String) -> String {
        """
        services:
          worker:
            image: mini:latest
            cpu: 0.5
            memory: 64MiB
            max: 40
            demand: \(demand)
        """
    }

    @Test func theControlKeysReachTheReplicatedSpecAndThePlanner() throws {
        let specs = try ServicesFile.parse(
            Self.file(
                "{ source: redis, address: 127.0.0.1:6379, per_container: 20, key: jobs, scale_down_at: 0.6, max_change: 3, controller: { kp: 0.5, kd: 10s } }"
            ))
        let demand = try #require(specs["worker"]?.demand)
        #expect(demand.scaleDownAt == 0.6)
        #expect(demand.maxChange == 3)
        #expect(demand.controller == ControllerGains(kp: 0.5, kd: 10))
        #expect(demand.options == ["address": "127.0.0.1:6379", "key": "jobs"], "control keys are not source options")
        let planner = Specs.planner("worker", specs["worker"]!)
        #expect(planner.control == Control(scaleDownAt: 0.6, maxChange: 3, gains: Gains(kp: 0.5, kd: 10), queue: true))
    }

    @Test func aQueueSourceDefaultsToMicroscalingsBandAndOtherSourcesToNone() throws {
        let queue = try ServicesFile.parse(Self.file("{ source: redis, address: 127.0.0.1:6379, per_container: 20, key: jobs }"))
        #expect(Specs.planner("worker", queue["worker"]!).control == Control(scaleDownAt: 0.7, queue: true))
        let walk = try ServicesFile.parse(Self.file("{ source: random, per_container: 20 }"))
        #expect(Specs.planner("worker", walk["worker"]!).control == Control())
    }

    @Test func aSpecWithoutControlKeysEncodesAsBefore() throws {
        // Optional fields are left out when unset, so entries written before they existed keep their bytes.
        let old = ClusterCommand.applyServices([
            "w": ServiceSpec(
                image: "i", cpu: 1, memory: 1, max: 1,
                demand: DemandSourceConfig(source: "static", perContainer: 2))
        ])
        let text = String(decoding: try old.encoded().dropFirst(), as: UTF8.self)
        #expect(!text.contains("scaleDownAt") && !text.contains("maxChange") && !text.contains("controller"), "\(text)")
    }

    @Test(arguments: [
        ("scale_down_at: 1.5", "line 7: services.worker.demand.scale_down_at: must be a fraction from 0 to 1"),
        ("scale_down_at: most", "services.worker.demand.scale_down_at: must be a fraction from 0 to 1"),
        ("max_change: 0", "line 7: services.worker.demand.max_change: must be a whole number from 1 to 1000000"),
        ("max_change: 2.5", "services.worker.demand.max_change: must be a whole number"),
        ("controller: { kp: 0 }", "line 7: services.worker.demand.controller.kp: must be greater than 0 and at most 1"),
        ("controller: { kp: 2 }", "services.worker.demand.controller.kp: must be greater than 0 and at most 1"),
        ("controller: { kp: 1, kd: 1h }", "services.worker.demand.controller.kd: must be 0 to 600 seconds"),
        ("controller: { kp: 1, kd: -1 }", "services.worker.demand.controller.kd: must be 0 to 600 seconds"),
        ("controller: { kp: 1, ki: 1 }", "services.worker.demand.controller.ki: unknown field (known: kd, kp)"),
        ("controller: { kd: 1 }", "services.worker.demand.controller.kp: required"),
        ("controller: 0.5", "services.worker.demand.controller: must be a mapping"),
    ])
    func aBadControlKeyIsRefusedNamingItsPathLineAndLimit(key: String, expected: String) {
        do {
            _ = try ServicesFile.parse(Self.file("{ source: static, per_container: 20, \(key) }"), source: "svc.yaml")
            Issue.record("accepted \(key)")
        } catch {
            #expect(error.description.contains(expected), "\(error.description)")
            #expect(error.description.hasPrefix("svc.yaml line"), "\(error.description)")
        }
    }

    @Test func theReplicatedSpecRefusesOutOfRangeControlHoweverItCame() {
        // The API and apply run the same validation as the file.
        let bad = ServiceSpec(
            image: "i", cpu: 1, memory: 1, max: 1,
            demand: DemandSourceConfig(source: "static", controller: ControllerGains(kp: .nan)))
        #expect(
            bad.validationError(name: "w")
                == .invalidService(
                    name: "w", field: "demand.controller.kp",
                    reason: "must be greater than 0 and at most 1"))
    }
}
