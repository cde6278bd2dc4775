// PCIBar.swift: what a base address register asks for, and where it decodes.
//
// PCI Local Bus Specification 3.0, §6.2.5.1 "Address Maps". A BAR's low bits
// are read-only and say what it is:
//
//   memory BAR:  bit 0 = 0, bits 2:1 type (00 = 32-bit, 10 = 64-bit), bit 3 prefetchable
//   I/O BAR:     bit 0 = 1, bit 1 reserved (0)
//
// The address bits below the BAR's size are hardwired to zero, so writing all
// ones and reading back yields the two's complement of the size with the type
// bits in place ("sizing"). A 64-bit memory BAR takes two consecutive
// registers; the second one holds address bits 63:32.
//
// Limits from the same section: memory BARs are at least 16 bytes (32-bit
// ones at most 2 GiB), I/O BARs 4 to 256 bytes.

/// The two address spaces a BAR can decode.
public enum PCIAddressSpace: String, Equatable, Hashable, Sendable {
    /// Memory space (MMIO), enabled by command bit 1.
    case memory
    /// I/O space (ports), enabled by command bit 0.
    case io
}

/// A base address register's kind and size, as the device model declares it.
public enum PCIBar: Equatable, Hashable, Sendable {
    /// A 32-bit memory BAR of `size` bytes, anywhere below 4 GiB.
    case memory32(size: UInt32, prefetchable: Bool = false)
    /// A 64-bit memory BAR of `size` bytes; it uses this register and the next one.
    case memory64(size: UInt64, prefetchable: Bool = false)
    /// An I/O BAR of `size` bytes (4 to 256).
    case io(size: UInt32)

    /// The region's length in bytes.
    public var size: UInt64 {
        switch self {
        case .memory32(let s, _): return UInt64(s)
        case .memory64(let s, _): return s
        case .io(let s): return UInt64(s)
        }
    }

    /// Which address space the BAR decodes.
    public var space: PCIAddressSpace {
        if case .io = self { return .io }
        return .memory
    }

    /// How many of the six BAR registers it occupies.
    public var registerCount: Int {
        if case .memory64 = self { return 2 }
        return 1
    }

    var typeBits: UInt32 {
        switch self {
        case .memory32(_, let p): return p ? 0x8 : 0x0
        case .memory64(_, let p): return 0x4 | (p ? 0x8 : 0x0)
        case .io: return 0x1
        }
    }

    var hasValidSize: Bool {
        let s = size
        guard s != 0, s & (s - 1) == 0 else { return false }
        switch self {
        case .memory32: return s >= 16 && s <= 0x8000_0000
        case .memory64: return s >= 16 && s <= 0x8000_0000_0000_0000
        case .io: return s >= 4 && s <= 256
        }
    }

    var addressLimit: UInt64 {
        switch self {
        case .memory32: return 0x1_0000_0000
        case .memory64: return UInt64.max
        // x86 has 64 KiB of ports; the register's upper 16 bits read as zero.
        case .io: return 0x1_0000
        }
    }
}

/// Where a BAR currently decodes: its space, base address and length.
///
/// A mapping exists only while the command register enables the BAR's space
/// (bit 1 for memory, bit 0 for I/O); drivers clear those bits while they size
/// or move BARs, so a BAR holding a sizing mask is normally not mapped.
public struct PCIBarMapping: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The BAR's index (for a 64-bit BAR, the index of its low register).
    public let index: Int
    /// Memory or I/O.
    public let space: PCIAddressSpace
    /// The base address the guest programmed.
    public let address: UInt64
    /// The BAR's size in bytes.
    public let size: UInt64

    public init(index: Int, space: PCIAddressSpace, address: UInt64, size: UInt64) {
        self.index = index
        self.space = space
        self.address = address
        self.size = size
    }

    /// Whether [address, address + length) lies inside this mapping.
    public func contains(_ address: UInt64, length: UInt64) -> Bool {
        guard address >= self.address else { return false }
        let offset = address - self.address
        return offset < size && length <= size - offset
    }

    public var description: String {
        "BAR\(index) \(space) [0x\(String(address, radix: 16)), +0x\(String(size, radix: 16)))"
    }
}
