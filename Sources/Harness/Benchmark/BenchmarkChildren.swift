import Dispatch
import Foundation
import Synchronization

/// The processes a benchmark starts (agents, busy loops), so that a benchmark stopped by a
/// signal takes them along. A normal exit, or a thrown error, cleans up through each
/// benchmark's `defer`; SIGINT from another terminal, `timeout` or `kill` skipped it, and the
/// agents and the soak's busy loops kept running.
public enum BenchmarkChildren {
    /// Process and DispatchSourceSignal are not Sendable; each is only touched under the lock
    /// or read (`isRunning`, the pid), which both allow from any thread.
    private final class Held<T>: @unchecked Sendable {
        let value: T
        init(_ value: T) { self.value = value }
    }

    private static let children = Mutex<[Held<Process>]>([])
    /// Kept alive here: a signal source that is released stops delivering.
    private static let sources = Mutex<[Held<DispatchSourceSignal>]>([])

    /// Starts `process` and remembers it.
    static func run(_ process: Process) throws {
        try process.runWithSignalsUnblocked()
        children.withLock { list in
            list.removeAll { !$0.value.isRunning }
            list.append(Held(process))
        }
    }

    /// On SIGINT, SIGTERM or SIGHUP: SIGKILL every child still running (SIGCONT first, for a
    /// SIGSTOPped one), then exit with 128 + the signal, as a shell reports a death by signal.
    /// A child Foundation has not reaped yet (`isRunning`) still owns its pid.
    public static func killOnSignal() {
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                for child in children.withLock({ $0.map(\.value) }) where child.isRunning {
                    kill(child.processIdentifier, SIGCONT)
                    kill(child.processIdentifier, SIGKILL)
                }
                exit(128 + sig)
            }
            source.resume()
            let kept = Held(source)
            sources.withLock { $0.append(kept) }
        }
    }
}
