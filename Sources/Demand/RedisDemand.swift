import Bounds
import NIOCore
import NIOPosix
import SecureTransport

/// One RESP2 reply (Redis protocol specification, "RESP protocol description").
public indirect enum RESPValue: Sendable, Hashable {
    case simple(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8]?)
    case array([RESPValue]?)
}

/// An incremental RESP2 parser, every reply bounded: a broker is outside input like any other.
public struct RESPParser: Sendable {
    /// Bounds on one reply: a bulk string's bytes, an array's elements, nesting.
    public static let maxBulkBytes = 64 * 1024
    public static let maxArrayElements = 4096
    public static let maxDepth = 8
    public static let maxLineBytes = 4096

    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case malformed(String)
        case tooLarge(String)
        public var description: String {
            switch self {
            case .malformed(let s): "not a RESP reply: \(s)"
            case .tooLarge(let s): "reply too large: \(s)"
            }
        }
    }

    public init() {}

    /// The first complete reply in `bytes` and how many bytes it took, or nil when more are needed.
    public static func parse(_ bytes: ArraySlice<UInt8>) throws(Failure) -> (RESPValue, Int)? {
        var i = bytes.startIndex
        guard let v = try value(bytes, &i, depth: 0) else { return nil }
        return (v, i - bytes.startIndex)
    }

    private static func line(_ b: ArraySlice<UInt8>, _ i: inout Int) throws(Failure) -> String? {
        var j = i
        while j + 1 < b.endIndex {
            if b[j] == 0x0D && b[j + 1] == 0x0A {
                let s = String(decoding: b[i..<j], as: UTF8.self)
                i = j + 2
                return s
            }
            j += 1
            if j - i > maxLineBytes { throw .tooLarge("a line longer than \(maxLineBytes) bytes") }
        }
        if b.endIndex - i > maxLineBytes { throw .tooLarge("a line longer than \(maxLineBytes) bytes") }
        return nil
    }

    private static func value(_ b: ArraySlice<UInt8>, _ i: inout Int, depth: Int) throws(Failure) -> RESPValue? {
        guard i < b.endIndex else { return nil }
        let kind = b[i]
        var j = i + 1
        guard let text = try line(b, &j) else { return nil }
        switch kind {
        case UInt8(ascii: "+"):
            i = j
            return .simple(text)
        case UInt8(ascii: "-"):
            i = j
            return .error(text)
        case UInt8(ascii: ":"):
            guard let n = Int64(text) else { throw .malformed("integer `\(text.prefix(40))`") }
            i = j
            return .integer(n)
        case UInt8(ascii: "$"):
            guard let n = Int(text), n >= -1 else { throw .malformed("bulk length `\(text.prefix(40))`") }
            if n == -1 {
                i = j
                return .bulk(nil)
            }
            guard n <= maxBulkBytes else { throw .tooLarge("a bulk string of \(n) bytes; at most \(maxBulkBytes)") }
            guard b.endIndex - j >= n + 2 else { return nil }
            guard b[j + n] == 0x0D, b[j + n + 1] == 0x0A else { throw .malformed("bulk string not ended by CRLF") }
            i = j + n + 2
            return .bulk(Array(b[j..<(j + n)]))
        case UInt8(ascii: "*"):
            guard let n = Int(text), n >= -1 else { throw .malformed("array length `\(text.prefix(40))`") }
            if n == -1 {
                i = j
                return .array(nil)
            }
            guard n <= maxArrayElements else { throw .tooLarge("an array of \(n) elements; at most \(maxArrayElements)") }
            guard depth < maxDepth else { throw .tooLarge("arrays nested deeper than \(maxDepth)") }
            var items: [RESPValue] = []
            items.reserveCapacity(n)
            for _ in 0..<n {
                guard let item = try value(b, &j, depth: depth + 1) else { return nil }
                items.append(item)
            }
            i = j
            return .array(items)
        default:
            throw .malformed("unexpected type byte \(kind)")
        }
    }

    /// A command as RESP: an array of bulk strings.
    public static func command(_ parts: [String]) -> [UInt8] {
        var out = Array("*\(parts.count)\r\n".utf8)
        for p in parts {
            out += Array("$\(p.utf8.count)\r\n".utf8) + Array(p.utf8) + [0x0D, 0x0A]
        }
        return out
    }
}

/// `redis`: the length of a list (LLEN), of a stream (XLEN), or with `group:` a consumer group's
/// pending entries (delivered and not yet acknowledged; XPENDING's summary count). The key's type
/// is asked first (TYPE), and a key that does not exist reads 0: Redis deletes a list when its last
/// element is popped. One connection per poll, RESP2 over SwiftNIO, optionally TLS; `AUTH` from
/// the credentials file (`user:password` for an ACL user, a token for `requirepass`).
public struct RedisDemand: DemandSource {
    public let name: String
    public let host: String
    public let port: Int
    public let key: String
    public let group: String?
    public let database: Int?
    public let credentials: String?
    public let tls: Bool
    public let caFile: String?
    public let timeout: Duration
    private let group_: any EventLoopGroup

    public init(
        host: String, port: Int, key: String, group: String? = nil, database: Int? = nil, credentials: String? = nil,
        tls: Bool = false, caFile: String? = nil, timeout: Duration = .seconds(5),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.name = "redis \(host):\(port) \(key)" + (group.map { " group \($0)" } ?? "")
        self.host = host
        self.port = port
        self.key = key
        self.group = group
        self.database = database
        self.credentials = credentials
        self.tls = tls
        self.caFile = caFile
        self.timeout = timeout
        self.group_ = eventLoopGroup
    }

    public func sample() async throws -> Double {
        var first: [[String]] = []
        if let credentials {
            switch try Credentials.read(path: credentials, source: name) {
            case .userPassword(let u, let p): first.append(["AUTH", u, p])
            case .token(let t): first.append(["AUTH", t])
            }
        }
        if let database { first.append(["SELECT", String(database)]) }
        first.append(["TYPE", key])
        let connection = try await RedisConnection.open(
            host: host, port: port, tls: tls, caFile: caFile, timeout: timeout, group: group_, source: name)
        defer { connection.close() }
        let replies = try await connection.send(first)
        for (command, reply) in zip(first, replies) {
            if case .error(let e) = reply {
                if e.hasPrefix("NOAUTH") {
                    throw DemandError.badCredentials(source: name, reason: "the server requires AUTH: name a credentials file")
                }
                if command[0] == "AUTH" { throw DemandError.badCredentials(source: name, reason: "refused by the server: \(e.prefix(200))") }
                throw DemandError.badAnswer(source: name, reason: "\(command[0]) failed: \(e.prefix(200))")
            }
        }
        let type: String
        switch replies.last {
        case .simple(let t): type = t
        case .error(let e) where e.hasPrefix("NOAUTH"):
            throw DemandError.badCredentials(source: name, reason: "the server requires AUTH: name a credentials file")
        default: throw DemandError.badAnswer(source: name, reason: "TYPE gave \(String(describing: replies.last).prefix(80))")
        }
        let command: [String]
        switch (type, group) {
        case ("none", _): return 0
        case ("list", nil): command = ["LLEN", key]
        case ("list", .some): throw DemandError.badAnswer(source: name, reason: "\(key) is a list; `group:` applies to a stream")
        case ("stream", nil): command = ["XLEN", key]
        case ("stream", .some(let g)): command = ["XPENDING", key, g]
        default: throw DemandError.badAnswer(source: name, reason: "\(key) is a \(type.prefix(20)); expected a list or a stream")
        }
        let reply = try await connection.send([command])[0]
        return try Self.count(reply, command: command[0], source: name)
    }

    /// Runs `commands` on one connection (AUTH from `credentials` first) and returns their
    /// replies: what a test or an operator's tool needs to fill or inspect a queue.
    public static func execute(host: String, port: Int, credentials: String?, commands: [[String]], timeout: Duration = .seconds(5)) async throws
        -> [RESPValue]
    {
        var all: [[String]] = []
        if let credentials {
            switch try Credentials.read(path: credentials, source: "redis") {
            case .userPassword(let u, let p): all.append(["AUTH", u, p])
            case .token(let t): all.append(["AUTH", t])
            }
        }
        let connection = try await RedisConnection.open(
            host: host, port: port, tls: false, caFile: nil, timeout: timeout,
            group: MultiThreadedEventLoopGroup.singleton, source: "redis")
        defer { connection.close() }
        return Array(try await connection.send(all + commands).dropFirst(all.count))
    }

    /// LLEN and XLEN answer an integer; XPENDING's summary form an array whose first element is the count.
    public static func count(_ reply: RESPValue, command: String, source: String) throws(DemandError) -> Double {
        let n: Int64
        switch reply {
        case .integer(let v): n = v
        case .array(let items?) where command == "XPENDING":
            guard case .integer(let v)? = items.first else { throw DemandError.badAnswer(source: source, reason: "XPENDING gave no count") }
            n = v
        case .error(let e): throw DemandError.badAnswer(source: source, reason: "\(command) failed: \(e.prefix(200))")
        default: throw DemandError.badAnswer(source: source, reason: "\(command) gave \(String(describing: reply).prefix(80)), not a count")
        }
        guard n >= 0, Double(n) <= Limits.maxDemand else {
            throw DemandError.badAnswer(source: source, reason: "\(command) gave \(n), outside 0 to \(Limits.text(Limits.maxDemand))")
        }
        return Double(n)
    }
}

/// One connection to a Redis server: commands go out pipelined, replies come back in order.
final class RedisConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<RESPHandler>
    let source: String
    let timeout: Duration

    private init(channel: any Channel, handler: NIOLoopBound<RESPHandler>, source: String, timeout: Duration) {
        self.channel = channel
        self.handler = handler
        self.source = source
        self.timeout = timeout
    }

    static func open(host: String, port: Int, tls: Bool, caFile: String?, timeout: Duration, group: any EventLoopGroup, source: String)
        async throws(DemandError) -> RedisConnection
    {
        var context: TLSContext?
        if tls {
            do { context = try TLSContext(externalTrusting: caFile, handshakeTimeout: timeout) } catch {
                throw DemandError.unreachable(source: source, reason: "TLS: \(error)")
            }
        }
        let tlsContext = context
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(Int64((timeout / .milliseconds(1)).rounded())))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(OpenSSLHandler(context: tlsContext, role: .client, expectedPeer: host))
                        }
                        try channel.pipeline.syncOperations.addHandler(RESPHandler())
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            throw DemandError.unreachable(source: source, reason: "cannot connect to \(host):\(port): \(error)")
        }
        let handler: NIOLoopBound<RESPHandler>
        do {
            handler = try await channel.eventLoop.submit {
                NIOLoopBound(try channel.pipeline.syncOperations.handler(type: RESPHandler.self), eventLoop: channel.eventLoop)
            }.get()
        } catch {
            channel.close(promise: nil)
            throw DemandError.unreachable(source: source, reason: "\(error)")
        }
        // The whole exchange is bounded: a server that accepts and then says nothing (stopped,
        // swapping, a wrong port) is cut off here, and the waiting reply fails.
        let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64((timeout / .milliseconds(1)).rounded()))) {
            handler.value.timedOut = true
            channel.close(promise: nil)
        }
        channel.closeFuture.whenComplete { _ in timer.cancel() }
        return RedisConnection(channel: channel, handler: handler, source: source, timeout: timeout)
    }

    /// Sends the commands and waits for as many replies (the poller's timeout bounds the wait).
    func send(_ commands: [[String]]) async throws(DemandError) -> [RESPValue] {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let handler = self.handler
        let channel = self.channel
        channel.eventLoop.execute {
            guard channel.isActive else {
                promise.fail(handler.value.timedOut ? RESPHandler.TimedOut.timedOut : ChannelError.ioOnClosedChannel)
                return
            }
            handler.value.expect(commands.count, promise: promise)
            var buffer = channel.allocator.buffer(capacity: 256)
            for c in commands { buffer.writeBytes(RESPParser.command(c)) }
            channel.writeAndFlush(buffer, promise: nil)
        }
        do { return try await promise.futureResult.get() } catch let e as RESPParser.Failure {
            throw DemandError.badAnswer(source: source, reason: "\(e)")
        } catch RESPHandler.TimedOut.timedOut {
            throw DemandError.timedOut(source: source, after: timeout)
        } catch {
            throw DemandError.unreachable(source: source, reason: "\(error)")
        }
    }

    func close() { channel.close(promise: nil) }
}

final class RESPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    /// Bytes buffered for one reply, at most (a reply bigger than this is no count).
    static let maxBuffered = 1 << 20
    private var buffer: [UInt8] = []
    private var wanted = 0
    private var replies: [RESPValue] = []
    private var promise: EventLoopPromise<[RESPValue]>?
    var timedOut = false
    enum TimedOut: Error { case timedOut }

    func expect(_ n: Int, promise: EventLoopPromise<[RESPValue]>) {
        wanted = n
        replies = []
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer += bytes.readBytes(length: bytes.readableBytes) ?? []
        guard buffer.count <= Self.maxBuffered else {
            fail(context: context, RESPParser.Failure.tooLarge("more than \(Self.maxBuffered) bytes"))
            return
        }
        do {
            while replies.count < wanted, let (v, used) = try RESPParser.parse(buffer[...]) {
                buffer.removeFirst(used)
                replies.append(v)
            }
        } catch {
            fail(context: context, error)
            return
        }
        if wanted > 0, replies.count == wanted, let p = promise {
            promise = nil
            wanted = 0
            p.succeed(replies)
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        promise?.fail(error)
        promise = nil
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(timedOut ? TimedOut.timedOut : ChannelError.ioOnClosedChannel)
        promise = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, error)
    }
}
