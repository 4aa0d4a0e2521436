import NIOConcurrencyHelpers

/// A callback set once (or now and then) and called many times, from any thread.
///
/// Not `NIOLockedValueBox<(@Sendable (A) -> Void)?>` read with `withLockedValue { $0 }`: a generic
/// box stores a function value at its most general abstraction, and that read passes it through an
/// `inout` that is written back re-abstracted, wrapped in two more reabstraction thunks each time.
/// The n-th call then runs 2n thunks deep: quadratic time, and in the end a stack overflow. The
/// agent read its members-changed handler that way on every member change; in a 50-agent join on
/// one machine (thousands of suspicions and refutations) the thunks were a fifth of the membership
/// loop's samples and the cluster never converged (docs/membership.md, "The thunk chain"). Held by
/// a class reference, the function is stored once and never re-stored.
public final class CallbackSlot<Argument>: Sendable {
    private final class Held: Sendable {
        let call: @Sendable (Argument) -> Void
        init(_ call: @escaping @Sendable (Argument) -> Void) { self.call = call }
    }
    private let held = NIOLockedValueBox<Held?>(nil)

    public init() {}

    /// Replaces the callback.
    public func set(_ call: @escaping @Sendable (Argument) -> Void) {
        let h = Held(call)
        held.withLockedValue { $0 = h }
    }

    /// The callback, if one is set.
    public var current: (@Sendable (Argument) -> Void)? { held.withLockedValue { $0 }?.call }
}
