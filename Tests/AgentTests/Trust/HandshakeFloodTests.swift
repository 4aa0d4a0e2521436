import Foundation
import Harness
import NIOPosix
import SecureTransport
import Synchronization
import Testing

@testable import Agent

/// Issue 15, item 5: no pre-authentication denial of service. Eight attackers, each from its own
/// address, open connections to a server's peer port and send a TLS ClientHello (the message that
/// makes a server generate a key share and sign, without any certificate), for 10 s, while the
/// cluster runs (MICROSCALE_FLOOD_SECONDS sets another length). No member may become suspect in anyone's view, and Raft keeps its leader and term
/// (a missed heartbeat would have started an election). The benchmark, with figures, is
/// `microscale-bench transport --flood` (docs/transport-flood.md).
@Suite(.serialized) struct HandshakeFloodTests {
    @Test func aHandshakeFloodWithoutACertificateCausesNoSuspicionAndNoElection() async throws {
        let t = ClusterAPITests()
        let (s1, p1) = try t.agent("s1", server: true, join: nil)
        try await s1.start()
        var servers = [s1]
        for n in ["s2", "s3"] {
            let (s, _) = try t.agent(n, server: true, join: p1)
            try await s.start()
            servers.append(s)
        }
        let all = servers
        defer { Task { for a in all { await a.shutdown() } } }
        #expect(
            try await t.eventually(30) {
                for s in all {
                    guard await s.raft?.status()?.leader != nil else { return false }
                    if await s.members().contains(where: { $0.status != .alive }) { return false }
                }
                return true
            })
        // Settled: the same leader and term everywhere.
        let before = try #require(await s1.raft?.status())

        let tls = try TLSContext(
            configuration: TLSConfiguration(
                caFile: "\(ClusterAPITests.dir)/ca/ca.pem", certificateFile: "\(ClusterAPITests.dir)/certs/c1.pem",
                keyFile: "\(ClusterAPITests.dir)/certs/c1-key.pem"))
        let hello = try HandshakeFloodBenchmark.recordedClientHello(tls: tls)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // 10 s in `make test`; the full 60 s is MICROSCALE_FLOOD_SECONDS=60 (closing note of issue 15).
        let seconds = ProcessInfo.processInfo.environment["MICROSCALE_FLOOD_SECONDS"].flatMap { Int($0) }.map { min(max($0, 1), 600) } ?? 10
        let flood = Task {
            await HandshakeFloodBenchmark.flood(
                port: p1, hello: hello, attackers: 8, until: .now + .seconds(seconds),
                stalledPerAttacker: 16, group: group)
        }
        // Every 50 ms during the flood: anyone not alive in anyone's view is a suspicion.
        let seen = Mutex<Set<String>>([])
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            for s in all {
                for m in await s.members() where m.status != .alive {
                    seen.withLock { _ = $0.insert("\(s.configuration.name) saw \(m.name) \(m.status)") }
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let connections = await flood.value
        try await group.shutdownGracefully()

        #expect(connections > 100, "the flood opened only \(connections) connections")
        #expect(seen.withLock { $0 }.isEmpty, "\(seen.withLock { $0 }.sorted())")
        for s in all {
            let after = try #require(await s.raft?.status())
            #expect(after.term == before.term, "\(s.configuration.name): term \(before.term) -> \(after.term)")
            #expect(after.leader == before.leader)
        }
        // Stopped before the test returns: this suite runs alone, and a process that exits while
        // the agents still sign and check with OpenSSL on their loops crashed in OpenSSL's exit
        // handlers once in CI.
        for a in all { await a.shutdown() }
    }
}
