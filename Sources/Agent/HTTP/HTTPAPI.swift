import ControlPlane
import Foundation
import Hummingbird
import NIOCore

/// What the HTTP API needs from the running agent; the runtime provides it, tests can too.
public protocol AgentState: Sendable {
    func members() async -> [MemberView]
    func selfView() async -> AgentSelfView
    /// The cluster-state endpoints (leader, services, demand, drain), answered by the Raft leader.
    func cluster(method: String, path: String, body: [UInt8]) async -> APIResponse
    /// `GET /metrics`, in the Prometheus text exposition format.
    func metricsText() async -> String
    /// The dashboard's samples (starts sampling on first use).
    func history() async -> [StatusHistory.Sample]
    /// `POST /v1/agent/leave`: leave the cluster (and the Raft configuration), then stop.
    func leave() async -> APIResponse
    /// `POST /v1/agent/force-leave/NAME`: mark a dead member left in gossip.
    func forceLeave(_ member: String) async -> APIResponse
    /// `GET /v1/services/NAME/endpoints`, blocking with `?index=N&wait=D` (docs/endpoints.md).
    func endpoints(_ service: String, query: [(String, String)]) async -> APIResponse
}

extension AgentState {
    public func leave() async -> APIResponse { .error(501, "this agent cannot leave") }
    public func forceLeave(_ member: String) async -> APIResponse { .error(501, "this agent cannot force a member out") }
    public func endpoints(_ service: String, query: [(String, String)]) async -> APIResponse {
        .error(501, "this agent serves no endpoints")
    }
}

/// `GET /v1/agent/self`: this agent's identity and counters.
public struct AgentSelfView: Codable, Sendable, Equatable {
    public var name: String
    public var version: String
    public var server: Bool
    public var uptimeSeconds: Double
    public var gossipMessagesSent: Int
    public var gossipBytesSent: Int
    /// This server's own Raft view (role, term, the leader it knows, commit index); nil on a client.
    /// Unlike `GET /v1/leader`, which the leader answers, this is what this agent believes, which
    /// is what "at most one leader per term" is checked against.
    public var raft: RaftStatus?
    /// The plan index of the assignment this agent is carrying out, and its counts; nil before the first.
    public var assignmentPlan: UInt64?
    public var assigned: [String: Int]?
}

/// The local HTTP API (docs/contracts.md): JSON for the CLI, scripts and the dashboard. Bound to
/// loopback by default; anywhere else it requires the API token (docs/ARCHITECTURE.md, "The HTTP API and browsers").
///
/// A browser on this host can reach it too, so it defends itself against web pages
/// (docs/ARCHITECTURE.md, "The HTTP API and browsers"): a `Host` it does not serve is refused
/// (DNS rebinding), and so is a write from another origin (a form or fetch that a page can send
/// without a CORS preflight). It never sends CORS headers, so no other origin reads an answer.
public enum HTTPAPI {
    /// Largest request body (a services file): well under the wire's frame limit, since a follower
    /// forwards it to the leader in one frame.
    public static let maxBodyBytes = 256 * 1024

    /// The API's routes. `hosts`: the names and addresses besides loopback that a request's
    /// `Host` may name (the `--http` and advertised hosts).
    public static func router(state: some AgentState, token: String?, hosts: AcceptedHosts) -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        // Browser checks first: a rebinding page learns nothing, not even whether a token is set.
        router.add(middleware: BrowserGuard(hosts: hosts))
        if let token { router.add(middleware: TokenMiddleware(token: token)) }
        router.get("/v1/members") { _, _ -> JSONBody<[MemberView]> in
            JSONBody(await state.members())
        }
        router.get("/v1/agent/self") { _, _ -> JSONBody<AgentSelfView> in
            JSONBody(await state.selfView())
        }
        @Sendable func cluster(_ request: Request, _ context: APIRequestContext) async throws -> Response {
            let body = try await request.body.collect(upTo: maxBodyBytes)
            let query = request.uri.query.map { "?\($0)" } ?? ""
            let answer = await state.cluster(
                method: request.method.rawValue, path: request.uri.path + query,
                body: Array(body.readableBytesView))
            return Response(
                status: .init(code: answer.status), headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                body: .init(byteBuffer: ByteBuffer(string: await state.metricsText())))
        }
        // Served without the token (the page holds no data; its fetches carry the token), so it
        // starts nothing: the history sampler starts with the page's first /v1/history.
        router.get("/ui") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: DashboardPage.html)))
        }
        router.get("/v1/history") { _, _ -> JSONBody<[StatusHistory.Sample]> in
            JSONBody(await state.history())
        }
        router.get("/v1/leader", use: cluster)
        router.get("/v1/status", use: cluster)
        router.get("/v1/decisions", use: cluster)
        router.get("/v1/report/utilization", use: cluster)
        router.get("/v1/services", use: cluster)
        router.put("/v1/services", use: cluster)
        router.delete("/v1/services/:name", use: cluster)
        router.post("/v1/services/:name/rollback", use: cluster)
        router.get("/v1/services/:name/endpoints") { request, context -> Response in
            let query = request.uri.queryParameters.map { (String($0.key), String($0.value)) }
            let answer = await state.endpoints(context.parameters.get("name") ?? "", query: query)
            var headers: HTTPFields = [.contentType: "application/json"]
            if let index = answer.index { headers[.init("X-Microscale-Index")!] = "\(index)" }
            return Response(
                status: .init(code: answer.status), headers: headers,
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        router.get("/v1/demand", use: cluster)
        router.put("/v1/demand/:service", use: cluster)
        router.get("/v1/nodes/drained", use: cluster)
        router.post("/v1/nodes/:name/drain", use: cluster)
        router.post("/v1/nodes/:name/undrain", use: cluster)
        router.get("/v1/nodes/denied", use: cluster)
        router.post("/v1/nodes/:name/deny", use: cluster)
        router.post("/v1/nodes/:name/undeny", use: cluster)
        // A snapshot file is not JSON (docs/consensus.md, "Backup and restore"); errors are.
        router.get("/v1/operator/snapshot") { request, _ -> Response in
            let answer = await state.cluster(method: "GET", path: request.uri.path, body: [])
            return Response(
                status: .init(code: answer.status),
                headers: [.contentType: answer.status == 200 ? "application/octet-stream" : "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        router.put("/v1/operator/snapshot", use: cluster)
        router.get("/v1/operator/raft/peers", use: cluster)
        router.delete("/v1/operator/raft/peers/:name", use: cluster)
        router.post("/v1/agent/force-leave/:name") { _, context -> Response in
            let answer = await state.forceLeave(context.parameters.get("name") ?? "")
            return Response(
                status: .init(code: answer.status), headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        router.post("/v1/agent/leave") { _, _ -> Response in
            let answer = await state.leave()
            return Response(
                status: .init(code: answer.status), headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        return router
    }
}

/// A JSON response body with the encoder settings every endpoint shares.
public struct JSONBody<T: Encodable & Sendable>: ResponseGenerator, Sendable {
    public var value: T
    public var status: HTTPResponse.Status

    public init(_ value: T, status: HTTPResponse.Status = .ok) {
        self.value = value
        self.status = status
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// The context of an API request: Hummingbird's, plus the local address the request came in
/// on, for `BrowserGuard`.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The agent's own address the connection reached. With the API on every interface
    /// (`--http 0.0.0.0:7481`) a `Host` naming it is an address this agent serves.
    public let localAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        localAddress = source.channel.localAddress
    }
}

/// The `Host` names a request may carry: loopback (`localhost`, 127.0.0.0/8, `::1`), the
/// configured names and addresses, and the address the request arrived at. Any other name is
/// how a DNS-rebinding page reaches the API: its own name, made to resolve to this host, which
/// makes the browser treat the API as that page's origin and let it read every answer.
///
/// Only the host is matched, not the port: the browser's same-origin rule includes the port, so
/// a page reaches this port by naming it, and a name that passes is one the agent serves.
public struct AcceptedHosts: Sendable, Equatable {
    /// Lowercased names and canonical IP addresses, without port or brackets.
    public let names: Set<String>

    /// `hosts`: names or IP addresses; the wildcards `0.0.0.0` and `::` (every interface) name
    /// no host and are left out: with them, the arrival address is what counts.
    public init(_ hosts: some Sequence<String>) {
        names = Set(hosts.map(Self.canonical).filter { !$0.isEmpty && $0 != "0.0.0.0" && $0 != "::" })
    }

    /// Loopback only.
    public static let loopback = AcceptedHosts([String]())

    /// Whether a request whose `Host` header is `authority` and that arrived at `local` is
    /// for this agent.
    public func accepts(authority: String, arrivedAt local: SocketAddress?) -> Bool {
        guard let host = Self.host(ofAuthority: authority) else { return false }
        if Self.isLoopback(host) || names.contains(host) { return true }
        if let ip = local?.ipAddress, Self.canonical(ip) == host { return true }
        return false
    }

    /// The host in a `Host` header ("name", "name:7481", "10.0.0.5:7481", "[::1]:7481"),
    /// canonical; nil if it is malformed.
    static func host(ofAuthority authority: String) -> String? {
        guard !authority.isEmpty, authority.utf8.count <= 300 else { return nil }
        var host = Substring(authority)
        var port: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let rest = host[host.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                port = rest.dropFirst()
            }
            host = host[host.index(after: host.startIndex)..<close]
            // Only IPv6 addresses go in brackets.
            guard (try? SocketAddress(ipAddress: String(host), port: 0))?.protocol == .inet6 else { return nil }
        } else if let colon = host.firstIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        if let port {
            guard !port.isEmpty, port.count <= 5, port.allSatisfy(\.isASCII), port.allSatisfy(\.isNumber) else { return nil }
        }
        guard !host.isEmpty else { return nil }
        return canonical(String(host))
    }

    /// IP addresses in one spelling (IPv4-mapped IPv6 as IPv4), names lowercased.
    static func canonical(_ host: String) -> String {
        var h = host.lowercased()
        if h.hasPrefix("["), h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        guard let address = try? SocketAddress(ipAddress: h, port: 0), let ip = address.ipAddress else { return h }
        if ip.hasPrefix("::ffff:"), let v4 = try? SocketAddress(ipAddress: String(ip.dropFirst(7)), port: 0),
            v4.protocol == .inet
        {
            return String(ip.dropFirst(7))
        }
        return ip
    }

    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        // A parsed IPv4 address, never a prefix test: "127.evil.example" is a name anyone can own.
        guard (try? SocketAddress(ipAddress: host, port: 0))?.protocol == .inet else { return false }
        return host.hasPrefix("127.")
    }
}

/// Refuses what only a web page would send (issue 15): a `Host` the agent does not serve (a
/// DNS-rebinding page), and a write from another origin. Browsers send a cross-origin POST
/// without asking (a "simple request": a form, or a fetch with a simple content type), and only
/// hide the answer from the page; the write has happened by then. So a write must either come
/// from no browser (curl and the CLI send no `Origin`) or from this agent's own page.
struct BrowserGuard: RouterMiddleware {
    typealias Context = APIRequestContext
    let hosts: AcceptedHosts

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authority = request.head.authority else {
            return Self.refusal(.badRequest, "the request has no Host header; HTTP/1.1 requires one (RFC 9112 §3.2)")
        }
        // HTTP turns the first Host into the authority; a second one would be ambiguous.
        guard request.headers[.init("Host")!] == nil else {
            return Self.refusal(.badRequest, "the request has more than one Host header")
        }
        guard hosts.accepts(authority: authority, arrivedAt: context.localAddress) else {
            return Self.refusal(
                .misdirectedRequest,
                "Host \(Self.quoted(authority)) is not an address of this agent; the API answers only "
                    + "requests for localhost, 127.0.0.0/8, [::1] or the agent's --http and --advertise hosts")
        }
        switch request.method {
        case .get, .head, .options:
            // Reads: another origin's page may send them, but without CORS headers in the answer
            // its browser does not let it read what comes back.
            return try await next(request, context)
        default:
            break
        }
        // The page's own origin is the scheme and authority its address bar shows, which is the
        // Host the browser sends with it; the agent serves plain HTTP.
        if let origin = request.headers[.origin], origin.lowercased() != "http://\(authority.lowercased())" {
            return Self.refusal(
                .forbidden,
                "Origin \(Self.quoted(origin)) may not write here: a \(request.method.rawValue) must "
                    + "come from this agent's own page (http://\(Self.quoted(authority, quotes: false))) or carry no Origin")
        }
        // Sent by browsers when Origin may not be (some redirects); "same-site" is another port
        // or scheme of this host, which is another origin.
        if let site = request.headers[.init("Sec-Fetch-Site")!], site != "same-origin", site != "none" {
            return Self.refusal(
                .forbidden,
                "Sec-Fetch-Site \(Self.quoted(site)): a \(request.method.rawValue) must come "
                    + "from this agent's own page (same-origin) or from outside a browser")
        }
        return try await next(request, context)
    }

    /// A request's value in an error message: bounded, and in quotes.
    static func quoted(_ value: String, quotes: Bool = true) -> String {
        let v = value.count > 100 ? "\(value.prefix(100))..." : value
        return quotes ? "\"\(v)\"" : v
    }

    static func refusal(_ status: HTTPResponse.Status, _ message: String) -> Response {
        // JSONEncoder escapes whatever the request put into the message; "/" needs no escape, and
        // an Origin reads better without.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let body = (try? encoder.encode(["error": message])) ?? Data(#"{"error":"refused"}"#.utf8)
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Requires `Authorization: Bearer <token>` on every request but the dashboard page itself
/// (`GET /ui`), which holds no data: the page sends the token on its own fetches
/// (`DashboardPage`). The token is compared in constant time.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: [UInt8]

    init(token: String) { self.token = Array(token.utf8) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path == "/ui", request.method == .get || request.method == .head {
            return try await next(request, context)
        }
        guard APIToken.authorizes(request.headers[.authorization], token: token) else {
            // RFC 6750 §3: a 401 names the scheme it wants.
            return Response(
                status: .unauthorized,
                headers: [.contentType: "application/json", .wwwAuthenticate: "Bearer"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"error":"missing or wrong API token"}"#)))
        }
        return try await next(request, context)
    }
}
