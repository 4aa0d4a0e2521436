import ControlPlane
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization
import Testing

@testable import Agent

/// A stand-in agent behind the real router and server: it answers the cluster endpoints with a
/// fixed status and records every request that reached them, so a test can tell a refused write
/// from one that was carried out.
final class RecordingAgent: AgentState, Sendable {
    let reached = Mutex<[String]>([])

    static let status =
        #"{"leader":"node-a","term":3,"services":[],"nodes":[{"name":"node-a","status":"alive","role":"server","assigned":{},"running":{}}]}"#

    func members() async -> [MemberView] { [] }
    func selfView() async -> AgentSelfView {
        AgentSelfView(
            name: "node-a", version: "test", server: true, uptimeSeconds: 1, gossipMessagesSent: 0,
            gossipBytesSent: 0, raft: nil, assignmentPlan: nil, assigned: nil)
    }
    func cluster(method: String, path: String, body: [UInt8]) async -> APIResponse {
        reached.withLock { $0.append("\(method) \(path)") }
        switch path {
        case "/v1/status": return APIResponse(status: 200, body: Array(Self.status.utf8))
        case let p where p.hasPrefix("/v1/decisions"): return APIResponse(status: 200, body: Array("[]".utf8))
        default: return APIResponse(status: 200, body: Array(#"{"ok":true}"#.utf8))
        }
    }
    func metricsText() async -> String { "# TYPE microscale_up gauge\nmicroscale_up 1\n" }
    func history() async -> [StatusHistory.Sample] { [] }
}

/// One HTTP/1.1 exchange over a plain socket, every header as the test writes it (a `Host` of
/// any value, none, or two), the whole answer read. On a thread of its own: the blocking socket
/// must not hold one of the cooperative pool's few threads, which the server's handlers need.
struct RawHTTP {
    struct Answer {
        var status: Int
        /// Lowercased names.
        var headers: [(String, String)]
        var body: String
        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
        var error: String? {
            (try? JSONDecoder().decode([String: String].self, from: Data(body.utf8)))?["error"]
        }
    }

    static func request(port: Int, _ method: String, _ path: String, headers: [(String, String)], body: String = "") async throws -> Answer {
        let text =
            "\(method) \(path) HTTP/1.1\r\n" + headers.map { "\($0.0): \($0.1)\r\n" }.joined()
            + "Connection: close\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        let raw: [UInt8]? = await withCheckedContinuation { c in
            Thread { c.resume(returning: exchange(port: port, Array(text.utf8))) }.start()
        }
        let response = String(decoding: try #require(raw, "no answer from 127.0.0.1:\(port)"), as: UTF8.self)
        let split = try #require(response.range(of: "\r\n\r\n"), "no header end in \(response)")
        let lines = response[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = try #require(Int(lines[0].split(separator: " ")[1]), "status line \(lines[0])")
        let fields = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Answer(status: status, headers: fields, body: String(response[split.upperBound...]))
    }

    private static func exchange(port: Int, _ request: [UInt8]) -> [UInt8]? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // A bound, not a measurement: only a hung server takes this long.
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0, request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while response.count < 4 << 20 {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response += buffer[..<n]
        }
        return response
    }
}

/// The local API as a browser on this host meets it (issue 15): pages of other sites can send it
/// requests, and a DNS-rebinding page can make its own name resolve to 127.0.0.1.
@Suite struct HTTPAPITests {
    /// The real router and server on 127.0.0.1:0 in front of `state`; `body` gets the port.
    func serving(
        _ state: RecordingAgent = RecordingAgent(), token: String? = nil, hosts: AcceptedHosts = .loopback,
        _ body: (Int) async throws -> Void
    ) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let bound = AsyncStream.makeStream(of: SocketAddress?.self)
        let app = Application(
            router: HTTPAPI.router(state: state, token: token, hosts: hosts),
            configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "microscale"),
            onServerRunning: { bound.continuation.yield($0.localAddress) }, logger: logger)
        let server = Task {
            defer { bound.continuation.yield(nil) }
            try await app.run()
        }
        var port: Int?
        for await address in bound.stream {
            port = address?.port
            break
        }
        do { try await body(try #require(port, "the server did not start")) } catch {
            server.cancel()
            _ = try? await server.value
            throw error
        }
        server.cancel()
        _ = try? await server.value
    }

    // MARK: Host

    @Test func aPlainCurlDrainIsCarriedOut() async throws {
        // curl -X POST 127.0.0.1:7481/v1/nodes/n/drain
        let agent = RecordingAgent()
        try await serving(agent) { port in
            let answer = try await RawHTTP.request(
                port: port, "POST", "/v1/nodes/n/drain",
                headers: [("Host", "127.0.0.1:\(port)"), ("User-Agent", "curl/8.14.1"), ("Accept", "*/*")])
            #expect(answer.status == 200, "\(answer.body)")
        }
        #expect(agent.reached.withLock { $0 } == ["POST /v1/nodes/n/drain"])
    }

    @Test func aRequestForAnotherHostNameIsRefusedWith421NamingTheHostAndTheRule() async throws {
        // curl -H 'Host: evil.example' 127.0.0.1:7481/v1/services: a DNS-rebinding page's request.
        let agent = RecordingAgent()
        try await serving(agent) { port in
            let answer = try await RawHTTP.request(port: port, "GET", "/v1/services", headers: [("Host", "evil.example")])
            #expect(answer.status == 421)
            let error = try #require(answer.error, "\(answer.body)")
            #expect(error.contains("Host \"evil.example\"") && error.contains("localhost, 127.0.0.0/8, [::1]"), "\(error)")
            #expect(answer.header("content-type") == "application/json")
        }
        #expect(agent.reached.withLock { $0 }.isEmpty)
    }

    @Test(arguments: [
        "evil.example:7481", "127.evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "[::2]:7481",
        "", "localhost:x", "127.0.0.1:", "[::1", "[localhost]:7481", "10.0.0.5:7481",
    ])
    func aRebindingOrMalformedHostIsRefusedBeforeTheToken(_ host: String) async throws {
        try await serving(token: "s3cret") { port in
            let answer = try await RawHTTP.request(
                port: port, "GET", "/v1/status",
                headers: [("Host", host), ("Authorization", "Bearer s3cret")])
            #expect(answer.status == 421, "Host \(host): \(answer.status) \(answer.body)")
        }
    }

    @Test func aRequestWithoutHostOrWithTwoIsRefused() async throws {
        try await serving { port in
            let none = try await RawHTTP.request(port: port, "GET", "/v1/members", headers: [])
            #expect(none.status == 400 && none.error?.contains("no Host header") == true, "\(none.body)")
            let two = try await RawHTTP.request(port: port, "GET", "/v1/members", headers: [("Host", "127.0.0.1"), ("Host", "evil.example")])
            #expect(two.status == 400 && two.error?.contains("more than one Host") == true, "\(two.body)")
        }
    }

    @Test func loopbackNamesWithOrWithoutPortAreServed() async throws {
        try await serving { port in
            for host in [
                "localhost", "localhost:\(port)", "LocalHost:\(port)", "127.0.0.1", "127.0.0.1:\(port)", "127.4.5.6:\(port)",
                "[::1]", "[::1]:\(port)", "[::ffff:127.0.0.1]:\(port)",
            ] {
                let answer = try await RawHTTP.request(port: port, "GET", "/v1/members", headers: [("Host", host)])
                #expect(answer.status == 200, "Host \(host): \(answer.status) \(answer.body)")
            }
        }
    }

    @Test func theConfiguredHttpAndAdvertisedNamesAreServed() async throws {
        try await serving(hosts: AcceptedHosts(["Node-A.internal", "10.0.0.5", "0.0.0.0"])) { port in
            for host in ["node-a.internal:7481", "node-a.internal", "10.0.0.5:7481"] {
                let answer = try await RawHTTP.request(port: port, "GET", "/v1/members", headers: [("Host", host)])
                #expect(answer.status == 200, "Host \(host): \(answer.status) \(answer.body)")
            }
            // The wildcard names no host: a page naming it is still refused.
            let wildcard = try await RawHTTP.request(port: port, "GET", "/v1/members", headers: [("Host", "0.0.0.0:7481")])
            #expect(wildcard.status == 421)
        }
    }

    @Test func theAddressARequestArrivedAtIsServed() {
        // On --http 0.0.0.0:7481 the agent serves every address of the host; the one a request
        // reached is one of them. (127.0.0.1 passes anyway, so an address that is not loopback.)
        let local = try? SocketAddress(ipAddress: "10.1.2.3", port: 7481)
        #expect(AcceptedHosts.loopback.accepts(authority: "10.1.2.3:7481", arrivedAt: local))
        #expect(!AcceptedHosts.loopback.accepts(authority: "10.1.2.4:7481", arrivedAt: local))
        let mapped = try? SocketAddress(ipAddress: "::ffff:10.1.2.3", port: 7481)
        #expect(AcceptedHosts.loopback.accepts(authority: "10.1.2.3", arrivedAt: mapped))
        let v6 = try? SocketAddress(ipAddress: "fd00::1", port: 7481)
        #expect(AcceptedHosts.loopback.accepts(authority: "[FD00:0::1]:7481", arrivedAt: v6))
    }

    @Test func aRealAgentServesItsOwnNamesAndRefusesARebindingHostAndACrossOriginDrain() async throws {
        // The hosts come from the configuration: here --advertise names the agent "node-a.test".
        let port = AgentRuntimeTests.freePort()
        let dir = AgentRuntimeTests.dir
        var s = AgentSettings()
        for (k, v) in [
            "name": "node-a", "bind": "127.0.0.1:\(port)", "advertise": "node-a.test:\(port)", "http": "127.0.0.1:0",
            "data-dir": "\(dir)/data-http-\(port)", "tls-ca": "\(dir)/ca/ca.pem", "tls-cert": "\(dir)/certs/node-a.pem",
            "tls-key": "\(dir)/certs/node-a-key.pem", "capacity-cpu": "1", "capacity-memory": "1GiB",
        ] {
            s.set(k, v, origin: "test")
        }
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let agent = try AgentRuntime(configuration: try s.resolve(), logger: logger)
        try await agent.start()
        let answers: [RawHTTP.Answer]
        do {
            let http = try #require(agent.httpAddress?.port)
            answers = [
                try await RawHTTP.request(port: http, "GET", "/v1/members", headers: [("Host", "127.0.0.1:\(http)")]),
                try await RawHTTP.request(port: http, "GET", "/v1/agent/self", headers: [("Host", "node-a.test:\(http)")]),
                try await RawHTTP.request(port: http, "GET", "/v1/services", headers: [("Host", "evil.example")]),
                try await RawHTTP.request(
                    port: http, "POST", "/v1/nodes/node-a/drain",
                    headers: [("Host", "127.0.0.1:\(http)"), ("Origin", "https://evil.example")]),
            ]
        } catch {
            await agent.shutdown()
            throw error
        }
        await agent.shutdown()
        let (plain, named, rebound, forged) = (answers[0], answers[1], answers[2], answers[3])
        #expect(plain.status == 200 && plain.body.contains("node-a"), "\(plain.body)")
        #expect(named.status == 200, "\(named.body)")
        #expect(rebound.status == 421, "\(rebound.body)")
        #expect(forged.status == 403, "\(forged.body)")
    }

    // MARK: Origin

    @Test func aCrossOriginDrainIsRefusedAndNeverReachesTheCluster() async throws {
        // curl -H 'Origin: https://evil.example' -X POST 127.0.0.1:7481/v1/nodes/n/drain: what a
        // form on any page makes the browser send, without a preflight.
        let agent = RecordingAgent()
        try await serving(agent) { port in
            for (method, path) in [("POST", "/v1/nodes/n/drain"), ("PUT", "/v1/demand/web"), ("DELETE", "/v1/services/web"), ("PUT", "/v1/services")]
            {
                let answer = try await RawHTTP.request(
                    port: port, method, path,
                    headers: [
                        ("Host", "127.0.0.1:\(port)"), ("Origin", "https://evil.example"),
                        ("Content-Type", "text/plain"),
                    ],
                    body: #"{"value": 0}"#)
                #expect(answer.status == 403, "\(method) \(path): \(answer.status)")
                let error = try #require(answer.error, "\(answer.body)")
                #expect(error.contains("Origin \"https://evil.example\"") && error.contains("own page"), "\(error)")
                #expect(answer.body.contains("https://evil.example"), "readable as sent, without escaped slashes")
            }
        }
        #expect(agent.reached.withLock { $0 }.isEmpty)
    }

    @Test(arguments: ["null", "http://127.0.0.1:8080", "http://localhost", "https://127.0.0.1:PORT", "http://127.0.0.1:PORT.evil.example"])
    func aWriteFromAnyOtherOriginOfThisHostIsRefused(_ origin: String) async throws {
        // Another port is another origin (another local web app); "null" is a sandboxed frame or a file.
        let agent = RecordingAgent()
        try await serving(agent) { port in
            let answer = try await RawHTTP.request(
                port: port, "POST", "/v1/nodes/n/drain",
                headers: [
                    ("Host", "127.0.0.1:\(port)"),
                    ("Origin", origin.replacingOccurrences(of: "PORT", with: "\(port)")),
                ])
            #expect(answer.status == 403, "Origin \(origin)")
        }
        #expect(agent.reached.withLock { $0 }.isEmpty)
    }

    @Test func aCrossSiteFetchMetadataWriteIsRefusedEvenWithoutOrigin() async throws {
        let agent = RecordingAgent()
        try await serving(agent) { port in
            for site in ["cross-site", "same-site"] {
                let answer = try await RawHTTP.request(
                    port: port, "POST", "/v1/nodes/n/undrain",
                    headers: [("Host", "localhost:\(port)"), ("Sec-Fetch-Site", site)])
                #expect(answer.status == 403, "Sec-Fetch-Site \(site)")
                #expect(answer.error?.contains("Sec-Fetch-Site \"\(site)\"") == true, "\(answer.body)")
            }
        }
        #expect(agent.reached.withLock { $0 }.isEmpty)
    }

    @Test func aWriteFromTheAgentsOwnPageIsCarriedOut() async throws {
        // What a browser sends with a fetch from http://localhost:PORT/ui to the same origin.
        let agent = RecordingAgent()
        try await serving(agent) { port in
            let answer = try await RawHTTP.request(
                port: port, "PUT", "/v1/demand/web",
                headers: [
                    ("Host", "localhost:\(port)"), ("Origin", "http://localhost:\(port)"),
                    ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/json"),
                ],
                body: #"{"value": 3}"#)
            #expect(answer.status == 200, "\(answer.body)")
        }
        #expect(agent.reached.withLock { $0 } == ["PUT /v1/demand/web"])
    }

    @Test func aCrossOriginReadIsAnsweredWithoutCORSHeadersSoTheBrowserHidesIt() async throws {
        try await serving { port in
            let read = try await RawHTTP.request(
                port: port, "GET", "/v1/members",
                headers: [
                    ("Host", "127.0.0.1:\(port)"), ("Origin", "https://evil.example"),
                    ("Sec-Fetch-Site", "cross-site"),
                ])
            #expect(read.status == 200)
            #expect(!read.headers.contains { $0.0.hasPrefix("access-control-") }, "\(read.headers)")
        }
    }

    @Test func aPreflightGetsNoAccessControlAllowHeaders() async throws {
        // A fetch with JSON or a token from another origin is preflighted; without
        // Access-Control-Allow-* in the answer the browser never sends it.
        let agent = RecordingAgent()
        try await serving(agent, token: "s3cret") { port in
            let answer = try await RawHTTP.request(
                port: port, "OPTIONS", "/v1/nodes/n/drain",
                headers: [
                    ("Host", "127.0.0.1:\(port)"), ("Origin", "https://evil.example"),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "authorization, content-type"),
                ])
            #expect(!(200..<300).contains(answer.status), "\(answer.status)")
            #expect(!answer.headers.contains { $0.0.hasPrefix("access-control-") }, "\(answer.headers)")
        }
        #expect(agent.reached.withLock { $0 }.isEmpty)
    }

    // MARK: Token

    @Test func withATokenTheDashboardPageIsServedButEveryEndpointWantsTheToken() async throws {
        try await serving(token: "s3cret") { port in
            let host = ("Host", "127.0.0.1:\(port)")
            let page = try await RawHTTP.request(port: port, "GET", "/ui", headers: [host])
            #expect(page.status == 200 && page.body.contains("<title>Microscale</title>"))
            for path in ["/v1/status", "/v1/members", "/v1/history", "/metrics"] {
                let refused = try await RawHTTP.request(port: port, "GET", path, headers: [host])
                #expect(refused.status == 401, "\(path)")
                #expect(refused.header("www-authenticate") == "Bearer", "\(path)")
                let wrong = try await RawHTTP.request(port: port, "GET", path, headers: [host, ("Authorization", "Bearer s3cre")])
                #expect(wrong.status == 401, "\(path)")
                let ok = try await RawHTTP.request(port: port, "GET", path, headers: [host, ("Authorization", "Bearer s3cret")])
                #expect(ok.status == 200, "\(path): \(ok.body)")
            }
            // Prometheus sends `Authorization: Bearer` from `authorization: {credentials_file: ...}`.
            let metrics = try await RawHTTP.request(port: port, "GET", "/metrics", headers: [host, ("Authorization", "bearer s3cret")])
            #expect(metrics.status == 200 && metrics.body.contains("microscale_up 1"))
            let write = try await RawHTTP.request(port: port, "POST", "/v1/nodes/n/drain", headers: [host])
            #expect(write.status == 401)
        }
    }

    /// Runs Debian's headless Chromium on `url`; the DOM after the page's scripts ran.
    func dumpDOM(_ url: String) throws -> String {
        try DashboardTests().chromium(["--virtual-time-budget=3000", "--dump-dom", url])
    }

    @Test func theDashboardInABrowserSendsTheTokenFromItsAddressFragment() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: DashboardTests.chromium), "install Debian's chromium (scripts/setup --test)")
        let agent = RecordingAgent()
        try await serving(agent, token: "t0ken-from-the-fragment") { port in
            // The page's first fetches can miss one dump's time budget on a loaded machine.
            var dom = ""
            for _ in 0..<3 {
                dom = try dumpDOM("http://127.0.0.1:\(port)/ui#token=t0ken-from-the-fragment")
                if dom.contains("<td>node-a</td><td>alive") { break }
            }
            #expect(dom.contains("<td>node-a</td><td>alive"), "the members table was filled: \(dom.suffix(600))")
            #expect(dom.contains("leader node-a, term 3"))
            #expect(dom.contains(#"<div id="err"></div>"#), "no error shown")

            let without = try dumpDOM("http://localhost:\(port)/ui")
            #expect(without.contains("this agent requires its API token"), "\(without.suffix(600))")
        }
        // The fragment never reached the server; the token did, in the header.
        #expect(agent.reached.withLock { $0 }.contains("GET /v1/status"))
    }
}
