// PCIError.swift: what can go wrong while a machine describes its PCI devices.
//
// Host-side mistakes, caught while the machine is built (PCI Local Bus
// Specification 3.0, §6.2.5.1 for BARs, §6.7 and §6.8.2 for capabilities).
// Guest mistakes never throw: they read all ones and write nothing (§6.1).

/// Why a PCI function, capability, BAR or slot could not be set up.
public enum PCIError: Error, Equatable, CustomStringConvertible {
    /// A BAR index outside 0...5 (or 5 for a 64-bit BAR, which needs two registers).
    case invalidBARIndex(Int)
    /// The BAR (or the upper half a 64-bit BAR needs) is already described.
    case barInUse(Int)
    /// A BAR size that is not a power of two, or outside the range its kind allows.
    case invalidBARSize(index: Int, size: UInt64)
    /// An address that is not aligned to the BAR's size, or does not fit its kind.
    case invalidBARAddress(index: Int, address: UInt64)
    case noSuchBAR(Int)
    /// The capability list has no room left for `length` more bytes below 0x100.
    case capabilitySpaceFull(length: Int)
    /// A capability whose writable mask does not match its length, or is too long.
    case invalidCapability(String)
    /// An MSI-X description the specification forbids (vector count, BIR, alignment, overlap).
    case invalidMSIX(String)
    /// A device number outside 1...31 (slot 0 is the host bridge's).
    case invalidSlot(Int)
    case slotInUse(Int)
    /// The allocation window has no room for a BAR of `size` bytes.
    case windowExhausted(space: PCIAddressSpace, size: UInt64)

    public var description: String {
        switch self {
        case .invalidBARIndex(let i): return "BAR index \(i) is outside 0...5 (or needs a register past BAR 5)"
        case .barInUse(let i): return "BAR \(i) is already in use"
        case .invalidBARSize(let i, let s): return "BAR \(i): size 0x\(String(s, radix: 16)) is not allowed"
        case .invalidBARAddress(let i, let a): return "BAR \(i): address 0x\(String(a, radix: 16)) is not allowed"
        case .noSuchBAR(let i): return "BAR \(i) is not described"
        case .capabilitySpaceFull(let l): return "a capability of \(l) bytes does not fit below offset 0x100"
        case .invalidCapability(let why): return "invalid capability: \(why)"
        case .invalidMSIX(let why): return "invalid MSI-X capability: \(why)"
        case .invalidSlot(let s): return "PCI slot \(s) is outside 1...31"
        case .slotInUse(let s): return "PCI slot \(s) is already in use"
        case .windowExhausted(let space, let size):
            return "the PCI \(space) window has no room for a BAR of 0x\(String(size, radix: 16)) bytes"
        }
    }
}
