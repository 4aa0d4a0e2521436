import Foundation
import Testing

import struct Scaling.UtilizationSummary

@testable import Agent

/// The dashboard in a real headless Chromium (Debian's package): the page loads from a running
/// cluster, its chart has data, the members and decisions are listed, and a screenshot is taken.
@Suite(.serialized) struct DashboardTests {
    static let chromium = "/usr/bin/chromium"

    func chromium(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.chromium)
        p.arguments =
            [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                // A profile of its own per run: suites running side by side each start one.
                "--user-data-dir=\(NSTemporaryDirectory())microscale-chromium-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            ] + args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func thePageLoadsInChromiumWithChartDataMembersAndDecisions() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.chromium), "install Debian's chromium (scripts/setup --test)")
        let api = ClusterAPITests()
        // No API token: Chromium loads the page without one. Writes then go to a server's API
        // (a client agent relays writes only with the token; docs/ARCHITECTURE.md, "Trust").
        let c = try await api.cluster(token: nil)
        defer { Task { for a in c.all { await a.shutdown() } } }
        #expect(try await api.eventually { await api.leader(c.client) != nil })
        let file = "services: { web: { image: mini:latest, cpu: 0.5, memory: 64MiB, min: 1, max: 4, demand: { source: static, per_container: 10 } } }"
        #expect(try await api.call(c.servers[0], "PUT", "/v1/services", file).status == 200)
        #expect(try await api.call(c.servers[0], "PUT", "/v1/demand/web", #"{"value": 25}"#).status == 200)
        let server = c.servers[1]
        let url = "http://127.0.0.1:\(try #require(server.httpAddress?.port))/ui"
        // Two history samples exist before the page asks for them.
        _ = await server.history()
        #expect(try await api.eventually { await server.history().count >= 2 })

        // The page fills its tables from /v1/status and /v1/decisions after it loads; on a loaded
        // machine those answers can miss one dump's time budget, so up to three dumps are taken.
        var dom = ""
        for _ in 0..<3 {
            dom = try chromium(["--virtual-time-budget=5000", "--dump-dom", url])
            if dom.contains("→3: demand 25") && dom.contains("Sharing saves")
                && c.servers.allSatisfy({ dom.contains("<td>\($0.configuration.name)</td><td>alive") })
            {
                break
            }
        }
        let points = dom.firstRange(of: #/data-points="(\d+)"/#).map { Int(dom[$0].dropFirst(13).dropLast()) ?? 0 } ?? 0
        #expect(points >= 2, "the chart drew \(points) samples")
        for s in c.servers { #expect(dom.contains("<td>\(s.configuration.name)</td><td>alive"), "member \(s.configuration.name) listed") }
        #expect(dom.contains("→3: demand 25 at 10 per container"), "the latest decision is listed")
        // The utilization panel (docs/utilization.md): web's priority listed, the compaction line written.
        #expect(dom.contains("Sharing saves"), "the utilization panel has its compaction figure")
        #expect(dom.contains("<tr><td>1</td>"), "the utilization panel lists priority 1")

        // The report through the client agent (forwarded to the leader), and a window out of range refused.
        let report = try await api.call(c.client, "GET", "/v1/report/utilization?window=10m")
        #expect(report.status == 200, "\(String(decoding: report.body, as: UTF8.self))")
        let summary = try api.json(report, UtilizationSummary.self)
        #expect(summary.samples >= 1 && summary.levels.first?.priority == 1 && (summary.compaction?.sharedNodes ?? 0) >= 3)
        #expect(summary.levels.first?.reservedPeakCores == 1.5, "3 web containers of 0.5 cores")
        let refused = try await api.call(c.client, "GET", "/v1/report/utilization?window=2h")
        #expect(refused.status == 400 && String(decoding: refused.body, as: UTF8.self).contains("window"))

        let shot = NSTemporaryDirectory() + "microscale-dashboard-\(getpid()).png"
        _ = try chromium(["--virtual-time-budget=3000", "--window-size=1100,800", "--screenshot=\(shot)", url])
        let png = try #require(FileManager.default.contents(atPath: shot), "no screenshot at \(shot)")
        #expect(png.count > 10_000 && png.starts(with: [0x89, 0x50, 0x4E, 0x47]), "screenshot \(shot) is a PNG")
    }
}
