// VirtqueueError.swift: every way a driver (or a device) can misuse a split virtqueue.
//
// virtio 1.2 §2.7 "Split Virtqueues" says what a driver MUST do: align the
// rings (§2.7.1), keep chains within the queue size and loop-free (§2.7.5.2),
// put device-writable buffers last (§2.7.4.2), use one level of indirection,
// never with NEXT (§2.7.5.3.1), and never move avail->idx past what it
// filled (§2.7.13). A guest may break every rule: each is a case here, raised
// where the value is used, never a crash (STYLE §3.6). The device decides
// what to do (§2.1.2: it SHOULD set DEVICE_NEEDS_RESET); `isQueueFatal` and
// `head` tell it whether the queue can go on.

import Memory

/// Which of the three parts of a split virtqueue (virtio 1.2 §2.7).
public enum VirtqueuePart: String, Equatable, Sendable {
    /// The descriptor table ("Descriptor Area"): 16 bytes per entry, 16-byte aligned.
    case descriptorTable = "descriptor table"
    /// The available ring ("Driver Area"): 6 + 2 * size bytes, 2-byte aligned.
    case availRing = "available ring"
    /// The used ring ("Device Area"): 6 + 8 * size bytes, 4-byte aligned.
    case usedRing = "used ring"
}

/// An error from configuring or operating a virtqueue. Configuration errors
/// come from `Virtqueue.init`. Chain errors name the chain's `head`, which
/// was consumed; the queue stays usable. Ring errors (`availIndexJump`,
/// `guestMemory`) break it: `queueBroken` until rebuilt after a reset.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Configuration (§2.7, §2.7.1)

    /// The size is 0, not a power of 2, or above the maximum (at most 32768).
    case invalidQueueSize(size: UInt16, maximum: UInt16)
    /// A part's guest address is not a multiple of its alignment (16, 2, 4).
    case misalignedRing(part: VirtqueuePart, address: UInt64, alignment: UInt64)
    /// A part's [address, address + length) is not entirely guest RAM.
    case ringOutsideMemory(part: VirtqueuePart, address: UInt64, length: UInt64)

    // MARK: The available ring (§2.7.6, §2.7.13)

    /// avail->idx is more than `size` ahead of `nextAvail` (more entries than
    /// the ring holds, or idx moved backwards). Fatal.
    case availIndexJump(nextAvail: UInt16, availIndex: UInt16, size: UInt16)
    /// The available ring names a head at or beyond the size (slot consumed).
    case headIndexOutOfRange(head: UInt16, size: UInt16)

    // MARK: Descriptor chains (§2.7.4, §2.7.5)

    /// A `next` at or beyond its table's length (queue size or indirect entries).
    case nextIndexOutOfRange(head: UInt16, next: UInt16, tableLength: UInt32, indirect: Bool)
    /// The chain has more descriptors than its table has entries: a loop.
    case chainTooLong(head: UInt16, limit: UInt32, indirect: Bool)
    /// The buffers add up to more than 2^32 - 1 bytes (§2.7.5.2; used `len` is 32 bits).
    case chainTooManyBytes(head: UInt16)
    /// A descriptor's `addr + len` does not fit in 64 bits.
    case bufferAddressOverflow(head: UInt16, address: UInt64, length: UInt32)
    /// A descriptor's [addr, addr + len) is not entirely guest RAM.
    case bufferOutsideMemory(head: UInt16, address: UInt64, length: UInt32)
    /// A device-readable descriptor follows a device-writable one (§2.7.4.2).
    case readableAfterWritable(head: UInt16)

    // MARK: Indirect descriptors (§2.7.5.3)

    /// VIRTQ_DESC_F_INDIRECT is set but VIRTIO_F_INDIRECT_DESC was not negotiated.
    case indirectNotNegotiated(head: UInt16)
    /// A descriptor has both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT.
    case indirectWithNext(head: UInt16)
    /// A descriptor inside an indirect table has VIRTQ_DESC_F_INDIRECT.
    case nestedIndirect(head: UInt16)
    /// An indirect descriptor's `len` is zero or not a multiple of 16.
    case invalidIndirectLength(head: UInt16, length: UInt32)
    /// An indirect table has more entries than skvm accepts (`Virtqueue.maximumIndirectEntries`).
    case indirectTableTooLarge(head: UInt16, entries: UInt32)
    /// An indirect table's [addr, addr + len) overflows or is not entirely guest RAM.
    case indirectTableOutsideMemory(head: UInt16, address: UInt64, length: UInt32)

    // MARK: The used ring (device-side mistakes, §2.7.8)

    /// `addUsed` was given a head at or beyond the queue size.
    case usedHeadOutOfRange(head: UInt16, size: UInt16)
    /// `addUsed` with no chain in flight (it would overrun the used ring).
    case usedRingOverflow(head: UInt16)
    /// `addUsed` for a head that is not in flight (already used, or never
    /// popped): the driver would free descriptors it may have reused.
    case usedHeadNotInFlight(head: UInt16)

    // MARK: The queue as a whole

    /// A ring access failed (cannot happen: the rings were checked at init).
    case guestMemory(MemoryError)
    /// An earlier fatal error broke the queue; only a device reset revives it.
    case queueBroken

    /// The head of the malformed chain, consumed and in flight: a device that
    /// carries on returns it with `addUsed(head:length: 0)`. nil for other
    /// errors (`headIndexOutOfRange` has no descriptor to give back).
    public var head: UInt16? {
        switch self {
        case .nextIndexOutOfRange(let h, _, _, _), .chainTooLong(let h, _, _), .chainTooManyBytes(let h),
            .bufferAddressOverflow(let h, _, _), .bufferOutsideMemory(let h, _, _), .readableAfterWritable(let h),
            .indirectNotNegotiated(let h), .indirectWithNext(let h), .nestedIndirect(let h),
            .invalidIndirectLength(let h, _), .indirectTableTooLarge(let h, _),
            .indirectTableOutsideMemory(let h, _, _):
            return h
        default:
            return nil
        }
    }

    /// The queue refuses all further work: set DEVICE_NEEDS_RESET (§2.1.2).
    public var isQueueFatal: Bool {
        switch self {
        case .availIndexJump, .guestMemory, .queueBroken: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .invalidQueueSize(let size, let maximum):
            return "virtqueue size \(size) is not a power of 2 in 1...\(maximum)"
        case .misalignedRing(let part, let address, let alignment):
            return "virtqueue \(part.rawValue) at \(hex(address)) is not \(alignment)-byte aligned"
        case .ringOutsideMemory(let part, let address, let length):
            return "virtqueue \(part.rawValue) [\(hex(address)), +\(hex(length))) is outside guest RAM"
        case .availIndexJump(let nextAvail, let availIndex, let size):
            return "available index moved from \(nextAvail) to \(availIndex), more than the queue size \(size)"
        case .headIndexOutOfRange(let head, let size):
            return "available ring names descriptor \(head), beyond the queue size \(size)"
        case .nextIndexOutOfRange(let head, let next, let length, let indirect):
            let table = indirect ? "indirect table of \(length) entries" : "queue size \(length)"
            return "chain \(head): next index \(next) is beyond the \(table)"
        case .chainTooLong(let head, let limit, let indirect):
            return "chain \(head): more than \(limit) \(indirect ? "indirect " : "")descriptors (a loop)"
        case .chainTooManyBytes(let head):
            return "chain \(head): buffers add up to more than 2^32 - 1 bytes"
        case .bufferAddressOverflow(let head, let address, let length):
            return "chain \(head): buffer at \(hex(address)) of \(hex(length)) bytes overflows the address space"
        case .bufferOutsideMemory(let head, let address, let length):
            return "chain \(head): buffer [\(hex(address)), +\(hex(length))) is outside guest RAM"
        case .readableAfterWritable(let head):
            return "chain \(head): a device-readable descriptor follows a device-writable one"
        case .indirectNotNegotiated(let head):
            return "chain \(head): indirect descriptor without VIRTIO_F_INDIRECT_DESC"
        case .indirectWithNext(let head):
            return "chain \(head): descriptor has both INDIRECT and NEXT"
        case .nestedIndirect(let head):
            return "chain \(head): indirect table contains an indirect descriptor"
        case .invalidIndirectLength(let head, let length):
            return "chain \(head): indirect table length \(length) is not a non-zero multiple of 16"
        case .indirectTableTooLarge(let head, let entries):
            return "chain \(head): indirect table of \(entries) entries exceeds \(Virtqueue.maximumIndirectEntries)"
        case .indirectTableOutsideMemory(let head, let address, let length):
            return "chain \(head): indirect table [\(hex(address)), +\(hex(length))) is outside guest RAM"
        case .usedHeadOutOfRange(let head, let size):
            return "used element for descriptor \(head), beyond the queue size \(size)"
        case .usedRingOverflow(let head):
            return "used element for descriptor \(head) with no chain in flight"
        case .usedHeadNotInFlight(let head):
            return "used element for descriptor \(head), which heads no chain in flight"
        case .guestMemory(let error):
            return "virtqueue ring access failed: \(error)"
        case .queueBroken:
            return "virtqueue is broken by an earlier error and needs a device reset"
        }
    }
}
