import Foundation
import Logging

/// The agent's own `http:` and `tcp:` health checks (docs/contracts.md, "The services file"): one task per container,
/// probing its address every `interval`, each probe bounded by `timeout`. The state follows Docker's
/// health checks: starting until the first success; healthy after a success; unhealthy after
/// `retries` consecutive failures, where failures during `startPeriod` do not count. The
/// reconciler shell asks for the state of each running container every round.
public actor HealthProber {
    private struct Watched {
        var task: Task<Void, Never>
        var health: ObservedContainer.Health
    }

    private let client: DockerClient
    private let http = MiniHTTPClient()
    private let logger: Logger
    private var watched: [String: Watched] = [:]
    /// Runs when a container's state changes: the executor then tells the cluster at once which
    /// containers serve (endpoints follow a failing check within a probe, not a reconcile tick).
    private let onChange: @Sendable () async -> Void

    public init(
        client: DockerClient, logger: Logger = Logger(label: "microscale.health"),
        onChange: @escaping @Sendable () async -> Void = {}
    ) {
        self.client = client
        self.logger = logger
        self.onChange = onChange
    }

    /// The state of every container watched now.
    public func states() -> [String: ObservedContainer.Health] { watched.mapValues(\.health) }

    /// The health of `id` under `probe`; starts watching it on first sight.
    public func health(of id: String, service: String, probe: ContainerSpec.Probe) -> ObservedContainer.Health {
        if let w = watched[id] { return w.health }
        let client = self.client
        let http = self.http
        let task = Task { [weak self] in
            // The address once: a container keeps its IP while it runs.
            guard let inspect = try? await client.inspect(id, service: service) else { return }
            let host: String
            if inspect.HostConfig.NetworkMode == "host" {
                host = "127.0.0.1"
            } else if let ip = inspect.NetworkSettings?.Networks?.values.compactMap({ $0.IPAddress }).first(where: { !$0.isEmpty }) {
                host = ip
            } else {
                await self?.set(id, .unhealthy, why: "the container has no address to probe")
                return
            }
            let clock = ContinuousClock()
            let began = clock.now
            var failures = 0
            var everPassed = false
            while !Task.isCancelled {
                let ok: Bool
                switch probe.kind {
                case .tcp(let port):
                    ok = await http.canConnect(host: host, port: port, timeout: probe.timeout)
                case .http(let path, let port):
                    let status =
                        (try? await http.request(
                            .tcp(host: host, port: port), path: path,
                            timeout: probe.timeout, maxBody: 64 << 10))?.status
                    ok = status.map { (200...399).contains($0) } ?? false
                }
                if ok {
                    failures = 0
                    everPassed = true
                    await self?.set(id, .healthy, why: nil)
                } else if clock.now - began >= probe.startPeriod || everPassed {
                    failures += 1
                    if failures >= probe.retries { await self?.set(id, .unhealthy, why: "\(failures) probes failed") }
                }
                try? await Task.sleep(for: probe.interval)
            }
        }
        watched[id] = Watched(task: task, health: .starting)
        return .starting
    }

    /// Stops watching containers that are gone.
    public func keepOnly(_ ids: Set<String>) {
        for id in watched.keys where !ids.contains(id) {
            watched[id]?.task.cancel()
            watched[id] = nil
        }
    }

    private func set(_ id: String, _ health: ObservedContainer.Health, why: String?) {
        guard var w = watched[id], w.health != health else { return }
        w.health = health
        watched[id] = w
        logger.info("container health", metadata: ["container": "\(id.prefix(12))", "health": "\(health)", "why": "\(why ?? "probe passed")"])
        let onChange = self.onChange
        Task { await onChange() }
    }
}
