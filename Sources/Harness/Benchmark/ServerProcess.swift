import Foundation

/// One server agent process of a benchmark on its own loopback address (peers on :7480, the HTTP
/// API on :7481), restartable on the same data directory. Certificates are expected under
/// `DIR/certs`, the CA under `DIR/ca`; output is appended to `DIR/NAME.log`.
final class ServerProcess: @unchecked Sendable {
    let name: String
    let ip: String
    let directory: String
    let executable: String
    private(set) var process: Process?

    init(name: String, ip: String, directory: String, executable: String) {
        self.name = name
        self.ip = ip
        self.directory = directory
        self.executable = executable
    }

    var isRunning: Bool { process?.isRunning == true }
    var pid: Int32 { process?.processIdentifier ?? 0 }

    /// Starts the agent as a server of a three-server cluster, joining `join` unless that is itself.
    func start(join: String, extra: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        var args =
            [
                "agent", "--name", name, "--bind", "\(ip):7480", "--http", "\(ip):7481",
                "--data-dir", "\(directory)/data/\(name)", "--tls-ca", "\(directory)/ca/ca.pem",
                "--tls-cert", "\(directory)/certs/\(name).pem", "--tls-key", "\(directory)/certs/\(name)-key.pem",
                "--server", "--bootstrap-expect", "3",
                "--log-level", ProcessInfo.processInfo.environment["MICROSCALE_BENCH_LOG_LEVEL"] ?? "warning",
            ] + extra
        if join != ip { args += ["--join", "\(join):7480"] }
        p.arguments = args
        let logPath = "\(directory)/\(name).log"
        if !FileManager.default.fileExists(atPath: logPath) { FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try BenchmarkChildren.run(p)
        process = p
    }

    /// SIGKILL, as a crash would.
    func kill9() {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
    }

    func waitUntilExit() { process?.waitUntilExit() }
}

/// Polls `condition` every `every` until it holds (true) or `seconds` pass (false). Runs on the
/// caller's actor, so the condition may read that actor's state.
func pollUntil(
    _ seconds: Double, every: Duration = .milliseconds(50), isolation: isolated (any Actor)? = #isolation,
    _ condition: () async -> Bool
) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try await Task.sleep(for: every)
    }
    return false
}
