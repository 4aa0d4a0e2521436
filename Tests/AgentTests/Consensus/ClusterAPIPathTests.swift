import Foundation
import Testing
import Wire

@testable import Agent

/// An agent splits the path of every request its HTTP API takes (ClusterRequest). Forwarded
/// requests are typed now, but the untyped form of older versions still decodes, with whatever
/// path its sender put in it.
@Suite struct ClusterAPIPathTests {
    @Test func aPathIsItsSegmentsWithoutTheQuery() {
        #expect(ClusterAPI.pathSegments("/v1/services") == ["v1", "services"])
        #expect(ClusterAPI.pathSegments("/v1/decisions?limit=5") == ["v1", "decisions"])
        #expect(ClusterAPI.pathSegments("v1//nodes/n1/drain/") == ["v1", "nodes", "n1", "drain"])
    }

    @Test(arguments: ["", "?", "?limit=5", "/", "??", "/?/"])
    func aPathWithNothingBeforeItsQueryHasNoSegmentsInsteadOfCrashing(_ path: String) {
        #expect(ClusterAPI.pathSegments(path) == [])
    }

    /// fuzzing/corpus/control/crash-forward-request-empty-path: a ForwardRequest with no path.
    @Test func aForwardedRequestWithAnEmptyPathDecodesToNoSegments() throws {
        let frame = Frame(kind: .control, payload: .init(bytes: [0x1a, 0x00]))
        let message = try frame.decode(Microscale_Control_ControlMessage.self)
        guard case .forwardRequest(let r)? = message.body else {
            Issue.record("not a forward request")
            return
        }
        #expect(ClusterAPI.pathSegments(r.path) == [])
    }

    @Test func aStaleReadIsAskedForWithStaleAmongTheQueryParameters() {
        #expect(ClusterAPI.isStale("/v1/demand?stale"))
        #expect(ClusterAPI.isStale("/v1/demand?stale=true") && ClusterAPI.isStale("/v1/demand?stale=1") && ClusterAPI.isStale("/v1/demand?stale="))
        #expect(ClusterAPI.isStale("/v1/decisions?limit=5&stale"))
        #expect(!ClusterAPI.isStale("/v1/demand") && !ClusterAPI.isStale("/v1/demand?stale=false") && !ClusterAPI.isStale("/v1/demand?stales"))
        #expect(!ClusterAPI.isStale("") && !ClusterAPI.isStale("?") && !ClusterAPI.isStale("/v1/stale"))
    }
}
