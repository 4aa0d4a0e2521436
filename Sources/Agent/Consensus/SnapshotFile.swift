import Consensus
import Foundation
import SecureTransport

/// The file `microscale operator snapshot save` writes and `restore` reads (docs/consensus.md,
/// "Backup and restore"), in the manner of `consul snapshot`: a copy of the declared cluster state
/// with enough around it to tell a good copy from a torn, edited or foreign one before anything
/// is restored.
///
///     microscale-snapshot 1\n                                  (magic and format version)
///     {"bytes":N,"cluster":"…","index":I,"sha256":"…","takenAtMilliseconds":T}\n
///     <N bytes: the ClusterBackup as JSON with sorted keys>
///
/// Text up front so that `head -2 FILE` says what a file is; the checksum covers the payload, the
/// header repeats what the payload says so that a mismatch (a header pasted onto another
/// payload) is caught too.
public enum SnapshotFile {
    public static let magic = "microscale-snapshot"
    public static let version = 1
    /// Largest file read or accepted: the API's body limit, which is also about what one Raft
    /// entry may carry (the restore is one entry).
    public static let maxBytes = HTTPAPI.maxBodyBytes

    public struct Header: Codable, Sendable, Equatable {
        public var bytes: Int
        public var cluster: String
        public var index: UInt64
        public var sha256: String
        public var takenAtMilliseconds: Int64
    }

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case foreign(String)
        case unsupportedVersion(String)
        case corrupt(String)
        case tooLarge(Int)
        case invalid(String)

        public var description: String {
            switch self {
            case .foreign(let why): return "not a Microscale snapshot: \(why)"
            case .unsupportedVersion(let v): return "snapshot format version \(v); this agent reads version \(SnapshotFile.version)"
            case .corrupt(let why): return "the snapshot is damaged: \(why)"
            case .tooLarge(let n): return "the snapshot is \(n) bytes; at most \(SnapshotFile.maxBytes)"
            case .invalid(let why): return "the snapshot holds a state this agent refuses: \(why)"
            }
        }
    }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    /// The file's bytes for `backup`, taken in `cluster`.
    public static func encode(_ backup: ClusterBackup, cluster: String) throws -> [UInt8] {
        let payload = Array(try encoder.encode(backup))
        let header = Header(
            bytes: payload.count, cluster: cluster, index: backup.index,
            sha256: Digest.hex(Digest.sha256(payload)), takenAtMilliseconds: backup.takenAtMilliseconds)
        return Array("\(magic) \(version)\n".utf8) + Array(try encoder.encode(header)) + [UInt8(ascii: "\n")] + payload
    }

    /// The header and the backup a file holds, checked: the magic, the version, the length and
    /// checksum of the payload, the header against the payload, and the state against the limits
    /// of docs/limits.md. Any failure says which.
    public static func decode(_ bytes: [UInt8]) throws(Failure) -> (Header, ClusterBackup) {
        guard bytes.count <= maxBytes else { throw .tooLarge(bytes.count) }
        guard let firstNewline = bytes.prefix(64).firstIndex(of: UInt8(ascii: "\n")) else {
            throw .foreign("it does not start with \"\(magic) \(version)\"")
        }
        let first = String(decoding: bytes[..<firstNewline], as: UTF8.self).split(separator: " ")
        guard first.count == 2, first[0] == magic else { throw .foreign("it does not start with \"\(magic) \(version)\"") }
        guard first[1] == "\(version)" else { throw .unsupportedVersion(String(first[1].prefix(16))) }
        let rest = bytes[(firstNewline + 1)...]
        guard let secondNewline = rest.prefix(4096).firstIndex(of: UInt8(ascii: "\n")) else {
            throw .corrupt("the header line is missing or longer than 4096 bytes")
        }
        let header: Header
        do { header = try JSONDecoder().decode(Header.self, from: Data(rest[..<secondNewline])) } catch {
            throw .corrupt("the header does not decode: \(error)")
        }
        let payload = Array(rest[(secondNewline + 1)...])
        guard payload.count == header.bytes else {
            throw .corrupt("the header says \(header.bytes) bytes of state, the file holds \(payload.count) (truncated?)")
        }
        let sum = Digest.hex(Digest.sha256(payload))
        guard sum == header.sha256.lowercased() else {
            throw .corrupt("SHA-256 of the state is \(sum), the header says \(header.sha256.prefix(64))")
        }
        let backup: ClusterBackup
        do { backup = try JSONDecoder().decode(ClusterBackup.self, from: Data(payload)) } catch {
            throw .corrupt("the state does not decode: \(error)")
        }
        guard backup.index == header.index, backup.takenAtMilliseconds == header.takenAtMilliseconds else {
            throw .corrupt("the header and the state disagree on where the copy was taken")
        }
        if let e = backup.validationError() { throw .invalid("\(e)") }
        return (header, backup)
    }
}
