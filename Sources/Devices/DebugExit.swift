// DebugExit.swift: QEMU's isa-debug-exit device, on port 0xF4.
//
// A test kernel ends the VM and chooses skvm's exit status with one `out`:
// writing v (1, 2 or 4 bytes wide) exits with status (v << 1) | 1. The status
// is always odd, so it never looks like a clean shutdown (0); by convention
// suites write 0 for pass (status 1) and 1 for fail (status 3).

/// The debug-exit port.
public final class DebugExit: BusDevice {
    public let name = "debug-exit"
    private let control: any MachineControl

    public init(control: any MachineControl) { self.control = control }

    /// Reads return all ones: the device has no readable register.
    public func read(offset: UInt64, size: Int) -> UInt64 { allOnes(size) }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        // QEMU's device takes whatever width the guest wrote, from its base port.
        guard offset == 0 else { return }
        control.requestStop(.debugExit(UInt32(truncatingIfNeeded: value)))
    }
}

/// All ones for an access of `size` bytes: what a read of nothing returns on a PC bus.
@inline(__always)
public func allOnes(_ size: Int) -> UInt64 {
    size >= 8 ? UInt64.max : (UInt64(1) << (8 * UInt64(size))) &- 1
}
