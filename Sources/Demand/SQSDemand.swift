import Bounds
import COpenSSL
import Foundation
import SecureTransport

/// AWS Signature Version 4 (AWS General Reference, "Signing AWS API requests": create a canonical
/// request, a string to sign, the signing key, the signature), with SHA-256 and HMAC-SHA256 from
/// the system OpenSSL.
public enum SignatureV4 {
    public static func sha256Hex(_ bytes: [UInt8]) -> String {
        OpenSSLLibrary.initialize()
        var out = [UInt8](repeating: 0, count: 32)
        var size: UInt32 = 32
        bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                _ = EVP_Digest(input.baseAddress, input.count, output.baseAddress, &size, EVP_sha256(), nil)
            }
        }
        return hex(out)
    }

    public static func hmac(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        OpenSSLLibrary.initialize()
        var out = [UInt8](repeating: 0, count: 32)
        var size: UInt32 = 32
        key.withUnsafeBufferPointer { k in
            data.withUnsafeBufferPointer { d in
                out.withUnsafeMutableBufferPointer { o in
                    _ = HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), d.baseAddress, d.count, o.baseAddress, &size)
                }
            }
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `20150830T123600Z` and `20150830` for `date`, in UTC.
    public static func stamps(_ date: Date) -> (amzDate: String, day: String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        let day = String(format: "%04d%02d%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
        return (day + String(format: "T%02d%02d%02dZ", c.hour ?? 0, c.minute ?? 0, c.second ?? 0), day)
    }

    /// The Authorization header for a request whose headers (names lowercase, values trimmed) and
    /// body are given; every header given is signed.
    public static func authorization(
        method: String, path: String, query: String, headers: [(String, String)], payload: [UInt8],
        accessKey: String, secretKey: String, region: String, service: String, amzDate: String, day: String
    ) -> String {
        let sorted = headers.map { ($0.0.lowercased(), $0.1.trimmingCharacters(in: .whitespaces)) }.sorted { $0.0 < $1.0 }
        let canonicalHeaders = sorted.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaders = sorted.map(\.0).joined(separator: ";")
        let canonicalRequest = [method, path, query, canonicalHeaders, signedHeaders, sha256Hex(payload)].joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(Array(canonicalRequest.utf8))].joined(separator: "\n")
        var key = hmac(key: Array("AWS4\(secretKey)".utf8), Array(day.utf8))
        key = hmac(key: key, Array(region.utf8))
        key = hmac(key: key, Array(service.utf8))
        key = hmac(key: key, Array("aws4_request".utf8))
        let signature = hex(hmac(key: key, Array(stringToSign.utf8)))
        return "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }
}

/// A client of the SQS query API (Amazon SQS API Reference, "Making query API requests"): a form
/// POST of `Action=...` with Signature Version 4, credentials `ACCESS_KEY_ID:SECRET_ACCESS_KEY`
/// read from a file at each call. Temporary credentials (a session token) are not supported.
public struct SQSClient: Sendable {
    public let endpoint: SourceURL
    public let region: String
    public let credentials: String
    public let timeout: Duration
    let source: String
    private let http: SourceHTTP
    private let clock: @Sendable () -> Date

    public init(
        endpoint: SourceURL, region: String, credentials: String, caFile: String? = nil, timeout: Duration = .seconds(5),
        source: String = "sqs", clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.timeout = timeout
        self.source = source
        self.http = SourceHTTP(caFile: caFile)
        self.clock = clock
    }

    /// One action; the answer's XML body. A refused key or signature is `badCredentials`.
    public func call(_ parameters: [(String, String)]) async throws(DemandError) -> [UInt8] {
        guard case .userPassword(let accessKey, let secret) = try Credentials.read(path: credentials, source: source) else {
            throw DemandError.badCredentials(source: source, reason: "the file must hold ACCESS_KEY_ID:SECRET_ACCESS_KEY")
        }
        let body = Array(
            (parameters + [("Version", "2012-11-05")]).map { "\(percentEncoded($0.0))=\(percentEncoded($0.1))" }
                .joined(separator: "&").utf8)
        let (amzDate, day) = SignatureV4.stamps(clock())
        let path = String(endpoint.path.prefix { $0 != "?" })
        let signed: [(String, String)] = [
            ("content-type", "application/x-www-form-urlencoded; charset=utf-8"),
            ("host", endpoint.hostHeader),
            ("x-amz-date", amzDate),
        ]
        let authorization = SignatureV4.authorization(
            method: "POST", path: path.isEmpty ? "/" : path, query: "", headers: signed, payload: body,
            accessKey: accessKey, secretKey: secret, region: region, service: "sqs", amzDate: amzDate, day: day)
        let headers = [("Content-Type", signed[0].1), ("X-Amz-Date", amzDate), ("Authorization", authorization)]
        do {
            return try await http.request(
                endpoint, path: path.isEmpty ? "/" : path, method: .POST, headers: headers, body: body,
                source: source, timeout: timeout)
        } catch .badAnswer(let s, let reason) where reason.contains("<Code>") {
            // SQS reports a refused key or signature as 400 or 403 with an error code.
            let code = SQSDemand.element("Code", in: Array(reason.utf8)) ?? ""
            if ["InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "UnrecognizedClientException", "InvalidAccessKeyId"].contains(code) {
                throw DemandError.badCredentials(source: s, reason: "refused by SQS (\(code))")
            }
            throw DemandError.badAnswer(source: s, reason: reason)
        }
    }
}

/// `sqs`: a queue's `ApproximateNumberOfMessages` (messages available for retrieval) through
/// GetQueueAttributes (Amazon SQS API Reference, "GetQueueAttributes"), signed with Signature
/// Version 4. `endpoint:` sends the request elsewhere than the queue URL's host: a local stand-in
/// (moto_server in the tests) or a VPC endpoint.
public struct SQSDemand: DemandSource {
    public let name: String
    public let queueURL: String
    public let client: SQSClient

    public init(
        queueURL: String, endpoint: SourceURL, region: String, credentials: String, caFile: String? = nil,
        timeout: Duration = .seconds(5), clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.name = "sqs \(queueURL)"
        self.queueURL = queueURL
        self.client = SQSClient(
            endpoint: endpoint, region: region, credentials: credentials, caFile: caFile, timeout: timeout,
            source: name, clock: clock)
    }

    public func sample() async throws -> Double {
        let answer = try await client.call([
            ("Action", "GetQueueAttributes"), ("AttributeName.1", "ApproximateNumberOfMessages"), ("QueueUrl", queueURL),
        ])
        return try Self.parse(answer, source: name)
    }

    /// `<GetQueueAttributesResponse>...<Attribute><Name>ApproximateNumberOfMessages</Name>
    /// <Value>5</Value></Attribute>...`: the value of that one attribute, a whole number.
    public static func parse(_ body: [UInt8], source: String) throws(DemandError) -> Double {
        let text = String(decoding: body, as: UTF8.self)
        guard let name = text.range(of: "<Name>ApproximateNumberOfMessages</Name>") else {
            throw DemandError.badAnswer(source: source, reason: "no ApproximateNumberOfMessages in the answer: \(SourceHTTP.excerpt(body))")
        }
        guard let value = element("Value", in: Array(text[name.upperBound...].utf8)), let n = Int64(value) else {
            throw DemandError.badAnswer(source: source, reason: "ApproximateNumberOfMessages has no whole-number value")
        }
        guard n >= 0, Double(n) <= Limits.maxDemand else {
            throw DemandError.badAnswer(source: source, reason: "ApproximateNumberOfMessages is \(n), outside 0 to \(Limits.text(Limits.maxDemand))")
        }
        return Double(n)
    }

    /// The text of the first `<tag>...</tag>` in `bytes`.
    static func element(_ tag: String, in bytes: [UInt8]) -> String? {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let open = text.range(of: "<\(tag)>"), let close = text.range(of: "</\(tag)>", range: open.upperBound..<text.endIndex) else {
            return nil
        }
        return String(text[open.upperBound..<close.lowerBound]).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
