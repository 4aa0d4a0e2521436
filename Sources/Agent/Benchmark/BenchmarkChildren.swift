import Dispatch
import Foundation
import Synchronization

/// The processes a benchmark starts (agents, busy loops), so that a benchmark stopped by a
/// signal takes them along. A normal exit, or a thrown error, cleans up through each
/// benchmark's `defer`; SIGINT from another terminal, `timeout` or `kill` skipped it, and the
/// agents and the soak's busy loops kept running.
public enum BenchmarkChildren {
    private final class Child: @unchecked Sendable {
        let process: Process
        init(_ process: Process) { self.process = process }
    }

    private static let children = Mutex<[Child]>([])
    /// Kept alive here: a signal source that is released stops delivering.
    private final class Source: @unchecked Sendable {
        let source: DispatchSourceSignal
        init(_ source: DispatchSourceSignal) { self.source = source }
    }

    private static let sources = Mutex<[Source]>([])

    /// Starts `process` and remembers it.
    static func run(_ process: Process) throws {
        try process.run()
        children.withLock { list in
            list.removeAll { !$0.process.isRunning }
            list.append(Child(process))
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
                for child in children.withLock({ $0 }) where child.process.isRunning {
                    kill(child.process.processIdentifier, SIGCONT)
                    kill(child.process.processIdentifier, SIGKILL)
                }
                exit(128 + sig)
            }
            source.resume()
            let kept = Source(source)
            sources.withLock { $0.append(kept) }
        }
    }
}
