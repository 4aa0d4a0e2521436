/// Scaling: the pure microscaling planner: (services, demand, nodes, current plan, now) -> new plan
/// and the reason for every change.
