import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension Process {
    /// Starts the process with no signal blocked.
    ///
    /// Foundation's `Process.run()` on Linux spawns from the calling thread and the child keeps that
    /// thread's signal mask across exec. The threads a Swift task or a Dispatch queue runs on block
    /// nearly every signal, so a child started from one began with SIGTERM and SIGALRM blocked:
    /// `stress-ng` then never saw its own `--timeout` (SIGALRM) nor the SIGTERM sent to stop it, and
    /// its workers outlived the soak, reparented to init. (Go programs such as dockerd and serf
    /// unblock what they need at start; C programs do not.) Clearing the mask on this thread for
    /// the moment of the spawn gives the child the empty mask a shell would.
    public func runWithSignalsUnblocked() throws {
        var empty = sigset_t()
        var saved = sigset_t()
        sigemptyset(&empty)
        pthread_sigmask(SIG_SETMASK, &empty, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try run()
    }
}
