import Bounds
import Foundation
import Logging
import NIOPosix
import Testing
import Wire

@testable import Agent
@testable import SecureTransport

/// What a client agent takes of a deny list sent by the servers (docs/ARCHITECTURE.md, "Rotating
/// and revoking certificates"): only from a server certificate, only a newer one than it holds,
/// only within the bounds the state machine keeps.
@Suite struct DenyListTests {
    func message(index: UInt64, names: [String]) -> Microscale_Control_ControlMessage {
        var d = Microscale_Control_DenyList()
        d.index = index
        d.names = names
        var m = Microscale_Control_ControlMessage()
        m.denyList = d
        return m
    }

    func peer(_ name: String, server: Bool) -> AuthenticatedPeer {
        AuthenticatedPeer(identity: PeerIdentity(name: name, isServer: server), cluster: "microscale", agentVersion: "test", protocolVersion: 2)
    }

    @Test func aClientKeepsTheNewestListFromAnyServerAndNothingFromAClientCertificate() async throws {
        let certs = try ServerCluster(label: "deny-list-unit", names: ["s1"], clients: ["c1"])
        let tls = try TLSContext(
            configuration: TLSConfiguration(
                caFile: "\(certs.dir)/ca/ca.pem", certificateFile: "\(certs.dir)/certs/c1.pem",
                keyFile: "\(certs.dir)/certs/c1-key.pem"))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let transport = PeerTransport(group: group, tls: tls, logger: logger, onFrame: { _, _ in })
        let service = AssignmentService(name: "c1", raft: nil, transport: transport, logger: logger, servers: { [:] }) { _ in }

        await service.receive(message(index: 5, names: ["x"]), from: peer("s1", server: true))
        #expect(await service.denyListIndex == 5)
        #expect(transport.isDenied("x"))
        // A lagging server's older list (here: before x was denied) changes nothing.
        await service.receive(message(index: 3, names: []), from: peer("s2", server: true))
        #expect(await service.denyListIndex == 5 && transport.isDenied("x"))
        // A client certificate cannot lift or add anything, whatever index it claims.
        await service.receive(message(index: 99, names: []), from: peer("c2", server: false))
        #expect(await service.denyListIndex == 5 && transport.isDenied("x"))
        // Beyond the bounds: refused whole.
        let tooMany = (0...Limits.defaultMaxMembers).map { "n\($0)" }
        await service.receive(message(index: 6, names: tooMany), from: peer("s1", server: true))
        await service.receive(message(index: 6, names: [String(repeating: "a", count: 65)]), from: peer("s1", server: true))
        #expect(await service.denyListIndex == 5 && transport.isDenied("x"))
        // A newer list from another server lifts x (an undeny).
        await service.receive(message(index: 7, names: ["y"]), from: peer("s3", server: true))
        #expect(await service.denyListIndex == 7)
        #expect(!transport.isDenied("x") && transport.isDenied("y"))
        await transport.shutdown()
        try await group.shutdownGracefully()
    }
}
