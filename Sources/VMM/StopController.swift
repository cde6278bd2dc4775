// StopController.swift: one place that decides the machine is stopping.
//
// Anything may end the VM: a device on a vCPU thread (debug-exit, reset), a
// vCPU's fatal exit, a host signal or Ctrl-A x on the I/O thread. The first
// reason wins and is what skvm reports; then every vCPU is kicked out of
// KVM_RUN and the I/O loop is woken through an eventfd.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import KVM
import Synchronization

/// Records why the machine stops and wakes everyone up.
public final class StopController: MachineControl {
    private struct State {
        var reason: StopReason? = nil
        var vcpus: [(run: RunPage, thread: HostThread?)] = []
    }
    private let state = Mutex(State())
    private let stopping = Atomic<Bool>(false)
    /// Becomes readable when the machine is stopping (for the I/O thread's poll).
    public let wakeFD: Int32

    public init() throws(KVMError) {
        let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0 else { throw KVMError(operation: "eventfd", errno: errno) }
        wakeFD = fd
    }

    deinit { close(wakeFD) }

    /// True once a stop was requested: vCPU loops check it after every exit.
    @inline(__always) public var isStopping: Bool { stopping.load(ordering: .acquiring) }

    /// The reason the machine stopped, once it has.
    public var reason: StopReason? { state.withLock { $0.reason } }

    /// Registers a vCPU so a stop can kick it out of KVM_RUN.
    public func register(run: RunPage, thread: HostThread?) {
        let alreadyStopping = state.withLock { s in
            s.vcpus.append((run, thread))
            return s.reason != nil
        }
        if alreadyStopping { kick(run: run, thread: thread) }
    }

    /// Attaches the thread to a vCPU registered earlier (threads start after registration).
    public func setThread(_ thread: HostThread, forVCPU index: Int) {
        let kickNow = state.withLock { s in
            guard index < s.vcpus.count else { return false }
            s.vcpus[index].thread = thread
            return s.reason != nil
        }
        if kickNow { kick(run: nil, thread: thread) }
    }

    /// Stops the machine for `reason`, unless it is already stopping.
    public func stop(_ reason: StopReason) {
        let vcpus: [(run: RunPage, thread: HostThread?)]? = state.withLock { s in
            guard s.reason == nil else { return nil }
            s.reason = reason
            return s.vcpus
        }
        guard let vcpus else { return }
        stopping.store(true, ordering: .releasing)
        for v in vcpus { kick(run: v.run, thread: v.thread) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    public func requestStop(_ request: GuestStopRequest) { stop(.guest(request)) }

    private func kick(run: RunPage?, thread: HostThread?) {
        // Flag first, then signal: if the signal arrives before KVM_RUN is
        // entered, the flag still makes KVM_RUN return at once.
        run?.requestImmediateExit()
        thread?.kick()
    }
}
