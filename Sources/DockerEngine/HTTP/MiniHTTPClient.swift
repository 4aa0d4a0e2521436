import NIOCore
import NIOHTTP1
import NIOPosix

/// Where an HTTP/1.1 server listens: the Docker Engine's unix socket, or a TCP address (Prometheus,
/// an HTTP demand source).
public enum HTTPEndpoint: Sendable, Hashable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: Int)

    public var description: String {
        switch self {
        case .unix(let path): "unix://\(path)"
        case .tcp(let host, let port): "\(host):\(port)"
        }
    }

    /// Parses `http://host[:port]/path` into the endpoint and the path with its query.
    public static func parse(url: String) throws(HTTPClientError) -> (HTTPEndpoint, String) {
        guard url.hasPrefix("http://") else {
            throw .badURL("\(url): only http:// URLs are supported (the demand sources speak plain HTTP on a trusted network)")
        }
        let rest = url.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        let path = slash == rest.endIndex ? "/" : String(rest[slash...])
        var host = String(authority)
        var port = 80
        if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw .badURL("\(url): the port is not a number between 1 and 65535")
            }
            port = p
        }
        guard !host.isEmpty else { throw .badURL("\(url): the host is empty") }
        return (.tcp(host: host, port: port), path)
    }
}

public enum HTTPClientError: Error, Sendable, Equatable, CustomStringConvertible {
    case connectFailed(endpoint: String, reason: String)
    case timedOut(endpoint: String, after: Duration)
    case bodyTooLarge(endpoint: String, limit: Int)
    case connectionClosed(endpoint: String)
    case badURL(String)

    public var description: String {
        switch self {
        case .connectFailed(let e, let r): "cannot connect to \(e): \(r)"
        case .timedOut(let e, let d): "no complete answer from \(e) within \(d)"
        case .bodyTooLarge(let e, let l): "the answer from \(e) exceeds the \(l)-byte limit"
        case .connectionClosed(let e): "\(e) closed the connection before the answer was complete"
        case .badURL(let s): "bad URL \(s)"
        }
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// The one small HTTP/1.1 client Microscale uses (DockerEngine and Demand): one connection per
/// request, which on a unix socket costs less than a pool's bookkeeping, every answer bounded in
/// size and time. AsyncHTTPClient would pull in BoringSSL for nothing we need here.
public struct MiniHTTPClient: Sendable {
    public let group: any EventLoopGroup

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.group = group
    }

    /// One request, the whole answer. Fails rather than buffering more than `maxBody` bytes.
    /// `secure` adds a TLS handler to the new channel (the demand sources' HTTPS); the timeout
    /// covers the handshake too.
    public func request(
        _ endpoint: HTTPEndpoint, method: HTTPMethod = .GET, path: String,
        headers: [(String, String)] = [], body: [UInt8]? = nil,
        timeout: Duration = .seconds(30), maxBody: Int = 8 << 20,
        secure: (@Sendable (any Channel) throws -> Void)? = nil
    ) async throws -> HTTPResponse {
        let promise = group.next().makePromise(of: HTTPResponse.self)
        let head = Self.head(endpoint, method: method, path: path, headers: headers, bodyLength: body?.count)
        let name = endpoint.description
        let channel: any Channel
        do {
            channel = try await connect(endpoint) { channel in
                // HTTPS: the caller's TLS handler goes next to the socket, under HTTP.
                try secure?(channel)
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(
                    CollectingHandler(endpoint: name, promise: promise, maxBody: maxBody))
            }
        } catch {
            promise.fail(error)
            throw HTTPClientError.connectFailed(endpoint: name, reason: "\(error)")
        }
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(timeout.nanosecondsClamped)) {
            promise.fail(HTTPClientError.timedOut(endpoint: name, after: timeout))
            channel.close(promise: nil)
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }

    /// A streamed answer (the Docker event stream): the status, then the body as it arrives. The
    /// stream ends when the server closes; cancelling the consumer closes the connection.
    public func stream(
        _ endpoint: HTTPEndpoint, method: HTTPMethod = .GET, path: String, headers: [(String, String)] = [],
        connectTimeout: Duration = .seconds(5)
    ) async throws -> (status: Int, body: AsyncThrowingStream<[UInt8], any Error>) {
        let name = endpoint.description
        let (stream, continuation) = AsyncThrowingStream<[UInt8], any Error>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        let statusPromise = group.next().makePromise(of: Int.self)
        let head = Self.head(endpoint, method: method, path: path, headers: headers, bodyLength: method == .GET ? nil : 0)
        let channel: any Channel
        do {
            channel = try await connect(endpoint) { channel in
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(
                    StreamingHandler(endpoint: name, status: statusPromise, continuation: continuation))
            }
        } catch {
            statusPromise.fail(error)
            throw HTTPClientError.connectFailed(endpoint: name, reason: "\(error)")
        }
        continuation.onTermination = { _ in channel.close(promise: nil) }
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(connectTimeout.nanosecondsClamped)) {
            statusPromise.fail(HTTPClientError.timedOut(endpoint: name, after: connectTimeout))
            channel.close(promise: nil)
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer { timer.cancel() }
        let status = try await statusPromise.futureResult.get()
        return (status, stream)
    }

    private static func head(
        _ endpoint: HTTPEndpoint, method: HTTPMethod, path: String, headers: [(String, String)], bodyLength: Int?
    ) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        switch endpoint {
        case .unix: head.headers.add(name: "Host", value: "docker")
        case .tcp(let host, let port): head.headers.add(name: "Host", value: "\(host):\(port)")
        }
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "User-Agent", value: "microscale")
        if let bodyLength {
            head.headers.add(name: "Content-Length", value: String(bodyLength))
        } else if method == .POST || method == .PUT {
            head.headers.add(name: "Content-Length", value: "0")
        }
        for (k, v) in headers { head.headers.replaceOrAdd(name: k, value: v) }
        return head
    }

    /// Opens a TCP connection and closes it: the `tcp:` health probe.
    public func canConnect(host: String, port: Int, timeout: Duration) async -> Bool {
        let bootstrap = ClientBootstrap(group: group).connectTimeout(.nanoseconds(timeout.nanosecondsClamped))
        guard let channel = try? await bootstrap.connect(host: host, port: port).get() else { return false }
        try? await channel.close()
        return true
    }

    private func connect(
        _ endpoint: HTTPEndpoint, _ initializer: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> any Channel {
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initializer(channel) }
            }
        switch endpoint {
        case .unix(let path): return try await bootstrap.connect(unixDomainSocketPath: path).get()
        case .tcp(let host, let port): return try await bootstrap.connect(host: host, port: port).get()
        }
    }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (s, a) = components
        if s > Int64.max / 1_000_000_000 - 1 { return Int64.max }
        return s * 1_000_000_000 + a / 1_000_000_000
    }
}

private final class CollectingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let endpoint: String
    let promise: EventLoopPromise<HTTPResponse>
    let maxBody: Int
    var status = 0
    var body: [UInt8] = []

    init(endpoint: String, promise: EventLoopPromise<HTTPResponse>, maxBody: Int) {
        self.endpoint = endpoint
        self.promise = promise
        self.maxBody = maxBody
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= maxBody else {
                promise.fail(HTTPClientError.bodyTooLarge(endpoint: endpoint, limit: maxBody))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            promise.succeed(HTTPResponse(status: status, body: body))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPClientError.connectionClosed(endpoint: endpoint))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

private final class StreamingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let endpoint: String
    let status: EventLoopPromise<Int>
    let continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation

    init(endpoint: String, status: EventLoopPromise<Int>, continuation: AsyncThrowingStream<[UInt8], any Error>.Continuation) {
        self.endpoint = endpoint
        self.status = status
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status.succeed(Int(head.status.code))
        case .body(var buffer):
            continuation.yield(buffer.readBytes(length: buffer.readableBytes) ?? [])
        case .end:
            continuation.finish()
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        status.fail(HTTPClientError.connectionClosed(endpoint: endpoint))
        continuation.finish(throwing: HTTPClientError.connectionClosed(endpoint: endpoint))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        status.fail(error)
        continuation.finish(throwing: error)
        context.close(promise: nil)
    }
}
