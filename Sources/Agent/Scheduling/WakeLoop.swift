/// Runs `body` whenever woken and at least every `interval`. The timer and `wake()` feed one
/// stream that holds at most one pending wake, so a burst of wakes during a run costs one more run,
/// not one each. `body` returns false to end the loop (its owner is gone).
final class WakeLoop: Sendable {
    private let continuation: AsyncStream<Void>.Continuation
    private let task: Task<Void, Never>

    init(every interval: Duration, _ body: @escaping @Sendable () async -> Bool) {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.continuation = continuation
        let timer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                continuation.yield()
            }
        }
        task = Task {
            for await _ in stream {
                guard await body() else { break }
            }
            timer.cancel()
        }
    }

    func wake() { continuation.yield() }

    func stop() {
        continuation.finish()
        task.cancel()
    }

    /// Stops, and returns once a run in progress has finished: nothing the loop started (a
    /// container being created, say) may complete after its owner said it stopped.
    func stopAndWait() async {
        stop()
        await task.value
    }
}
