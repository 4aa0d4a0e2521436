/// The samples behind the dashboard's chart: one `GET /v1/status` a second, kept for ten minutes.
/// It starts with the first request for the dashboard, so an agent nobody watches does no work.
public actor StatusHistory {
    public struct Sample: Codable, Sendable, Equatable {
        /// Milliseconds since the Unix epoch.
        public var time: Int64
        public var services: [StatusView.Service]
        public var nodes: [StatusView.NodeRow]
    }

    /// 600 samples: ten minutes at one a second.
    public static let limit = 600
    public var interval: Duration = .seconds(1)
    private var samples: [Sample] = []
    private var loop: Task<Void, Never>?
    private let fetch: @Sendable () async -> StatusView?
    /// The agent's clock: a sample's time is its wall clock.
    private let clock: AgentClock

    public init(clock: AgentClock = .system(), fetch: @escaping @Sendable () async -> StatusView?) {
        self.clock = clock
        self.fetch = fetch
    }

    public func ensureRunning() {
        guard loop == nil else { return }
        loop = Task { [weak self] in
            while !Task.isCancelled, let self {
                await self.sample()
                try? await Task.sleep(for: await self.interval)
            }
        }
    }

    public func stop() {
        loop?.cancel()
        loop = nil
    }

    func sample() async {
        guard let s = await fetch() else { return }
        samples.append(Sample(time: clock.wallMilliseconds, services: s.services, nodes: s.nodes))
        if samples.count > Self.limit { samples.removeFirst(samples.count - Self.limit) }
    }

    public var all: [Sample] { samples }
}
