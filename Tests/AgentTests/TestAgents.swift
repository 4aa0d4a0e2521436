import Foundation

@testable import Agent

/// Polls `condition` every 50 ms until it holds or `seconds` pass; whether it held (the in-process
/// cluster tests wait for convergence this way, never for a fixed time).
func pollUntil(_ seconds: Double, _ condition: () async -> Bool) async throws -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}

/// An agent on loopback for the in-process cluster tests: peer port `port`, an HTTP port the system
/// picks, its certificate and key from `dir/certs`, the CA from `dir/ca`.
func loopbackAgentSettings(_ name: String, dir: String, port: Int, dataDir: String? = nil) -> AgentSettings {
    var s = AgentSettings()
    s.set("name", name, origin: "test")
    s.set("bind", "127.0.0.1:\(port)", origin: "test")
    s.set("http", "127.0.0.1:0", origin: "test")
    s.set("data-dir", dataDir ?? "\(dir)/data-\(name)-\(port)", origin: "test")
    s.set("tls-ca", "\(dir)/ca/ca.pem", origin: "test")
    s.set("tls-cert", "\(dir)/certs/\(name).pem", origin: "test")
    s.set("tls-key", "\(dir)/certs/\(name)-key.pem", origin: "test")
    return s
}

/// A request as a client makes it: 503 says no leader can answer right now (an election, as on a
/// loaded machine) and to retry shortly; every write these tests make is idempotent. Any other
/// answer is returned as it is.
func callRetryingUnavailable(
    _ a: AgentRuntime, _ method: String, _ path: String, _ body: String = "",
    for seconds: Double
) async throws -> APIResponse {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        let r = await a.cluster(method: method, path: path, body: Array(body.utf8))
        if r.status != 503 || Date() >= deadline { return r }
        try await Task.sleep(for: .milliseconds(100))
    }
}
