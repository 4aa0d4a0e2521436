import Bounds
import Consensus
import Scaling
import Testing

@testable import Agent

/// Placement (issue 17 item 6): `--node-label` (flags and the config file) and the services file's
/// `constraints:` and `spread:`, with errors that name the service, the field and the line.
@Suite struct PlacementKeysTests {
    let minimal = ["name": "node-a", "data-dir": "/tmp/a", "tls-ca": "ca.pem", "tls-cert": "a.pem", "tls-key": "a-key.pem"]

    func settings(labels: [String]) -> AgentSettings {
        var s = AgentSettings()
        for (k, v) in minimal { s.set(k, v, origin: "--\(k)") }
        for l in labels { s.append("node-label", l, origin: "--node-label") }
        return s
    }

    @Test func nodeLabelsComeFromRepeatedFlagsAndFromTheConfigFileAsAListOrAMapping() throws {
        #expect(try settings(labels: ["zone=a", "disk=ssd"]).resolve().nodeLabels == ["zone": "a", "disk": "ssd"])
        #expect(try settings(labels: []).resolve().nodeLabels == [:])
        for yaml in ["node-label: [zone=b, disk=hdd]", "node_label:\n  zone: b\n  disk: hdd"] {
            let file = try AgentSettings.fromYAML(yaml, file: "agent.yaml")
            let c = try file.overridden(by: settings(labels: [])).resolve()
            #expect(c.nodeLabels == ["zone": "b", "disk": "hdd"], "\(yaml)")
            // Flags win over the file, as for every key.
            #expect(try file.overridden(by: settings(labels: ["zone=c"])).resolve().nodeLabels == ["zone": "c"])
        }
    }

    @Test func aBadNodeLabelNamesTheFlagAndWhatIsWrong() {
        #expect(throws: ConfigurationError("--node-label: node-label \"zone\" is not key=value")) {
            try settings(labels: ["zone"]).resolve()
        }
        #expect(throws: ConfigurationError("--node-label: node-label label zone is given twice")) {
            try settings(labels: ["zone=a", "zone=b"]).resolve()
        }
        #expect(throws: ConfigurationError.self) { try settings(labels: ["-zone=a"]).resolve() }
        #expect(throws: ConfigurationError.self) { try settings(labels: ["zone=a b"]).resolve() }
        #expect(throws: ConfigurationError.self) { try settings(labels: ["zone=" + String(repeating: "a", count: 64)]).resolve() }
        #expect(throws: ConfigurationError("--node-label: node-label \(Limits.maxNodeLabels + 1) labels; at most \(Limits.maxNodeLabels)")) {
            try settings(labels: (0...Limits.maxNodeLabels).map { "k\($0)=v" }).resolve()
        }
    }

    static func file(_ extra: String) -> String {
        """
        services:
          web:
            image: busybox
            cpu: 0.5
            memory: 64MiB
            max: 4
        \(extra.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        """
    }

    @Test func constraintsAndSpreadParseAndReachThePlanner() throws {
        let specs = try ServicesFile.parse(
            Self.file(
                """
                constraints: ["zone == a", "disk != hdd"]
                spread: zone
                """))
        let web = try #require(specs["web"])
        #expect(web.constraints == ["zone == a", "disk != hdd"])
        #expect(web.spread == "zone")
        let planned = Specs.planner("web", web)
        #expect(
            planned.constraints == [
                PlacementConstraint(key: "zone", op: .equal, value: "a"),
                PlacementConstraint(key: "disk", op: .notEqual, value: "hdd"),
            ])
        #expect(planned.spread == "zone")
        // Placement is not what a container is made from: the containers are not rebuilt for it.
        var plain = web
        plain.constraints = nil
        plain.spread = nil
        #expect(plain.containerHash == web.containerHash)
        #expect(web.validationError(name: "web") == nil)
        #expect(try ServicesFile.parse(Self.file("constraints: zone == b"))["web"]?.constraints == ["zone == b"])
    }

    @Test(arguments: [
        ("constraints: [\"zone = a\"]", "services file line 7: services.web.constraints[0]: \"zone = a\" is not `key == value` or `key != value`"),
        ("constraints: [\"zone == a\", \"== b\"]", "services file line 7: services.web.constraints[1]: \"== b\": a label key must not be empty"),
        ("constraints: {zone: a}", "services file line 7: services.web.constraints: must be a list of strings like \"zone == a\" or \"disk != hdd\""),
        (
            "spread: \"zo ne\"",
            "services file line 7: services.web.spread: \"zo ne\": a label key is letters, digits, '-', '_', '.' or '/', starting and ending with a letter or digit"
        ),
        ("spread: [zone]", "services file line 7: services.web.spread: must be a label key, like zone"),
    ])
    func aBadConstraintOrSpreadNamesTheServiceTheFieldAndTheLine(_ extra: String, _ message: String) {
        #expect(throws: ServicesFileError(message)) { try ServicesFile.parse(Self.file(extra)) }
    }

    @Test func tooManyConstraintsAreRefusedAndTheReplicatedSpecChecksThemAgain() {
        let many = (0...Limits.maxConstraints).map { "\"k\($0) == v\"" }.joined(separator: ", ")
        #expect(throws: ServicesFileError.self) { try ServicesFile.parse(Self.file("constraints: [\(many)]")) }
        var spec = ServiceSpec(image: "busybox", cpu: 0.1, memory: 1 << 20, max: 1)
        spec.constraints = ["zone ~ a"]
        #expect(spec.validationError(name: "web") != nil)
        spec.constraints = ["zone == a"]
        spec.spread = ""
        #expect(spec.validationError(name: "web") != nil)
    }
}
