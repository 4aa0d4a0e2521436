/// The one table of bounds on every value that enters an agent from outside: an API body, the
/// services file, a flag or the configuration file, a demand reading, gossip, a Raft entry being
/// applied, an assignment. docs/limits.md is the same table in prose, with where each is checked.
///
/// Why limits at all: every one of these values ends up in arithmetic (a count of containers, a
/// sum of millicores, `term + 1`), and Swift traps on overflow and on converting a Double that an
/// Int cannot hold. A value is checked once, where it enters, so that the code behind the check can
/// do plain arithmetic; the bounds are far beyond any real cluster and far below where the
/// arithmetic on them could overflow (1,000,000 containers × 1,024 cores in millicores is 1e12).
public enum Limits {
    // MARK: Demand (docs/demand.md's readings, `microscale demand set`)

    /// Largest demand value: a reading above it (a counter where a rate was meant, 1e19) makes the
    /// source unknown, and an operator's value above it is refused.
    public static let maxDemand: Double = 1e12
    /// `per_container` range: the smallest keeps demand / per_container ≤ 1e18, inside Int64.
    public static let minPerContainer: Double = 1e-6
    public static let maxPerContainer: Double = 1e12
    /// `demand.controller.kd`: how far ahead along a queue's trend the PD controller looks, in seconds
    /// (ten minutes: further than that a trend is a guess).
    public static let maxControllerLookaheadSeconds: Double = 600
    /// A source's answer (an HTTP body, a Redis reply): a queue's length or one figure needs a few
    /// hundred bytes; NATS's /jsz with every consumer of a busy account needs the most.
    public static let maxDemandResponseBytes = 1 << 20
    /// A credentials file (`credentials: FILE`): one line, user:password or a token.
    public static let maxCredentialsBytes = 4096
    /// `timeout:` of a polled source, at most (the default is 2 s).
    public static let maxDemandTimeout: Duration = .seconds(60)
    /// `db:` of a redis source (Redis's own default is 16 databases; the setting allows more).
    public static let maxRedisDatabase = 65535

    // MARK: One service (the services file, the API, a Raft entry on apply)

    /// A service's name: 1 to 63 bytes (a DNS label, so it can name containers and hosts).
    public static let maxServiceNameBytes = 63

    /// Cores reserved per container: 1,024 cores, in millicores.
    public static let maxContainerCPUMillicores: Int64 = 1024 * 1000
    /// Memory per container: 16 TiB.
    public static let maxContainerMemoryBytes: Int64 = 16 << 40
    /// `min` and `max` containers of one service.
    public static let maxContainersPerService = 1_000_000
    /// Priorities are small integers, 1 the most important.
    public static let maxPriority = 1000
    /// `stop_timeout`: an hour.
    public static let maxStopTimeoutMilliseconds: Int64 = 3_600_000
    /// `stop_delay` (docs/endpoints.md): ten minutes. A container withdrawn for longer holds its
    /// reservation while it serves nothing; AWS allows an hour, but its default is five minutes
    /// for connections that last, and Microscale's scale-downs are second by second.
    public static let maxStopDelayMilliseconds: Int64 = 600_000
    /// `stop_delay` when not declared, for a service that publishes ports: long enough for gossip
    /// to reach every agent (a few 50 ms rounds) and a load balancer to act on its blocking query,
    /// with room to spare; short enough that a scale-down frees its room within seconds.
    public static let defaultStopDelayMilliseconds: Int64 = 2000
    /// An image reference (Docker's own limit on a repository name is 255; a registry host, a
    /// tag and a digest come on top).
    public static let maxImageBytes = 1024
    /// `command`: arguments and bytes per argument.
    public static let maxCommandArguments = 256
    public static let maxArgumentBytes = 4096
    /// A demand source's options: how many, and bytes per key or value.
    public static let maxDemandOptions = 32
    public static let maxDemandOptionBytes = 2048
    /// `env`: variables, bytes per name and per value (Docker passes them in the create body).
    public static let maxEnvVariables = 256
    public static let maxEnvNameBytes = 256
    public static let maxEnvValueBytes = 32768
    /// `ports`: published ports per container.
    public static let maxPorts = 64
    /// `update.max_parallel`: containers replaced at a time in a rollout (docs/rollouts.md).
    public static let maxUpdateParallel = 1000
    /// `constraints:` per service (each `key == value` or `key != value` over node labels).
    public static let maxConstraints = 16
    /// `health`: the http path, interval and timeout (100 ms to 1 h), retries.
    public static let maxHealthPathBytes = 1024
    public static let minHealthIntervalMilliseconds: Int64 = 100
    public static let maxHealthIntervalMilliseconds: Int64 = 3_600_000
    public static let maxHealthRetries = 100

    // MARK: One node (flags, configuration, gossip)

    /// A node's capacity: 4,096 cores, in millicores.
    public static let maxNodeCPUMillicores: Int64 = 4096 * 1000
    /// A node's memory: 64 TiB.
    public static let maxNodeMemoryBytes: Int64 = 64 << 40
    /// Containers of one service a node may report running.
    public static let maxRunningPerService = maxContainersPerService
    /// Node labels (`--node-label key=value`, gossiped in the node's record): how many, and bytes
    /// per key and per value. A record is at most 2 KiB (NodeRecordLimits) and labels share it
    /// with the running counts: 8 labels of the longest key and value are ~1 KiB.
    public static let maxNodeLabels = 8
    public static let maxNodeLabelKeyBytes = 63
    public static let maxNodeLabelValueBytes = 63
    /// Images a node reports failing to pull (in its record, with the registry's reason): at most
    /// this many, each reason cut to this many bytes, so a node whose registry is down for every
    /// service still fits its record.
    public static let maxImageFailures = 4
    public static let maxImageFailureReasonBytes = 160
    /// An image named in a node's record of failures (the spec's own bound is `maxImageBytes`;
    /// a longer one is left out of the record, which only loses the match).
    public static let maxImageFailureImageBytes = 200
    /// Members one agent keeps (configurable; this is the default).
    public static let defaultMaxMembers = 10_000

    // MARK: Time

    /// Blocking endpoints queries (`GET /v1/services/NAME/endpoints?index=N&wait=D`, as Consul's
    /// blocking queries): the longest wait a client may ask for, the wait when it names none,
    /// and how many may wait on one agent at once (each holds a connection and a task).
    public static let maxBlockingWait: Duration = .seconds(600)
    public static let defaultBlockingWait: Duration = .seconds(300)
    public static let maxBlockingQueries = 512

    /// Demand sources are polled no faster than this, and no slower than `maxPollInterval`.
    public static let minPollInterval: Duration = .milliseconds(100)
    public static let maxPollInterval: Duration = .seconds(3600)
    /// The utilization report's window (`microscale report utilization --window`, docs/utilization.md):
    /// every server keeps one sample a second for this long, and no more samples than this.
    public static let maxUtilizationWindow: Duration = .seconds(3600)
    public static let maxUtilizationSamples = 3600
    /// Priorities a utilization sample keeps apart; less important ones are summed into the last.
    public static let maxUtilizationLevels = 16
    /// --dead-node-grace: work of a dead node waits at most this long before it moves.
    public static let maxDeadNodeGrace: Duration = .seconds(600)

    // MARK: Counters from peers

    /// A Raft term from a peer more than this far above ours is refused: no cluster holds four
    /// billion elections while one server sleeps, and `term + 1` can then never overflow.
    public static let maxTermJump: UInt64 = 1 << 32
    /// The same for a SWIM incarnation or a record version someone reports about a member: only
    /// the member raises its own, one refutation at a time.
    public static let maxIncarnationJump: UInt64 = 1 << 32

    /// `value` is within `limit` of `known` (a counter a peer reported, against ours).
    public static func isSaneJump(_ value: UInt64, from known: UInt64, limit: UInt64) -> Bool {
        value <= known || value - known <= limit
    }
}

extension Limits {
    /// A limit as people write it in a message: 1e12, 1e-6, 1024 (not 1000000000000.0).
    public static func text(_ v: Double) -> String {
        if v == v.rounded(), abs(v) < 1e6 { return String(Int(v)) }
        var mantissa = v, exponent = 0
        while abs(mantissa) >= 10 {
            mantissa /= 10
            exponent += 1
        }
        while abs(mantissa) < 1 && mantissa != 0 {
            mantissa *= 10
            exponent -= 1
        }
        let m = (mantissa * 1000).rounded() / 1000
        return (m == m.rounded() ? String(Int(m)) : String(m)) + "e\(exponent)"
    }
}

extension Double {
    /// `self` converted to Int, or nil when it is not finite or does not fit. `Int(_:)` traps on
    /// both, and a Double that came from outside may be either.
    public var exactlyRoundedInt: Int? {
        guard isFinite, self > -9.2e18, self < 9.2e18 else { return nil }
        return Int(self.rounded())
    }
}
