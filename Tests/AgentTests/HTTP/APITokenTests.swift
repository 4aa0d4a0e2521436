import Foundation
import Testing

@testable import Agent

@Suite struct APITokenTests {
    // MARK: Comparing

    @Test func constantTimeEqualityIsPlainEqualityOfTheBytes() {
        let token = Array("s3cret-token".utf8)
        #expect(APIToken.constantTimeEqual(token, Array("s3cret-token".utf8)))
        #expect(!APIToken.constantTimeEqual(token, Array("x3cret-token".utf8)), "first byte differs")
        #expect(!APIToken.constantTimeEqual(token, Array("s3cret-tokeN".utf8)), "last byte differs")
        #expect(!APIToken.constantTimeEqual(token, Array("s3cret-toke".utf8)), "a prefix")
        #expect(!APIToken.constantTimeEqual(token, Array("s3cret-token!".utf8)), "longer")
        #expect(!APIToken.constantTimeEqual(token, []))
        #expect(APIToken.constantTimeEqual([UInt8](), [UInt8]()))
        // Every bit position of every byte counts (the ORed differences are not truncated).
        for i in token.indices {
            for bit in 0..<8 {
                var other = token
                other[i] ^= UInt8(1) << UInt8(bit)
                #expect(!APIToken.constantTimeEqual(token, other), "byte \(i) bit \(bit)")
            }
        }
    }

    @Test func anAuthorizationHeaderAuthorizesOnlyWithTheBearerSchemeAndTheExactToken() {
        let token = Array("s3cret".utf8)
        #expect(APIToken.authorizes("Bearer s3cret", token: token))
        #expect(APIToken.authorizes("bearer s3cret", token: token), "the scheme is case-insensitive")
        #expect(APIToken.authorizes("BEARER  s3cret", token: token))
        #expect(!APIToken.authorizes("Bearer S3cret", token: token), "the token is not")
        #expect(!APIToken.authorizes("Bearer s3cret ", token: token))
        #expect(!APIToken.authorizes("Bearer s3cre", token: token))
        #expect(!APIToken.authorizes("Basic s3cret", token: token))
        #expect(!APIToken.authorizes("Bearers3cret", token: token))
        #expect(!APIToken.authorizes("Bearer ", token: token))
        #expect(!APIToken.authorizes("s3cret", token: token))
        #expect(!APIToken.authorizes(nil, token: token))
    }

    @Test func aTokenMustBePrintableASCIIAndBounded() {
        #expect(APIToken.problem("s3cret-Token_0.9~") == nil)
        #expect(APIToken.problem("") == "is empty")
        #expect(APIToken.problem("two words")?.contains("space") == true)
        #expect(APIToken.problem("line\nbreak")?.contains("control") == true)
        #expect(APIToken.problem("tökén")?.contains("non-ASCII") == true)
        #expect(APIToken.problem(String(repeating: "a", count: 4097)) == "is longer than 4096 bytes")
    }

    // MARK: Token files

    static let dir: String = {
        let d = NSTemporaryDirectory() + "microscale-token-tests-\(getpid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    /// A file holding `text` with `mode`, under a fresh name.
    func file(_ text: String, mode: Int) throws -> String {
        let path = "\(Self.dir)/token-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    @Test(arguments: [("s3cret\n", 0o600), ("s3cret", 0o400), ("s3cret\r\n", 0o600), ("s3cret\n\n", 0o700)])
    func aPrivateTokenFileIsReadWithoutItsTrailingNewline(_ text: String, _ mode: Int) throws {
        let path = try file(text, mode: mode)
        #expect(try APIToken.read(file: path, name: "--api-token-file") == "s3cret")
    }

    @Test(arguments: [(0o644, "0644"), (0o640, "0640"), (0o604, "0604"), (0o660, "0660"), (0o620, "0620")])
    func aTokenFileOthersCanReadOrWriteIsRefusedNamingTheFlagAndTheMode(_ mode: Int, _ shown: String) throws {
        let path = try file("s3cret\n", mode: mode)
        #expect(
            throws: ConfigurationError(
                "--api-token-file: \(path) has mode \(shown); a token file must not be readable or writable by group or others (chmod 600 \(path))")
        ) {
            try APIToken.read(file: path, name: "--api-token-file")
        }
    }

    @Test func anEmptyTokenFileIsRefused() throws {
        for text in ["", "\n", "\r\n\n"] {
            let path = try file(text, mode: 0o600)
            #expect(throws: ConfigurationError("--api-token-file: \(path) is empty")) {
                try APIToken.read(file: path, name: "--api-token-file")
            }
        }
    }

    @Test func aTokenFileThatIsNoTokenIsRefused() throws {
        let spaced = try file("s3cret \n", mode: 0o600)
        #expect(
            throws: ConfigurationError(
                "--token-file: the token in \(spaced) contains a space, a control or a non-ASCII character; use printable ASCII only")
        ) {
            try APIToken.read(file: spaced, name: "--token-file")
        }
        let large = try file(String(repeating: "a", count: 5000), mode: 0o600)
        #expect(throws: ConfigurationError("--api-token-file: \(large) is larger than 4096 bytes; it should hold only the token")) {
            try APIToken.read(file: large, name: "--api-token-file")
        }
        #expect(throws: ConfigurationError("--api-token-file: \(Self.dir) is not a regular file")) {
            try APIToken.read(file: Self.dir, name: "--api-token-file")
        }
        #expect(throws: ConfigurationError("--api-token-file: cannot read \(Self.dir)/absent: No such file or directory")) {
            try APIToken.read(file: "\(Self.dir)/absent", name: "--api-token-file")
        }
    }

    // MARK: The agent's flag

    func settings(_ pairs: [String: String], origin: String = "flag") -> AgentSettings {
        var s = AgentSettings()
        for (k, v) in ["name": "node-a", "data-dir": "/tmp/d", "tls-ca": "ca.pem", "tls-cert": "a.pem", "tls-key": "a-key.pem"] {
            s.set(k, v, origin: "--\(k)")
        }
        for (k, v) in pairs { s.set(k, v, origin: "--\(k)") }
        return s
    }

    @Test func theAgentReadsItsTokenFromApiTokenFile() throws {
        let path = try file("from-a-file\n", mode: 0o600)
        let c = try settings(["api-token-file": path, "http": "10.0.0.5:7481"]).resolve()
        #expect(c.apiToken == "from-a-file")
    }

    @Test func apiTokenFileIsAConfigFileKeyToo() throws {
        let path = try file("from-a-file\n", mode: 0o600)
        let yaml = try AgentSettings.fromYAML("api_token_file: \(path)\nhttp: 10.0.0.5:7481\n", file: "agent.yaml")
        #expect(try yaml.overridden(by: settings([:])).resolve().apiToken == "from-a-file")

        let open = try file("from-a-file\n", mode: 0o644)
        let refused = try AgentSettings.fromYAML("api-token-file: \(open)\n", file: "agent.yaml")
        #expect(
            throws: ConfigurationError(
                "agent.yaml line 1: \(open) has mode 0644; a token file must not be readable or writable by group or others (chmod 600 \(open))")
        ) {
            try refused.overridden(by: settings([:])).resolve()
        }
    }

    @Test func apiTokenAndApiTokenFileTogetherAreRefused() throws {
        let path = try file("from-a-file\n", mode: 0o600)
        #expect(throws: ConfigurationError("--api-token-file: api-token-file and api-token (--api-token) are both set; use one")) {
            try settings(["api-token-file": path, "api-token": "s3cret"]).resolve()
        }
    }

    @Test func anApiTokenThatCannotTravelInAHeaderIsRefused() {
        #expect(throws: ConfigurationError("--api-token: api-token contains a space, a control or a non-ASCII character; use printable ASCII only")) {
            try settings(["api-token": "two words"]).resolve()
        }
    }

    @Test func aGroupReadableTokenFileStopsTheAgentWithOneLineAndExitStatus2() throws {
        let path = try file("s3cret\n", mode: 0o640)
        let (status, output) = try AgentFlagsTests().microscale(
            [
                "agent", "--name", "node-a", "--data-dir", "\(Self.dir)/data", "--tls-ca", "ca.pem", "--tls-cert", "a.pem",
                "--tls-key", "a-key.pem", "--api-token-file", path,
            ])
        #expect(status == 2)
        #expect(
            output
                == "error: --api-token-file: \(path) has mode 0640; a token file must not be readable or writable by group or others (chmod 600 \(path))\n"
        )
    }

    // MARK: The CLI

    @Test func theCLITakesItsTokenFromAFlagAFileOrTheEnvironment() throws {
        let path = try file("from-a-file\n", mode: 0o600)
        #expect(try HTTPClientOptions.resolveToken(flag: nil, file: nil, environment: [:]) == nil)
        #expect(try HTTPClientOptions.resolveToken(flag: "flag", file: nil, environment: ["MICROSCALE_HTTP_TOKEN": "env"]) == "flag")
        #expect(try HTTPClientOptions.resolveToken(flag: nil, file: path, environment: ["MICROSCALE_HTTP_TOKEN": "env"]) == "from-a-file")
        #expect(try HTTPClientOptions.resolveToken(flag: nil, file: nil, environment: ["MICROSCALE_HTTP_TOKEN": "env"]) == "env")
        #expect(try HTTPClientOptions.resolveToken(flag: nil, file: nil, environment: ["MICROSCALE_HTTP_TOKEN_FILE": path]) == "from-a-file")
    }

    @Test func theCLIRefusesTwoTokensOfOneKindAndAnOpenTokenFile() throws {
        let path = try file("from-a-file\n", mode: 0o600)
        #expect(throws: CLIError.self) { try HTTPClientOptions.resolveToken(flag: "x", file: path, environment: [:]) }
        #expect(throws: CLIError.self) {
            try HTTPClientOptions.resolveToken(flag: nil, file: nil, environment: ["MICROSCALE_HTTP_TOKEN": "x", "MICROSCALE_HTTP_TOKEN_FILE": path])
        }
        let open = try file("from-a-file\n", mode: 0o644)
        do {
            _ = try HTTPClientOptions.resolveToken(flag: nil, file: nil, environment: ["MICROSCALE_HTTP_TOKEN_FILE": open])
            Issue.record("an open token file was read")
        } catch let e as CLIError {
            #expect(e.description.hasPrefix("MICROSCALE_HTTP_TOKEN_FILE: \(open) has mode 0644"), "\(e)")
        }
    }
}
