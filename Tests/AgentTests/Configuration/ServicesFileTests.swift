import Consensus
import Foundation
import Testing

@testable import Agent

/// The services file of docs/contracts.md: what it accepts, and that every refusal names the field and line.
@Suite struct ServicesFileTests {
    static let demo = """
        services:
          web:
            image: mini:latest
            command: ["httpd", "-f", "-p", "8080"]
            priority: 1
            cpu: 0.5
            memory: 64MiB
            min: 1
            max: 40
            demand: { source: random, per_container: 10 }
            stop_timeout: 5s
          batch:
            image: mini:latest
            command: ["sleep", "1000000"]
            priority: 2
            cpu: 500m
            memory: 32MiB
            max: 100
            fill: true
        """

    @Test func theDesignDocumentsExampleParsesToItsSpecs() throws {
        let specs = try ServicesFile.parse(Self.demo)
        #expect(specs.keys.sorted() == ["batch", "web"])
        let web = try #require(specs["web"])
        #expect(web.command == ["httpd", "-f", "-p", "8080"])
        #expect(web.cpu == 0.5 && web.memory == 64 << 20 && web.min == 1 && web.max == 40)
        #expect(web.demand == DemandSourceConfig(source: "random", perContainer: 10))
        #expect(web.stopTimeoutMilliseconds == 5000)
        let batch = try #require(specs["batch"])
        #expect(batch.priority == 2 && batch.fill && batch.cpu == 0.5 && batch.min == 0 && batch.stopTimeoutMilliseconds == 10_000)
    }

    @Test func jsonIsAcceptedBecauseItIsYAML() throws {
        let specs = try ServicesFile.parse(#"{"services": {"api": {"image": "a:1", "cpu": 1, "memory": 1048576, "max": 3}}}"#)
        #expect(specs["api"]?.memory == 1 << 20)
    }

    @Test(arguments: [
        ("cpu: 0.5", "cpu: lots", "line 6: services.web.cpu: must be a positive number"),
        ("memory: 64MiB", "memory: 64 parsecs", "line 7: services.web.memory: must be a positive size"),
        ("max: 40", "max: 0", "services.web.max: must be at least min (1)"),
        ("priority: 1", "priority: 0", "line 5: services.web.priority: must be 1 or more"),
        ("source: random", "source: tarot", "line 10: services.web.demand.source: `tarot` is not one of"),
        ("stop_timeout: 5s", "stop_timeout: soon", "line 11: services.web.stop_timeout: must be a duration"),
        // Too long for a 64-bit count of milliseconds: refused, no longer a crash (fuzz-agent-config).
        ("stop_timeout: 5s", "stop_timeout: 99999999999999999999h", "line 11: services.web.stop_timeout: must be a duration"),
        ("min: 1", "mni: 1", "line 8: services.web.mni: unknown field"),
        ("fill: true", "fill: maybe", "services.batch.fill: must be true or false"),
        // The limits of docs/limits.md, each named with the field, its line and the limit.
        ("cpu: 0.5", "cpu: 9223372036854775807m", "line 6: services.web.cpu: must be 0.001 (1m) to 1024 cores"),
        ("memory: 64MiB", "memory: 17TiB", "line 7: services.web.memory: must be 1 byte to 16TiB"),
        ("max: 40", "max: 2000000", "line 9: services.web.max: must be at most 1000000"),
        ("priority: 1", "priority: 1001", "line 5: services.web.priority: must be 1 to 1000"),
        ("per_container: 10 }", "per_container: 0.0000001 }", "line 10: services.web.demand.per_container: must be 1e-6 to 1e12"),
        ("per_container: 10 }", "per_container: 10, step: -1 }", "line 10: services.web.demand.step: must be"),
        ("per_container: 10 }", "per_container: 10, min: 50, max: 5 }", "line 10: services.web.demand.max: must be at least min"),
        ("per_container: 10 }", "per_container: 10, interval: 10ms }", "line 10: services.web.demand.interval: must be a duration from 100ms to 1h"),
    ])
    func aBadFieldIsRefusedNamingItsPathAndLine(good: String, bad: String, expected: String) {
        let text = Self.demo.replacingOccurrences(of: good, with: bad)
        #expect(text != Self.demo, "the fixture must contain \(good)")
        do {
            _ = try ServicesFile.parse(text, source: "svc.yaml")
            Issue.record("accepted a file with \(bad)")
        } catch {
            #expect(error.description.contains(expected), "\(error.description)")
            #expect(error.description.hasPrefix("svc.yaml"), "\(error.description)")
        }
    }

    @Test func stopDelayIsADurationDefaultingToTwoSecondsForAServiceWithPortsAndZeroWithout() throws {
        let base = "services: { a: { image: x, cpu: 1, memory: 1MiB, max: 1"
        let declared = try #require(try ServicesFile.parse(base + ", ports: [8080], stop_delay: 500ms } }")["a"])
        #expect(declared.stopDelayMilliseconds == 500 && declared.effectiveStopDelayMilliseconds == 500)
        let ports = try #require(try ServicesFile.parse(base + ", ports: [8080] } }")["a"])
        #expect(ports.stopDelayMilliseconds == nil && ports.effectiveStopDelayMilliseconds == 2000)
        let none = try #require(try ServicesFile.parse(base + " } }")["a"])
        #expect(none.effectiveStopDelayMilliseconds == 0)
        let off = try #require(try ServicesFile.parse(base + ", ports: [8080], stop_delay: 0 } }")["a"])
        #expect(off.effectiveStopDelayMilliseconds == 0)
        // Not part of what a container is made from: changing it replaces nothing.
        #expect(declared.containerHash == ports.containerHash && declared.makesSameContainers(as: ports))
        for (bad, expected) in [
            ("soon", "services.a.stop_delay: must be a duration"), ("11m", "services.a.stop_delay: must be 0 to 10m"),
            ("99999999999999999999h", "services.a.stop_delay: must be a duration"),
        ] {
            do {
                _ = try ServicesFile.parse(base + ", stop_delay: \(bad) } }", source: "svc.yaml")
                Issue.record("accepted stop_delay: \(bad)")
            } catch {
                #expect(error.description.contains(expected) && error.description.hasPrefix("svc.yaml line 1"), "\(error.description)")
            }
        }
    }

    @Test func aMissingRequiredFieldIsNamed() {
        #expect(throws: ServicesFileError.self) { try ServicesFile.parse("services: { a: { image: x, cpu: 1, memory: 1MiB } }") }
        do { _ = try ServicesFile.parse("services: { a: { image: x, cpu: 1, memory: 1MiB } }") } catch {
            #expect(error.description.contains("services.a.max: required"), "\(error.description)")
        }
    }

    @Test func aFileWithoutServicesOrWithAStrayKeyIsRefused() {
        #expect(throws: ServicesFileError.self) { try ServicesFile.parse("service: {}") }
        #expect(throws: ServicesFileError.self) { try ServicesFile.parse("- just a list") }
        #expect(throws: ServicesFileError.self) { try ServicesFile.parse("services: { \"Bad Name\": { image: x, cpu: 1, memory: 1MiB, max: 1 } }") }
    }
}
