import ArgumentParser
import Foundation
import SecureTransport

/// Benchmarks with real sockets and processes: figures and JSON, never pass/fail.
@main
struct MicroscaleBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "microscale-bench",
        abstract: "Benchmarks of the real components on this machine (build with -c release).",
        subcommands: [Transport.self])
}

struct Transport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "TLS handshakes/s, MB/s of 1 KiB frames over one TLS connection, LZ4 ratio of a node-state payload.")

    @Option(help: "Authenticated connections to open.") var handshakes = 2000
    @Option(help: "Connections in flight at once.") var concurrency = 16
    @Option(help: "Frames to send over one connection.") var frames = 400_000
    @Option(help: "Members in the push-pull payload.") var members = 50
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let dir = NSTemporaryDirectory() + "microscale-bench-certs-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var bench = TransportBenchmark(certificateDirectory: dir)
        bench.handshakes = handshakes
        bench.concurrency = concurrency
        bench.frames = frames
        bench.members = members
        let r = try await bench.run()
        if json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try enc.encode(r), as: UTF8.self))
        } else {
            print(String(format: "handshakes/s      %9.0f   (%d mutual TLS 1.3 + hello, %d in flight; target >= 500)", r.handshakesPerSecond, r.handshakes, r.handshakeConcurrency))
            print(String(format: "MB/s              %9.1f   (%d frames of %d B over one connection; target >= 200)", r.megabytesPerSecond, r.frames, r.frameBytes))
            print(String(format: "frames/s          %9.0f", r.framesPerSecond))
            print(String(format: "LZ4 ratio         %9.2f   (push-pull of %d members: %d -> %d bytes)", r.lz4Ratio, members, r.nodeStatePayloadBytes, r.nodeStateCompressedBytes))
        }
    }
}
