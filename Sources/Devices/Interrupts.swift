// Interrupts.swift: how devices raise interrupts and stop the machine,
// without knowing about KVM.
//
// Devices are pure state machines (vm-superio's model): their effects on the
// outside world come in through these small protocols, so a unit test can
// hand them a recorder and a real machine hands them KVM_IRQ_LINE.

/// An interrupt line a device drives (an ISA IRQ on the in-kernel PIC/IOAPIC).
public protocol InterruptLine: Sendable {
    /// Drives the line high (asserted) or low.
    func setLevel(_ high: Bool)
}

/// What a guest can ask of the machine through a device.
public enum GuestStopRequest: Equatable, Sendable {
    /// A value written to the debug-exit port; the VMM exits with (value << 1) | 1.
    case debugExit(UInt32)
    /// The reset line was pulsed (i8042 command 0xFE, or output-port bit 0 cleared).
    case reset
}

/// The machine-level actions a device may request.
public protocol MachineControl: Sendable {
    /// Asks the VMM to stop every vCPU and end the VM for `request`.
    func requestStop(_ request: GuestStopRequest)
}

/// Where a serial port's transmitted bytes go (the terminal, a file, a test buffer).
public protocol SerialOutput: Sendable {
    func write(_ byte: UInt8)
}
