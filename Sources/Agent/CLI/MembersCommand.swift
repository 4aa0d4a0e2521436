import ArgumentParser
import ControlPlane
import DockerEngine
import Foundation
import NIOHTTP1

/// Options every CLI command that talks to the local agent shares.
public struct HTTPClientOptions: ParsableArguments {
    @Option(name: .customLong("http-addr"), help: "The agent's HTTP API (env MICROSCALE_HTTP_ADDR, default 127.0.0.1:7481).")
    var httpAddr: String?
    @Option(help: "API token (env MICROSCALE_HTTP_TOKEN).")
    var token: String?
    @Option(name: .customLong("token-file"), help: "File holding the API token, mode 0600 (env MICROSCALE_HTTP_TOKEN_FILE).")
    var tokenFile: String?
    @Flag(help: "Reads: answer from the local server's state without asking the leader (fast, may be stale).")
    var stale = false

    public init() {}

    /// The token to send, if any: a flag before the environment, and of each pair only one may be
    /// set (which would win is a guess). A file is read as the agent reads `--api-token-file`.
    static func resolveToken(flag: String?, file: String?, environment: [String: String]) throws -> String? {
        func pick(_ value: String?, _ valueName: String, _ path: String?, _ pathName: String) throws -> String? {
            if value != nil, path != nil { throw CLIError("\(valueName) and \(pathName) are both set; use one") }
            guard let path else { return value }
            do { return try APIToken.read(file: path, name: pathName) } catch { throw CLIError(error.message) }
        }
        return try pick(flag, "--token", file, "--token-file")
            ?? pick(
                environment["MICROSCALE_HTTP_TOKEN"], "MICROSCALE_HTTP_TOKEN",
                environment["MICROSCALE_HTTP_TOKEN_FILE"], "MICROSCALE_HTTP_TOKEN_FILE")
    }

    var baseURL: String {
        let addr = httpAddr ?? ProcessInfo.processInfo.environment["MICROSCALE_HTTP_ADDR"] ?? "127.0.0.1:7481"
        return addr.hasPrefix("http") ? addr : "http://\(addr)"
    }

    /// GETs `path` and decodes the JSON; errors say what to check. Uses the project's small
    /// NIO HTTP/1.1 client rather than URLSession: FoundationNetworking would link libcurl and
    /// some twenty libraries behind it into the agent's binary, costing every agent process
    /// several MiB of resident memory and start-up time for one CLI command.
    func get<T: Decodable>(_ path: String, as: T.Type) async throws -> (T, Data) {
        // Consul's consistency modes: linearizable unless `?stale` (docs/consensus.md).
        let data = try await call("GET", stale ? path + (path.contains("?") ? "&stale" : "?stale") : path)
        do { return (try JSONDecoder().decode(T.self, from: data), data) } catch {
            throw CLIError("the agent at \(baseURL) sent an unexpected answer: \(error)")
        }
    }

    /// Sends a request and returns the body of a 2xx answer; anything else becomes an error carrying
    /// the agent's own message (`{"error": ...}`). Uses the project's small NIO HTTP/1.1 client
    /// rather than URLSession: FoundationNetworking would link libcurl and some twenty libraries
    /// behind it into the agent's binary, costing every agent process several MiB of memory.
    func call(_ method: String, _ path: String, body: Data? = nil, timeout: Duration = .seconds(15)) async throws -> Data {
        let endpoint: HTTPEndpoint, target: String
        do { (endpoint, target) = try HTTPEndpoint.parse(url: baseURL + path) } catch {
            throw CLIError("--http-addr \(baseURL) is not an address: \(error)")
        }
        var headers: [(String, String)] = []
        if body != nil { headers.append(("Content-Type", "application/json")) }
        if let t = try Self.resolveToken(flag: token, file: tokenFile, environment: ProcessInfo.processInfo.environment) {
            headers.append(("Authorization", "Bearer \(t)"))
        }
        let response: HTTPResponse
        do {
            response = try await MiniHTTPClient().request(
                endpoint, method: HTTPMethod(rawValue: method), path: target,
                headers: headers, body: body.map { Array($0) } ?? (method == "GET" ? nil : []),
                timeout: timeout)
        } catch {
            throw CLIError(Self.unreachable(baseURL, error))
        }
        let data = Data(response.body)
        guard (200..<300).contains(response.status) else {
            struct Failure: Decodable { var error: String }
            if let f = try? JSONDecoder().decode(Failure.self, from: data) {
                throw CLIError(f.error, exitCode: response.status == 400 ? 2 : 1)
            }
            throw CLIError("the agent at \(baseURL) answered \(response.status): \(String(decoding: data.prefix(300), as: UTF8.self))")
        }
        return data
    }
}

extension HTTPClientOptions {
    /// One short line for an agent that cannot be reached: the reason as a person says it
    /// ("connection refused"), not NIO's chain of wrapped errors.
    static func unreachable(_ baseURL: String, _ error: any Error) -> String {
        let address = baseURL.replacingOccurrences(of: "http://", with: "").replacingOccurrences(of: "https://", with: "")
        let reason: String
        switch error as? HTTPClientError {
        case .timedOut(_, let after)?: reason = "no answer within \(after)"
        case .connectionClosed?: reason = "the connection closed before the answer"
        case .connectFailed(_, let r)?: reason = shortReason(r)
        default: reason = shortReason("\(error)")
        }
        return "cannot reach the agent at \(address): \(reason) (is 'microscale agent' running? see --http-addr)"
    }

    /// The errno text at the end of a connection error ("Connection refused", "No route to
    /// host"), lower-cased; else the first 80 characters of the first line.
    static func shortReason(_ text: String) -> String {
        let known = [
            "Connection refused", "No route to host", "Network is unreachable", "Connection reset by peer",
            "Connection timed out", "Name or service not known", "No such file or directory", "Permission denied",
        ]
        if let k = known.first(where: { text.localizedCaseInsensitiveContains($0) }) { return k.lowercased() }
        if text.contains("connectTimeout") || text.contains("timed out") { return "no answer (timed out)" }
        let first = text.split(separator: "\n").first.map(String.init) ?? text
        return first.count > 80 ? String(first.prefix(80)) + "…" : first
    }
}

/// `package`: microscale-chaos (Harness) reports its errors the same way.
package struct CLIError: Error, CustomStringConvertible {
    package var description: String
    /// 2 when what the user typed (or sent) was refused: an argument out of range, or a 400 from
    /// the agent naming the field; 1 for everything else (unreachable agent, no leader, ...).
    package var exitCode: Int32 = 1
    package init(_ d: String, exitCode: Int32 = 1) {
        description = d
        self.exitCode = exitCode
    }
}

/// `microscale members`: the cluster as this agent sees it.
public struct MembersCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "members", abstract: "List the cluster's members as the local agent sees them.")

    @OptionGroup var client: HTTPClientOptions
    @Flag(help: "Print JSON.") var json = false

    public init() {}

    public func run() async throws {
        do {
            let (members, raw) = try await client.get("/v1/members", as: [MemberView].self)
            if json {
                print(String(decoding: raw, as: UTF8.self))
                return
            }
            print(Self.table(members))
        } catch let e as CLIError {
            printError("error: \(e)")
            throw ExitCode(1)
        }
    }

    static func table(_ members: [MemberView]) -> String {
        var rows = [["NAME", "ADDRESS", "STATUS", "ROLE", "CPU", "MEMORY", "CONTAINERS", "LABELS"]]
        for m in members {
            let labels = (m.labels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            rows.append([
                m.name, m.address, m.status.rawValue, m.role, formatCPU(m.capacity.cpu),
                formatBytes(m.capacity.memoryBytes), "\(m.running.values.reduce(0, +))", labels.isEmpty ? "-" : labels,
            ])
        }
        return formatTable(rows)
    }
}

func formatCPU(_ cores: Double) -> String {
    cores == cores.rounded() ? "\(Int(cores))" : String(format: "%.2f", cores)
}

func formatBytes(_ b: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(b)
    var i = 0
    while v >= 1024, i < units.count - 1 {
        v /= 1024
        i += 1
    }
    return i == 0 ? "\(b)B" : String(format: v >= 10 ? "%.0f%@" : "%.1f%@", v, units[i])
}

/// Left-aligned columns separated by two spaces, like `consul members`.
func formatTable(_ rows: [[String]]) -> String {
    guard let width = rows.map(\.count).max() else { return "" }
    var widths = [Int](repeating: 0, count: width)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    return rows.map { r in
        r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}
