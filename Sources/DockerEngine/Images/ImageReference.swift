import Foundation

/// An image reference split the way the Engine API's pull wants it: `fromImage` is the repository
/// and `tag` the tag or the digest (without a tag, the daemon would pull every tag of the
/// repository). The registry is the first path component when it looks like a host (has a `.` or a
/// `:`, or is `localhost`), as in Docker's own reference grammar (distribution/reference); otherwise
/// Docker Hub.
public struct ImageReference: Sendable, Hashable {
    public var repository: String
    public var tagOrDigest: String
    public var registry: String

    public static let dockerHub = "docker.io"

    public init(_ reference: String) {
        var name = reference
        var tag = "latest"
        if let at = reference.firstIndex(of: "@") {
            name = String(reference[..<at])
            tag = String(reference[reference.index(after: at)...])
            // name:tag@digest: the digest wins, the tag is dropped (Docker does the same).
            if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") { name = String(name[..<colon]) }
        } else if let colon = reference.lastIndex(of: ":"), !reference[colon...].contains("/") {
            name = String(reference[..<colon])
            tag = String(reference[reference.index(after: colon)...])
        }
        repository = name
        tagOrDigest = tag
        let first = name.split(separator: "/", maxSplits: 1).first.map(String.init) ?? name
        if name.contains("/") && (first.contains(".") || first.contains(":") || first == "localhost") {
            registry = first
        } else {
            registry = Self.dockerHub
        }
    }
}

/// Registry credentials from a Docker `config.json`-format file (`--registry-auth FILE`):
/// `{"auths": {"registry.example:5000": {"auth": base64("user:password")}}}` (or `username` and
/// `password` fields). Only `auths` is read: credential helpers (`credsStore`) run programs, which an
/// agent should not. The X-Registry-Auth header is base64url of
/// `{"username","password","serveraddress"}` (Engine API, "Authentication").
public struct RegistryAuth: Sendable, Equatable {
    public struct Credentials: Sendable, Hashable {
        public var username: String
        public var password: String
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
    }
    public var byRegistry: [String: Credentials]

    public init(byRegistry: [String: Credentials] = [:]) { self.byRegistry = byRegistry }

    /// Bound on the file: a config.json is a few kilobytes.
    public static let maxFileBytes = 1 << 20

    public struct FileError: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    public static func load(path: String) throws(FileError) -> RegistryAuth {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError(description: "--registry-auth \(path): cannot read the file")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String) throws(FileError) -> RegistryAuth {
        guard data.count <= maxFileBytes else { throw FileError(description: "--registry-auth \(source): larger than 1 MiB") }
        struct File: Decodable {
            struct Entry: Decodable {
                var auth: String?
                var username: String?
                var password: String?
            }
            var auths: [String: Entry]?
        }
        let file: File
        do { file = try JSONDecoder().decode(File.self, from: data) } catch {
            throw FileError(description: "--registry-auth \(source): not a Docker config.json: \(error)")
        }
        var result: [String: Credentials] = [:]
        for (key, entry) in file.auths ?? [:] {
            var user = entry.username, password = entry.password
            if let auth = entry.auth {
                guard let decoded = Data(base64Encoded: auth).map({ String(decoding: $0, as: UTF8.self) }),
                    let colon = decoded.firstIndex(of: ":")
                else {
                    throw FileError(description: "--registry-auth \(source): auths.\(key).auth: not base64 of user:password")
                }
                user = String(decoded[..<colon])
                password = String(decoded[decoded.index(after: colon)...])
            }
            guard let user, let password else {
                throw FileError(description: "--registry-auth \(source): auths.\(key): needs `auth` or `username` and `password`")
            }
            result[normalize(key)] = Credentials(username: user, password: password)
        }
        return RegistryAuth(byRegistry: result)
    }

    /// `https://index.docker.io/v1/` and `registry.example:5000/` name registries as keys do.
    static func normalize(_ key: String) -> String {
        var k = key
        for scheme in ["https://", "http://"] where k.hasPrefix(scheme) { k = String(k.dropFirst(scheme.count)) }
        k = String(k.prefix { $0 != "/" })
        if k == "index.docker.io" || k == "registry-1.docker.io" { return ImageReference.dockerHub }
        return k
    }

    /// The X-Registry-Auth value for `image`, or nil when the file has nothing for its registry.
    public func header(for image: String) -> String? {
        let registry = ImageReference(image).registry
        guard let c = byRegistry[registry] else { return nil }
        struct Body: Encodable {
            var username: String
            var password: String
            var serveraddress: String
        }
        let server = registry == ImageReference.dockerHub ? "https://index.docker.io/v1/" : registry
        guard let json = try? JSONEncoder().encode(Body(username: c.username, password: c.password, serveraddress: server)) else { return nil }
        return json.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }
}
