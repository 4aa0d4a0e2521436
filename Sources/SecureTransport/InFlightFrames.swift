import NIOConcurrencyHelpers

/// Frames from one authenticated peer that its receiver has taken on and not finished, within
/// bounds: at most `maxFrames` and `maxBytes` per peer. The transport hands frames over
/// synchronously, so TCP flow control holds back a peer only as long as the handler does the
/// work inline; a handler that starts a task per frame (the agent does, for Raft and control
/// frames) would otherwise queue without bound behind a slow actor. Over a bound the frame is
/// dropped, which Raft and the request forwarding both survive (they resend or time out).
///
/// Behind a lock: frames arrive on event loops, and tasks finish on any thread. A peer's entry
/// exists only while it has frames in flight, so memory follows the bounds.
public final class InFlightFrames: Sendable {
    /// Held while a frame is being worked on; `release()` once done (a second call is ignored).
    public final class Permit: Sendable {
        private let owner: InFlightFrames
        private let peer: String
        private let bytes: Int
        private let held = NIOLockedValueBox(true)

        init(owner: InFlightFrames, peer: String, bytes: Int) {
            self.owner = owner
            self.peer = peer
            self.bytes = bytes
        }

        public func release() {
            guard
                held.withLockedValue({ h in
                    defer { h = false }
                    return h
                })
            else { return }
            owner.release(peer: peer, bytes: bytes)
        }
    }

    private struct Load {
        var frames = 0
        var bytes = 0
    }

    public let maxFrames: Int
    public let maxBytes: Int
    private let loads = NIOLockedValueBox<[String: Load]>([:])

    /// 1024 frames leaves room for the deepest Raft pipeline a leader keeps to one follower;
    /// 64 MiB is 64 frames of the largest size the wire accepts.
    public init(maxFrames: Int = 1024, maxBytes: Int = 64 << 20) {
        self.maxFrames = max(1, maxFrames)
        self.maxBytes = max(1, maxBytes)
    }

    /// A permit for one more frame of `bytes` from `peer`, or nil if that would exceed a bound.
    /// A single frame larger than `maxBytes` is admitted when nothing else is in flight, so no
    /// frame the wire accepts is refused for ever.
    public func acquire(peer: String, bytes: Int) -> Permit? {
        let size = max(0, bytes)
        let ok = loads.withLockedValue { l -> Bool in
            var load = l[peer] ?? Load()
            guard load.frames < maxFrames, load.frames == 0 || load.bytes + size <= maxBytes else { return false }
            load.frames += 1
            load.bytes += size
            l[peer] = load
            return true
        }
        return ok ? Permit(owner: self, peer: peer, bytes: size) : nil
    }

    /// Frames from `peer` in flight now.
    public func count(peer: String) -> Int { loads.withLockedValue { $0[peer]?.frames ?? 0 } }

    private func release(peer: String, bytes: Int) {
        loads.withLockedValue { l in
            guard var load = l[peer] else { return }
            load.frames -= 1
            load.bytes -= bytes
            l[peer] = load.frames > 0 ? load : nil
        }
    }
}
