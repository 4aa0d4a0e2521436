import Consensus
import Foundation
import Logging
import SecureTransport
import Testing

@testable import Agent

/// Issue 19 item 5: certificates reloaded on SIGHUP, and the replicated deny list
/// (docs/ARCHITECTURE.md, "Trust").
@Suite(.serialized) struct ReloadAndDenyTests {
    /// Runs `command` with sh; its standard output.
    func sh(_ command: String) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var hasOpenSSL: Bool { (try? sh("command -v openssl")).map { !$0.isEmpty } ?? false }

    /// The agent as an operator runs it (a process of the built executable): the signal is
    /// delivered as it would be in production, not to a test runner's threads.
    @Test func sighupAfterReplacingTheCertificateMakesNewConnectionsPresentTheNewSerial() async throws {
        guard hasOpenSSL else {
            // scripts/setup --test installs it; a CI machine without it is a broken setup.
            #expect(ProcessInfo.processInfo.environment["CI"] == nil, "the openssl program is needed (scripts/setup --test)")
            return
        }
        #expect(FileManager.default.isExecutableFile(atPath: RaftCrashTests.executable), "build the microscale executable first")
        let cluster = try ServerCluster(label: "tls-reload", names: ["s1", "probe"])
        let d = cluster.dir
        let port = AgentRuntimeTests.freePort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: RaftCrashTests.executable)
        p.arguments = [
            "agent", "--name", "s1", "--server", "--bootstrap-expect", "1", "--bind", "127.0.0.1:\(port)",
            "--http", "127.0.0.1:\(AgentRuntimeTests.freePort())", "--data-dir", "\(d)/data-s1",
            "--tls-ca", "\(d)/ca/ca.pem", "--tls-cert", "\(d)/certs/s1.pem", "--tls-key", "\(d)/certs/s1-key.pem",
            "--log-level", "warning",
        ]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { kill(p.processIdentifier, SIGKILL) }
        // What a new connection is shown, as a TLS client with a certificate of the cluster sees it.
        let presented =
            "openssl s_client -connect 127.0.0.1:\(port) -cert \(d)/certs/probe.pem -key \(d)/certs/probe-key.pem "
            + "-CAfile \(d)/ca/ca.pem </dev/null 2>/dev/null | openssl x509 -noout -serial"
        let original = try sh("openssl x509 -noout -serial -in \(d)/certs/s1.pem")
        #expect(try await pollUntil(10) { (try? sh(presented)) == original })

        // The operator replaces the files (a renewed certificate for the same node), then SIGHUP.
        _ = try CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: "s1", server: true, in: "\(d)/certs", force: true)
        let renewed = try sh("openssl x509 -noout -serial -in \(d)/certs/s1.pem")
        #expect(renewed != original && renewed.hasPrefix("serial="))
        kill(p.processIdentifier, SIGHUP)
        let reloaded = try await pollUntil(5) { (try? sh(presented)) == renewed }
        let shown = (try? sh(presented)) ?? "?"
        #expect(reloaded, "presented \(shown), the file has \(renewed)")
        #expect(p.isRunning, "SIGHUP must not end the agent")
    }

    /// `--config FILE` read again on SIGHUP, end to end (the agent process, the CLI): a reloadable
    /// key takes effect, a key that needs a restart is named in one line and keeps its value, and
    /// a bad file changes nothing and says which key and why.
    @Test func sighupReReadsTheConfigFileAppliesReloadableKeysAndNamesTheRest() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: RaftCrashTests.executable), "build the microscale executable first")
        let cluster = try ServerCluster(label: "config-reload", names: ["s1"])
        let d = cluster.dir
        let port = AgentRuntimeTests.freePort(), http = AgentRuntimeTests.freePort()
        func write(_ extra: String, bind: Int? = nil) throws {
            let text = """
                name: s1
                server: true
                bootstrap-expect: 1
                bind: 127.0.0.1:\(bind ?? port)
                http: 127.0.0.1:\(http)
                data-dir: \(d)/data-s1
                tls-ca: \(d)/ca/ca.pem
                tls-cert: \(d)/certs/s1.pem
                tls-key: \(d)/certs/s1-key.pem
                capacity-memory: 4GiB
                log-level: info

                """ + extra
            try text.write(toFile: "\(d)/agent.yaml", atomically: true, encoding: .utf8)
        }
        try write("capacity-cpu: 2\n")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: RaftCrashTests.executable)
        p.arguments = ["agent", "--config", "\(d)/agent.yaml"]
        p.standardOutput = FileHandle.nullDevice
        let log = "\(d)/agent.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try p.run()
        defer { kill(p.processIdentifier, SIGKILL) }
        func cpu() -> Double? {
            guard let out = try? sh("\(RaftCrashTests.executable) members --json --http-addr 127.0.0.1:\(http)"),
                let all = try? JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]],
                let me = all.first(where: { $0["name"] as? String == "s1" }),
                let capacity = me["capacity"] as? [String: Any]
            else { return nil }
            return capacity["cpu"] as? Double
        }
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        #expect(try await pollUntil(20) { cpu() == 2 }, "capacity before the reload: \(String(describing: cpu()))")

        // A reloadable key and one that needs a restart change together.
        try write("capacity-cpu: 3\n", bind: AgentRuntimeTests.freePort())
        kill(p.processIdentifier, SIGHUP)
        #expect(try await pollUntil(10) { cpu() == 3 }, "capacity after the reload: \(String(describing: cpu()))")
        #expect(try await pollUntil(5) { logText().contains("need a restart") })
        let refusedLine = logText().split(separator: "\n").first { $0.contains("need a restart") }.map(String.init) ?? ""
        #expect(refusedLine.contains("bind") && !refusedLine.contains("capacity-cpu"), "\(refusedLine)")

        // A bad file: nothing changes, and the log names the key.
        try write("capacity-cpu: 5\nreserve-cpu: lots\n")
        kill(p.processIdentifier, SIGHUP)
        #expect(try await pollUntil(5) { logText().contains("configuration not reloaded") })
        let badLine = logText().split(separator: "\n").first { $0.contains("configuration not reloaded") }.map(String.init) ?? ""
        #expect(badLine.contains("reserve-cpu"), "\(badLine)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(cpu() == 3)
        #expect(p.isRunning)
    }

    @Test func aReloadKeepsTheCertificateInUseWhenTheNewOneNamesAnotherNode() async throws {
        var cluster = try ServerCluster(label: "tls-reload-refused", names: ["s1", "s9"])
        let s1 = try await cluster.start("s1", bootstrapExpect: 1)
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        let d = cluster.dir
        let before = s1.transport.tlsContext.serial
        #expect(!before.isEmpty)
        #expect(await s1.metricsText().contains("microscale_tls_certificate_expiry_seconds"))
        for suffix in [".pem", "-key.pem"] {
            try FileManager.default.removeItem(atPath: "\(d)/certs/s1\(suffix)")
            try FileManager.default.copyItem(atPath: "\(d)/certs/s9\(suffix)", toPath: "\(d)/certs/s1\(suffix)")
        }
        #expect(throws: ConfigurationError.self) { try s1.reloadTLS() }
        #expect(s1.transport.tlsContext.serial == before)
        // A renewed certificate for the same node is taken.
        _ = try CertificateIssuer.createNodeCertificate(caDir: "\(d)/ca", node: "s1", server: true, in: "\(d)/certs", force: true)
        try s1.reloadTLS()
        #expect(s1.transport.tlsContext.serial != before)
    }

    @Test func aDeniedNodeIsCutOffWithinASecondAndAcceptedAgainWhenUndenied() async throws {
        var cluster = try ServerCluster(label: "deny", names: ["s1", "s2", "s3", "s4"])
        for n in ["s1", "s2", "s3"] { try await cluster.start(n) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        // s4 joins (a server, so every agent here enforces the list it applies).
        let s4 = try await cluster.start("s4", bootstrapExpect: nil)
        let others = ["s1", "s2", "s3"].map { cluster.agents[$0]! }
        #expect(
            try await pollUntil(10) {
                var all = true
                for a in others where !(await a.transport.connectedPeers()).contains("s4") { all = false }
                return all
            })
        #expect(try await pollUntil(10) { await cluster.agreedLeader() != nil })
        let leader = try #require(await cluster.agreedLeader())
        let via = try #require(others.first { $0.configuration.name != leader })
        let denied = try await callRetryingUnavailable(via, "POST", "/v1/nodes/s4/deny", for: 10)
        #expect(denied.status == 200, "\(String(decoding: denied.body, as: UTF8.self))")

        // Within a second every other agent has dropped its connections with s4, and refuses new ones.
        let cut = try await pollUntil(1) {
            var none = true
            for a in others where (await a.transport.connectedPeers()).contains("s4") { none = false }
            return none
        }
        #expect(cut)
        #expect(await via.raft!.state.deniedNodes == ["s4"])
        // s4 keeps dialing (gossip, Raft); none of it gets through for a while.
        for _ in 0..<10 {
            for a in others {
                let peers = await a.transport.connectedPeers()
                #expect(!peers.contains("s4"))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let refusedRead = await s4.cluster(method: "GET", path: "/v1/services", body: [])
        #expect(refusedRead.status != 200)

        #expect(try await callRetryingUnavailable(via, "POST", "/v1/nodes/s4/undeny", for: 10).status == 200)
        #expect(try await pollUntil(10) { (await others[0].transport.connectedPeers()).contains("s4") })
    }

    /// Client agents run no Raft: they learn the deny list from the servers (a changed list is
    /// sent to every member a server knows; a subscriber with an older one is sent it), and cut the
    /// node off as the servers do, a client and a server alike.
    @Test func everyAgentServersAndClientsCutADeniedNodeOffWithinASecond() async throws {
        var cluster = try ServerCluster(label: "deny-clients", names: ["s1", "s2", "s3"], clients: ["c1", "c2"])
        for n in ["s1", "s2", "s3"] { try await cluster.start(n) }
        defer { Task { [cluster] in await cluster.shutdownAll() } }
        #expect(try await pollUntil(20) { await cluster.agreedLeader() != nil })
        // (agreedLeader asks every agent; clients run no Raft: the leader is taken before they start.)
        let leader = try #require(await cluster.agreedLeader())
        try await cluster.startClient("c1")
        try await cluster.startClient("c2")
        let all = ["s1", "s2", "s3", "c1", "c2"]
        /// Whether every agent but `node` has (or has not) a connection with `node`.
        func everyone(but node: String, connected: Bool) async -> Bool {
            for n in all where n != node {
                guard let a = cluster.agents[n] else { continue }
                if (await a.transport.connectedPeers()).contains(node) != connected { return false }
            }
            return true
        }
        // Gossip connects every pair within a few probe rounds (5 members, one probe each 200 ms).
        #expect(try await pollUntil(20) { await everyone(but: "c2", connected: true) }, "not every agent talks to c2 yet")

        // A client is denied: every server and the other client drop it within a second.
        let c1 = cluster.agents["c1"]!
        #expect(try await callRetryingUnavailable(cluster.agents[leader]!, "POST", "/v1/nodes/c2/deny", for: 10).status == 200)
        #expect(try await pollUntil(1) { await everyone(but: "c2", connected: false) }, "an agent still talks to c2 a second after the deny")
        #expect(await c1.assignments.denyListIndex > 0)
        // c2 keeps probing and dialing; none of it gets through, on clients either.
        for _ in 0..<10 {
            #expect(await everyone(but: "c2", connected: false))
            try await Task.sleep(for: .milliseconds(100))
        }

        // A server that is not the leader is denied (it may be the very server c1 follows):
        // c1 drops it within a second too, having heard from the other servers.
        let follower = try #require(["s1", "s2", "s3"].first { $0 != leader })
        #expect(try await pollUntil(20) { (await c1.transport.connectedPeers()).contains(follower) })
        let before = await c1.assignments.denyListIndex
        #expect(try await callRetryingUnavailable(cluster.agents[leader]!, "POST", "/v1/nodes/\(follower)/deny", for: 10).status == 200)
        #expect(
            try await pollUntil(1) {
                for n in all where n != follower && n != "c2" {
                    if (await cluster.agents[n]!.transport.connectedPeers()).contains(follower) { return false }
                }
                return true
            }, "an agent still talks to \(follower) a second after the deny")
        #expect(await c1.assignments.denyListIndex > before)

        // Undenied, the client is sent the shorter list.
        let afterFollower = await c1.assignments.denyListIndex
        #expect(try await callRetryingUnavailable(cluster.agents[leader]!, "POST", "/v1/nodes/c2/undeny", for: 10).status == 200)
        #expect(try await pollUntil(5) { await c1.assignments.denyListIndex > afterFollower })
    }
}
