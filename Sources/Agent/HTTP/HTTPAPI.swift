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

/// The local HTTP API (DESIGN.md §6): JSON for the CLI, scripts and the dashboard. Bound to
/// loopback by default; anywhere else it requires the API token (DESIGN.md §5).
public enum HTTPAPI {
    /// Largest request body (a services file): well under the wire's frame limit, since a follower
    /// forwards it to the leader in one frame.
    public static let maxBodyBytes = 256 * 1024

    public static func router(state: some AgentState, token: String?) -> Router<BasicRequestContext> {
        let router = Router()
        if let token { router.add(middleware: TokenMiddleware(token: token)) }
        router.get("/v1/members") { _, _ -> JSONBody<[MemberView]> in
            JSONBody(await state.members())
        }
        router.get("/v1/agent/self") { _, _ -> JSONBody<AgentSelfView> in
            JSONBody(await state.selfView())
        }
        @Sendable func cluster(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
            let body = try await request.body.collect(upTo: maxBodyBytes)
            let query = request.uri.query.map { "?\($0)" } ?? ""
            let answer = await state.cluster(method: request.method.rawValue, path: request.uri.path + query,
                                             body: Array(body.readableBytesView))
            return Response(status: .init(code: answer.status), headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: answer.body)))
        }
        router.get("/metrics") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(string: await state.metricsText())))
        }
        router.get("/ui") { _, _ -> Response in
            _ = await state.history()
            return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: DashboardPage.html)))
        }
        router.get("/v1/history") { _, _ -> JSONBody<[StatusHistory.Sample]> in
            JSONBody(await state.history())
        }
        router.get("/v1/leader", use: cluster)
        router.get("/v1/status", use: cluster)
        router.get("/v1/decisions", use: cluster)
        router.get("/v1/services", use: cluster)
        router.put("/v1/services", use: cluster)
        router.delete("/v1/services/:name", use: cluster)
        router.get("/v1/demand", use: cluster)
        router.put("/v1/demand/:service", use: cluster)
        router.get("/v1/nodes/drained", use: cluster)
        router.post("/v1/nodes/:name/drain", use: cluster)
        router.post("/v1/nodes/:name/undrain", use: cluster)
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
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Requires `Authorization: Bearer <token>` on every request.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.headers[.authorization] == "Bearer \(token)" else {
            return Response(status: .unauthorized, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"error":"missing or wrong API token"}"#)))
        }
        return try await next(request, context)
    }
}
