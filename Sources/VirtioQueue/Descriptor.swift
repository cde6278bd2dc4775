// Descriptor.swift: one entry of a split virtqueue's descriptor table.
//
// virtio 1.2 §2.7.5 "The Virtqueue Descriptor Table":
//
//     struct virtq_desc {          offset
//         le64 addr;               0   guest-physical address of the buffer
//         le32 len;                8   its length in bytes
//         le16 flags;              12  NEXT 1, WRITE 2, INDIRECT 4
//         le16 next;               14  the next descriptor, if flags & NEXT
//     };                           16 bytes
//
// Indirect tables (§2.7.5.3) use the same layout. The guest writes it, so it
// may be hostile: this file only decodes; DescriptorChain.swift checks.

import Memory

/// The `flags` field of a descriptor (virtio 1.2 §2.7.5).
public struct DescriptorFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16

    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// VIRTQ_DESC_F_NEXT (1): the chain continues at `next`.
    public static let next = DescriptorFlags(rawValue: 1)
    /// VIRTQ_DESC_F_WRITE (2): the buffer is device-writable (otherwise device-readable).
    public static let write = DescriptorFlags(rawValue: 2)
    /// VIRTQ_DESC_F_INDIRECT (4): the buffer is a table of further descriptors.
    public static let indirect = DescriptorFlags(rawValue: 4)
}

/// A descriptor as the driver wrote it, not yet validated.
struct RawDescriptor: Equatable {
    var address: UInt64
    var length: UInt32
    var flags: DescriptorFlags
    var next: UInt16

    /// The size of one descriptor in memory.
    static let size: UInt64 = 16

    /// Decodes the two little-endian words `addr` and `len | flags << 32 | next << 48`
    /// (two checked loads per descriptor instead of four).
    init(low: UInt64, high: UInt64) {
        address = low
        length = UInt32(truncatingIfNeeded: high)
        flags = DescriptorFlags(rawValue: UInt16(truncatingIfNeeded: high >> 32))
        next = UInt16(truncatingIfNeeded: high >> 48)
    }

    /// Reads the descriptor at `address` (bounds-checked by GuestMemory).
    static func read(from memory: GuestMemory, at address: GuestAddress) throws(MemoryError) -> RawDescriptor {
        let low: UInt64 = try memory.read(at: address)
        // Inside the caller's validated table; memory.read checks again anyway.
        let high: UInt64 = try memory.read(at: GuestAddress(address.rawValue &+ 8))
        return RawDescriptor(low: low, high: high)
    }
}

/// One buffer of a validated chain; [address, address + length) is guest RAM.
public struct DescriptorBuffer: Hashable, Sendable, CustomStringConvertible {
    /// The guest-physical address of the buffer's first byte.
    public let address: GuestAddress
    /// The buffer's length in bytes (may be 0).
    public let length: UInt32
    /// True for a device-writable buffer (VIRTQ_DESC_F_WRITE), false for a device-readable one.
    public let isWritable: Bool

    public init(address: GuestAddress, length: UInt32, isWritable: Bool) {
        self.address = address
        self.length = length
        self.isWritable = isWritable
    }

    public var description: String {
        "\(isWritable ? "W" : "R")[\(address), +\(hex(length)))"
    }
}
