import Consensus
import ControlPlane
import Foundation
import Membership
import Scaling
import Testing

/// `MemberView.status` is typed: the API's JSON is what it was ("alive", ...), a status outside
/// the four is a decoding error, and the planner gets each status as itself.
@Suite struct MemberViewTests {
    static let record = NodeRecord(
        name: "node-a", address: "10.0.0.1:7480", role: .server, capacity: .init(cpuMillicores: 2500, memoryBytes: 8 << 30))

    @Test func theStatusIsWrittenAsItsNameInTheAPIsJSON() throws {
        for status in MemberStatus.allCases {
            let json = String(decoding: try JSONEncoder().encode(MemberView(Self.record, status: status, incarnation: 1)), as: UTF8.self)
            #expect(json.contains(#""status":"\#(status.rawValue)""#), "\(json)")
        }
    }

    @Test func aStatusThatIsNoneOfTheFourDoesNotDecode() throws {
        let json = String(decoding: try JSONEncoder().encode(MemberView(Self.record, status: .alive, incarnation: 1)), as: UTF8.self)
        let zombie = json.replacingOccurrences(of: #""status":"alive""#, with: #""status":"zombie""#)
        #expect(zombie != json)
        #expect(throws: DecodingError.self) { _ = try JSONDecoder().decode(MemberView.self, from: Data(zombie.utf8)) }
        #expect(try JSONDecoder().decode(MemberView.self, from: Data(json.utf8)).status == .alive)
    }

    @Test func everyStatusReachesThePlannerAsItself() {
        for status in MemberStatus.allCases {
            #expect(NodeStatus(status).rawValue == status.rawValue)
        }
    }

    @Test func aNodesCPUReachesThePlannerInMillicoresWithoutPassingThroughCores() throws {
        let r = NodeRecord(
            name: "node-a", address: "10.0.0.1:7480", role: .server, capacity: .init(cpuMillicores: 2501, memoryBytes: 8 << 30))
        let view = MemberView(r, status: .alive, incarnation: 1)
        #expect(view.capacity.cpuMillicores == 2501 && view.capacity.cpu == 2.501)
        let nodes = LeaderRound.plannerNodes([view], ClusterState())
        #expect(nodes.first?.cpuMillis == 2501)
        let json = String(decoding: try JSONEncoder().encode(view.capacity), as: UTF8.self)
        #expect(json.contains(#""cpu":2.501"#) && json.contains(#""cpuMillicores":2501"#), "\(json)")
    }

    @Test func anAgentsJSONWithoutMillicoresStillDecodesAndCoresOutOfRangeAreRefused() throws {
        let old = try JSONDecoder().decode(MemberView.ResourceView.self, from: Data(#"{"cpu":2.5,"memoryBytes":1024}"#.utf8))
        #expect(old.cpuMillicores == 2500)
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(MemberView.ResourceView.self, from: Data(#"{"cpu":1e300,"memoryBytes":1024}"#.utf8))
        }
        #expect(throws: DecodingError.self) {
            _ = try JSONDecoder().decode(MemberView.ResourceView.self, from: Data(#"{"cpu":-1,"memoryBytes":1024}"#.utf8))
        }
    }
}
