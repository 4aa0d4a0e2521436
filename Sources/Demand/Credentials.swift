import Bounds
import Foundation

/// A broker's credentials, read from a file named by `credentials: FILE` (docs/demand.md): one line
/// holding `user:password`, or a bare token. The services file is replicated to every server, so
/// secrets never go in it; only the path does, and the file must exist on every server that may
/// lead (it is read by the leader, at each poll, so a rotated secret is picked up without a reload).
public enum Credentials: Sendable, Equatable {
    case userPassword(user: String, password: String)
    case token(String)

    /// Reads and checks `path`: a regular file, not readable or writable by group or others (as
    /// ssh insists for a private key: a secret anyone on the host can read is no secret), at most
    /// `Limits.maxCredentialsBytes`, one line of printable text.
    public static func read(path: String, source: String) throws(DemandError) -> Credentials {
        func bad(_ why: String) -> DemandError { .badCredentials(source: source, reason: "credentials file \(path): \(why)") }
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: path) } catch {
            throw bad(FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file")
        }
        guard attributes[.type] as? FileAttributeType == .typeRegular else { throw bad("not a regular file") }
        if let mode = (attributes[.posixPermissions] as? NSNumber)?.intValue, mode & 0o077 != 0 {
            throw bad("mode \(String(mode, radix: 8)) lets group or others read it; chmod 600 it")
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= Limits.maxCredentialsBytes else {
            throw bad("\(size) bytes; at most \(Limits.maxCredentialsBytes)")
        }
        guard let handle = FileHandle(forReadingAtPath: path) else { throw bad("not readable") }
        defer { try? handle.close() }
        // Read at most one byte past the limit: the file may have grown since the stat.
        let data = (try? handle.read(upToCount: Limits.maxCredentialsBytes + 1)) ?? Data()
        guard data.count <= Limits.maxCredentialsBytes else { throw bad("more than \(Limits.maxCredentialsBytes) bytes") }
        return try parse(Array(data), path: path, source: source)
    }

    /// `user:password` (split at the first colon: passwords may hold colons) or a token; one line,
    /// a final newline allowed, no control characters.
    public static func parse(_ bytes: [UInt8], path: String, source: String) throws(DemandError) -> Credentials {
        func bad(_ why: String) -> DemandError { .badCredentials(source: source, reason: "credentials file \(path): \(why)") }
        var text = bytes
        while let last = text.last, last == 0x0A || last == 0x0D { text.removeLast() }
        guard !text.isEmpty else { throw bad("empty") }
        guard !text.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
            throw bad("holds a control character or more than one line; expected one line, user:password or a token")
        }
        guard let line = String(validating: text, as: UTF8.self) else { throw bad("not UTF-8 text") }
        if let colon = line.firstIndex(of: ":") {
            let user = String(line[..<colon])
            let password = String(line[line.index(after: colon)...])
            guard !user.isEmpty else { throw bad("the user before the colon is empty") }
            return .userPassword(user: user, password: password)
        }
        return .token(line)
    }

    /// `Authorization: Basic ...` (RFC 7617) for the HTTP sources.
    public var basicAuthorization: String {
        switch self {
        case .userPassword(let u, let p): "Basic " + Data("\(u):\(p)".utf8).base64EncodedString()
        case .token(let t): "Bearer \(t)"
        }
    }
}
