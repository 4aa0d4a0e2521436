import DockerEngine
import Synchronization

/// The managed containers running for a plan, as the chaos suite and the benchmarks count them:
/// in the running state, but not a warm standby being made. That one runs between its start and
/// its pause, for no plan, at `ReconcilerShell.makingCPUShares`, where it takes CPU only when the
/// plan's containers leave some (docs/scheduling.md, "Warm standbys"); a standby unpaused for a
/// step has the usual weight and counts. Counted in, it made a node look over its capacity and a
/// step look done one container early.
func runningForPlan(_ docker: DockerClient, labels: [String]) async throws(DockerError) -> [ContainerSummary] {
    var out: [ContainerSummary] = []
    for c in try await docker.list(labels: labels, all: false) where c.State == "running" {
        // A standby keeps its label once unpaused: asked once, as its weight never goes back.
        if c.Labels?[MicroscaleLabel.standby] == "true", !servingStandbys.withLock({ $0.contains(c.Id) }) {
            guard let shares = try? await docker.inspect(c.Id).HostConfig.CpuShares, shares != ReconcilerShell.makingCPUShares else { continue }
            servingStandbys.withLock { known in
                if known.count >= 10_000 { known.removeAll() }
                known.insert(c.Id)
            }
        }
        out.append(c)
    }
    return out
}

/// Standbys seen running at the usual weight (unpaused for a step): they run for the plan for good.
private let servingStandbys = Mutex<Set<String>>([])
