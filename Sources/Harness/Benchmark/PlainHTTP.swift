import Dispatch
import Foundation

/// A blocking HTTP/1.0 GET over a plain socket with hard timeouts, run off the cooperative
/// pool. Benchmarks poll dozens of agents ten times a second; this keeps the poller simple and
/// bounded (a frozen agent costs at most the timeout), independent of URLSession.
/// `package`: AgentTests' real-process tests (RaftCrashTests, LinearizableReadTests) use it too.
package enum PlainHTTP {
    package static func get(
        host: String, port: Int, path: String, timeoutMillis: Int = 1000, maxBytes: Int = 4 << 20,
        token: String? = nil
    ) async -> Data? {
        guard
            let (status, body) = await request(
                "GET", host: host, port: port, path: path, timeoutMillis: timeoutMillis,
                maxBytes: maxBytes, token: token),
            status == 200
        else { return nil }
        return body
    }

    /// Any method, with an optional body; the status and body, or nil if no answer came.
    package static func request(
        _ method: String, host: String, port: Int, path: String, body: [UInt8] = [],
        timeoutMillis: Int = 1000, maxBytes: Int = 4 << 20, token: String? = nil
    ) async -> (Int, Data)? {
        await withCheckedContinuation { c in
            DispatchQueue.global().async {
                c.resume(
                    returning: blockingRequest(
                        method, host: host, port: port, path: path, body: body,
                        timeoutMillis: timeoutMillis, maxBytes: maxBytes, token: token))
            }
        }
    }

    package static func blockingRequest(
        _ method: String, host: String, port: Int, path: String, body: [UInt8],
        timeoutMillis: Int, maxBytes: Int, token: String? = nil
    ) -> (Int, Data)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return nil }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { return nil }
        let auth = token.map { "Authorization: Bearer \($0)\r\n" } ?? ""
        let request =
            Array("\(method) \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\(auth)Content-Length: \(body.count)\r\n\r\n".utf8) + body
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 65_536)
        // Read until the body announced by Content-Length is complete (a server may keep the
        // connection open regardless of "Connection: close"), or the peer closes.
        while response.count < maxBytes {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            response.append(buf, count: n)
            if let head = response.range(of: Data("\r\n\r\n".utf8)),
                let length = contentLength(response[..<head.lowerBound]),
                response.count - head.upperBound >= length
            {
                break
            }
        }
        guard let split = response.range(of: Data("\r\n\r\n".utf8)), response.count >= 12,
            let status = Int(String(decoding: response[response.startIndex + 9..<response.startIndex + 12], as: UTF8.self))
        else { return nil }
        return (status, Data(response[split.upperBound...]))
    }

    private static func contentLength(_ head: Data) -> Int? {
        for line in String(decoding: head, as: UTF8.self).split(separator: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" {
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }
        }
        return nil
    }
}
