import DockerEngine
import Foundation
import Testing

/// The environment `scripts/test-env up` exports. A missing variable FAILS the test with the fix in
/// the message: these tests are never skipped.
enum TestEnvironment {
    struct Missing: Error, CustomStringConvertible {
        var name: String
        var description: String {
            "\(name) is not set: run the tests through scripts/test (or `eval \"$(scripts/test-env up)\"` first); they need a real dockerd"
        }
    }
    static func require(_ name: String) throws -> String {
        guard let v = ProcessInfo.processInfo.environment[name], !v.isEmpty else { throw Missing(name: name) }
        return v
    }
}

/// A fresh node name per test, so tests see only their own containers.
private func uniqueNode(_ tag: String) -> String { "t\(tag)\(UInt32.random(in: 0...UInt32.max))" }

private func spec(_ service: String, node: String, hash: String = "h1", image: String, command: [String] = ["sleep", "600"], cpu: Double = 0.1)
    -> ContainerSpec
{
    ContainerSpec(
        service: service, node: node, specHash: hash, image: image, command: command, cpu: cpu, memoryBytes: 32 << 20, stopTimeoutSeconds: 2)
}

private func cleanup(_ client: DockerClient, node: String) async {
    guard let all = try? await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"]) else { return }
    for c in all { try? await client.remove(c.Id, force: true) }
}

/// Whether a process named `command` runs in container `id` yet, asked of /proc (the test dockerd
/// runs on this host, and every process of a container has the container's id in its cgroup path);
/// polled for at most 10 s.
private func containerRuns(_ command: String, in id: String) async throws -> Bool {
    for _ in 0..<500 {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { $0.allSatisfy(\.isNumber) } ?? []
        for pid in pids {
            guard let cgroup = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8), cgroup.contains(id),
                let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)
            else { continue }
            if comm.trimmingCharacters(in: .whitespacesAndNewlines) == command { return true }
        }
        try await Task.sleep(for: .milliseconds(20))
    }
    return false
}

/// Serialized: one test restarts the daemon.
@Suite(.serialized) struct DockerIntegrationTests {
    let client: DockerClient
    let image: String

    init() throws {
        client = try DockerClient(host: try TestEnvironment.require("MICROSCALE_TEST_DOCKER_HOST"))
        image = try TestEnvironment.require("MICROSCALE_TEST_IMAGE")
    }

    @Test func versionInfoAndPingAnswer() async throws {
        try await client.ping()
        let v = try await client.negotiatedVersion()
        #expect(v.hasPrefix("1."))
        let info = try await client.info()
        #expect(info.NCPU > 0)
        #expect(info.MemTotal > 0)
        // Capacity (issue 19, item 4): the Engine's figures, lowered by dockerd's cgroup limits,
        // less the reserve; dockerd is found through its socket (SO_PEERCRED).
        let cap = try await CapacityDetection.detect(client: client, reserveCPUs: 0.5, reserveMemory: 512 << 20)
        #expect(cap.engineCPUs == info.NCPU && cap.engineMemory == info.MemTotal)
        #expect(cap.offered.cpus == max(0, min(Double(info.NCPU), cap.cgroupCPUs ?? .infinity) - 0.5))
        #expect(cap.offered.memoryBytes == max(0, min(info.MemTotal, cap.cgroupMemory ?? .max) - (512 << 20)))
        let args = try String(contentsOfFile: try TestEnvironment.require("MICROSCALE_TEST_DOCKERD_ARGS"), encoding: .utf8)
        let pidfile = try #require(args.split(whereSeparator: \.isWhitespace).first { $0.hasPrefix("--pidfile=") }?.dropFirst("--pidfile=".count))
        let pid = Int32(try String(contentsOfFile: String(pidfile), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(cap.dockerdPID == pid, "the socket's peer is the test dockerd")
        let overridden = try await CapacityDetection.detect(
            client: client, reserveCPUs: 0.5, reserveMemory: 512 << 20, overrideCPUs: 3, overrideMemory: 1 << 30)
        #expect(overridden.offered == NodeCapacity(cpus: 3, memoryBytes: 1 << 30))
        let image = try await client.inspectImage(image)
        #expect(image.Id.hasPrefix("sha256:"))
    }

    @Test func aContainerIsCreatedWithItsLabelsAndLimitsThenStoppedAndRemoved() async throws {
        let node = uniqueNode("crud")
        defer { Task { await cleanup(client, node: node) } }
        let s = spec("web", node: node, image: image, cpu: 0.25)
        let id = try await client.create(s, name: "crud-\(node)")
        try await client.start(id, service: "web")
        let i = try await client.inspect(id)
        #expect(i.State.Running)
        #expect(i.Config.Labels?[MicroscaleLabel.managed] == "true")
        #expect(i.Config.Labels?[MicroscaleLabel.service] == "web")
        #expect(i.Config.Labels?[MicroscaleLabel.node] == node)
        #expect(i.Config.Labels?[MicroscaleLabel.spec] == "h1")
        #expect(i.HostConfig.NanoCpus == 250_000_000)
        #expect(i.HostConfig.Memory == 32 << 20)
        #expect(i.HostConfig.Init == true)
        #expect(i.Config.StopTimeout == 2)
        #expect(i.HostConfig.RestartPolicy?.Name == "no" || i.HostConfig.RestartPolicy?.Name == "")
        let listed = try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"])
        #expect(listed.map(\.Id) == [id])
        // The init process forwards SIGTERM to `sleep`, so stop returns long before the timeout
        // would SIGKILL it; the exit code shows which happened (143 = TERM, 137 = KILL).
        // `start` returns once the init process exists, not once it has blocked its signals: a TERM
        // sent before that reaches a PID 1 with no handler and the kernel drops it (CI saw 137 after
        // the whole 30 s). The init blocks its signals before it forks `sleep`, so once `sleep` runs
        // the TERM will be forwarded.
        #expect(try await containerRuns("sleep", in: id))
        try await client.stop(id, timeoutSeconds: 30, service: "web")
        let stopped = try await client.inspect(id)
        #expect(!stopped.State.Running)
        #expect(stopped.State.ExitCode == 143)
        try await client.remove(id, service: "web")
        let after = try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"])
        #expect(after.isEmpty)
    }

    @Test func killEndsAContainerAtOnce() async throws {
        let node = uniqueNode("kill")
        defer { Task { await cleanup(client, node: node) } }
        let id = try await client.create(spec("web", node: node, image: image))
        try await client.start(id)
        try await client.kill(id)
        var i = try await client.inspect(id)
        for _ in 0..<50 where i.State.Running {
            try await Task.sleep(for: .milliseconds(50))
            i = try await client.inspect(id)
        }
        #expect(!i.State.Running)
        #expect(i.State.ExitCode == 137)
    }

    @Test func aMissingImageGivesAnErrorNamingTheServiceAndTheDaemonsMessage() async throws {
        let node = uniqueNode("img")
        let s = spec("orders", node: node, image: "microscale-missing:never")
        let error = await #expect(throws: DockerError.self) { _ = try await client.create(s) }
        #expect(error?.kind == .imageMissing)
        #expect(error?.service == "orders")
        #expect(error?.description.contains("orders") == true)
        #expect(error?.description.contains("microscale-missing") == true)
    }

    @Test func aMissingSocketGivesAnErrorSayingTheDaemonIsUnreachable() async throws {
        let gone = try DockerClient(host: "unix:///tmp/microscale-no-such-dir/docker.sock")
        let error = await #expect(throws: DockerError.self) {
            _ = try await gone.create(spec("web", node: "n", image: image))
        }
        #expect(error?.kind == .daemonUnreachable)
        #expect(error?.description.contains("web") == true)
        #expect(error?.description.contains("/tmp/microscale-no-such-dir/docker.sock") == true)
    }

    @Test func theReconcilerScalesUpAndDownAndLeavesAnUnmanagedContainerAlone() async throws {
        let node = uniqueNode("scale")
        defer { Task { await cleanup(client, node: node) } }
        // Same labels but without managed=true: a container somebody else runs.
        var foreign = spec("web", node: node, image: image)
        foreign.extraLabels = ["note": "not ours"]
        let unmanagedID = try await createUnmanaged(foreign)
        try await client.start(unmanagedID)

        let shell = ReconcilerShell(client: client, node: node, maxInFlight: 4)
        await shell.setDesired([spec("web", node: node, image: image)], counts: ["web": 3])
        try await shell.converge()
        #expect(try await running(node: node, managed: true).count == 3)
        await shell.setDesired([spec("web", node: node, image: image)], counts: ["web": 1])
        try await shell.converge()
        #expect(try await running(node: node, managed: true).count == 1)
        await shell.setDesired([], counts: [:])
        try await shell.converge()
        #expect(try await running(node: node, managed: true).isEmpty)
        let foreignAfter = try await client.inspect(unmanagedID)
        #expect(foreignAfter.State.Running, "the unmanaged container is untouched")
    }

    @Test func aRestartedAgentAdoptsItsContainersInsteadOfDuplicatingThem() async throws {
        let node = uniqueNode("adopt")
        defer { Task { await cleanup(client, node: node) } }
        let first = ReconcilerShell(client: client, node: node)
        await first.setDesired([spec("web", node: node, image: image)], counts: ["web": 2])
        try await first.converge()
        let before = Set(try await running(node: node, managed: true))
        #expect(before.count == 2)
        // A new shell (an agent restart) with the same desired state.
        let second = ReconcilerShell(client: client, node: node)
        await second.setDesired([spec("web", node: node, image: image)], counts: ["web": 2])
        let report = try await second.reconcileOnce()
        #expect(report.plan.isEmpty)
        #expect(Set(try await running(node: node, managed: true)) == before)
    }

    @Test func aSpecChangeReplacesTheContainers() async throws {
        let node = uniqueNode("spec")
        defer { Task { await cleanup(client, node: node) } }
        let shell = ReconcilerShell(client: client, node: node)
        await shell.setDesired([spec("web", node: node, hash: "v1", image: image)], counts: ["web": 2])
        try await shell.converge()
        let old = Set(try await running(node: node, managed: true))
        await shell.setDesired([spec("web", node: node, hash: "v2", image: image, command: ["sleep", "601"])], counts: ["web": 2])
        try await shell.converge()
        let now = try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)", "\(MicroscaleLabel.managed)=true"])
        #expect(now.count == 2)
        #expect(now.allSatisfy { $0.Labels?[MicroscaleLabel.spec] == "v2" && $0.State == "running" })
        #expect(old.isDisjoint(with: now.map(\.Id)))
    }

    @Test func aServiceWhoseContainersExitAtOnceBacksOffAndIsReportedCrashLooping() async throws {
        let node = uniqueNode("crash")
        defer { Task { await cleanup(client, node: node) } }
        let clock = TestClock()
        var policy = ReconcilerPolicy()
        policy.initialBackoff = .seconds(10)
        let shell = ReconcilerShell(client: client, node: node, policy: policy, now: { clock.now })
        await shell.setDesired([spec("bad", node: node, image: image, command: ["sh", "-c", "exit 3"])], counts: ["bad": 1])
        let first = try await shell.reconcileOnce()
        #expect(first.started.count == 1)
        // Wait for the container to exit (it does at once), observing through the API only.
        try await waitUntil { try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"]).allSatisfy { $0.State == "exited" } }
        let second = try await shell.reconcileOnce()
        #expect(second.started.isEmpty, "no restart inside the back-off")
        #expect(second.plan.crashLooping["bad"]?.failures == 1)
        clock.advance(by: .seconds(5))
        let third = try await shell.reconcileOnce()
        #expect(third.started.isEmpty)
        clock.advance(by: .seconds(6))
        let fourth = try await shell.reconcileOnce()
        #expect(fourth.started.count == 1, "the back-off has run out")
        try await waitUntil { try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)"]).allSatisfy { $0.State == "exited" } }
        let fifth = try await shell.reconcileOnce()
        #expect(fifth.plan.crashLooping["bad"]?.failures == 2)
        #expect(fifth.plan.crashLooping["bad"].map { $0.retryAt - clock.now } == .seconds(20))
    }

    /// Last: it restarts the daemon.
    @Test func theEventStreamCarriesOnAcrossADaemonRestart() async throws {
        let node = uniqueNode("events")
        defer { Task { await cleanup(client, node: node) } }
        let args = try TestEnvironment.require("MICROSCALE_TEST_DOCKERD_ARGS")
        let events = client.events(labels: ["\(MicroscaleLabel.node)=\(node)"])
        var iterator = events.makeAsyncIterator()
        // The subscription is live once the daemon has answered; creating a container proves it.
        try await Task.sleep(for: .milliseconds(300))
        let first = try await client.create(spec("web", node: node, image: image))
        let e1 = try #require(await iterator.next())
        #expect(e1.Action == "create" && e1.Actor.ID == first)

        try await restartDaemon(argsFile: args)

        var sawReconnect = false
        var sawAfter = false
        let second = try await client.create(spec("web", node: node, image: image))
        while let e = await iterator.next() {
            if e.Action == "microscale.reconnected" { sawReconnect = true }
            if e.Action == "create" && e.Actor.ID == second {
                sawAfter = true
                break
            }
        }
        #expect(sawReconnect)
        #expect(sawAfter)
    }

    /// Warm standbys (docs/scheduling.md, "Warm standbys") on a real dockerd: created at the least
    /// CPU weight, started and paused; a step stops its victims, then gives the standbys the usual
    /// weight and unpauses them; the pool is refilled warm; an agent restart adopts it; a paused
    /// container that is no standby is stopped and replaced; a node given no pool keeps none.
    @Test func warmStandbysArePausedUnpausedByAStepRefilledAndNeverLeftFrozen() async throws {
        let node = uniqueNode("warm")
        defer { Task { await cleanup(client, node: node) } }
        let specs = [spec("web", node: node, image: image), spec("batch", node: node, hash: "b1", image: image)]
        func states() async throws -> [(id: String, service: String, state: String, standby: Bool)] {
            try await client.list(labels: ["\(MicroscaleLabel.node)=\(node)", "\(MicroscaleLabel.managed)=true"]).map {
                ($0.Id, $0.Labels?[MicroscaleLabel.service] ?? "", $0.State ?? "", $0.Labels?[MicroscaleLabel.standby] == "true")
            }
        }
        func count(_ service: String, _ state: String) async throws -> Int {
            try await states().filter { $0.service == service && $0.state == state }.count
        }
        let shell = ReconcilerShell(client: client, node: node)
        await shell.setDesired(specs, counts: ["web": 1, "batch": 2], standby: ["web": 2], warmStandby: ["web": 2])
        try await shell.converge()
        #expect(try await count("web", "running") == 1)
        #expect(try await count("batch", "running") == 2)
        let pool = try await states().filter { $0.state == "paused" }
        #expect(pool.count == 2 && pool.allSatisfy { $0.service == "web" && $0.standby })
        // Made at the least CPU weight: it ran between its start and its pause.
        for c in pool { #expect(try await client.inspect(c.id).HostConfig.CpuShares == ReconcilerShell.makingCPUShares) }

        // An agent restart adopts the warm pool as it is.
        let restarted = ReconcilerShell(client: client, node: node)
        await restarted.setDesired(specs, counts: ["web": 1, "batch": 2], standby: ["web": 2], warmStandby: ["web": 2])
        #expect(try await restarted.reconcileOnce().plan.isEmpty)

        // The step: two more web in batch's place. The starts are the two unpauses.
        await restarted.setDesired(specs, counts: ["web": 3, "batch": 0], standby: ["web": 2], warmStandby: ["web": 2])
        let step = try await restarted.reconcileOnce()
        #expect(Set(step.unpaused) == Set(pool.map(\.id)))
        // Unpaused with the usual weight.
        for c in pool { #expect(try await client.inspect(c.id).HostConfig.CpuShares == ReconcilerShell.defaultCPUShares) }
        #expect(step.errors.isEmpty, "\(step.errors)")
        try await restarted.converge()
        #expect(try await count("web", "running") == 3)
        #expect(try await states().filter { $0.service == "batch" }.isEmpty, "the victims were stopped and removed")
        let refilled = try await states().filter { $0.state == "paused" }
        #expect(refilled.count == 2 && refilled.allSatisfy { $0.service == "web" && $0.standby })
        #expect(Set(refilled.map(\.id)).isDisjoint(with: pool.map(\.id)))

        // A paused container that is no standby is stopped and replaced, never left frozen.
        let victim = try #require(try await states().first { $0.service == "web" && $0.state == "running" && !$0.standby }?.id)
        try await client.pause(victim)
        try await restarted.converge()
        #expect(try await states().allSatisfy { $0.id != victim })
        #expect(try await count("web", "running") == 3)
        #expect(try await count("web", "paused") == 2)

        // A node given no pool (a drained one) keeps none.
        await restarted.setDesired(specs, counts: ["web": 3, "batch": 0])
        try await restarted.converge()
        #expect(try await count("web", "paused") == 0)
        #expect(try await count("web", "running") == 3)
    }

    private func createUnmanaged(_ s: ContainerSpec) async throws -> String {
        // The client always adds managed=true; a foreign container comes from the docker CLI.
        let host = try TestEnvironment.require("MICROSCALE_TEST_DOCKER_HOST")
        let out = try runProcess(
            "/usr/bin/docker",
            [
                "-H", host, "create", "--label", "\(MicroscaleLabel.service)=\(s.service)", "--label", "\(MicroscaleLabel.node)=\(s.node)", "--label",
                "\(MicroscaleLabel.spec)=\(s.specHash)", s.image, "sleep", "600",
            ])
        return out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func running(node: String, managed: Bool) async throws -> [String] {
        var labels = ["\(MicroscaleLabel.node)=\(node)"]
        if managed { labels.append("\(MicroscaleLabel.managed)=true") }
        return try await client.list(labels: labels, all: false).map(\.Id).sorted()
    }

    private func waitUntil(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<200 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("condition not reached within 10 s")
    }

    private func restartDaemon(argsFile: String) async throws {
        let args = try String(contentsOfFile: argsFile, encoding: .utf8).split(separator: "\n").map(String.init)
        guard let pidFile = args.first(where: { $0.hasPrefix("--pidfile=") })?.dropFirst("--pidfile=".count),
            let pid = Int32(try String(contentsOfFile: String(pidFile), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
        else { throw TestEnvironment.Missing(name: "dockerd pidfile in \(argsFile)") }
        kill(pid, SIGTERM)
        for _ in 0..<300 where kill(pid, 0) == 0 { try await Task.sleep(for: .milliseconds(50)) }
        let logURL = URL(fileURLWithPath: argsFile).deletingLastPathComponent().appendingPathComponent("dockerd.log")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setsid")
        p.arguments = ["/usr/sbin/dockerd"] + args
        let log = try FileHandle(forWritingTo: logURL)
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        try await waitUntil { (try? await client.ping()) != nil }
    }
}

final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Duration = .seconds(1000)
    var now: Duration { lock.withLock { value } }
    func advance(by d: Duration) { lock.withLock { value += d } }
}

func runProcess(_ path: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}
