// LAPIC.swift: the in-kernel local APIC's registers, as KVM_GET/SET_LAPIC see them.
//
// `struct kvm_lapic_state` is the APIC's 1 KiB register page (Intel SDM vol. 3,
// 11.4.1: registers at 16-byte strides, 32 bits each), which Swift imports as
// a 1024-element tuple. This wraps it as an array with 32-bit accessors.

import CKVM

/// A copy of the local APIC register page.
public struct LAPICRegisters: Sendable {
    /// LVT LINT0 and LINT1 registers (SDM table 11-1).
    public static let lvtLINT0 = 0x350
    public static let lvtLINT1 = 0x360
    /// Delivery-mode field (bits 10:8) values.
    public static let deliveryModeMask: UInt32 = 0x700
    public static let deliveryExtINT: UInt32 = 0x700
    public static let deliveryNMI: UInt32 = 0x400

    public var bytes: [UInt8]

    /// The 32-bit register at `offset`.
    public subscript(offset: Int) -> UInt32 {
        get { (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) } }
        set { for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: newValue >> (8 * UInt32(i))) } }
    }
}

extension VCPU {
    /// Reads the LAPIC page, lets `edit` change it, and writes it back.
    public func updateLAPIC(_ edit: (inout LAPICRegisters) -> Void) throws(KVMError) {
        var state = try lapic()
        var registers = LAPICRegisters(bytes: withUnsafeBytes(of: state.regs) { Array($0) })
        edit(&registers)
        withUnsafeMutableBytes(of: &state.regs) { $0.copyBytes(from: registers.bytes) }
        try setLAPIC(state)
    }

    /// Sets LINT0 to ExtINT (the 8259 PIC's output) and LINT1 to NMI, as a PC
    /// BIOS leaves them (MP spec 3.6.2, virtual wire mode), so the PIC's
    /// interrupts and NMIs reach the CPU before the OS programs the APIC.
    public func configureLINTsAsVirtualWire() throws(KVMError) {
        try updateLAPIC { r in
            r[LAPICRegisters.lvtLINT0] = (r[LAPICRegisters.lvtLINT0] & ~LAPICRegisters.deliveryModeMask) | LAPICRegisters.deliveryExtINT
            r[LAPICRegisters.lvtLINT1] = (r[LAPICRegisters.lvtLINT1] & ~LAPICRegisters.deliveryModeMask) | LAPICRegisters.deliveryNMI
        }
    }
}
