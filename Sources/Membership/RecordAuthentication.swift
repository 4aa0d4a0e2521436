/// Who vouches for a record (issue 15, item 2; docs/ARCHITECTURE.md, "Records are signed").
///
/// SWIM spreads a member's record by infection: most members hear it from a third party, never
/// from the owner. Without a proof, any member could tell the cluster that another node has ten
/// times its capacity, runs nothing, or lives at another address, and the leader would plan on
/// it until the owner happened to hear the lie and re-assert itself. So the owner signs its
/// record (`NodeRecord.signedBytes`) with the private key of its node certificate and carries the
/// certificate in the record; every receiver checks that the certificate chains to the cluster
/// CA, names the record's node, and signed these bytes, before it takes the record, whoever
/// relayed it. A delta carries the signature of the record it produces.
///
/// The core stays pure: signing and checking are computations on bytes the shell supplies (the
/// agent's is OpenSSL's ECDSA, `TLSRecordAuthenticator`); the simulations of the protocol alone
/// run `UnsignedRecords`, and the core's tests a keyed stand-in.
public protocol RecordAuthenticator: Sendable {
    /// This member's certificate (DER), carried in its record; empty when records are not signed.
    var certificate: [UInt8] { get }
    /// This member's signature over `message`.
    func sign(_ message: [UInt8]) -> [UInt8]
    /// Why `signature` is not `name`'s over `message` under `certificate`, or nil when it is.
    func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String?
}

/// No proof: every record is taken as relayed. For simulations of the protocol alone, where
/// every member is honest by construction; the agent always signs.
public struct UnsignedRecords: RecordAuthenticator {
    public init() {}
    public var certificate: [UInt8] { [] }
    public func sign(_ message: [UInt8]) -> [UInt8] { [] }
    public func refusal(name: String, certificate: [UInt8], signature: [UInt8], message: [UInt8]) -> String? { nil }
}

extension NodeRecord {
    /// This record with the owner's certificate and signature set.
    public func signed(by authenticator: any RecordAuthenticator) -> NodeRecord {
        var f = fields
        f.certificate = authenticator.certificate
        f.signature = []
        let unsigned = NodeRecord(f)
        f.signature = authenticator.sign(unsigned.signedBytes)
        return NodeRecord(f)
    }

    /// This record carrying the owner's signature that it reached `incarnation`.
    public func proving(incarnation: UInt64, by authenticator: any RecordAuthenticator) -> NodeRecord {
        var f = fields
        f.provenIncarnation = incarnation
        f.incarnationSignature = authenticator.sign(Self.incarnationBytes(name: f.name, incarnation: incarnation))
        return NodeRecord(f)
    }

    /// Why this record's incarnation proof is not its owner's, or nil when it is.
    public func incarnationRefusal(by authenticator: any RecordAuthenticator) -> String? {
        authenticator.refusal(
            name: self.name, certificate: self.certificate, signature: self.incarnationSignature,
            message: Self.incarnationBytes(name: self.name, incarnation: self.provenIncarnation))
    }

    /// This record without the owner's certificate, for a receiver that holds it already (the
    /// signatures stay: they are checked against the held certificate).
    public var withoutCertificate: NodeRecord {
        guard !self.certificate.isEmpty else { return self }
        var r = self
        r.certificate = []
        return r
    }

    /// Why this record is not its owner's, or nil when it is.
    public func refusal(by authenticator: any RecordAuthenticator) -> String? {
        authenticator.refusal(name: self.name, certificate: self.certificate, signature: self.signature, message: signedBytes)
    }
}
