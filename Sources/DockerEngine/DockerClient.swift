import Foundation
import Logging
import NIOHTTP1

/// A Docker Engine API client over the unix socket. Every call is bounded in time and answer size.
/// The API version is negotiated once (GET /version) and used as the path prefix, so a newer daemon
/// keeps answering in the dialect this client was written against (Engine API "Versioned API").
public actor DockerClient {
    /// The newest Engine API version this client speaks; older daemons are spoken to in theirs.
    public static let maximumAPIVersion = "1.43"
    public static let minimumAPIVersion = "1.40"

    public nonisolated let endpoint: HTTPEndpoint
    public nonisolated let socketPath: String
    private let http: MiniHTTPClient
    private var versionPrefix: String?
    public var requestTimeout: Duration = .seconds(30)
    public var maxResponseBytes = 16 << 20

    /// `host` is a DOCKER_HOST value (`unix:///path`) or a bare path; nil reads DOCKER_HOST, then
    /// falls back to /var/run/docker.sock.
    public init(host: String? = nil, http: MiniHTTPClient = MiniHTTPClient()) throws(DockerError) {
        let raw = host ?? ProcessInfo.processInfo.environment["DOCKER_HOST"] ?? "unix:///var/run/docker.sock"
        let path: String
        if raw.hasPrefix("unix://") {
            path = String(raw.dropFirst("unix://".count))
        } else if raw.hasPrefix("/") {
            path = raw
        } else {
            throw DockerError(
                kind: .refused, operation: "connect", service: nil, status: nil,
                daemonMessage: "DOCKER_HOST=\(raw): only unix:// sockets are supported")
        }
        self.socketPath = path
        self.endpoint = .unix(path: path)
        self.http = http
    }

    // MARK: System

    public func version() async throws(DockerError) -> EngineVersion {
        try await call("version", .GET, "/version", versioned: false)
    }

    public func ping() async throws(DockerError) {
        let r = try await raw("ping", .GET, "/_ping", versioned: false, service: nil)
        guard r.status == 200 else { throw Self.error(r, "ping", nil) }
    }

    public func info() async throws(DockerError) -> EngineInfo {
        try await call("info", .GET, "/info")
    }

    /// The negotiated prefix, e.g. "/v1.41": min(ours, the daemon's).
    public func negotiatedVersion() async throws(DockerError) -> String {
        if let versionPrefix { return String(versionPrefix.dropFirst(2)) }
        let v = try await version()
        let chosen = Self.compare(v.ApiVersion, Self.maximumAPIVersion) < 0 ? v.ApiVersion : Self.maximumAPIVersion
        guard Self.compare(chosen, Self.minimumAPIVersion) >= 0 else {
            throw DockerError(
                kind: .refused, operation: "version", service: nil, status: nil,
                daemonMessage: "the daemon speaks Engine API \(v.ApiVersion); Microscale needs \(Self.minimumAPIVersion) or newer")
        }
        versionPrefix = "/v\(chosen)"
        return chosen
    }

    // MARK: Containers

    /// Containers carrying every label in `labels` (`key=value`, or `key` alone for presence).
    public func list(labels: [String], all: Bool = true) async throws(DockerError) -> [ContainerSummary] {
        let filters = Self.json(["label": labels])
        return try await call("list", .GET, "/containers/json?all=\(all ? 1 : 0)&filters=\(Self.query(filters))")
    }

    /// `cpuShares`: the CFS weight (Docker's default 1024); a warm standby is made at
    /// `ReconcilerShell.makingCPUShares` (docs/scheduling.md, "Warm standbys").
    public func create(_ spec: ContainerSpec, name: String? = nil, cpuShares: Int? = nil) async throws(DockerError) -> String {
        struct Body: Encodable {
            var Image: String
            var Cmd: [String]?
            var Env: [String]
            var Labels: [String: String]
            var StopTimeout: Int
            var ExposedPorts: [String: Empty]?
            var Healthcheck: Health?
            var HostConfig: Host
            struct Empty: Encodable {}
            struct Health: Encodable {
                var Test: [String]
                var Interval: Int64
                var Timeout: Int64
                var Retries: Int
                var StartPeriod: Int64
            }
            struct Binding: Encodable {
                var HostIp: String
                var HostPort: String
            }
            struct Host: Encodable {
                var NanoCpus: Int64
                var CpuShares: Int?
                var Memory: Int64
                var Init: Bool
                var NetworkMode: String
                var RestartPolicy: [String: String]
                var PortBindings: [String: [Binding]]?
            }
        }
        // Ports are published on every address of the host (a load balancer on another host must
        // reach them); an empty HostPort lets Docker pick a free one (Engine API, ContainerCreate).
        var exposed: [String: Body.Empty] = [:]
        var bindings: [String: [Body.Binding]] = [:]
        for p in spec.ports {
            let key = "\(p.container)/\(p.proto)"
            exposed[key] = Body.Empty()
            if spec.network != .host { bindings[key] = [Body.Binding(HostIp: "", HostPort: p.host.map(String.init) ?? "")] }
        }
        func nanos(_ d: Duration) -> Int64 {
            let (s, a) = d.components
            return s.multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ a / 1_000_000_000
        }
        let health = spec.healthCommand.map {
            Body.Health(
                Test: ["CMD"] + $0.command, Interval: nanos($0.interval), Timeout: nanos($0.timeout),
                Retries: $0.retries, StartPeriod: nanos($0.startPeriod))
        }
        let body = Body(
            Image: spec.image, Cmd: spec.command.isEmpty ? nil : spec.command, Env: spec.env, Labels: spec.labels,
            StopTimeout: spec.stopTimeoutSeconds, ExposedPorts: exposed.isEmpty ? nil : exposed, Healthcheck: health,
            HostConfig: .init(
                NanoCpus: Int64((spec.cpu * 1e9).rounded()), CpuShares: cpuShares, Memory: spec.memoryBytes, Init: true,
                NetworkMode: spec.network.dockerMode, RestartPolicy: ["Name": "no"],
                PortBindings: bindings.isEmpty ? nil : bindings))
        let bytes = Array((try? JSONEncoder().encode(body)) ?? Data())
        let nameQuery = name.map { "?name=\(Self.query($0))" } ?? ""
        struct Created: Decodable { var Id: String }
        let r = try await raw("create", .POST, "/containers/create\(nameQuery)", body: bytes, service: spec.service)
        guard r.status == 201 else {
            if r.status == 404 {
                let message = Self.message(r)
                // 404 is both "no such image" and "network microscale not found".
                if message.lowercased().contains("network") {
                    throw DockerError(kind: .notFound, operation: "create", service: spec.service, status: 404, daemonMessage: message)
                }
                throw DockerError(
                    kind: .imageMissing, operation: "create", service: spec.service, status: 404,
                    daemonMessage: "\(spec.image): \(message)")
            }
            throw Self.error(r, "create", spec.service)
        }
        return try Self.decode(Created.self, r, "create", spec.service).Id
    }

    public func start(_ id: String, service: String? = nil) async throws(DockerError) {
        let r = try await raw("start", .POST, "/containers/\(id)/start", service: service)
        guard r.status == 204 || r.status == 304 else { throw Self.error(r, "start", service) }
    }

    /// Freezes the container's processes (the cgroup freezer): they keep their memory and use no
    /// CPU until `unpause`.
    public func pause(_ id: String, service: String? = nil) async throws(DockerError) {
        let r = try await raw("pause", .POST, "/containers/\(id)/pause", service: service)
        guard r.status == 204 else { throw Self.error(r, "pause", service) }
    }

    /// Sets the container's CFS weight, running or paused: the cgroup's `cpu.shares` changes in
    /// place (Engine API, ContainerUpdate).
    public func update(_ id: String, cpuShares: Int, service: String? = nil) async throws(DockerError) {
        let r = try await raw("update", .POST, "/containers/\(id)/update", body: Array(#"{"CpuShares":\#(cpuShares)}"#.utf8), service: service)
        guard r.status == 200 else { throw Self.error(r, "update", service) }
    }

    public func unpause(_ id: String, service: String? = nil) async throws(DockerError) {
        let r = try await raw("unpause", .POST, "/containers/\(id)/unpause", service: service)
        guard r.status == 204 else { throw Self.error(r, "unpause", service) }
    }

    /// Stops with SIGTERM, then SIGKILL after `timeoutSeconds`. Already stopped is success.
    public func stop(_ id: String, timeoutSeconds: Int? = nil, service: String? = nil) async throws(DockerError) {
        let t = timeoutSeconds.map { "?t=\($0)" } ?? ""
        // The daemon answers only once the container is down: allow its stop timeout on top of ours.
        let budget = requestTimeout + .seconds(timeoutSeconds ?? 10)
        let r = try await raw("stop", .POST, "/containers/\(id)/stop\(t)", service: service, timeout: budget)
        guard r.status == 204 || r.status == 304 else { throw Self.error(r, "stop", service) }
    }

    public func kill(_ id: String, signal: String = "KILL", service: String? = nil) async throws(DockerError) {
        let r = try await raw("kill", .POST, "/containers/\(id)/kill?signal=\(signal)", service: service)
        guard r.status == 204 else { throw Self.error(r, "kill", service) }
    }

    /// Removes the container and its anonymous volumes. Already gone is success.
    public func remove(_ id: String, force: Bool = false, service: String? = nil) async throws(DockerError) {
        let r = try await raw("remove", .DELETE, "/containers/\(id)?v=1&force=\(force ? 1 : 0)", service: service)
        guard r.status == 204 || r.status == 404 else { throw Self.error(r, "remove", service) }
    }

    public func inspect(_ id: String, service: String? = nil) async throws(DockerError) -> ContainerInspect {
        try await call("inspect", .GET, "/containers/\(id)/json", service: service)
    }

    public func inspectImage(_ name: String, service: String? = nil) async throws(DockerError) -> ImageInspect {
        let r = try await raw("image inspect", .GET, "/images/\(Self.query(name))/json", service: service)
        guard r.status == 200 else {
            if r.status == 404 {
                throw DockerError(kind: .imageMissing, operation: "image inspect", service: service, status: 404, daemonMessage: Self.message(r))
            }
            throw Self.error(r, "image inspect", service)
        }
        return try Self.decode(ImageInspect.self, r, "image inspect", service)
    }

    // MARK: Images

    /// Tags the local image `source` as `repository:tag` (POST /images/{name}/tag).
    public func tag(_ source: String, repository: String, tag: String) async throws(DockerError) {
        let r = try await raw("tag", .POST, "/images/\(Self.query(source))/tag?repo=\(Self.query(repository))&tag=\(Self.query(tag))", service: nil)
        guard r.status == 201 || r.status == 200 else { throw Self.error(r, "tag", nil) }
    }

    /// Pulls `reference` (`name`, `name:tag` or `name@sha256:…`) and returns when the daemon has
    /// it. `auth` is the X-Registry-Auth value (RegistryAuth). The daemon answers 200 at once and
    /// streams JSON lines; a failure after that arrives as a line with `error`, which is what is
    /// thrown, in the registry's words. `progress` gets each line's status (layer id first).
    public func pull(
        _ reference: String, auth: String? = nil, timeout: Duration = .seconds(600),
        progress: @escaping @Sendable (String) -> Void = { _ in }
    ) async throws(DockerError) {
        let ref = ImageReference(reference)
        let path = "/images/create?fromImage=\(Self.query(ref.repository))&tag=\(Self.query(ref.tagOrDigest))"
        let prefix = try await self.prefix()
        let headers = auth.map { [("X-Registry-Auth", $0)] } ?? []
        let endpoint = self.endpoint
        let http = self.http
        func fail(_ status: Int?, _ message: String) -> DockerError {
            DockerError(kind: .pullFailed, operation: "pull", service: nil, status: status, daemonMessage: "\(reference): \(message)")
        }
        // The whole pull runs in a child task so that `timeout` can end a registry that stalls.
        let work = Task { () async throws -> String? in
            let (status, body) = try await http.stream(
                endpoint, method: .POST, path: prefix + path, headers: headers,
                connectTimeout: .seconds(30))
            var buffer: [UInt8] = []
            var failure: String?
            var total = 0
            for try await chunk in body {
                total += chunk.count
                buffer += chunk
                // A line is a few hundred bytes; a megabyte without a newline is garbage.
                if buffer.count > 1 << 20 { buffer.removeAll() }
                while let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(buffer[..<nl])
                    buffer.removeSubrange(...nl)
                    struct Line: Decodable {
                        var status: String?
                        var id: String?
                        var error: String?
                        var message: String?
                    }
                    guard let l = try? JSONDecoder().decode(Line.self, from: Data(line)) else { continue }
                    if let e = l.error { failure = e }
                    if status != 200, let m = l.message { failure = m }
                    if let st = l.status { progress(l.id.map { "\($0): \(st)" } ?? st) }
                }
            }
            if status != 200 {
                let text = String(decoding: buffer.prefix(500), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                return "HTTP \(status): " + (failure ?? (text.isEmpty ? "no reason given" : text))
            }
            return failure
        }
        let timer = Task {
            try await Task.sleep(for: timeout)
            work.cancel()
        }
        defer { timer.cancel() }
        let outcome: String?
        do {
            outcome = try await work.value
        } catch HTTPClientError.connectFailed(_, let reason) {
            throw DockerError(kind: .daemonUnreachable, operation: "pull", service: nil, status: nil, daemonMessage: reason)
        } catch {
            throw fail(nil, work.isCancelled ? "no answer within \(timeout)" : "\(error)")
        }
        if let outcome { throw fail(nil, outcome) }
        // A stream that ends without an error is a finished pull; make sure of it.
        do throws(DockerError) {
            _ = try await inspectImage(reference)
        } catch {
            throw fail(nil, "the pull ended but the daemon does not have the image (\(error.daemonMessage))")
        }
    }

    /// Removes an image (its tag); already gone is success.
    public func removeImage(_ name: String, force: Bool = true) async throws(DockerError) {
        let r = try await raw("image remove", .DELETE, "/images/\(Self.query(name))?force=\(force ? 1 : 0)", service: nil)
        guard r.status == 200 || r.status == 404 else { throw Self.error(r, "image remove", nil) }
    }

    // MARK: Networks

    /// Makes sure the bridge network `name` exists (the agent's per-host network, docs/contracts.md, "The services file") and
    /// returns its id. Agents sharing a daemon may race to create it, and the Engine's CheckDuplicate
    /// is best effort (Engine API, NetworkCreate), so two can appear: every agent then picks the same
    /// one (oldest, then lowest id), removes the others it can, and creates containers by that id,
    /// never by the name, which the daemon would find ambiguous.
    public func ensureBridgeNetwork(_ name: String) async throws(DockerError) -> String {
        struct Network: Decodable {
            var Id: String
            var Name: String
            var Created: String?
        }
        let path = "/networks?filters=\(Self.query(Self.json(["name": [name]])))"
        var found: [Network] = (try await call("network list", .GET, path) as [Network]).filter { $0.Name == name }
        if found.isEmpty {
            struct Body: Encodable {
                var Name: String
                var Driver: String
                var CheckDuplicate: Bool
                var Labels: [String: String]
            }
            let bytes = Array(
                (try? JSONEncoder().encode(
                    Body(
                        Name: name, Driver: "bridge", CheckDuplicate: true,
                        Labels: [MicroscaleLabel.managed: "true"]))) ?? Data())
            let c = try await raw("network create", .POST, "/networks/create", body: bytes, service: nil)
            guard c.status == 201 || c.status == 409 else { throw Self.error(c, "network create", nil) }
            found = (try await call("network list", .GET, path) as [Network]).filter { $0.Name == name }
        }
        let sorted = found.sorted { ($0.Created ?? "", $0.Id) < ($1.Created ?? "", $1.Id) }
        guard let chosen = sorted.first else {
            throw DockerError(
                kind: .notFound, operation: "network create", service: nil, status: nil,
                daemonMessage: "network \(name) was created but is not listed")
        }
        for extra in sorted.dropFirst() {
            _ = try? await raw("network remove", .DELETE, "/networks/\(extra.Id)", service: nil)
        }
        return chosen.Id
    }

    /// The ids of the daemon's networks with the bridge driver (docker0 and user-defined ones).
    public func bridgeNetworkIDs() async throws(DockerError) -> [String] {
        struct Network: Decodable {
            var Id: String
            var Driver: String?
        }
        let all: [Network] = try await call("network list", .GET, "/networks")
        return all.filter { $0.Driver == "bridge" }.map(\.Id)
    }

    // MARK: Events

    /// Container events for containers carrying `labels`, as they happen, across daemon restarts:
    /// when the stream breaks the client waits (`retry`, doubling up to `maxRetry`) and subscribes
    /// again, asking for events `since` the last one it saw so none is lost while it was away.
    /// `reconnected` is yielded as a synthetic event (Action "microscale.reconnected") so the
    /// consumer knows to re-list: events during the outage of the daemon itself are not replayed.
    public nonisolated func events(
        labels: [String], retry: Duration = .milliseconds(100), maxRetry: Duration = .seconds(2)
    ) -> AsyncStream<EngineEvent> {
        let (stream, continuation) = AsyncStream<EngineEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        let task = Task {
            var since: Int64? = nil
            var delay = retry
            var connectedBefore = false
            while !Task.isCancelled {
                do {
                    let prefix = try await self.prefix()
                    var filters = ["type": ["container"], "label": labels]
                    if labels.isEmpty { filters.removeValue(forKey: "label") }
                    var path = "\(prefix)/events?filters=\(Self.query(Self.json(filters)))"
                    if let since { path += "&since=\(since / 1_000_000_000).\(String(format: "%09d", since % 1_000_000_000))" }
                    let (status, body) = try await http.stream(endpoint, path: path)
                    guard status == 200 else { throw HTTPClientError.connectionClosed(endpoint: endpoint.description) }
                    if connectedBefore {
                        continuation.yield(
                            EngineEvent(
                                Type: "microscale", Action: "microscale.reconnected", Actor: .init(ID: "", Attributes: nil), time: nil, timeNano: nil)
                        )
                    }
                    connectedBefore = true
                    delay = retry
                    var buffer: [UInt8] = []
                    for try await chunk in body {
                        buffer += chunk
                        // Bounded: one event is a few hundred bytes; a megabyte without a newline is garbage.
                        if buffer.count > 1 << 20 { buffer.removeAll() }
                        while let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = Array(buffer[..<nl])
                            buffer.removeSubrange(...nl)
                            if let e = try? JSONDecoder().decode(EngineEvent.self, from: Data(line)) {
                                if let t = e.timeNano { since = t + 1 }
                                continuation.yield(e)
                            }
                        }
                    }
                } catch {
                    // Fall through to the back-off: the daemon is down or restarting.
                }
                await self.forgetVersion()
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, maxRetry)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    private func forgetVersion() { versionPrefix = nil }

    // MARK: Plumbing

    private func prefix() async throws(DockerError) -> String {
        if let versionPrefix { return versionPrefix }
        _ = try await negotiatedVersion()
        return versionPrefix ?? ""
    }

    private func call<T: Decodable>(
        _ op: String, _ method: HTTPMethod, _ path: String, versioned: Bool = true, service: String? = nil
    ) async throws(DockerError) -> T {
        let r = try await raw(op, method, path, versioned: versioned, service: service)
        guard r.status == 200 else { throw Self.error(r, op, service) }
        return try Self.decode(T.self, r, op, service)
    }

    private func raw(
        _ op: String, _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, versioned: Bool = true,
        service: String?, timeout: Duration? = nil
    ) async throws(DockerError) -> HTTPResponse {
        let full: String
        do throws(DockerError) {
            full = versioned ? (try await prefix()) + path : path
        } catch {
            // Name the operation and service the caller asked for, not the version handshake.
            var e = error
            e.operation = op
            e.service = service
            throw e
        }
        do {
            return try await http.request(
                endpoint, method: method, path: full,
                headers: body == nil ? [] : [("Content-Type", "application/json")], body: body,
                timeout: timeout ?? requestTimeout, maxBody: maxResponseBytes)
        } catch let e as HTTPClientError {
            switch e {
            case .connectFailed:
                throw DockerError(kind: .daemonUnreachable, operation: op, service: service, status: nil, daemonMessage: "\(e)")
            default:
                throw DockerError(kind: .badResponse, operation: op, service: service, status: nil, daemonMessage: "\(e)")
            }
        } catch {
            throw DockerError(kind: .daemonUnreachable, operation: op, service: service, status: nil, daemonMessage: "\(error)")
        }
    }

    static func message(_ r: HTTPResponse) -> String {
        struct Message: Decodable { var message: String }
        if let m = try? JSONDecoder().decode(Message.self, from: Data(r.body)) { return m.message }
        return String(r.bodyText.prefix(500)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func error(_ r: HTTPResponse, _ op: String, _ service: String?) -> DockerError {
        let kind: DockerError.Kind =
            switch r.status {
            case 404: .notFound
            case 409: .conflict
            default: .refused
            }
        return DockerError(kind: kind, operation: op, service: service, status: r.status, daemonMessage: message(r))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ r: HTTPResponse, _ op: String, _ service: String?) throws(DockerError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(r.body))
        } catch {
            throw DockerError(
                kind: .badResponse, operation: op, service: service, status: r.status,
                daemonMessage: "cannot decode the answer: \(error)")
        }
    }

    static func json(_ value: [String: [String]]) -> String {
        String(decoding: (try? JSONEncoder().encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func query(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    /// Compares dotted version numbers numerically ("1.9" < "1.41").
    static func compare(_ a: String, _ b: String) -> Int {
        let x = a.split(separator: ".").map { Int($0) ?? 0 }
        let y = b.split(separator: ".").map { Int($0) ?? 0 }
        for i in 0..<max(x.count, y.count) {
            let l = i < x.count ? x[i] : 0
            let r = i < y.count ? y[i] : 0
            if l != r { return l < r ? -1 : 1 }
        }
        return 0
    }
}
