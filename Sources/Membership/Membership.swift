/// Membership: the pure SWIM + Lifeguard instance (Das et al. 2002; Dadgar et al. 2018).
/// It takes events and the time and returns directives; it never reads a clock or a socket.
///
/// Files: `SWIMInstance` (the protocol), `Messages` (wire values, mapped to protobuf by the
/// shell), `NodeRecord` (the per-member record and its deltas), `Configuration` (defaults and
/// the arithmetic behind them), `Directives` (what the shell must do).
