// DescriptorChain.swift: walking and validating a chain of descriptors, and
// moving bytes in and out of it.
//
// virtio 1.2 §2.7.4 "Message Framing", §2.7.5 "The Virtqueue Descriptor
// Table", §2.7.5.3 "Indirect Descriptors". A chain starts at a head and
// follows `next` while NEXT is set. A hostile driver will do what the spec
// forbids: loops or chains longer than the table (a time-to-live of one
// table's length catches both), indexes outside the table, readable after
// writable (§2.7.4.2), INDIRECT unnegotiated, with NEXT or nested
// (§2.7.5.3.1), over 2^32 bytes (§2.7.5.2), buffers outside RAM or whose
// addr + len overflows. The walk is eager, at pop time: the device gets a
// flat list of checked buffers, and a malformed chain is refused before any
// part of it is acted on. As in rust-vmm and QEMU, an indirect table need not
// be aligned and may follow direct descriptors (§2.7.5.3.2); it ends the chain.

import Memory

/// A validated descriptor chain: one request's buffers, readable ones first.
/// Its helpers copy bytes through GuestMemory's checked accessors (no host
/// pointers); the buffer list is a copy, so later guest rewrites of the
/// descriptors change nothing.
public struct DescriptorChain: Sendable {
    /// The head's descriptor index, for `Virtqueue.addUsed(head:length:)`.
    public let headIndex: UInt16
    /// The buffers in chain order: readable, then from `firstWritableIndex` writable.
    public let buffers: [DescriptorBuffer]
    /// The index of the first writable buffer (`buffers.count` when there is none).
    public let firstWritableIndex: Int
    /// The total length of the device-readable buffers.
    public let readableByteCount: Int
    /// The total length of the device-writable buffers.
    public let writableByteCount: Int
    /// True when the chain went through an indirect table.
    public let usedIndirectTable: Bool
    /// The memory the buffers live in.
    public let memory: GuestMemory

    /// The device-readable buffers (the driver's request).
    public var readableBuffers: ArraySlice<DescriptorBuffer> { buffers[..<firstWritableIndex] }
    /// The device-writable buffers (room for the device's response).
    public var writableBuffers: ArraySlice<DescriptorBuffer> { buffers[firstWritableIndex...] }

    // MARK: Reading the request

    /// Appends up to `maxCount` bytes of the readable part, from `offset` on,
    /// to `buffer` (allocation-free when it has the capacity); returns the
    /// count appended, 0 past the end. Negative arguments count as 0.
    @discardableResult
    public func readReadable(from offset: Int = 0, maxCount: Int, appendingTo buffer: inout [UInt8]) throws(VirtqueueError) -> Int {
        var skip = max(offset, 0)
        var remaining = max(maxCount, 0)
        var copied = 0
        for b in readableBuffers where remaining > 0 {
            let length = Int(b.length)
            if skip >= length {
                skip -= length
                continue
            }
            let count = min(length - skip, remaining)
            // Inside the buffer, which was checked to be guest RAM.
            let start = GuestAddress(b.address.rawValue &+ UInt64(skip))
            do {
                try memory.readBytes(at: start, count: count, appendingTo: &buffer)
            } catch {
                throw .guestMemory(error)
            }
            skip = 0
            remaining -= count
            copied += count
        }
        return copied
    }

    /// Copies up to `buffer.count` bytes of the readable part, from `offset`
    /// on, into `buffer` (host memory, e.g. a stack temporary); returns the
    /// count copied. Allocation-free.
    public func readReadable(from offset: Int = 0, into buffer: UnsafeMutableRawBufferPointer) throws(VirtqueueError) -> Int {
        var skip = max(offset, 0)
        var copied = 0
        for b in readableBuffers where copied < buffer.count {
            let length = Int(b.length)
            if skip >= length {
                skip -= length
                continue
            }
            let count = min(length - skip, buffer.count - copied)
            let start = GuestAddress(b.address.rawValue &+ UInt64(skip))
            do {
                try memory.withMutableBytes(at: start, count: count) { guest in
                    UnsafeMutableRawBufferPointer(rebasing: buffer[copied..<(copied + count)]).copyMemory(from: UnsafeRawBufferPointer(guest))
                }
            } catch let e as MemoryError {
                throw .guestMemory(e)
            } catch {
                throw .queueBroken
            }
            skip = 0
            copied += count
        }
        return copied
    }

    /// Up to `maxCount` bytes of the readable part, starting `offset` bytes
    /// into it, as a new array (see `readReadable(from:maxCount:appendingTo:)`).
    public func readReadable(from offset: Int = 0, maxCount: Int) throws(VirtqueueError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(min(max(maxCount, 0), max(readableByteCount - max(offset, 0), 0)))
        try readReadable(from: offset, maxCount: maxCount, appendingTo: &bytes)
        return bytes
    }

    // MARK: Writing the response

    /// Copies `bytes` into the writable part from `offset` on; returns the
    /// count written (bounded by the room left; 0 for a negative `offset`).
    /// Report it as the used `len` (§2.7.8.2); `addUsed` orders these writes
    /// before its index store.
    @discardableResult
    public func writeWritable<C: Collection<UInt8>>(_ bytes: C, at offset: Int = 0) throws(VirtqueueError) -> Int {
        guard offset >= 0 else { return 0 }
        var skip = offset
        var source = bytes[...]
        var written = 0
        for b in writableBuffers where !source.isEmpty {
            let length = Int(b.length)
            if skip >= length {
                skip -= length
                continue
            }
            let count = min(length - skip, source.count)
            let piece = source.prefix(count)
            let start = GuestAddress(b.address.rawValue &+ UInt64(skip))
            do {
                try memory.write(bytes: piece, at: start)
            } catch {
                throw .guestMemory(error)
            }
            source = source.dropFirst(count)
            skip = 0
            written += count
        }
        return written
    }
}

// MARK: - The walk

/// What a walk found, besides the buffers it appended.
struct ChainSummary {
    var readableBytes: Int = 0
    var writableBytes: Int = 0
    var firstWritableIndex: Int = 0
    var usedIndirectTable = false
}

/// Walks and validates the chain at `head` of the `size`-entry table at
/// `table` (already checked to be RAM), appending its buffers to `buffers`.
/// `indirectAllowed`: VIRTIO_F_INDIRECT_DESC was negotiated.
func walkChain(
    memory: GuestMemory, table: GuestAddress, size: UInt16, head: UInt16, indirectAllowed: Bool,
    into buffers: inout [DescriptorBuffer]
) throws(VirtqueueError) -> ChainSummary {
    var summary = ChainSummary()
    // The table being walked: the queue's, then possibly one indirect table.
    var tableBase = table
    var tableLength = UInt32(size)
    var inIndirect = false
    var index = head
    // Time to live: more steps than table entries means a loop.
    var ttl = tableLength
    var totalBytes: UInt64 = 0
    var seenWritable = false

    while true {
        guard ttl > 0 else { throw .chainTooLong(head: head, limit: tableLength, indirect: inIndirect) }
        ttl -= 1

        // index < tableLength (the caller checked the head, the loop each
        // `next`) and the table is RAM: no overflow, no access outside it.
        let at = GuestAddress(tableBase.rawValue &+ UInt64(index) &* RawDescriptor.size)
        let d: RawDescriptor
        do {
            d = try RawDescriptor.read(from: memory, at: at)
        } catch {
            throw .guestMemory(error)
        }

        if d.flags.contains(.indirect) {
            // §2.7.5.3.1: negotiated, not nested, not with NEXT.
            guard !inIndirect else { throw .nestedIndirect(head: head) }
            guard indirectAllowed else { throw .indirectNotNegotiated(head: head) }
            guard !d.flags.contains(.next) else { throw .indirectWithNext(head: head) }
            guard d.length > 0, d.length % UInt32(RawDescriptor.size) == 0 else {
                throw .invalidIndirectLength(head: head, length: d.length)
            }
            let entries = d.length / UInt32(RawDescriptor.size)
            guard entries <= Virtqueue.maximumIndirectEntries else {
                throw .indirectTableTooLarge(head: head, entries: entries)
            }
            // The whole table must be RAM.
            guard GuestAddress(d.address).adding(UInt64(d.length)) != nil,
                memory.contains(GuestAddress(d.address), size: UInt64(d.length))
            else { throw .indirectTableOutsideMemory(head: head, address: d.address, length: d.length) }
            // The WRITE flag of the indirect descriptor itself is ignored (§2.7.5.3.2).
            tableBase = GuestAddress(d.address)
            tableLength = entries
            ttl = entries
            inIndirect = true
            summary.usedIndirectTable = true
            index = 0
            continue
        }

        // A buffer must be RAM; a zero-length one is accepted anywhere (never accessed).
        guard GuestAddress(d.address).adding(UInt64(d.length)) != nil else {
            throw .bufferAddressOverflow(head: head, address: d.address, length: d.length)
        }
        guard d.length == 0 || memory.contains(GuestAddress(d.address), size: UInt64(d.length)) else {
            throw .bufferOutsideMemory(head: head, address: d.address, length: d.length)
        }
        let writable = d.flags.contains(.write)
        if writable {
            if !seenWritable { summary.firstWritableIndex = buffers.count }
            seenWritable = true
            summary.writableBytes += Int(d.length)
        } else {
            // §2.7.4.2: device-writable elements come after all device-readable ones.
            guard !seenWritable else { throw .readableAfterWritable(head: head) }
            summary.readableBytes += Int(d.length)
        }
        totalBytes += UInt64(d.length)
        guard totalBytes <= UInt64(UInt32.max) else { throw .chainTooManyBytes(head: head) }
        buffers.append(DescriptorBuffer(address: GuestAddress(d.address), length: d.length, isWritable: writable))

        guard d.flags.contains(.next) else { break }
        guard UInt32(d.next) < tableLength else {
            throw .nextIndexOutOfRange(head: head, next: d.next, tableLength: tableLength, indirect: inIndirect)
        }
        index = d.next
    }
    if !seenWritable { summary.firstWritableIndex = buffers.count }
    return summary
}
