// StopReason.swift: why a VM stopped, and the exit status skvm reports for it.
//
// The exit-status table (also in `skvm run --help` and docs/exit-status.md).
// Odd statuses belong to the guest alone: QEMU's isa-debug-exit convention
// (v << 1) | 1, so a test suite can never mistake a skvm failure for a
// guest's verdict.
//
//   0        the guest reset or powered off the machine (or Ctrl-A x)
//   odd      the guest wrote v to the debug-exit port: (v << 1) | 1
//   2        bad command line or input (nothing was started)
//   4        the host could not run the VM (no /dev/kvm, an ioctl failed)
//   6        the guest triple-faulted (KVM_EXIT_SHUTDOWN)
//   8        KVM could not run the guest's code (entry failure, emulation
//            failure, internal error, an exit skvm does not know)
//   10       the guest ran longer than --timeout
//   128 + n  skvm was stopped by signal n (130 SIGINT, 143 SIGTERM)

import Devices
import KVM

/// Why the machine stopped.
public enum StopReason: Sendable, Equatable {
    /// The guest asked, through a device (debug-exit, i8042 reset).
    case guest(GuestStopRequest)
    /// KVM_EXIT_SYSTEM_EVENT shutdown or reset (PSCI-style, or a KVM-internal reset).
    case systemEvent(UInt32)
    /// The user typed Ctrl-A x on the console.
    case consoleQuit
    /// A host signal (SIGINT, SIGTERM, SIGHUP).
    case signal(Int32)
    /// KVM_EXIT_SHUTDOWN: the guest triple-faulted.
    case tripleFault(diagnosis: String)
    /// KVM could not enter or emulate the guest.
    case kvmFailure(diagnosis: String)
    /// A host-side error while running (an ioctl failed).
    case hostError(String)
    /// The VM ran longer than it was allowed to (`--timeout`).
    case timedOut(seconds: Double)

    /// The process exit status for this reason (table above).
    public var exitStatus: Int32 {
        switch self {
        case .guest(.debugExit(let v)): return Int32(truncatingIfNeeded: (v << 1) | 1)
        case .guest(.reset), .systemEvent, .consoleQuit: return 0
        case .hostError: return ExitStatus.hostFailure
        case .tripleFault: return ExitStatus.tripleFault
        case .kvmFailure: return ExitStatus.kvmFailure
        case .signal(let n): return 128 + n
        case .timedOut: return ExitStatus.timedOut
        }
    }

    /// One line for the user.
    public var summary: String {
        switch self {
        case .guest(.debugExit(let v)): return "guest wrote \(v) (0x\(String(v, radix: 16))) to the debug-exit port"
        case .guest(.reset): return "guest reset the machine (i8042 reset line)"
        case .systemEvent(let t): return "guest requested a system event (type \(t))"
        case .consoleQuit: return "stopped from the console (Ctrl-A x)"
        case .signal(let n): return "stopped by signal \(n)"
        case .tripleFault(let d): return "guest triple-faulted (KVM_EXIT_SHUTDOWN): \(d)"
        case .kvmFailure(let d): return d
        case .hostError(let d): return "host error: \(d)"
        case .timedOut(let s): return "stopped after the --timeout of \(s) s"
        }
    }
}

/// skvm's own exit statuses (all even: odd ones belong to the guest).
public enum ExitStatus {
    public static let usage: Int32 = 2
    public static let hostFailure: Int32 = 4
    public static let tripleFault: Int32 = 6
    public static let kvmFailure: Int32 = 8
    public static let timedOut: Int32 = 10
}
