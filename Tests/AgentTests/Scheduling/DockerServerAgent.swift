import Foundation
import Logging

@testable import Agent

/// One server agent in this process for the suites that run three of them on the real dockerd of
/// `scripts/test-env` (EndToEnd, Placement, HAProxy): 2 cores and 4 GiB, `--bootstrap-expect 3`,
/// its certificate under `dir` (made by the suite), its HTTP API on a free port. `extra` adds or
/// overrides settings (a list key such as `node-label` is appended).
func dockerServerAgent(
    _ name: String, dir: String, join: Int?, docker: String, port fixed: Int? = nil, extra: [(String, String)] = []
) throws -> (AgentRuntime, Int) {
    let port = fixed ?? AgentRuntimeTests.freePort()
    var s = AgentSettings()
    for (k, v) in [
        ("name", name), ("bind", "127.0.0.1:\(port)"), ("http", "127.0.0.1:0"),
        ("data-dir", "\(dir)/data-\(name)"), ("tls-ca", "\(dir)/ca/ca.pem"),
        ("tls-cert", "\(dir)/certs/\(name).pem"), ("tls-key", "\(dir)/certs/\(name)-key.pem"),
        ("capacity-cpu", "2"), ("capacity-memory", "4GiB"), ("server", "true"), ("bootstrap-expect", "3"),
        ("docker-socket", docker),
    ] {
        s.set(k, v, origin: "test")
    }
    for (k, v) in extra {
        if AgentSettings.listKeys.contains(k) { s.append(k, v, origin: "test") } else { s.set(k, v, origin: "test") }
    }
    if let join { s.append("join", "127.0.0.1:\(join)", origin: "test") }
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    return (try AgentRuntime(configuration: try s.resolve(), logger: logger), port)
}
