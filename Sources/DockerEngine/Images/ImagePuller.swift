import Foundation
import Logging

/// Pulls the images a node's containers need, before their creates (docs/contracts.md, "The services file"): each image once
/// however many containers want it (one pull in flight per image, whoever asks), at most
/// `maxInFlight` pulls at a time, progress in the log, and after a failure no new attempt before a
/// back-off (doubling from `initialBackoff` to `maximumBackoff`, as the crash-loop back-off), so a
/// bad name or bad credentials cost one registry request per back-off, not one per round.
public actor ImagePuller {
    public enum State: Sendable, Hashable {
        /// The daemon has it: creates may go ahead.
        case ready
        /// Being pulled (or waiting for a free pull slot).
        case pulling
        /// The last pull failed with the registry's `reason`; the next try is not before `retryAt`
        /// (the puller's clock, as `now`).
        case failed(reason: String, failures: Int, retryAt: Duration)
    }

    private let client: DockerClient
    private let auth: RegistryAuth
    private let logger: Logger
    public let maxInFlight: Int
    public var initialBackoff: Duration = .seconds(2)
    public var maximumBackoff: Duration = .seconds(300)
    private let now: @Sendable () -> Duration
    private let onChange: @Sendable () async -> Void
    private var present: Set<String> = []
    private var inFlight: Set<String> = []
    private var failures: [String: State] = [:]

    /// `onChange` runs when a pull ends (the executor runs a round at once instead of at its next tick).
    public init(
        client: DockerClient, auth: RegistryAuth = RegistryAuth(), maxInFlight: Int = 2,
        logger: Logger = Logger(label: "microscale.pull"),
        now: @escaping @Sendable () -> Duration = { ContinuousClock().now - reconcilerEpoch },
        onChange: @escaping @Sendable () async -> Void = {}
    ) {
        self.client = client
        self.auth = auth
        self.maxInFlight = max(1, maxInFlight)
        self.logger = logger
        self.now = now
        self.onChange = onChange
    }

    /// Where each image stands; starts the pulls that are due. Images the daemon has are remembered,
    /// so a steady node asks the daemon nothing here.
    public func prepare(_ images: Set<String>) async -> [String: State] {
        var result: [String: State] = [:]
        for image in images.sorted() {
            if present.contains(image) {
                result[image] = .ready
                continue
            }
            if inFlight.contains(image) {
                result[image] = .pulling
                continue
            }
            if case .failed(_, _, let retryAt)? = failures[image], now() < retryAt {
                result[image] = failures[image]
                continue
            }
            do throws(DockerError) {
                _ = try await client.inspectImage(image)
                present.insert(image)
                failures[image] = nil
                result[image] = .ready
                continue
            } catch  where error.kind == .imageMissing {
                // Pull it, below.
            } catch {
                // The daemon is unreachable: nothing to pull with; the round reports that itself.
                result[image] = .pulling
                continue
            }
            if inFlight.count >= maxInFlight {
                result[image] = failures[image] ?? .pulling
                continue
            }
            start(image)
            result[image] = .pulling
        }
        return result
    }

    /// Images whose last pull failed, with the registry's reason (not those being pulled again).
    public var failing: [String: String] {
        var out: [String: String] = [:]
        for (image, state) in failures where !inFlight.contains(image) {
            if case .failed(let reason, _, _) = state { out[image] = reason }
        }
        return out
    }

    /// The daemon lost an image it had (a create answered "no such image"): look again next time.
    public func forget(_ image: String) { present.remove(image) }

    private func start(_ image: String) {
        inFlight.insert(image)
        let attempt = failures[image].flatMap { if case .failed(_, let n, _) = $0 { n } else { nil } } ?? 0
        logger.info("pulling image", metadata: ["image": "\(image)", "attempt": "\(attempt + 1)"])
        let header = auth.header(for: image)
        let client = self.client
        let logger = self.logger
        Task {
            let clock = ContinuousClock()
            let began = clock.now
            // Progress: each layer's status as it changes, without the byte counts of every chunk.
            let last = LastLines()
            do throws(DockerError) {
                try await client.pull(image, auth: header) { line in
                    if last.isNew(line) { logger.info("pull progress", metadata: ["image": "\(image)", "status": "\(line)"]) }
                }
                await self.finished(image, error: nil, took: clock.now - began)
            } catch {
                await self.finished(image, error: error, took: clock.now - began)
            }
        }
    }

    private func finished(_ image: String, error: DockerError?, took: Duration) async {
        inFlight.remove(image)
        if let error {
            let n = (failures[image].flatMap { if case .failed(_, let n, _) = $0 { n } else { nil } } ?? 0) + 1
            let wait = backoff(n)
            failures[image] = .failed(reason: error.daemonMessage, failures: n, retryAt: now() + wait)
            logger.error(
                "image pull failed",
                metadata: [
                    "image": "\(image)", "reason": "\(error.daemonMessage)", "failures": "\(n)", "retry_in": "\(wait)",
                ])
        } else {
            present.insert(image)
            failures[image] = nil
            logger.info(
                "image pulled",
                metadata: ["image": "\(image)", "ms": "\(took.components.seconds * 1000 + took.components.attoseconds / 1_000_000_000_000_000)"])
        }
        await onChange()
    }

    func backoff(_ failures: Int) -> Duration {
        var d = initialBackoff
        for _ in 1..<max(1, failures) {
            d = d * 2
            if d >= maximumBackoff { return maximumBackoff }
        }
        return min(d, maximumBackoff)
    }
}

/// Progress lines already logged, so "Downloading [=>   ]" chunks do not flood the log: a line
/// is logged when its layer's status word changes. Bounded by the layers of one image.
private final class LastLines: @unchecked Sendable {
    private let lock = NSLock()
    private var byLayer: [String: String] = [:]

    func isNew(_ line: String) -> Bool {
        let layer = line.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
        let word = line.split(separator: " ").dropFirst().first.map(String.init) ?? line
        return lock.withLock {
            if byLayer[layer] == word { return false }
            if byLayer.count > 1024 { byLayer.removeAll() }
            byLayer[layer] = word
            return true
        }
    }
}
