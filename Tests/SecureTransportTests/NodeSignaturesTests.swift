import Foundation
import Testing

@testable import SecureTransport

/// Signatures by node certificates (docs/ARCHITECTURE.md, "Records are signed"): a record is
/// taken second-hand only when a certificate of the cluster's CA, naming its node, signed it.
@Suite struct NodeSignaturesTests {
    let message = Array("microscale-record-v1 node-b 127.0.0.1:7480".utf8)

    /// The DER inside a PEM file: for certificates no TLS context will load (expired ones).
    static func der(pem path: String) throws -> [UInt8] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return [UInt8](try #require(Data(base64Encoded: body)))
    }

    @Test func aSignatureVerifiesUnderItsNodesCertificateAtAnyOtherNode() throws {
        let b = try NodeSignatures(context: Fixtures.context("node-b"))
        let c = try NodeSignatures(context: Fixtures.context("node-c"))
        let signature = b.sign(message)
        #expect(!signature.isEmpty)
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: message) == nil)
        // Checked again from the cache: same verdict.
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: message) == nil)
    }

    @Test func aSignatureFoundGoodOnceLetsNothingElseThroughAfterIt() throws {
        let b = try NodeSignatures(context: Fixtures.context("node-b"))
        let c = try NodeSignatures(context: Fixtures.context("node-c"))
        let signature = b.sign(message)
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: message) == nil)
        // The remembered success is of these exact bytes: any change is checked, and refused.
        var changed = message
        changed[0] ^= 1
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: changed) != nil)
        var flipped = signature
        flipped[flipped.count - 1] ^= 1
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: flipped, message: message) != nil)
        #expect(c.refusal(name: "node-a", certificate: b.certificate, signature: signature, message: message) != nil)
        #expect(c.refusal(name: "node-b", certificate: c.certificate, signature: signature, message: message) != nil)
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: message) == nil)
    }

    @Test func changedBytesAnotherNodesNameOrAMissingProofAreRefused() throws {
        let b = try NodeSignatures(context: Fixtures.context("node-b"))
        let c = try NodeSignatures(context: Fixtures.context("node-c"))
        let signature = b.sign(message)
        var changed = message
        changed[changed.count - 1] ^= 1
        let tampered = try #require(c.refusal(name: "node-b", certificate: b.certificate, signature: signature, message: changed))
        #expect(tampered.contains("does not match"))
        // node-b's certificate and signature cannot speak for node-a.
        let renamed = try #require(c.refusal(name: "node-a", certificate: b.certificate, signature: signature, message: message))
        #expect(renamed.contains("names node-b"))
        // node-c signing a record of node-b's with its own key is the same lie.
        let own = c.sign(message)
        #expect(c.refusal(name: "node-b", certificate: c.certificate, signature: own, message: message) != nil)
        #expect(c.refusal(name: "node-b", certificate: [], signature: signature, message: message)?.contains("no certificate") == true)
        #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: [], message: message)?.contains("not signed") == true)
    }

    @Test func aCertificateOfAnotherCAAnExpiredOneOrGarbageIsRefused() throws {
        let c = try NodeSignatures(context: Fixtures.context("node-c"))
        let stranger = try NodeSignatures(context: Fixtures.context("node-a", in: "other", ca: "other-ca"))
        let foreign = try #require(
            c.refusal(
                name: "node-a", certificate: stranger.certificate,
                signature: stranger.sign(message), message: message))
        #expect(foreign.contains("does not verify against the cluster CA"))
        let expired = try Self.der(pem: "\(Fixtures.dir)/expired/node-a.pem")
        let old = try #require(c.refusal(name: "node-a", certificate: expired, signature: [1, 2, 3], message: message))
        #expect(old.contains("expired"), "\(old)")
        let garbage = try #require(
            c.refusal(
                name: "node-a", certificate: Array(repeating: 0x30, count: 40),
                signature: [1], message: message))
        #expect(garbage.contains("does not parse"))
    }

    @Test func aGarbageSignatureIsRefusedNotTrapped() throws {
        let b = try NodeSignatures(context: Fixtures.context("node-b"))
        let c = try NodeSignatures(context: Fixtures.context("node-c"))
        for junk in [[UInt8](repeating: 0xff, count: 72), [0x30], [0x30, 0x02, 0x01], [UInt8](repeating: 0, count: 144)] {
            #expect(c.refusal(name: "node-b", certificate: b.certificate, signature: junk, message: message) != nil)
        }
    }
}
