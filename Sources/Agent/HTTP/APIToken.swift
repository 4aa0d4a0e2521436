import Foundation

/// The HTTP API's bearer token: where it may come from and how it is compared.
public enum APIToken {
    /// Longest token accepted, and the largest token file read: a token is a secret of some tens
    /// of bytes, and a larger file is a wrong path (a key, a log), not a token.
    public static let maxBytes = 4096

    /// Why `token` cannot be sent as `Authorization: Bearer <token>`, or nil if it can. Spaces and
    /// control characters would be cut or refused on the way through HTTP, so a token with them
    /// could never match; better to say so at start than to answer 401 forever.
    public static func problem(_ token: String) -> String? {
        let bytes = Array(token.utf8)
        if bytes.isEmpty { return "is empty" }
        if bytes.count > maxBytes { return "is longer than \(maxBytes) bytes" }
        if bytes.contains(where: { $0 < 0x21 || $0 > 0x7E }) {
            return "contains a space, a control or a non-ASCII character; use printable ASCII only"
        }
        return nil
    }

    /// Reads a token from `path`, which must be a regular file no one but its owner can read or
    /// write (mode 0600 or stricter), as ssh insists of a private key: a token anyone on the host
    /// can read guards nothing. Trailing newlines (an editor's, `echo`'s) are dropped. `name` is
    /// what an error names: the flag, the config file's line, or the environment variable.
    public static func read(file path: String, name: String) throws(ConfigurationError) -> String {
        // O_NONBLOCK: a FIFO given by mistake must not block start-up; it is refused below.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            throw ConfigurationError("\(name): cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw ConfigurationError("\(name): cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw ConfigurationError("\(name): \(path) is not a regular file")
        }
        let mode = UInt32(st.st_mode) & 0o777
        guard mode & 0o077 == 0 else {
            let octal = String(mode, radix: 8)
            throw ConfigurationError(
                "\(name): \(path) has mode \(String(repeating: "0", count: max(0, 4 - octal.count)))\(octal); "
                    + "a token file must not be readable or writable by group or others (chmod 600 \(path))")
        }
        guard Int(st.st_size) <= maxBytes else {
            throw ConfigurationError("\(name): \(path) is larger than \(maxBytes) bytes; it should hold only the token")
        }
        // One byte more than allowed, so a file that grew since fstat is still caught.
        let data: Data
        do { data = try FileHandle(fileDescriptor: fd, closeOnDealloc: false).read(upToCount: maxBytes + 1) ?? Data() } catch {
            throw ConfigurationError("\(name): cannot read \(path): \(error.localizedDescription)")
        }
        guard data.count <= maxBytes else {
            throw ConfigurationError("\(name): \(path) is larger than \(maxBytes) bytes; it should hold only the token")
        }
        var bytes = Array(data)[...]
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard !bytes.isEmpty else { throw ConfigurationError("\(name): \(path) is empty") }
        let token = String(decoding: bytes, as: UTF8.self)
        if let bad = problem(token) { throw ConfigurationError("\(name): the token in \(path) \(bad)") }
        return token
    }

    /// Whether an `Authorization` header value carries `token`. The scheme is matched without
    /// regard to case (RFC 9110 §11.1); the token byte for byte in constant time.
    static func authorizes(_ header: String?, token: [UInt8]) -> Bool {
        guard let header else { return false }
        // The scheme is no secret: an ordinary comparison will do.
        guard header.utf8.count > 7, header.prefix(7).lowercased() == "bearer " else { return false }
        let value = Array(header.utf8)
        var start = 7
        while start < value.count, value[start] == UInt8(ascii: " ") { start += 1 }
        return constantTimeEqual(value[start...], token)
    }

    /// Compares every byte whatever the first difference, so the time taken does not tell an
    /// attacker how long a prefix of the token they guessed right (only the length may show,
    /// which is no secret worth keeping: tokens are long and random). The differences are ORed
    /// into one byte and tested once, at the end, so there is no data-dependent branch in the loop.
    public static func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
