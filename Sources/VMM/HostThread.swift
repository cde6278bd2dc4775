// HostThread.swift: POSIX threads for vCPUs, and the signal that kicks them.
//
// Each vCPU runs KVM_RUN in a loop on a thread of its own (KVM requires that
// a vCPU's ioctls come from one thread). To stop a vCPU that is inside
// KVM_RUN, another thread sets `immediate_exit` in its run page and sends it
// SIGUSR1; the no-op handler is installed without SA_RESTART, so KVM_RUN
// returns EINTR (api.rst, "immediate_exit"). Setting the flag first closes
// the race where the signal lands just before KVM_RUN is entered.
//
// pthread_create takes a C function pointer and a `void *`; the Swift closure
// travels through it boxed with Unmanaged. This file is the only place that
// does so, and the only place skvm creates threads.

#if canImport(Glibc)
import Glibc
#endif
import KVM

/// A running host thread.
public struct HostThread: @unchecked Sendable {
    // SAFETY: pthread_t is an opaque integer handle; joining and signalling
    // it from another thread is what the API is for.
    private let handle: pthread_t

    /// The signal used to kick vCPU threads out of KVM_RUN.
    public static let kickSignal = SIGUSR1

    private final class Start {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread. Returns nil (with errno) when the host refuses.
    public static func spawn(_ body: @escaping @Sendable () -> Void) -> Result<HostThread, KVMError> {
        var handle = pthread_t()
        let start = Unmanaged.passRetained(Start(body)).toOpaque()
        let r = pthread_create(&handle, nil, { arg in
            guard let arg else { return nil }
            // A parent may have started skvm with signals blocked (test runners
            // do), and threads inherit the mask: a blocked kick signal would
            // leave a vCPU stuck in KVM_RUN forever. Unblock it explicitly.
            var kick = sigset_t()
            sigemptyset(&kick)
            sigaddset(&kick, HostThread.kickSignal)
            pthread_sigmask(SIG_UNBLOCK, &kick, nil)
            Unmanaged<Start>.fromOpaque(arg).takeRetainedValue().body()
            return nil
        }, start)
        guard r == 0 else {
            Unmanaged<Start>.fromOpaque(start).release()
            return .failure(KVMError(operation: "pthread_create", errno: r))
        }
        return .success(HostThread(handle: handle))
    }

    /// Waits for the thread to finish.
    public func join() { pthread_join(handle, nil) }

    /// Sends the kick signal (interrupts a blocking KVM_RUN).
    public func kick() { pthread_kill(handle, Self.kickSignal) }

    /// Installs the no-op kick handler, without SA_RESTART. Call once, before any vCPU runs.
    public static func installKickHandler() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(kickSignal, &action, nil)
    }
}

