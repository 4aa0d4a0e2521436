/// Membership: the pure SWIM + Lifeguard instance (Das et al. 2002; Dadgar et al. 2018).
/// It takes events and the time and returns directives; it never reads a clock or a socket.
