/// The labels Microscale puts on every container it creates (docs/contracts.md). A container without
/// `managed=true` is never touched.
public enum MicroscaleLabel {
    public static let managed = "io.microscale.managed"
    public static let service = "io.microscale.service"
    public static let node = "io.microscale.node"
    public static let spec = "io.microscale.spec"
    /// `true` on a standby container (docs/contracts.md, "Docker labels"): created ahead of need
    /// and left unstarted, so that a demand step starts it instead of creating one. While it is
    /// only created it counts as nothing (not running, no reservation); once started it is an
    /// ordinary container of its service (the label stays: Docker labels cannot change).
    public static let standby = "io.microscale.standby"
}

/// What a container should be: what the reconciler asks the client to create.
public struct ContainerSpec: Sendable, Hashable, Codable {
    public var service: String
    public var node: String
    public var specHash: String
    public var image: String
    public var command: [String]
    public var env: [String]
    /// Cores reserved; becomes the hard limit (NanoCpus) so a container cannot take its neighbours' share.
    public var cpu: Double
    public var memoryBytes: Int64
    public var stopTimeoutSeconds: Int
    public var extraLabels: [String: String]
    public var network: Network
    public var ports: [Port]
    /// A health check Docker runs inside the container (the services file's `health.command`).
    public var healthCommand: HealthCommand?

    /// Where a container's network stack lives (docs/contracts.md, "The services file" `network:`).
    public enum Network: Sendable, Hashable, Codable {
        /// No network at all (what every container got before `network:` existed).
        case none
        /// The host's own stack: ports are the container's.
        case host
        /// A user-defined bridge network of this name, created by the agent when missing.
        case bridge(String)

        public var dockerMode: String {
            switch self {
            case .none: "none"
            case .host: "host"
            case .bridge(let name): name
            }
        }
    }

    /// The agent's per-host bridge network.
    public static let defaultBridge = "microscale"

    /// A published port: `host` nil lets Docker pick a free one.
    public struct Port: Sendable, Hashable, Codable {
        public var container: Int
        public var host: Int?
        public var proto: String
        public init(container: Int, host: Int? = nil, proto: String = "tcp") {
            self.container = container
            self.host = host
            self.proto = proto
        }
    }

    /// Host ports a container of this spec holds fixed: the declared `host:` ports, or every
    /// declared port on the host network. Two containers needing one cannot run at once.
    public var fixedHostPorts: Set<Int> {
        switch network {
        case .host: Set(ports.map(\.container))
        case .none: []
        case .bridge: Set(ports.compactMap(\.host))
        }
    }

    /// An `http:` or `tcp:` check the agent makes itself, from the host, to the container's address
    /// (its bridge IP, or 127.0.0.1 with the host network).
    public var probe: Probe?

    public struct Probe: Sendable, Hashable, Codable {
        public enum Kind: Sendable, Hashable, Codable {
            case http(path: String, port: Int)
            case tcp(port: Int)
        }
        public var kind: Kind
        public var interval: Duration
        public var timeout: Duration
        public var retries: Int
        public var startPeriod: Duration
        public init(kind: Kind, interval: Duration, timeout: Duration, retries: Int, startPeriod: Duration) {
            self.kind = kind
            self.interval = interval
            self.timeout = timeout
            self.retries = retries
            self.startPeriod = startPeriod
        }
    }

    public struct HealthCommand: Sendable, Hashable, Codable {
        public var command: [String]
        public var interval: Duration
        public var timeout: Duration
        public var retries: Int
        public var startPeriod: Duration
        public init(command: [String], interval: Duration, timeout: Duration, retries: Int, startPeriod: Duration) {
            self.command = command
            self.interval = interval
            self.timeout = timeout
            self.retries = retries
            self.startPeriod = startPeriod
        }
    }

    public init(
        service: String, node: String, specHash: String, image: String, command: [String] = [],
        env: [String] = [], cpu: Double, memoryBytes: Int64, stopTimeoutSeconds: Int = 10,
        extraLabels: [String: String] = [:], network: Network = .none, ports: [Port] = [],
        probe: Probe? = nil, healthCommand: HealthCommand? = nil
    ) {
        self.probe = probe
        self.network = network
        self.ports = ports
        self.healthCommand = healthCommand
        self.service = service
        self.node = node
        self.specHash = specHash
        self.image = image
        self.command = command
        self.env = env
        self.cpu = cpu
        self.memoryBytes = memoryBytes
        self.stopTimeoutSeconds = stopTimeoutSeconds
        self.extraLabels = extraLabels
    }

    public var labels: [String: String] {
        var l = extraLabels
        l[MicroscaleLabel.managed] = "true"
        l[MicroscaleLabel.service] = service
        l[MicroscaleLabel.node] = node
        l[MicroscaleLabel.spec] = specHash
        return l
    }
}

// MARK: Engine API bodies (only the fields we read; names as the Engine API spells them).

public struct EngineVersion: Sendable, Decodable {
    public var Version: String
    public var ApiVersion: String
    public var MinAPIVersion: String?
}

public struct EngineInfo: Sendable, Decodable {
    public var NCPU: Int
    public var MemTotal: Int64
    public var Name: String?
    public var ServerVersion: String?
}

public struct ContainerSummary: Sendable, Decodable, Hashable {
    public var Id: String
    public var Names: [String]?
    public var Image: String?
    public var State: String?
    public var Status: String?
    public var Labels: [String: String]?
    public var Created: Int64?
    /// Published ports ("PrivatePort", "PublicPort" when published, "Type"), once per host
    /// address family: the endpoints a node gossips come from here.
    public struct Port: Sendable, Decodable, Hashable {
        public var IP: String?
        public var PrivatePort: Int
        public var PublicPort: Int?
        public var `Type`: String?
    }
    public var Ports: [Port]?
}

public struct ContainerInspect: Sendable, Decodable {
    public struct State: Sendable, Decodable {
        public var Status: String
        public var Running: Bool
        public var ExitCode: Int
        /// The host PID of the container's first process; 0 when it is not running.
        public var Pid: Int?
        public var OOMKilled: Bool?
        public var StartedAt: String?
        public var FinishedAt: String?
        /// Docker's own health check (the image's HEALTHCHECK or the create body's): "starting",
        /// "healthy" or "unhealthy"; absent when the container has none.
        public struct Health: Sendable, Decodable { public var Status: String? }
        public var Health: Health?
    }
    public struct NetworkSettings: Sendable, Decodable {
        public struct Binding: Sendable, Decodable {
            public var HostIp: String?
            public var HostPort: String?
        }
        /// "8080/tcp" → where it is published (nil or empty: not published).
        public var Ports: [String: [Binding]?]?
        public struct Attachment: Sendable, Decodable { public var IPAddress: String? }
        public var Networks: [String: Attachment]?
    }
    public var NetworkSettings: NetworkSettings?
    public struct Config: Sendable, Decodable {
        public var Image: String?
        public var Labels: [String: String]?
        public var Cmd: [String]?
        public var StopTimeout: Int?
    }
    public struct HostConfig: Sendable, Decodable {
        public var NanoCpus: Int64?
        /// The CFS weight; 0 or absent is Docker's default (1024).
        public var CpuShares: Int?
        public var Memory: Int64?
        public var Init: Bool?
        public var NetworkMode: String?
        public struct RestartPolicy: Sendable, Decodable { public var Name: String? }
        public var RestartPolicy: RestartPolicy?
    }
    public var Id: String
    public var Name: String?
    public var State: State
    public var Config: Config
    public var HostConfig: HostConfig
}

public struct ImageInspect: Sendable, Decodable {
    public var Id: String
    public var Size: Int64?
    public var RepoTags: [String]?
}

public struct EngineEvent: Sendable, Decodable, Hashable {
    public struct Actor: Sendable, Decodable, Hashable {
        public var ID: String
        public var Attributes: [String: String]?
    }
    public var `Type`: String?
    public var Action: String
    public var Actor: Actor
    public var time: Int64?
    public var timeNano: Int64?
}

/// An error the reconciler can show an operator as is: which operation, which service, what the
/// daemon said.
public struct DockerError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case daemonUnreachable
        case imageMissing
        case notFound
        case conflict
        case refused
        case badResponse
        /// An image pull failed; `daemonMessage` has the registry's reason.
        case pullFailed
    }
    public var kind: Kind
    public var operation: String
    public var service: String?
    public var status: Int?
    public var daemonMessage: String

    public var description: String {
        let who = service.map { " for service \($0)" } ?? ""
        let code = status.map { " (HTTP \($0))" } ?? ""
        switch kind {
        case .daemonUnreachable: return "docker \(operation)\(who): the Docker daemon is unreachable: \(daemonMessage)"
        case .imageMissing: return "docker \(operation)\(who): image missing\(code): \(daemonMessage)"
        case .pullFailed: return "docker pull\(who) failed\(code): \(daemonMessage)"
        default: return "docker \(operation)\(who) failed\(code): \(daemonMessage)"
        }
    }
}
