import Foundation
import Testing

@testable import Agent

/// What a SIGHUP does with `--config FILE` (docs/operations.md, "Reloading the configuration"):
/// `ConfigurationReload` compares the running configuration with the one just read.
struct ConfigurationReloadTests {
    let base = ["name": "s1", "data-dir": "/tmp/s1", "tls-ca": "ca.pem", "tls-cert": "s1.pem", "tls-key": "s1-key.pem", "server": "true"]

    /// A configuration from a YAML file's text, as the agent reads one.
    func fromFile(_ yaml: String) throws -> AgentConfiguration {
        try AgentSettings.fromYAML(yaml, file: "agent.yaml").resolve()
    }

    func yaml(_ extra: [String: String]) -> String {
        base.merging(extra) { $1 }.sorted { $0.key < $1.key }.map { "\($0.key): \"\($0.value)\"" }.joined(separator: "\n")
    }

    @Test func anUnchangedFileAppliesNothingAndRefusesNothing() throws {
        let c = try fromFile(yaml(["log-level": "warning"]))
        let r = ConfigurationReload(old: c, new: c)
        #expect(r.applied.isEmpty && r.needRestart.isEmpty)
        #expect(r.configuration == c)
    }

    @Test func reloadableKeysTakeTheirNewValues() throws {
        let old = try fromFile(yaml([:]))
        let new = try fromFile(
            yaml([
                "log-level": "debug", "log-format": "json", "reserve-cpu": "1", "reserve-memory": "1GiB",
                "capacity-cpu": "3", "capacity-memory": "6GiB", "dead-node-grace": "20s", "dead-server-cleanup": "off",
                "server-stabilization-time": "1s", "leave-on-terminate": "true", "node-label": "zone=b",
            ]))
        let r = ConfigurationReload(old: old, new: new)
        #expect(
            r.applied == [
                "capacity-cpu", "capacity-memory", "dead-node-grace", "dead-server-cleanup", "leave-on-terminate",
                "log-format", "log-level", "node-label", "reserve-cpu", "reserve-memory", "server-stabilization-time",
            ])
        #expect(r.configuration.nodeLabels == ["zone": "b"])
        #expect(r.needRestart.isEmpty)
        #expect(r.configuration == new)
        #expect(Set(r.applied) == Set(ConfigurationReload.reloadable))
    }

    @Test func keysThatNeedARestartAreNamedAndKeepTheirRunningValues() throws {
        let old = try fromFile(yaml([:]))
        let new = try fromFile(
            yaml([
                "bind": "127.0.0.1:9000", "raft-election-timeout": "500ms", "max-members": "50", "log-level": "error",
            ]))
        let r = ConfigurationReload(old: old, new: new)
        #expect(r.applied == ["log-level"])
        // advertise follows bind when not given: both change, both are named.
        #expect(r.needRestart == ["advertise", "bind", "max-members", "raft-election-timeout"])
        #expect(r.configuration.bind == old.bind)
        #expect(r.configuration.raftElectionTimeout == old.raftElectionTimeout)
        #expect(r.configuration.maxMembers == old.maxMembers)
        #expect(r.configuration.logLevel == "error")
    }

    @Test func everyKeyOfTheFileIsClassified() {
        // api-token-file resolves into the token: one key, api-token, covers both.
        #expect(Set(ConfigurationReload.keys) == AgentSettings.keys.subtracting(["api-token-file"]))
        #expect(ConfigurationReload.keys == ConfigurationReload.keys.sorted())
    }

    /// A bad file never reaches the comparison: resolving it throws, naming the key and its line,
    /// and the agent keeps everything as it was.
    @Test func aBadFileNamesTheKeyAndLine() throws {
        let text = yaml([:]) + "\nreserve-cpu: lots\n"
        #expect(throws: ConfigurationError.self) { try fromFile(text) }
        do { _ = try fromFile(text) } catch {
            #expect("\(error)".contains("agent.yaml line") && "\(error)".contains("reserve-cpu"), "\(error)")
        }
    }
}
