import NIOCore
import NIOEmbedded
import Testing

@testable import SecureTransport

/// The connection table is keyed by address, and addresses come from gossip: a send that expects a
/// node by name must not reuse a connection whose certificate named another node.
@Suite struct ConnectionTableTests {
    @Test func aConnectionOpenToAnAddressIsReusedOnlyForTheNodeItsCertificateNamed() throws {
        let table = ConnectionTable(maxConnections: 8)
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7480)).wait()
        _ = table.add(key: "10.0.0.5:7480", peer: "node-a", channel: channel)
        let sameNode = try #require(table.channel(forKey: "10.0.0.5:7480", peer: "node-a"))
        #expect(ObjectIdentifier(sameNode) == ObjectIdentifier(channel))
        #expect(table.channel(forKey: "10.0.0.5:7480", peer: "node-b") == nil)
        #expect(table.channel(forKey: "10.0.0.5:7480", peer: nil) != nil)
        _ = try channel.finish()
    }
}
