import ArgumentParser
import SecureTransport

/// `microscale tls`: the cluster CA and node certificates (docs/contracts.md, "The wire"), as `consul tls` makes them.
public struct TLSCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "tls",
        abstract: "Create the cluster CA and node certificates for mutual TLS.",
        subcommands: [CA.self, Cert.self])

    public init() {}

    public struct CA: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "ca", abstract: "Manage the cluster certificate authority.", subcommands: [Create.self])
        public init() {}

        public struct Create: ParsableCommand {
            public static let configuration = CommandConfiguration(
                abstract: "Create a new cluster CA: ca.pem and ca-key.pem (mode 0600).")

            @Option(help: "Directory to write the CA into.")
            var dir: String = "."
            @Option(help: "Days the CA is valid.")
            var days: Int = 1825
            @Flag(help: "Overwrite existing files.")
            var force = false

            public init() {}

            public func validate() throws {
                guard days > 0 else { throw ValidationError("--days must be positive, got \(days)") }
            }

            public func run() throws {
                let written = try runTLS { try CertificateIssuer.createCA(in: dir, validity: .init(days: days), force: force) }
                print("==> wrote CA certificate \(written.certificate)")
                print("==> wrote CA key \(written.key) (mode 0600; keep it off the hosts)")
            }
        }
    }

    public struct Cert: ParsableCommand {
        public static let configuration = CommandConfiguration(
            commandName: "cert", abstract: "Manage node certificates.", subcommands: [Create.self])
        public init() {}

        public struct Create: ParsableCommand {
            public static let configuration = CommandConfiguration(
                abstract: "Create a certificate and key for one node, signed by the cluster CA.")

            @Option(name: .customLong("ca-dir"), help: "Directory holding ca.pem and ca-key.pem.")
            var caDir: String = "."
            @Option(help: "The node's name (the agent's --name).")
            var node: String
            @Flag(help: "The node runs Raft (the agent's --server).")
            var server = false
            @Option(name: .customLong("address"), help: "An IP address or DNS name the node is reached at (repeatable).")
            var addresses: [String] = []
            @Option(help: "Directory to write the certificate and key into.")
            var dir: String = "."
            @Option(help: "Days the certificate is valid.")
            var days: Int = 365
            @Flag(help: "Overwrite existing files.")
            var force = false

            public init() {}

            public func validate() throws {
                guard days > 0 else { throw ValidationError("--days must be positive, got \(days)") }
                do { try CertificateIssuer.validate(nodeName: node) } catch let e as TLSError {
                    throw ValidationError("--node: \(e.description.replacingOccurrences(of: "certificate issuance failed: ", with: ""))")
                }
            }

            public func run() throws {
                let written = try runTLS {
                    try CertificateIssuer.createNodeCertificate(
                        caDir: caDir, node: node, server: server, addresses: addresses, in: dir,
                        validity: .init(days: days), force: force)
                }
                print("==> wrote \(server ? "server" : "client") certificate \(written.certificate)")
                print("==> wrote key \(written.key) (mode 0600)")
            }
        }
    }
}

/// Turns a TLS error into one line on stderr and exit status 2, the contract for bad input.
func runTLS<T>(_ body: () throws -> T) throws -> T {
    do { return try body() } catch let error as TLSError {
        printError("error: \(error)")
        throw ExitCode(2)
    }
}
