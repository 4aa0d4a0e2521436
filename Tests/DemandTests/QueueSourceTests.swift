import Bounds
import Demand
import Foundation
import Testing

/// The pure parts of the queue sources: answers parsed, options checked, credentials read,
/// requests signed. The same sources against real brokers: QueueSourceIntegrationTests.
@Suite struct QueueSourceParsingTests {
    @Test func rabbitMQReadsMessagesReadyAndRefusesAnAnswerWithoutIt() throws {
        #expect(try RabbitMQDemand.parse(Array(#"{"name":"jobs","messages_ready":12,"messages":15}"#.utf8), source: "r") == 12)
        let e = #expect(throws: DemandError.self) { try RabbitMQDemand.parse(Array(#"{"name":"jobs"}"#.utf8), source: "r") }
        #expect(e?.description.contains("messages_ready") == true)
        #expect(throws: DemandError.self) { try RabbitMQDemand.parse(Array(#"{"messages_ready":-1}"#.utf8), source: "r") }
        #expect(throws: DemandError.self) { try RabbitMQDemand.parse(Array(#"{"messages_ready":1e19}"#.utf8), source: "r") }
        #expect(throws: DemandError.self) { try RabbitMQDemand.parse(Array("<html>".utf8), source: "r") }
    }

    @Test func theVhostSlashIsEncodedInTheManagementPath() throws {
        let url = try SourceURL.parse("http://mq:15672", field: "url")
        #expect(RabbitMQDemand(url: url, vhost: "/", queue: "a/b", credentials: nil).path == "/api/queues/%2F/a%2Fb")
    }

    @Test func natsFindsTheConsumerOnceAndSaysWhenItIsAmbiguousOrMissing() throws {
        func jsz(_ accounts: [(String, Int)]) -> [UInt8] {
            let details = accounts.map {
                #"{"name":"\#($0.0)","stream_detail":[{"name":"JOBS","consumer_detail":[{"name":"w","num_pending":\#($0.1)}]}]}"#
            }
            return Array(#"{"account_details":[\#(details.joined(separator: ","))]}"#.utf8)
        }
        #expect(try NATSDemand.parse(jsz([("$G", 7)]), stream: "JOBS", consumer: "w", account: nil, source: "n") == 7)
        let two = jsz([("A", 1), ("B", 2)])
        let e = #expect(throws: DemandError.self) { try NATSDemand.parse(two, stream: "JOBS", consumer: "w", account: nil, source: "n") }
        #expect(e?.description.contains("account:") == true)
        #expect(try NATSDemand.parse(two, stream: "JOBS", consumer: "w", account: "B", source: "n") == 2)
        #expect(throws: DemandError.self) { try NATSDemand.parse(two, stream: "JOBS", consumer: "x", account: "B", source: "n") }
        #expect(throws: DemandError.self) { try NATSDemand.parse(Array("{}".utf8), stream: "JOBS", consumer: "w", account: nil, source: "n") }
    }

    @Test func haproxyReadsTheBackendRowByTheHeadersColumnNames() throws {
        let csv = """
            # pxname,svname,qcur,qmax,scur,smax,slim,stot,rate
            front,FRONTEND,,,3,3,256,9,1
            queue,redis,0,0,3,3,,9,
            queue,BACKEND,2,4,3,3,26,9,5
            """
        let body = Array(csv.utf8)
        #expect(try HAProxyDemand.parse(body, backend: "queue", metric: .scur, source: "h") == 3)
        #expect(try HAProxyDemand.parse(body, backend: "queue", metric: .qcur, source: "h") == 2)
        #expect(try HAProxyDemand.parse(body, backend: "queue", metric: .rate, source: "h") == 5)
        #expect(throws: DemandError.self) { try HAProxyDemand.parse(body, backend: "front", metric: .scur, source: "h") }
        #expect(throws: DemandError.self) { try HAProxyDemand.parse(Array("garbage".utf8), backend: "queue", metric: .scur, source: "h") }
        let bad = Array("# pxname,svname,scur\nqueue,BACKEND,-4\n".utf8)
        #expect(throws: DemandError.self) { try HAProxyDemand.parse(bad, backend: "queue", metric: .scur, source: "h") }
    }

    @Test func haproxyReadsAFrontendsRequestRateFromItsFrontendRow() throws {
        // HAProxy 2.6's column order: req_rate is filled on FRONTEND rows only.
        let csv = """
            # pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot
            web,FRONTEND,,,4,9,256,800,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,7,0,9,,,,0,700,0,0,0,0,,42,50,800
            web,BACKEND,3,5,4,9,26,800,0,0,0,0,,0,0,0,0,UP,0,0,0,,0,1,0,,1,2,0,,800,,1,7,,9,,,,0,700,0,0,0,0,,,,800
            """
        let body = Array(csv.utf8)
        #expect(try HAProxyDemand.parse(body, proxy: "web", side: .frontend, metric: .reqRate, source: "h") == 42)
        #expect(try HAProxyDemand.parse(body, proxy: "web", side: .frontend, metric: .scur, source: "h") == 4)
        #expect(try HAProxyDemand.parse(body, proxy: "web", side: .backend, metric: .qcur, source: "h") == 3)
        // The backend's req_rate is empty: a bad answer naming the field, not a zero.
        #expect(throws: DemandError.self) { try HAProxyDemand.parse(body, proxy: "web", side: .backend, metric: .reqRate, source: "h") }
        #expect(throws: DemandError.self) { try HAProxyDemand.parse(body, proxy: "api", side: .frontend, metric: .reqRate, source: "h") }
    }

    @Test func haproxyOptionsNameOneFrontendOrOneBackendAndAMetricItHas() {
        func error(_ o: [String: String]) -> DemandConfigError? {
            do { try DemandSourceOptions.check(source: "haproxy", options: o) } catch { return error }
            return nil
        }
        let stats = "http://lb:8404/stats"
        #expect(error(["stats": stats, "frontend": "web", "metric": "req_rate"]) == nil)
        #expect(error(["stats": stats, "frontend": "web", "metric": "rate"]) == nil)
        #expect(error(["stats": stats, "backend": "web", "metric": "req_rate"])?.field == "metric")
        #expect(error(["stats": stats, "frontend": "web", "metric": "qcur"])?.field == "metric")
        #expect(error(["stats": stats, "frontend": "web", "backend": "web", "metric": "scur"])?.field == "frontend")
        #expect(error(["stats": stats, "metric": "scur"])?.field == "backend")
    }

    @Test func theStatsURLGetsItsCSVSuffix() throws {
        let d = HAProxyDemand(url: try SourceURL.parse("http://lb:8404/stats", field: "stats"), backend: "b", metric: .qcur)
        #expect(d.url.path == "/stats;csv")
    }

    @Test func sqsReadsApproximateNumberOfMessages() throws {
        let xml = """
            <GetQueueAttributesResponse><GetQueueAttributesResult><Attribute><Name>ApproximateNumberOfMessages</Name>
            <Value>42</Value></Attribute></GetQueueAttributesResult></GetQueueAttributesResponse>
            """
        #expect(try SQSDemand.parse(Array(xml.utf8), source: "s") == 42)
        #expect(throws: DemandError.self) { try SQSDemand.parse(Array("<x/>".utf8), source: "s") }
        let negative = "<Name>ApproximateNumberOfMessages</Name><Value>-3</Value>"
        #expect(throws: DemandError.self) { try SQSDemand.parse(Array(negative.utf8), source: "s") }
    }

    /// AWS General Reference, "Examples of the complete Signature Version 4 signing process"
    /// (IAM ListUsers, 2015-08-30): the published signature.
    @Test func signatureV4MatchesAWSPublishedExample() {
        let header = SignatureV4.authorization(
            method: "GET", path: "/", query: "Action=ListUsers&Version=2010-05-08",
            headers: [
                ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"), ("Host", "iam.amazonaws.com"),
                ("X-Amz-Date", "20150830T123600Z"),
            ],
            payload: [], accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1", service: "iam", amzDate: "20150830T123600Z", day: "20150830")
        #expect(
            header == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
                + "SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
        #expect(SignatureV4.stamps(Date(timeIntervalSince1970: 1_440_938_160)) == ("20150830T123600Z", "20150830"))
    }

    @Test func respRepliesParseIncrementallyAndAreBounded() throws {
        let whole = Array("*4\r\n:3\r\n$5\r\n1-0\r\n\r\n$-1\r\n*1\r\n*2\r\n$1\r\nc\r\n$1\r\n3\r\n".utf8)
        for cut in 0..<whole.count { #expect(try RESPParser.parse(whole[..<cut]) == nil, "cut at \(cut)") }
        let (v, used) = try #require(try RESPParser.parse(whole[...]))
        #expect(used == whole.count)
        guard case .array(let items?) = v else {
            Issue.record("expected an array")
            return
        }
        #expect(items[0] == .integer(3))
        #expect(try RedisDemand.count(v, command: "XPENDING", source: "r") == 3)
        #expect(try RedisDemand.count(.integer(9), command: "LLEN", source: "r") == 9)
        #expect(throws: DemandError.self) { try RedisDemand.count(.integer(-1), command: "LLEN", source: "r") }
        #expect(throws: DemandError.self) { try RedisDemand.count(.bulk(nil), command: "LLEN", source: "r") }
        #expect(throws: RESPParser.Failure.self) { try RESPParser.parse(Array("$999999999\r\n".utf8)[...]) }
        #expect(throws: RESPParser.Failure.self) { try RESPParser.parse(Array("*99999999\r\n".utf8)[...]) }
        #expect(throws: RESPParser.Failure.self) { try RESPParser.parse(Array("?x\r\n".utf8)[...]) }
        #expect(throws: RESPParser.Failure.self) { try RESPParser.parse(Array((String(repeating: "*1\r\n", count: 9) + ":1\r\n").utf8)[...]) }
    }
}

@Suite struct CredentialsFileTests {
    func file(_ text: String, mode: Int) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cred-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test func userPasswordSplitsAtTheFirstColonAndATokenIsTheWholeLine() throws {
        let a = try file("svc:pa:ss\n", mode: 0o600)
        defer { try? FileManager.default.removeItem(atPath: a) }
        #expect(try Credentials.read(path: a, source: "t") == .userPassword(user: "svc", password: "pa:ss"))
        let b = try file("tok3n", mode: 0o400)
        defer { try? FileManager.default.removeItem(atPath: b) }
        #expect(try Credentials.read(path: b, source: "t") == .token("tok3n"))
    }

    @Test func aFileOthersCanReadATooLargeOneAndSeveralLinesAreRefused() throws {
        let open = try file("u:p", mode: 0o644)
        defer { try? FileManager.default.removeItem(atPath: open) }
        let e = #expect(throws: DemandError.self) { try Credentials.read(path: open, source: "t") }
        #expect(e?.description.contains("chmod 600") == true)
        let big = try file(String(repeating: "x", count: Limits.maxCredentialsBytes + 1), mode: 0o600)
        defer { try? FileManager.default.removeItem(atPath: big) }
        #expect(throws: DemandError.self) { try Credentials.read(path: big, source: "t") }
        let lines = try file("u:p\nsecond\n", mode: 0o600)
        defer { try? FileManager.default.removeItem(atPath: lines) }
        #expect(throws: DemandError.self) { try Credentials.read(path: lines, source: "t") }
        #expect(throws: DemandError.self) { try Credentials.read(path: "/nonexistent/cred", source: "t") }
    }
}

@Suite struct DemandSourceOptionsTests {
    func error(_ source: String, _ options: [String: String]) -> DemandConfigError? {
        do { try DemandSourceOptions.check(source: source, options: options) } catch { return error }
        return nil
    }

    @Test func eachSourceTakesItsOwnOptionsAndNamesTheOneThatIsWrong() {
        #expect(error("redis", ["address": "127.0.0.1:6379", "key": "jobs"]) == nil)
        #expect(error("redis", ["address": "127.0.0.1:6379", "quue": "jobs"])?.field == "quue")
        #expect(error("redis", ["address": "127.0.0.1", "key": "jobs"])?.field == "address")
        #expect(error("redis", ["address": "h:1", "key": "k", "tls": "yes"])?.field == "tls")
        #expect(error("redis", ["address": "h:1", "key": "k", "ca_file": "/ca.pem"])?.field == "ca_file")
        #expect(error("redis", ["address": "h:1", "key": "k", "db": "-1"])?.field == "db")
        #expect(error("redis", ["address": "h:1", "key": "k", "credentials": "relative/path"])?.field == "credentials")
        #expect(error("rabbitmq", ["url": "http://mq:15672", "queue": "jobs"]) == nil)
        #expect(error("rabbitmq", ["url": "ftp://mq", "queue": "jobs"])?.field == "url")
        #expect(error("rabbitmq", ["url": "http://u:p@mq:15672", "queue": "jobs"])?.field == "url")
        #expect(error("rabbitmq", ["url": "http://mq:15672"])?.field == "queue")
        #expect(error("nats", ["url": "https://n:8222", "stream": "S", "consumer": "c", "ca_file": "/etc/ca.pem"]) == nil)
        #expect(error("nats", ["url": "http://n:8222", "stream": "S"])?.field == "consumer")
        #expect(error("haproxy", ["stats": "http://lb:8404/stats", "backend": "b", "metric": "qcur"]) == nil)
        #expect(error("haproxy", ["stats": "http://lb:8404/stats", "backend": "b", "metric": "queue"])?.field == "metric")
        #expect(error("sqs", ["queue_url": "https://sqs.eu-west-1.amazonaws.com/1/jobs", "region": "eu-west-1", "credentials": "/etc/k"]) == nil)
        #expect(error("sqs", ["queue_url": "https://sqs.eu-west-1.amazonaws.com/1/jobs", "region": "eu-west-1"])?.field == "credentials")
        #expect(error("sqs", ["queue_url": "https://q/1/j", "region": "EU West", "credentials": "/k"])?.field == "region")
        #expect(error("prometheus", ["url": "https://p:9090", "query": "up", "ca_file": "/ca.pem", "timeout": "500ms"]) == nil)
        #expect(error("prometheus", ["url": "http://p:9090", "query": "up", "timeout": "2h"])?.field == "timeout")
        #expect(error("kafka", [:])?.field == "source")
    }
}

@Suite struct DemandTrackerBackoffTests {
    @Test func failuresBackOffByDoublingUpToTheCapAndASuccessResetsIt() {
        var t = DemandTracker(staleness: .seconds(10), interval: .seconds(1), maxBackoff: .seconds(30))
        #expect(t.shouldPoll(at: .zero))
        _ = t.record(.success(4), at: .zero)
        #expect(t.nextPollAt == .seconds(1))
        var now: Duration = .seconds(1)
        var waits: [Duration] = []
        for _ in 0..<8 {
            _ = t.record(.failure(.unreachable(source: "s", reason: "refused")), at: now)
            waits.append(t.nextPollAt - now)
            #expect(!t.shouldPoll(at: t.nextPollAt - .milliseconds(1)))
            now = t.nextPollAt
        }
        #expect(waits == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
        _ = t.record(.success(5), at: now)
        #expect(t.consecutiveFailures == 0 && t.nextPollAt == now + .seconds(1))
        #expect(t.delay(afterFailures: Int.max) == .seconds(30), "no overflow however long the source fails")
    }

    /// ok → stale → unknown → ok, one reported change each, however many polls fail in between.
    @Test func eachStateChangeIsReportedOnce() {
        var t = DemandTracker(staleness: .seconds(10), interval: .seconds(1))
        var changes: [String] = []
        func note(_ h: DemandTracker.Health?) {
            switch h {
            case .healthy?: changes.append("ok")
            case .stale?: changes.append("stale")
            case .unknown?: changes.append("unknown")
            case nil: break
            }
        }
        note(t.record(.success(3), at: .zero))
        var now: Duration = .seconds(1)
        while now < .seconds(60) {
            if t.shouldPoll(at: now) { note(t.record(.failure(.timedOut(source: "s", after: .seconds(2))), at: now)) }
            note(t.advance(to: now))
            if now < .seconds(10) { #expect(t.reading(at: now) == .known(3)) }
            now += .milliseconds(500)
        }
        #expect(t.reading(at: now) == .unknown)
        note(t.record(.success(8), at: now))
        #expect(changes == ["ok", "stale", "unknown", "ok"])
        #expect(t.reading(at: now) == .known(8))
    }
}
