import Bounds
import ControlPlane
import Foundation
import Membership

/// One serving container of a service as a client reaches it: the node's host and the host port
/// its container port is published on (issue 17 item 5, docs/endpoints.md).
public struct ServiceEndpoint: Codable, Sendable, Hashable, Comparable {
    public var node: String
    /// The node's advertised host (what its agent gossips as its address, without the port).
    public var host: String
    public var port: Int
    public var containerPort: Int

    public init(node: String, host: String, port: Int, containerPort: Int) {
        self.node = node
        self.host = host
        self.port = port
        self.containerPort = containerPort
    }

    public static func < (a: ServiceEndpoint, b: ServiceEndpoint) -> Bool {
        (a.node, a.containerPort, a.port) < (b.node, b.containerPort, b.port)
    }

    /// "host:port", brackets around an IPv6 host.
    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// `GET /v1/services/NAME/endpoints`: the service's endpoints and the index to block on next.
public struct EndpointsView: Codable, Sendable, Equatable {
    public var service: String
    /// Raised whenever this service's endpoints change as this agent sees them; pass it back as
    /// `?index=` to wait for the next change. Local to the agent (gossip has no global order):
    /// an index greater than the agent's own (it restarted) is answered at once.
    public var index: UInt64
    public var endpoints: [ServiceEndpoint]
}

/// Every service's endpoints from the members' records as this agent holds them (gossip, so any
/// agent answers, servers and clients alike, and no node's Docker is asked). Pure.
///
/// Alive and suspect members count; dead and left ones do not. A suspect is still believed
/// alive until its suspicion times out (SWIM §4.2), and Consul likewise keeps a node's services
/// until its serf health check fails: dropping endpoints on every suspicion would empty a load
/// balancer's pool on a lost packet. A dead node's endpoints leave at once.
public enum Endpoints {
    public static func from(_ members: [MemberView]) -> [String: [ServiceEndpoint]] {
        var out: [String: [ServiceEndpoint]] = [:]
        for m in members where m.status == .alive || m.status == .suspect {
            guard let endpoints = m.endpoints, !endpoints.isEmpty,
                let host = AgentConfiguration.HostPort(m.address)?.host
            else { continue }
            for (service, list) in endpoints {
                for e in list {
                    out[service, default: []].append(
                        ServiceEndpoint(
                            node: m.name, host: host, port: e.hostPort,
                            containerPort: e.containerPort))
                }
            }
        }
        for (s, list) in out { out[s] = list.sorted() }
        return out
    }

    /// `?index=` and `?wait=` of a blocking query, checked (the field is named in the error).
    public struct Query: Sendable, Equatable {
        public var index: UInt64?
        public var wait: Duration
    }

    public static func query(_ items: [(String, String)]) -> Result<Query, QueryError> {
        var q = Query(index: nil, wait: Limits.defaultBlockingWait)
        for (k, v) in items {
            switch k {
            case "index":
                guard v.utf8.count <= 20, let i = UInt64(v) else {
                    return .failure(QueryError("index: \(v.prefix(40)) is not a whole number from 0 to \(UInt64.max)"))
                }
                q.index = i
            case "wait":
                guard let d = Units.duration(v), d > .zero else {
                    return .failure(QueryError("wait: \(v.prefix(40)) is not a duration such as 30s or 500ms"))
                }
                guard d <= Limits.maxBlockingWait else {
                    return .failure(QueryError("wait: \(v.prefix(40)) is longer than the limit \(Limits.maxBlockingWait)"))
                }
                q.wait = d
            case "stale", "port": break
            default:
                return .failure(QueryError("\(k.prefix(40)): unknown query parameter (index, wait)"))
            }
        }
        return .success(q)
    }

    public struct QueryError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }
}

/// Blocking queries on the endpoints, as Consul's (`?index=N&wait=D`): a query with the index of
/// the answer a client already has waits until the service's endpoints change, or `wait` ends,
/// and then answers with the new index. Changes come from the membership service (a record or a
/// member's status changed), so a waiter hears of a change as soon as gossip brings it.
///
/// Bounded: at most `Limits.maxBlockingQueries` waiters (beyond: 429), each at most
/// `Limits.maxBlockingWait`; a waiter whose client goes away is dropped at once.
public actor EndpointsWatch {
    private struct Entry {
        var endpoints: [ServiceEndpoint]
        var modifyIndex: UInt64
    }
    private struct Waiter {
        var service: String
        var after: UInt64
        var continuation: CheckedContinuation<Void, Never>
    }

    private let members: @Sendable () async -> [MemberView]
    private let maxWaiters: Int
    /// 1 until the first change, so that an index is never 0 (0 asks not to wait).
    private var index: UInt64 = 1
    private var entries: [String: Entry] = [:]
    private var waiters: [UInt64: Waiter] = [:]
    private var nextWaiter: UInt64 = 0
    private var computed = false
    private var refreshing = false
    private var dirty = false

    public init(maxWaiters: Int = Limits.maxBlockingQueries, members: @escaping @Sendable () async -> [MemberView]) {
        self.members = members
        self.maxWaiters = maxWaiters
    }

    public var waiting: Int { waiters.count }

    /// The members changed. Recomputed at once only while a blocking query waits; otherwise the
    /// next query recomputes. Every member change calls this (every suspicion and refutation of
    /// a 50-agent join, thousands), and each recomputation reads the whole member list on the
    /// membership loop: nobody asking, nothing is read.
    public func changed() async {
        dirty = true
        guard computed, !waiters.isEmpty else { return }
        await refresh()
    }

    /// Recomputes while changes come in (coalesced: one recomputation runs at a time, and one
    /// more after it if changes came in meanwhile).
    private func refresh() async {
        guard !refreshing else { return }
        refreshing = true
        while dirty {
            dirty = false
            apply(Endpoints.from(await members()))
        }
        refreshing = false
    }

    /// Takes a new computation: services whose endpoints changed get a new modify index, and their
    /// waiters are woken.
    func apply(_ now: [String: [ServiceEndpoint]]) {
        computed = true
        var changedServices: Set<String> = []
        for (s, list) in now where entries[s]?.endpoints != list { changedServices.insert(s) }
        for (s, e) in entries where now[s] == nil && !e.endpoints.isEmpty { changedServices.insert(s) }
        guard !changedServices.isEmpty else { return }
        index &+= 1
        for s in changedServices { entries[s] = Entry(endpoints: now[s] ?? [], modifyIndex: index) }
        for (id, w) in waiters where changedServices.contains(w.service) {
            waiters[id] = nil
            w.continuation.resume()
        }
    }

    public enum Failure: Error, Sendable, Equatable { case tooManyWaiting(Int) }

    /// The service's endpoints now, or, with `after` equal to the index of the answer the client
    /// holds, once they change or `wait` ends (then the same answer again, as Consul does).
    public func query(_ service: String, after: UInt64?, wait: Duration) async throws(Failure) -> EndpointsView {
        if !computed || dirty {
            dirty = true
            await refresh()
        }
        if let after, after > 0, after <= index, modifyIndex(service) <= after {
            guard waiters.count < maxWaiters else { throw .tooManyWaiting(maxWaiters) }
            nextWaiter &+= 1
            let id = nextWaiter
            let timeout = Task { [weak self] in
                try? await Task.sleep(for: wait)
                await self?.release(id)
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    waiters[id] = Waiter(service: service, after: after, continuation: c)
                }
            } onCancel: {
                Task { await self.release(id) }
            }
            timeout.cancel()
        }
        return view(service)
    }

    private func release(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.continuation.resume()
    }

    private func modifyIndex(_ service: String) -> UInt64 { max(entries[service]?.modifyIndex ?? 1, 1) }

    func view(_ service: String) -> EndpointsView {
        EndpointsView(service: service, index: modifyIndex(service), endpoints: entries[service]?.endpoints ?? [])
    }

    /// Wakes every waiter (the agent is stopping).
    public func stop() {
        for (_, w) in waiters { w.continuation.resume() }
        waiters.removeAll()
    }
}
