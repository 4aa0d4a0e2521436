import Consensus
import Membership

// A member's status as each core names it. Each mapping is an exhaustive switch, so a status
// added to Membership does not compile until every core says what it means; before, the status
// travelled as a string and anything unrecognised was read as dead. The planner's mapping
// (`NodeStatus(_:)`) is ControlPlane's, beside the member snapshot.

extension Autopilot.Health {
    init(_ status: MemberStatus) {
        switch status {
        case .alive: self = .alive
        case .suspect: self = .suspect
        case .dead: self = .dead
        case .left: self = .left
        }
    }
}
