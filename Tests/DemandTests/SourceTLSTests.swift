import Demand
import Foundation
import Testing

/// HTTPS sources against a real TLS server (python3's http.server wrapped in its ssl module) with
/// certificates made by the openssl command line: a CA of the test's own, a server certificate for
/// localhost and 127.0.0.1, and a second CA that signed nothing here.
@Suite(.serialized) struct SourceTLSTests {
    final class Server {
        let process = Process()
        let dir: String
        var port = 0

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("ms-tls-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let ext = "\(dir)/san.ext"
            try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: ext, atomically: false, encoding: .utf8)
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
            try Self.openssl(["req", "-x509"] + ec + ["-keyout", "\(dir)/ca.key", "-out", "\(dir)/ca.pem", "-days", "1", "-subj", "/CN=test-ca"])
            try Self.openssl(
                ["req", "-x509"] + ec + ["-keyout", "\(dir)/other.key", "-out", "\(dir)/other.pem", "-days", "1", "-subj", "/CN=other-ca"])
            try Self.openssl(["req"] + ec + ["-keyout", "\(dir)/srv.key", "-out", "\(dir)/srv.csr", "-subj", "/CN=localhost"])
            try Self.openssl([
                "x509", "-req", "-in", "\(dir)/srv.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key",
                "-CAcreateserial", "-out", "\(dir)/srv.pem", "-days", "1", "-extfile", ext,
            ])
            let script = """
                import http.server, ssl, sys
                class H(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        body = b'{"queue":{"depth":37}}'
                        self.send_response(200); self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
                    def log_message(self, *a): pass
                s = http.server.HTTPServer(("127.0.0.1", 0), H)
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2])
                s.socket = c.wrap_socket(s.socket, server_side=True)
                print(s.server_address[1], flush=True)
                s.serve_forever()
                """
            let out = Pipe()
            // Debian's python3 itself, not a version manager's shim: a shim would run python as its
            // child, and stopping the shim would leave the server running.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = ["-c", script, "\(dir)/srv.pem", "\(dir)/srv.key"]
            process.standardOutput = out
            try process.run()
            var line = Data()
            while !line.contains(0x0A) {
                let chunk = out.fileHandleForReading.availableData
                guard !chunk.isEmpty else { break }
                line += chunk
            }
            port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        }

        static func openssl(_ args: [String]) throws {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["openssl"] + args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw Brokers.Failed(what: "openssl \(args.prefix(2).joined(separator: " ")) failed") }
        }

        func stop() {
            // SIGKILL, not terminate(): the child inherits the test thread's signal mask, in which
            // SIGTERM may be blocked, and would then outlive the test.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    @Test func anHTTPSSourceVerifiesTheServerAgainstItsCAFileAndTheHostName() async throws {
        let server = try Server()
        defer { server.stop() }
        try #require(server.port > 0, "the TLS test server did not start")
        for host in ["127.0.0.1", "localhost"] {
            let good = HTTPJSONDemand(url: "https://\(host):\(server.port)/stats", pointer: "/queue/depth", caFile: "\(server.dir)/ca.pem")
            #expect(try await good.sample() == 37, "\(host)")
        }
        // A CA that did not sign the server's certificate: refused in the handshake.
        let wrongCA = HTTPJSONDemand(url: "https://127.0.0.1:\(server.port)/stats", pointer: "/queue/depth", caFile: "\(server.dir)/other.pem")
        let e = await #expect(throws: DemandError.self) { _ = try await wrongCA.sample() }
        #expect(e?.description.contains("certificate") == true, "\(String(describing: e))")
        // The system's store does not know the test CA either.
        let system = HTTPJSONDemand(url: "https://127.0.0.1:\(server.port)/stats", pointer: "/queue/depth")
        await #expect(throws: DemandError.self) { _ = try await system.sample() }
    }
}
