import NIOConcurrencyHelpers
import Testing

@testable import SecureTransport

/// A callback read and called many times stays one call deep (the members-changed handler grew a
/// chain of reabstraction thunks on every read when it lived in a generic box as a function value).
struct CallbackSlotTests {
    /// Where a local variable of the callback lives on the stack, at each call.
    static func stackAddresses(calls: Int) -> [Int] {
        let slot = CallbackSlot<Void>()
        let addresses = NIOLockedValueBox<[Int]>([])
        slot.set { _ in
            var marker = 0
            let address = withUnsafeMutablePointer(to: &marker) { Int(bitPattern: $0) }
            addresses.withLockedValue { $0.append(address) }
        }
        for _ in 0..<calls { slot.current?(()) }
        return addresses.withLockedValue { $0 }
    }

    @Test func theThousandthCallRunsAtTheDepthOfTheFirst() {
        let addresses = Self.stackAddresses(calls: 2_000)
        #expect(addresses.count == 2_000)
        let drift = abs((addresses.first ?? 0) - (addresses.last ?? 0))
        // A chain of two thunks more per call would put the 2,000th call tens of KiB deeper.
        #expect(drift < 512, "the 2,000th call ran \(drift) bytes deeper than the first")
    }

    @Test func aReplacedCallbackIsTheOneCalled() {
        let slot = CallbackSlot<String>()
        let seen = NIOLockedValueBox<[String]>([])
        #expect(slot.current == nil)
        slot.set { s in seen.withLockedValue { $0.append("first " + s) } }
        slot.current?("a")
        slot.set { s in seen.withLockedValue { $0.append("second " + s) } }
        slot.current?("b")
        #expect(seen.withLockedValue { $0 } == ["first a", "second b"])
    }
}
