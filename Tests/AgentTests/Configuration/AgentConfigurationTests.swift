import Bounds
import DockerEngine
import Membership
import Testing

@testable import Agent

@Suite struct AgentConfigurationTests {
    func flags(_ pairs: [String: String], join: [String] = []) -> AgentSettings {
        var s = AgentSettings()
        for (k, v) in pairs { s.set(k, v, origin: "--\(k)") }
        for j in join { s.append("join", j, origin: "--join") }
        return s
    }

    let minimal = ["name": "node-a", "data-dir": "/tmp/a", "tls-ca": "ca.pem", "tls-cert": "a.pem", "tls-key": "a-key.pem"]

    @Test func defaultsMatchTheDesign() throws {
        let c = try flags(minimal).resolve()
        #expect(c.bind == .init(host: "0.0.0.0", port: 7480))
        #expect(c.http == .init(host: "127.0.0.1", port: 7481))
        #expect(c.advertise == .init(host: "127.0.0.1", port: 7480))
        #expect(c.dockerSocket == "/var/run/docker.sock")
        #expect(!c.server && c.bootstrapExpect == 0 && c.join.isEmpty)
    }

    @Test func aMissingRequiredFlagIsNamed() {
        var m = minimal
        m["tls-key"] = nil
        #expect(throws: ConfigurationError("--tls-key is required (or \"tls-key\" in the --config file)")) { try flags(m).resolve() }
    }

    @Test func aBadAddressNamesTheFlagAndTheValue() {
        var m = minimal
        m["bind"] = "localhost"
        #expect(throws: ConfigurationError("--bind: bind \"localhost\" is not ADDRESS:PORT")) { try flags(m).resolve() }
    }

    @Test func capacityTakesHumanUnits() throws {
        var m = minimal
        m["capacity-cpu"] = "2.5"
        m["capacity-memory"] = "8GiB"
        let c = try flags(m).resolve()
        #expect(c.capacityCPUMillis == 2500)
        #expect(c.capacityMemoryBytes == 8 << 30)
    }

    /// docs/limits.md: capacity and the member cap are bounded where they enter, naming the flag.
    @Test func capacityAndTheMemberCapAreBoundedNamingTheFlag() throws {
        var m = minimal
        #expect(try flags(m).resolve().maxMembers == 10_000)
        m["max-members"] = "500"
        #expect(try flags(m).resolve().maxMembers == 500)
        for (key, value, message) in [
            ("max-members", "1", "--max-members: max-members \"1\" must be a number from 2 to 100000"),
            ("max-members", "9223372036854775808", "--max-members: max-members \"9223372036854775808\" must be a number from 2 to 100000"),
            ("capacity-cpu", "4097", "--capacity-cpu: capacity-cpu \"4097\" is not a number of cores from 0.001 to 4096"),
            (
                "capacity-cpu", "9223372036854775807m",
                "--capacity-cpu: capacity-cpu \"9223372036854775807m\" is not a number of cores from 0.001 to 4096"
            ),
            ("capacity-memory", "65TiB", "--capacity-memory: capacity-memory \"65TiB\" is not a size from 1 byte to 64TiB, like 8GiB"),
        ] {
            var bad = minimal
            bad[key] = value
            #expect(throws: ConfigurationError(message)) { try flags(bad).resolve() }
        }
    }

    /// docs/scheduling.md, "Warm standbys": a budget of memory, bounded, named when bad; the node
    /// advertises its capacity less it.
    @Test func theWarmStandbyMemoryIsASizeTakenOutOfTheAdvertisedCapacity() throws {
        var m = minimal
        #expect(try flags(m).resolve().warmStandbyMemoryBytes == 0)
        m["warm-standby-memory"] = "64MiB"
        m["capacity-memory"] = "2GiB"
        m["capacity-cpu"] = "2"
        let c = try flags(m).resolve()
        #expect(c.warmStandbyMemoryBytes == 64 << 20)
        // Given capacity or detected, the budget is kept out; the CPU is not (a frozen container uses none).
        #expect(AgentRuntime.resources(NodeCapacity(cpus: 0, memoryBytes: 0), c) == .init(cpuMillicores: 2000, memoryBytes: (2 << 30) - (64 << 20)))
        var detected = c
        detected.capacityMemoryBytes = nil
        #expect(AgentRuntime.resources(NodeCapacity(cpus: 2, memoryBytes: 1 << 30), detected).memoryBytes == (1 << 30) - (64 << 20))
        detected.warmStandbyMemoryBytes = 2 << 30
        #expect(AgentRuntime.resources(NodeCapacity(cpus: 2, memoryBytes: 1 << 30), detected).memoryBytes == 0)
        for value in ["65TiB", "-1MiB", "lots"] {
            var bad = minimal
            bad["warm-standby-memory"] = value
            #expect(throws: ConfigurationError("--warm-standby-memory: warm-standby-memory \"\(value)\" is not a size from 0 to 64TiB, like 64MiB")) {
                try flags(bad).resolve()
            }
        }
    }

    @Test func bootstrapExpectNeedsServer() {
        var m = minimal
        m["bootstrap-expect"] = "3"
        #expect(throws: ConfigurationError("--bootstrap-expect: bootstrap-expect needs --server")) { try flags(m).resolve() }
    }

    @Test func anHTTPAPIBeyondLoopbackNeedsAToken() throws {
        var m = minimal
        m["http"] = "0.0.0.0:7481"
        #expect(throws: ConfigurationError.self) { try flags(m).resolve() }
        m["api-token"] = "s3cret"
        #expect(try flags(m).resolve().apiToken == "s3cret")
    }

    @Test func theConfigFileUsesTheFlagNamesAndFlagsWin() throws {
        let yaml = """
            name: node-b
            bind: 127.0.0.2:7480
            server: true
            bootstrap-expect: 3
            join: [127.0.0.1:7480, 127.0.0.3:7480]
            data-dir: /var/lib/microscale
            tls-ca: ca.pem
            tls-cert: b.pem
            tls-key: b-key.pem
            capacity_memory: 2GiB
            """
        let file = try AgentSettings.fromYAML(yaml, file: "agent.yaml")
        let c = try file.overridden(by: flags(["name": "node-z"])).resolve()
        #expect(c.name == "node-z")
        #expect(c.bind == .init(host: "127.0.0.2", port: 7480))
        #expect(c.advertise == .init(host: "127.0.0.2", port: 7480))
        #expect(c.server && c.bootstrapExpect == 3)
        #expect(c.join.map(\.description) == ["127.0.0.1:7480", "127.0.0.3:7480"])
        #expect(c.capacityMemoryBytes == 2 << 30)
    }

    @Test func aBadValueInTheFileNamesTheFileAndLine() throws {
        let yaml = "name: node-b\ndata-dir: /d\nbind: nowhere\n"
        let file = try AgentSettings.fromYAML(yaml, file: "agent.yaml")
        #expect(throws: ConfigurationError("agent.yaml line 3: bind \"nowhere\" is not ADDRESS:PORT")) { try file.resolve() }
    }

    @Test func anUnknownKeyInTheFileIsRefused() {
        #expect {
            try AgentSettings.fromYAML("name: a\nbindd: 1.2.3.4:5\n", file: "agent.yaml")
        } throws: { error in
            "\(error)".hasPrefix("agent.yaml line 2: unknown key \"bindd\"")
        }
    }

    @Test func unitsParseAsDocumented() {
        #expect(Units.bytes("64MiB") == 64 << 20)
        #expect(Units.bytes("512m") == 512 << 20)
        #expect(Units.bytes("1.5GiB") == 3 << 29)
        #expect(Units.bytes("1GB") == 1_000_000_000)
        #expect(Units.bytes("12") == 12)
        #expect(Units.bytes("lots") == nil)
        #expect(Units.millicores("0.5") == 500)
        #expect(Units.millicores("250m") == 250)
        #expect(Units.duration("5s") == .seconds(5))
        #expect(Units.duration("250ms") == .milliseconds(250))
        #expect(Units.duration("soon") == nil)
    }

    /// fuzzing/corpus/agent-config/crash-duration-overflow: this file crashed the agent.
    @Test func aRaftTimeoutTooLongForMillisecondsIsRefusedNamingTheLine() throws {
        let file = "name: n\ndata-dir: d\ntls-ca: a\ntls-cert: b\ntls-key: c\nraft-election-timeout: 99999999999999999999h\n"
        let settings = try AgentSettings.fromYAML(file, file: "agent.yaml")
        #expect(
            throws: ConfigurationError(
                "agent.yaml line 6: raft-election-timeout \"99999999999999999999h\" is not a duration from 1ms to 60s (like 300ms)")
        ) {
            try settings.resolve()
        }
    }

    @Test func anAddressIsHostColonPortWithIPv6InBracketsAndSpacesAroundIgnored() {
        typealias HP = AgentConfiguration.HostPort
        #expect(HP("10.0.0.5:7480") == HP(host: "10.0.0.5", port: 7480))
        #expect(HP(" \t10.0.0.5:7480 \n") == HP(host: "10.0.0.5", port: 7480))
        #expect(HP("[::1]:7480") == HP(host: "::1", port: 7480))
        #expect(HP("node-a:7480") == HP(host: "node-a", port: 7480))
        #expect(HP(":7480") == HP(host: "0.0.0.0", port: 7480))
        #expect(HP("::1:7480") == nil, "IPv6 needs brackets")
        #expect(HP("10.0.0.5") == nil)
        #expect(HP("10.0.0.5:65536") == nil)
        #expect(HP("10.0.0.5: 80") == nil)
        #expect(HP("   ") == nil)
    }
}
