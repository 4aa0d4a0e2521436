/// Consensus: the pure Raft node (Ongaro & Ousterhout 2014) in the style of etcd-raft's RawNode:
/// tick, step and propose in; a Ready (persist, then send, then apply) out.
