// Virtqueue.swift: the device side of a split virtqueue.
//
// virtio 1.2 §2.7 "Split Virtqueues": layout and alignment (§2.7, §2.7.1),
// the available ring (§2.7.6), the used ring (§2.7.8), notification
// suppression (§2.7.7 used buffers, §2.7.10 available buffers), and the
// driver's steps that fix the device's memory ordering (§2.7.13).
//     avail ring (driver writes)          used ring (device writes)
//     0  le16 flags                       0  le16 flags
//     2  le16 idx                         2  le16 idx
//     4  le16 ring[size]                  4  struct { le32 id; le32 len; } ring[size]
//     4+2*size  le16 used_event           4+8*size  le16 avail_event
// Both idx fields are free-running 16-bit counters wrapping at 65536; a slot
// is idx % size (a power of 2 up to 32768, so full and empty differ).
// Memory ordering: the guest's vCPUs write the rings while this code runs on
// the I/O thread. The driver fills entries, then a write barrier, then bumps
// avail->idx (§2.7.13.3), so the device loads avail->idx, then an acquire
// fence, then reads entries. The device writes data and the used element,
// then a release fence, then used->idx (§2.7.8.2). Checking used_event after
// storing used->idx, and re-reading avail->idx after storing avail_event, are
// store-then-load orders: only a full fence gives them, even on x86.
// GuestMemory's plain loads and stores are atomic on x86 at these aligned
// widths; the fences stop the compiler and the CPU moving them across.

import Memory
import Synchronization

/// Where the driver placed a queue, as the transport's registers hold it
/// (virtio-pci's QueueSize, QueueDesc, QueueDriver, QueueDevice); unchecked
/// until `Virtqueue.init` validates it.
public struct QueueConfiguration: Hashable, Sendable {
    /// The number of entries (a power of 2, at most the device's maximum).
    public var size: UInt16
    /// The descriptor table ("Descriptor Area"), 16-byte aligned.
    public var descriptorTable: GuestAddress
    /// The available ring ("Driver Area"), 2-byte aligned.
    public var availRing: GuestAddress
    /// The used ring ("Device Area"), 4-byte aligned.
    public var usedRing: GuestAddress

    public init(size: UInt16, descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
    }

    /// The bytes a part occupies (§2.7's table; 6 = flags, idx, event field).
    public static func length(of part: VirtqueuePart, size: UInt16) -> UInt64 {
        switch part {
        case .descriptorTable: return 16 * UInt64(size)
        case .availRing: return 6 + 2 * UInt64(size)
        case .usedRing: return 6 + 8 * UInt64(size)
        }
    }

    /// The minimum alignment of each part (§2.7.1).
    public static func alignment(of part: VirtqueuePart) -> UInt64 {
        switch part {
        case .descriptorTable: return 16
        case .availRing: return 2
        case .usedRing: return 4
        }
    }
}

/// The device side of one split virtqueue: pops the chains the driver made
/// available and returns them through the used ring.
///
/// A value type owned by one device on one thread: operations are `mutating`
/// and work in place (`queues[i].popAvailable()`); a copy carries its own
/// ring positions, so never use two copies. `Sendable`, so the transport can
/// build it at DRIVER_OK on a vCPU thread and hand it to the I/O thread. A
/// device reset simply drops it.
/// One used ring entry (§2.7.8): a chain's head and the bytes written to it.
public struct UsedElement: Hashable, Sendable {
    public var head: UInt16
    public var length: UInt32
    public init(head: UInt16, length: UInt32) {
        self.head = head
        self.length = length
    }
}

public struct Virtqueue: Sendable {
    /// The largest queue size a split virtqueue can have (§2.7).
    public static let maximumSize: UInt16 = 32768
    /// The most entries accepted in one indirect table (QEMU's
    /// VIRTQUEUE_MAX_SIZE): it bounds the work one chain can cause.
    public static let maximumIndirectEntries: UInt32 = 1024
    /// VIRTQ_AVAIL_F_NO_INTERRUPT: the driver asks for no used buffer notifications.
    public static let availFlagNoInterrupt: UInt16 = 1
    /// VIRTQ_USED_F_NO_NOTIFY: the device asks for no available buffer notifications.
    public static let usedFlagNoNotify: UInt16 = 1

    /// The guest memory the rings and buffers live in.
    public let memory: GuestMemory
    /// The validated layout.
    public let configuration: QueueConfiguration
    public var size: UInt16 { configuration.size }
    /// VIRTIO_F_EVENT_IDX was negotiated: `used_event`/`avail_event` replace the flags.
    public let eventIndexEnabled: Bool
    /// VIRTIO_F_INDIRECT_DESC was negotiated.
    public let indirectDescriptorsEnabled: Bool

    /// The next available ring entry to pop (vhost's `last_avail_idx`).
    public private(set) var nextAvail: UInt16 = 0
    /// used->idx as the device last stored it.
    public private(set) var nextUsed: UInt16 = 0
    /// Chains popped (malformed ones with a valid head included) and not yet used.
    public private(set) var inFlight: Int = 0
    /// Set by a fatal error: from then on every operation throws `queueBroken`.
    public private(set) var isBroken = false

    /// avail->idx as last loaded: entries before it need no new load or fence.
    private var shadowAvailIndex: UInt16 = 0
    /// used->idx at the last `needsNotification()` (vring_need_event's old_idx).
    private var lastCheckedUsed: UInt16 = 0
    /// Reused chain storage: no allocation once the previous chain is dropped.
    private var scratch: [DescriptorBuffer] = []
    /// Which heads are in flight (popped, not yet used): a used element for
    /// any other head is a device bug that would make the driver free
    /// descriptors twice, so `addUsed` refuses it.
    private var headInFlight: [Bool] = []
    /// `--trace virtio`: pops, used elements and interrupt decisions (nil: off).
    public var trace: VirtioTrace? = nil

    // Field addresses, all inside the validated parts.
    private let availFlagsAddress: GuestAddress
    private let availIndexAddress: GuestAddress
    private let availEntriesAddress: GuestAddress
    private let usedEventAddress: GuestAddress
    private let usedFlagsAddress: GuestAddress
    private let usedIndexAddress: GuestAddress
    private let usedEntriesAddress: GuestAddress
    private let availEventAddress: GuestAddress

    /// Validates `configuration` against the device's `maxSize` (QueueNumMax)
    /// and guest RAM. Of the negotiated `features`, `.ringEventIdx` and
    /// `.ringIndirectDesc` matter here.
    /// - Throws: `.invalidQueueSize`, `.misalignedRing`, `.ringOutsideMemory`.
    public init(memory: GuestMemory, configuration: QueueConfiguration, maxSize: UInt16, features: FeatureSet) throws(VirtqueueError) {
        let size = configuration.size
        // §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
        let limit = min(maxSize, Self.maximumSize)
        guard size > 0, size <= limit, size & (size - 1) == 0 else {
            throw .invalidQueueSize(size: size, maximum: limit)
        }
        // §2.7.1 alignment, and the whole part in RAM (§2.7's size column).
        let parts: [(VirtqueuePart, GuestAddress)] = [
            (.descriptorTable, configuration.descriptorTable),
            (.availRing, configuration.availRing),
            (.usedRing, configuration.usedRing),
        ]
        for (part, address) in parts {
            let alignment = QueueConfiguration.alignment(of: part)
            guard address.rawValue % alignment == 0 else {
                throw .misalignedRing(part: part, address: address.rawValue, alignment: alignment)
            }
            let length = QueueConfiguration.length(of: part, size: size)
            guard address.adding(length) != nil, memory.contains(address, size: length) else {
                throw .ringOutsideMemory(part: part, address: address.rawValue, length: length)
            }
        }
        self.memory = memory
        self.configuration = configuration
        self.eventIndexEnabled = features.contains(.ringEventIdx)
        self.indirectDescriptorsEnabled = features.contains(.ringIndirectDesc)
        // The parts were just checked to fit, so these sums cannot overflow.
        let avail = configuration.availRing.rawValue
        let used = configuration.usedRing.rawValue
        availFlagsAddress = GuestAddress(avail)
        availIndexAddress = GuestAddress(avail + 2)
        availEntriesAddress = GuestAddress(avail + 4)
        usedEventAddress = GuestAddress(avail + 4 + 2 * UInt64(size))
        usedFlagsAddress = GuestAddress(used)
        usedIndexAddress = GuestAddress(used + 2)
        usedEntriesAddress = GuestAddress(used + 4)
        availEventAddress = GuestAddress(used + 4 + 8 * UInt64(size))
        // Room for typical chains up front (capped: long chains are rare).
        scratch.reserveCapacity(min(Int(size), 64))
        headInFlight = [Bool](repeating: false, count: Int(size))
    }

    // MARK: - Popping available chains (§2.7.6, §2.7.13)

    /// Pops the next chain the driver made available, walked and validated;
    /// nil when there is nothing new.
    /// - Throws: a chain error (`error.head` names its head, consumed and in
    ///   flight: the device may `addUsed(head:length: 0)` it or set
    ///   DEVICE_NEEDS_RESET) or `.headIndexOutOfRange` (slot consumed); the
    ///   queue stays usable. `.availIndexJump` or `.guestMemory` break it.
    public mutating func popAvailable() throws(VirtqueueError) -> DescriptorChain? {
        guard !isBroken else { throw .queueBroken }
        if nextAvail == shadowAvailIndex {
                let index = try loadAvailIndex()
            guard index != nextAvail else { return nil }
            shadowAvailIndex = index
        }

        let slot = UInt64(nextAvail & (size - 1))
        let head: UInt16
        do {
            head = try memory.read(at: GuestAddress(availEntriesAddress.rawValue + 2 * slot))
        } catch {
            isBroken = true
            throw .guestMemory(error)
        }
        // Consumed whatever it holds: a bad head must not be retried for ever.
        nextAvail &+= 1
        guard head < size else { throw .headIndexOutOfRange(head: head, size: size) }
        inFlight += 1
        headInFlight[Int(head)] = true

        // Keeps the capacity; no copy while the previous chain is gone.
        scratch.removeAll(keepingCapacity: true)
        let summary: ChainSummary
        do {
            summary = try walkChain(
                memory: memory, table: configuration.descriptorTable, size: size, head: head,
                indirectAllowed: indirectDescriptorsEnabled, into: &scratch)
        } catch {
            trace?("avail[\(nextAvail &- 1)] head \(head): malformed chain: \(error)")
            throw error
        }
        if let trace {
            trace("avail[\(nextAvail &- 1)] head \(head): \(scratch.count) buffer\(scratch.count == 1 ? "" : "s"), \(summary.readableBytes) bytes readable, \(summary.writableBytes) writable\(summary.usedIndirectTable ? " (indirect)" : "")")
        }
        return DescriptorChain(
            headIndex: head, buffers: scratch, firstWritableIndex: summary.firstWritableIndex,
            readableByteCount: summary.readableBytes, writableByteCount: summary.writableBytes,
            usedIndirectTable: summary.usedIndirectTable, memory: memory)
    }

    /// True when the driver made a chain available that is not popped yet
    /// (loads avail->idx only when every known entry was popped). A device
    /// that must not consume input without a buffer to put it in (virtio-net
    /// reading its tap) asks this first.
    public mutating func hasAvailable() throws(VirtqueueError) -> Bool {
        guard !isBroken else { throw .queueBroken }
        if nextAvail != shadowAvailIndex { return true }
        let index = try loadAvailIndex()
        shadowAvailIndex = index
        return index != nextAvail
    }

    /// Loads avail->idx (acquire) and rejects a jump of more than `size`.
    private mutating func loadAvailIndex() throws(VirtqueueError) -> UInt16 {
        let index: UInt16
        do {
            index = try memory.loadShared16(at: availIndexAddress)
        } catch {
            isBroken = true
            throw .guestMemory(error)
        }
        // Acquire: entries read from here on are at least as new as this idx
        // (pairs with the driver's barrier before its idx update, §2.7.13.3.1).
        atomicMemoryFence(ordering: .acquiring)
        // The ring holds `size` entries; a bigger lead means a hostile driver
        // or a decremented idx (§2.7.6.1), and nothing in it can be trusted.
        guard index &- nextAvail <= size else {
            isBroken = true
            throw .availIndexJump(nextAvail: nextAvail, availIndex: index, size: size)
        }
        return index
    }

    // MARK: - Returning used chains (§2.7.8)

    /// Writes (`head`, `length`) to the next used ring entry and publishes it
    /// by incrementing used->idx. `length` is the bytes written to the chain
    /// (§2.7.8: never more); those writes are visible before the new idx.
    /// - Throws: `.usedHeadOutOfRange` or `.usedRingOverflow` (device bugs;
    ///   nothing written), `.queueBroken`, `.guestMemory`.
    public mutating func addUsed(head: UInt16, length: UInt32) throws(VirtqueueError) {
        guard !isBroken else { throw .queueBroken }
        guard head < size else { throw .usedHeadOutOfRange(head: head, size: size) }
        // More used than popped would overwrite entries the driver has not read.
        guard inFlight > 0 else { throw .usedRingOverflow(head: head) }
        guard headInFlight[Int(head)] else { throw .usedHeadNotInFlight(head: head) }
        let slot = UInt64(nextUsed & (size - 1))
        let element = GuestAddress(usedEntriesAddress.rawValue + 8 * slot)
        do {
            // struct virtq_used_elem { le32 id; le32 len; } as one 64-bit store.
            try memory.write(UInt64(head) | (UInt64(length) << 32), at: element)
            // Release: element and buffer contents before the index.
            atomicMemoryFence(ordering: .releasing)
            try memory.storeShared16(nextUsed &+ 1, at: usedIndexAddress)
        } catch {
            isBroken = true
            throw .guestMemory(error)
        }
        nextUsed &+= 1
        inFlight -= 1
        headInFlight[Int(head)] = false
        trace?("used[\(nextUsed &- 1)] head \(head), \(length) bytes written")
    }

    /// Writes several used elements, then publishes them all with one
    /// used->idx store, so the driver sees them together (a mergeable
    /// virtio-net packet's buffers, §5.1.6.4, must not appear one by one: the
    /// driver reads num_buffers from the first and expects the rest).
    /// Checked like `addUsed(head:length:)`, all before anything is written.
    public mutating func addUsed(_ elements: [UsedElement]) throws(VirtqueueError) {
        guard !isBroken else { throw .queueBroken }
        guard elements.count <= inFlight else { throw .usedRingOverflow(head: elements.first?.head ?? 0) }
        for e in elements where e.head >= size { throw .usedHeadOutOfRange(head: e.head, size: size) }
        // Every head in flight, and none twice in the batch.
        for (i, e) in elements.enumerated() {
            guard headInFlight[Int(e.head)] else {
                for earlier in elements[..<i] { headInFlight[Int(earlier.head)] = true }
                throw .usedHeadNotInFlight(head: e.head)
            }
            headInFlight[Int(e.head)] = false
        }
        var index = nextUsed
        do {
            for e in elements {
                let slot = UInt64(index & (size - 1))
                try memory.write(UInt64(e.head) | (UInt64(e.length) << 32), at: GuestAddress(usedEntriesAddress.rawValue + 8 * slot))
                index &+= 1
            }
            atomicMemoryFence(ordering: .releasing)
            try memory.storeShared16(index, at: usedIndexAddress)
        } catch {
            isBroken = true
            throw .guestMemory(error)
        }
        if let trace {
            var i = nextUsed
            for e in elements {
                trace("used[\(i)] head \(e.head), \(e.length) bytes written")
                i &+= 1
            }
        }
        nextUsed = index
        inFlight -= elements.count
    }

    // MARK: - Used buffer notifications (§2.7.7)

    /// Whether the driver wants an interrupt for the entries used since the
    /// previous call (call once per batch of `addUsed`; false for an empty
    /// batch). Without VIRTIO_F_EVENT_IDX: unless avail->flags has
    /// VIRTQ_AVAIL_F_NO_INTERRUPT; with it: when the batch wrote entry
    /// `used_event` (`needEvent`, §2.7.7.2). A failed read answers true: a
    /// spurious interrupt is allowed, a missed one hangs the driver.
    public mutating func needsNotification() -> Bool {
        let new = nextUsed
        let old = lastCheckedUsed
        lastCheckedUsed = new
        guard new != old else { return false }
        // used->idx before the driver's fields (store-load), or the driver may
        // re-enable interrupts after our read, see no entry, and sleep for ever.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndexEnabled {
            guard let usedEvent = try? memory.loadShared16(at: usedEventAddress) else { return true }
            let wanted = Self.needEvent(eventIndex: usedEvent, newIndex: new, oldIndex: old)
            trace?(wanted ? "interrupt (used_event \(usedEvent) in [\(old), \(new)))" : "no interrupt (used_event \(usedEvent) not in [\(old), \(new)))")
            return wanted
        }
        guard let flags = try? memory.loadShared16(at: availFlagsAddress) else { return true }
        let wanted = flags & Self.availFlagNoInterrupt == 0
        trace?(wanted ? "interrupt" : "no interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT)")
        return wanted
    }

    /// `vring_need_event` (virtio_queue.h): true when `eventIndex` is in
    /// [`oldIndex`, `newIndex`) modulo 65536, i.e. the batch that moved the
    /// index from old to new wrote the entry the other side asked about.
    public static func needEvent(eventIndex: UInt16, newIndex: UInt16, oldIndex: UInt16) -> Bool {
        (newIndex &- eventIndex &- 1) < (newIndex &- oldIndex)
    }

    // MARK: - Available buffer notifications (§2.7.10)

    /// Asks the driver for available buffer notifications (clears
    /// VIRTQ_USED_F_NO_NOTIFY, or with EVENT_IDX sets avail_event to
    /// `nextAvail`), then returns true if buffers are already waiting: the
    /// driver will not notify for those, so pop again before sleeping. A
    /// failed access answers true (the next pop reports it).
    public mutating func enableNotification() -> Bool {
        do {
            if eventIndexEnabled {
                try memory.storeShared16(nextAvail, at: availEventAddress)
            } else {
                try memory.storeShared16(0, at: usedFlagsAddress)
            }
            // Store before re-reading avail->idx (store-load), or a buffer
            // added meanwhile is neither seen here nor notified.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            let index = try memory.loadShared16(at: availIndexAddress)
            return index != nextAvail
        } catch {
            return true
        }
    }

    /// Tells the driver not to notify (the device is polling): sets
    /// VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX does nothing, as flags must stay
    /// 0 and a passed avail_event already suppresses. Only a hint: a failed
    /// write is ignored.
    public mutating func disableNotification() {
        guard !eventIndexEnabled else { return }
        try? memory.storeShared16(Self.usedFlagNoNotify, at: usedFlagsAddress)
    }

    /// Writes avail_event: with EVENT_IDX the driver notifies when it fills
    /// available entry `index` (later than `enableNotification` asks for).
    public func setAvailEvent(_ index: UInt16) throws(VirtqueueError) {
        do {
            try memory.storeShared16(index, at: availEventAddress)
        } catch {
            throw .guestMemory(error)
        }
    }
}
