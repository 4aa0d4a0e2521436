import Consensus
import Foundation
import Testing
import Wire

@testable import Agent

/// A cluster API request is parsed once, where it enters (the HTTP API), and travels typed: one
/// protobuf message per command, bounded field by field by the agent that receives it.
@Suite struct ClusterRequestTests {
    static let endpoints: [(method: String, path: String, body: String, request: ClusterRequest)] = [
        ("GET", "/v1/leader", "", .read(.leader, stale: false)),
        ("GET", "/v1/status?stale", "", .read(.status, stale: true)),
        ("GET", "/v1/report/utilization?window=10m", "", .read(.utilization(window: .seconds(600)), stale: false)),
        ("GET", "/v1/decisions?limit=5", "", .read(.decisions(limit: 5), stale: false)),
        ("GET", "/v1/decisions", "", .read(.decisions(limit: 20), stale: false)),
        ("GET", "/v1/decisions?limit=99999", "", .read(.decisions(limit: ClusterState.maxDecisions), stale: false)),
        ("GET", "/v1/services", "", .read(.services, stale: false)),
        ("GET", "/v1/demand?stale=1", "", .read(.demand, stale: true)),
        ("GET", "/v1/nodes/drained", "", .read(.drainedNodes, stale: false)),
        ("GET", "/v1/nodes/denied", "", .read(.deniedNodes, stale: false)),
        ("GET", "/v1/operator/snapshot", "", .read(.snapshot, stale: false)),
        ("GET", "/v1/operator/raft/peers", "", .read(.raftPeers, stale: false)),
        ("PUT", "/v1/services", "services: {}", .applyServices(document: Array("services: {}".utf8))),
        ("POST", "/v1/services", "x", .applyServices(document: Array("x".utf8))),
        ("DELETE", "/v1/services/web", "", .removeService("web")),
        ("POST", "/v1/services/web/rollback", "", .rollbackService("web")),
        ("PUT", "/v1/demand/web", #"{"value": 12.5}"#, .setDemand(service: "web", value: 12.5)),
        ("POST", "/v1/nodes/n2/drain", "", .setDrain(node: "n2", drained: true)),
        ("POST", "/v1/nodes/n2/undrain", "", .setDrain(node: "n2", drained: false)),
        ("POST", "/v1/nodes/n2/deny", "", .setDenied(node: "n2", denied: true)),
        ("POST", "/v1/nodes/n2/undeny", "", .setDenied(node: "n2", denied: false)),
        ("DELETE", "/v1/operator/raft/peers/s3", "", .removeRaftPeer("s3", leaving: false)),
        ("DELETE", "/v1/operator/raft/peers/s3?leaving", "", .removeRaftPeer("s3", leaving: true)),
        ("PUT", "/v1/operator/snapshot", "MSNAP", .restoreSnapshot(file: Array("MSNAP".utf8))),
    ]

    @Test(arguments: 0..<endpoints.count)
    func everyEndpointParsesToOneTypedRequestThatCrossesTheWireUnchanged(_ i: Int) throws {
        let e = Self.endpoints[i]
        let request = try ClusterRequest(method: e.method, path: e.path, body: Array(e.body.utf8))
        #expect(request == e.request, "\(e.method) \(e.path)")
        var wire = request.wire
        wire.id = 9
        wire.hops = 1
        let bytes: [UInt8] = try wire.serializedBytes()
        #expect(try ClusterRequest(wire: Microscale_Control_ApiRequest(serializedBytes: bytes)) == request)
    }

    func answer(_ method: String, _ path: String, _ body: String = "") -> APIResponse? {
        do {
            _ = try ClusterRequest(method: method, path: path, body: Array(body.utf8))
            return nil
        } catch { return error.response }
    }

    /// The answer's `error` text.
    func text(_ r: APIResponse?) -> String {
        guard let r else { return "parsed" }
        return (try? JSONDecoder().decode([String: String].self, from: Data(r.body)))?["error"] ?? String(decoding: r.body, as: UTF8.self)
    }

    @Test func whatDoesNotParseIsAnsweredWhereItEnteredAsTheLeaderAnsweredIt() {
        #expect(answer("GET", "/v1/nope")?.status == 404)
        #expect(text(answer("PATCH", "/v1/services")).contains("no such endpoint: PATCH /v1/services"))
        #expect(answer("GET", "")?.status == 404)
        #expect(answer("GET", "/v1/decisions?limit=0")?.status == 400)
        #expect(text(answer("GET", "/v1/decisions?limit=x")).contains("limit"))
        #expect(text(answer("GET", "/v1/report/utilization?window=2h")).contains("window"))
        #expect(text(answer("PUT", "/v1/demand/web", "12")).contains(#"body: expected {"value": NUMBER}"#))
        // The state machine's own refusals: a demand out of range, a name out of bounds.
        let tooMuch = answer("PUT", "/v1/demand/web", #"{"value": 1e30}"#)
        #expect(tooMuch?.status == 400)
        #expect(text(tooMuch).contains("demand for web"))
        #expect(answer("DELETE", "/v1/services/" + String(repeating: "a", count: 64))?.status == 404)
        #expect(text(answer("POST", "/v1/nodes/\(String(repeating: "n", count: 65))/drain")).contains("node name"))
        #expect(answer("DELETE", "/v1/operator/raft/peers/\(String(repeating: "s", count: 65))")?.status == 404)
    }

    func refusal(_ build: (inout Microscale_Control_ApiRequest) -> Void) -> String? {
        var r = Microscale_Control_ApiRequest()
        build(&r)
        do {
            _ = try ClusterRequest(wire: r)
            return nil
        } catch { return error.description }
    }

    func demand(_ service: String, _ value: Double) -> (inout Microscale_Control_ApiRequest) -> Void {
        { r in
            r.setDemand = .with {
                $0.service = service
                $0.value = value
            }
        }
    }

    func read(_ view: Microscale_Control_ReadView.View, window: UInt64 = 0, limit: UInt32 = 0) -> (inout Microscale_Control_ApiRequest) -> Void {
        { r in
            r.read = .with {
                $0.view = view
                $0.windowMilliseconds = window
                $0.limit = limit
            }
        }
    }

    @Test func aForwardedRequestOutOfBoundsIsRefusedNamingItsField() {
        let long = String(repeating: "a", count: 64), longNode = String(repeating: "n", count: 65)
        #expect(refusal { _ in } == "api_request.command: none this agent knows (the sender may run a newer version)")
        #expect(refusal(demand("web", .nan))?.hasPrefix("api_request.set_demand.value: nan") == true)
        #expect(refusal(demand("web", -1))?.hasPrefix("api_request.set_demand.value") == true)
        #expect(refusal(demand("", 1))?.hasPrefix("api_request.set_demand.service: 0 bytes") == true)
        #expect(refusal { $0.removeService = .with { $0.service = long } }?.hasPrefix("api_request.remove_service.service") == true)
        #expect(refusal { $0.rollbackService = .with { $0.service = "" } }?.hasPrefix("api_request.rollback_service.service") == true)
        #expect(refusal { $0.setDrain = .with { $0.node = longNode } }?.hasPrefix("api_request.set_drain.node: 65 bytes") == true)
        #expect(refusal { $0.setDenied = .with { $0.denied = true } }?.hasPrefix("api_request.set_denied.node") == true)
        #expect(refusal { $0.removeRaftPeer = .with { $0.node = "" } }?.hasPrefix("api_request.remove_raft_peer.node") == true)
        #expect(refusal(read(.unspecified)) == "api_request.read.view: not set")
        #expect(refusal(read(.UNRECOGNIZED(77)))?.hasPrefix("api_request.read.view: 77") == true)
        #expect(refusal(read(.utilization, window: 999))?.hasPrefix("api_request.read.window_milliseconds") == true)
        #expect(refusal(read(.utilization, window: .max))?.hasPrefix("api_request.read.window_milliseconds") == true)
        #expect(refusal(read(.decisions, limit: 0))?.hasPrefix("api_request.read.limit: 0") == true)
        #expect(refusal(read(.decisions, limit: 1001))?.hasPrefix("api_request.read.limit") == true)
        let big = Data(repeating: 0x20, count: HTTPAPI.maxBodyBytes + 1)
        #expect(refusal { $0.applyServices = .with { $0.document = big } }?.hasPrefix("api_request.apply_services.document") == true)
        #expect(refusal { $0.restoreSnapshot = .with { $0.file = big } }?.hasPrefix("api_request.restore_snapshot.file") == true)
        #expect(
            refusal {
                read(.leader)(&$0)
                $0.hops = 9
            }?.hasPrefix("api_request.hops: 9") == true)
        #expect(
            refusal {
                read(.leader)(&$0)
                $0.token = String(repeating: "t", count: 5000)
            }?.hasPrefix("api_request.token") == true)
        // Within bounds, at the edges.
        #expect(refusal(demand(String(repeating: "a", count: 63), 1e12)) == nil)
        #expect(refusal(read(.utilization, window: 3_600_000)) == nil)
        #expect(refusal(read(.decisions, limit: 1000)) == nil)
    }

    /// What a follower sends is what the leader serves: no method, path or HTTP body on the wire.
    @Test func theForwardedMessageCarriesTheCommandNotAnHTTPMethodOrPath() throws {
        let request = try ClusterRequest(method: "PUT", path: "/v1/demand/web", body: Array(#"{"value": 3}"#.utf8))
        var m = Microscale_Control_ControlMessage()
        m.apiRequest = request.wire
        guard case .apiRequest(let r)? = m.body, case .setDemand(let d)? = r.command else {
            Issue.record("not a set_demand")
            return
        }
        #expect(d.service == "web" && d.value == 3)
    }
}
