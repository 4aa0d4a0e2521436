import Consensus
import ControlPlane
import Membership
import Testing

/// Rules of the replicated state used only once every server applies them (docs/operations.md,
/// "Upgrades and protocol versions").
@Suite struct ServerFeaturesTests {
    static func member(_ name: String, version: String, status: MemberStatus = .alive) -> MemberView {
        var r = NodeRecord(name: name, address: "10.0.0.1:7480", role: .server, capacity: .init(cpuMillicores: 2000, memoryBytes: 4 << 30))
        r.agentVersion = version
        return MemberView(r, status: status, incarnation: 1)
    }

    @Test func aVersionIsItsThreeNumbersAndAnySuffixIsIgnored() {
        #expect(AgentVersion(parsing: "0.2.0") == AgentVersion(major: 0, minor: 2, patch: 0))
        #expect(AgentVersion(parsing: "1.14.3-dev+abc") == AgentVersion(major: 1, minor: 14, patch: 3))
        #expect(AgentVersion(parsing: "0.10.0")! > AgentVersion(parsing: "0.9.9")!)
    }

    @Test func aVersionThatIsNotThreeNumbersDoesNotParse() {
        for text in ["", "1", "1.2", "1..2", ".1.2", "v1.2.3", "1.2.", "1.2.x", "1234567890.0.0", "0.0.99999999999999999999"] {
            #expect(AgentVersion(parsing: text) == nil, "\(text)")
        }
    }

    @Test func theStalePlanCheckWaitsForEveryServerOfTheConfiguration() {
        let servers: Set<String> = ["s1", "s2", "s3"]
        let new = ["s1", "s2", "s3"].map { Self.member($0, version: "0.2.0") }
        #expect(ServerFeatures.allServers(servers, in: new, atLeast: ServerFeatures.stalePlanCheck))
        // One server still on the previous version (a rolling upgrade half done).
        var mixed = new
        mixed[1] = Self.member("s2", version: "0.1.0")
        #expect(!ServerFeatures.allServers(servers, in: mixed, atLeast: ServerFeatures.stalePlanCheck))
        // A server with no record is waited for; a dead one counts by its last record.
        #expect(!ServerFeatures.allServers(servers, in: Array(new.prefix(2)), atLeast: ServerFeatures.stalePlanCheck))
        var down = new
        down[2] = Self.member("s3", version: "0.2.0", status: .dead)
        #expect(ServerFeatures.allServers(servers, in: down, atLeast: ServerFeatures.stalePlanCheck))
        // A version that does not parse counts as older; clients do not count.
        var junk = new
        junk[0] = Self.member("s1", version: "latest")
        #expect(!ServerFeatures.allServers(servers, in: junk, atLeast: ServerFeatures.stalePlanCheck))
        #expect(ServerFeatures.allServers(servers, in: new + [Self.member("c1", version: "0.0.1")], atLeast: ServerFeatures.stalePlanCheck))
        #expect(!ServerFeatures.allServers([], in: new, atLeast: ServerFeatures.stalePlanCheck))
    }

    @Test func aPlanCarriesTheIndexItWasComputedFromOnlyOnceEveryServerRefusesStalePlans() {
        var state = ClusterState()
        _ = state.apply(.applyServices(["web": LeaderRoundTests.web]), index: 1)
        let clients = [LeaderRoundTests.member("a"), LeaderRoundTests.member("b")]
        let servers: Set<String> = ["s1", "s2"]
        func planned(_ members: [MemberView], servers: Set<String>?) -> Consensus.Plan? {
            var round = LeaderRound(deadNodeGrace: .seconds(30))
            guard case .commit(let c) = round.step(state: state, members: members, demand: [:], now: .seconds(1), servers: servers).verdict
            else { return nil }
            return c.plan
        }
        let upgraded = clients + [Self.member("s1", version: "0.2.0"), Self.member("s2", version: "0.2.1")]
        #expect(planned(upgraded, servers: servers)?.basedOnIndex == 1)
        let mixed = clients + [Self.member("s1", version: "0.2.0"), Self.member("s2", version: "0.1.0")]
        #expect(planned(mixed, servers: servers)?.basedOnIndex == nil)
        #expect(planned(upgraded, servers: nil)?.basedOnIndex == nil)
    }

    @Test func aPlanComputedBeforeADrainIsRefusedAndTheNextRoundPlansWithoutTheNode() throws {
        var state = ClusterState()
        _ = state.apply(.applyServices(["web": LeaderRoundTests.web]), index: 1)
        let members = [LeaderRoundTests.member("a"), LeaderRoundTests.member("b"), Self.member("s1", version: "0.2.0")]
        var round = LeaderRound(deadNodeGrace: .seconds(30))
        guard case .commit(let stale) = round.step(state: state, members: members, demand: [:], now: .seconds(1), servers: ["s1"]).verdict
        else {
            Issue.record("no plan")
            return
        }
        #expect(stale.plan.assignments["a"]?["web"] ?? 0 > 0)
        // The drain enters the log between the read and the proposal.
        _ = state.apply(.setDrain(node: "a", drained: true), index: 2)
        let refused = state.apply(.setPlan(stale.plan, stale.decision(timestampMilliseconds: 0, planning: .zero)), index: 3)
        guard case .stalePlan = refused else {
            Issue.record("applied: \(String(describing: refused))")
            return
        }
        round.commitFailed()
        guard case .commit(let next) = round.step(state: state, members: members, demand: [:], now: .seconds(2), servers: ["s1"]).verdict
        else {
            Issue.record("no plan after the refusal")
            return
        }
        #expect(next.plan.assignments["a"]?["web"] == nil)
        #expect(state.apply(.setPlan(next.plan, next.decision(timestampMilliseconds: 0, planning: .zero)), index: 4) == nil)
    }
}
