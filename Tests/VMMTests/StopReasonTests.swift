// StopReasonTests.swift: the exit-status table (StopReason.swift,
// docs/exit-status.md). Odd statuses belong to the guest: QEMU's
// isa-debug-exit convention (v << 1) | 1; skvm's own are even.

import Devices
import Testing
import VMM

@Suite("StopReason.exitStatus")
struct StopReasonTests {
    @Test(
        "every stop reason's status",
        arguments: [
            (StopReason.guest(.debugExit(0)), 1),
            (.guest(.debugExit(1)), 3),
            (.guest(.debugExit(25)), 51),
            (.guest(.debugExit(0x3F)), 127),
            (.guest(.reset), 0),
            (.systemEvent(1), 0),
            (.systemEvent(2), 0),
            (.consoleQuit, 0),
            (.signal(2), 130),
            (.signal(15), 143),
            (.signal(1), 129),
            (.tripleFault(diagnosis: "rip 0x0"), 6),
            (.kvmFailure(diagnosis: "KVM_EXIT_FAIL_ENTRY"), 8),
            (.hostError("KVM_RUN failed"), 4),
        ] as [(StopReason, Int32)])
    func status(_ reason: StopReason, _ status: Int32) {
        #expect(reason.exitStatus == status)
    }

    @Test("debug-exit statuses are always odd", arguments: [0, 1, 2, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, UInt32.max] as [UInt32])
    func debugExitOdd(_ value: UInt32) {
        #expect(StopReason.guest(.debugExit(value)).exitStatus & 1 == 1)
        // What the parent process sees (the low 8 bits) is odd too.
        #expect(StopReason.guest(.debugExit(value)).exitStatus & 0xFF & 1 == 1)
    }

    @Test("skvm's own statuses are even and distinct")
    func ownStatusesEven() {
        let own = [ExitStatus.usage, ExitStatus.hostFailure, ExitStatus.tripleFault, ExitStatus.kvmFailure]
        #expect(own == [2, 4, 6, 8])
        for s in own { #expect(s % 2 == 0) }
        #expect(Set(own).count == own.count)
    }

    @Test("summaries")
    func summaries() {
        #expect(StopReason.guest(.debugExit(25)).summary == "guest wrote 25 (0x19) to the debug-exit port")
        #expect(StopReason.guest(.reset).summary == "guest reset the machine (i8042 reset line)")
        #expect(StopReason.consoleQuit.summary == "stopped from the console (Ctrl-A x)")
        #expect(StopReason.signal(15).summary == "stopped by signal 15")
        #expect(StopReason.tripleFault(diagnosis: "d").summary == "guest triple-faulted (KVM_EXIT_SHUTDOWN): d")
        #expect(StopReason.kvmFailure(diagnosis: "why").summary == "why")
        #expect(StopReason.hostError("x").summary == "host error: x")
    }
}
