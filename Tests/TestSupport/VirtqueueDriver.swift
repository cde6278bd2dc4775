// VirtqueueDriver.swift: the driver's side of a split virtqueue, for tests.
//
// Like rust-vmm's MockSplitQueue, it lays a queue out in a real GuestMemory
// and plays the guest driver of virtio 1.2 §2.7.13 ("Supplying Buffers to
// The Device") and §2.7.14 ("Receiving Used Buffers From The Device"):
// it fills descriptors (direct or through an indirect table), places heads in
// the available ring, publishes them by bumping avail->idx, and reads used
// elements back, recycling their descriptors as a real driver does.
//
// It is written from the spec, independently of Sources/VirtioQueue (it uses
// only that module's QueueConfiguration to hand the layout over), so the two
// do not share a misreading. It validates nothing on purpose: tests use it to
// build hostile queues (loops, indexes out of range, buffers outside RAM,
// nested indirection, index jumps) through the raw accessors at the end.

import Memory
import VirtioQueue

/// A guest driver for one split virtqueue, over real guest memory.
public final class VirtqueueDriver {
    /// Where the parts of the queue and the driver's data buffers live.
    public struct Layout: Sendable {
        public var size: UInt16
        public var descriptorTable: GuestAddress
        public var availRing: GuestAddress
        public var usedRing: GuestAddress
        /// The driver allocates buffers and indirect tables from [dataStart, dataEnd), circularly.
        public var dataStart: GuestAddress
        public var dataEnd: GuestAddress

        public init(size: UInt16, descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress, dataStart: GuestAddress, dataEnd: GuestAddress) {
            self.size = size
            self.descriptorTable = descriptorTable
            self.availRing = availRing
            self.usedRing = usedRing
            self.dataStart = dataStart
            self.dataEnd = dataEnd
        }

        /// The parts packed back to back from `base` at their minimum
        /// alignments (16, 2, 4: §2.7.1), then the data area from the next
        /// 4 KiB boundary to `memoryEnd`.
        public static func packed(size: UInt16, base: UInt64 = 0x1000, memoryEnd: UInt64) -> Layout {
            let n = UInt64(size)
            let desc = (base + 15) & ~15
            let avail = desc + 16 * n
            let used = (avail + 6 + 2 * n + 3) & ~3
            let data = (used + 6 + 8 * n + 0xFFF) & ~0xFFF
            return Layout(
                size: size, descriptorTable: GuestAddress(desc), availRing: GuestAddress(avail),
                usedRing: GuestAddress(used), dataStart: GuestAddress(data), dataEnd: GuestAddress(memoryEnd))
        }
    }

    /// One element of a buffer the driver offers.
    public enum Segment: Equatable, Sendable {
        /// A device-readable buffer holding these bytes.
        case readable([UInt8])
        /// A device-writable buffer of this many bytes, filled with `VirtqueueDriver.poison`.
        case writable(Int)
    }

    /// A descriptor as laid out in memory (§2.7.5), decoded field by field.
    public struct Descriptor: Equatable, Sendable {
        public var addr: UInt64
        public var len: UInt32
        public var flags: UInt16
        public var next: UInt16

        public init(addr: UInt64, len: UInt32, flags: UInt16, next: UInt16) {
            self.addr = addr
            self.len = len
            self.flags = flags
            self.next = next
        }
    }

    /// VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT (§2.7.5).
    public static let flagNext: UInt16 = 1, flagWrite: UInt16 = 2, flagIndirect: UInt16 = 4
    /// The byte writable buffers are filled with before they are offered.
    public static let poison: UInt8 = 0xEE

    /// A buffer the driver placed, as it placed it.
    public struct Buffer: Equatable, Sendable {
        public var address: GuestAddress
        public var length: UInt32
        public var writable: Bool
    }

    /// What `addChain` built.
    public struct Chain: Equatable, Sendable {
        /// The head index placed in the available ring.
        public var head: UInt16
        /// The buffers in chain order.
        public var buffers: [Buffer]
        /// The address of every descriptor in chain order: for a direct chain
        /// the table entries; for an indirect one, the table entry that points
        /// to the indirect table, then the indirect entries.
        public var descriptorAddresses: [GuestAddress]
        /// The indirect table, if the chain uses one.
        public var indirectTable: GuestAddress?
        /// The descriptor table entries the chain occupies (returned to the free list when used).
        var tableEntries: [UInt16]
    }

    /// A used ring element (§2.7.8).
    public struct UsedElement: Equatable, Sendable {
        public var id: UInt32
        public var len: UInt32

        public init(id: UInt32, len: UInt32) {
            self.id = id
            self.len = len
        }
    }

    public let memory: GuestMemory
    public let layout: Layout
    public var size: UInt16 { layout.size }

    /// The driver's copy of avail->idx (what it last published).
    public private(set) var availIndex: UInt16 = 0
    /// Heads placed in the ring but not yet published.
    public private(set) var unpublished: UInt16 = 0
    /// The driver's last_seen_used: the next used element it will read.
    public private(set) var lastSeenUsed: UInt16 = 0
    /// Free descriptor table entries.
    private var freeEntries: [UInt16]
    /// Chains the device has not returned yet, by head.
    public private(set) var outstanding: [UInt16: Chain] = [:]
    /// The next free byte of the data area.
    private var dataCursor: UInt64

    /// Lays out the queue: zeroes the three parts (flags 0, idx 0, §2.7.10.1:
    /// "The driver MUST initialize flags in the used ring to 0") and frees
    /// every descriptor.
    public init(memory: GuestMemory, layout: Layout) throws {
        self.memory = memory
        self.layout = layout
        self.freeEntries = (0..<layout.size).reversed()
        self.dataCursor = layout.dataStart.rawValue
        let n = UInt64(layout.size)
        try memory.fill(0, at: layout.descriptorTable, count: 16 * n)
        try memory.fill(0, at: layout.availRing, count: 6 + 2 * n)
        try memory.fill(0, at: layout.usedRing, count: 6 + 8 * n)
    }

    /// A driver with the packed layout in `memory` (one region from 0).
    public convenience init(memory: GuestMemory, size: UInt16) throws {
        try self.init(memory: memory, layout: .packed(size: size, memoryEnd: memory.size))
    }

    /// The layout as the transport's registers would hold it.
    public var configuration: QueueConfiguration {
        QueueConfiguration(
            size: layout.size, descriptorTable: layout.descriptorTable, availRing: layout.availRing,
            usedRing: layout.usedRing)
    }

    /// The device side of this queue, with `features` negotiated.
    public func makeQueue(features: FeatureSet = [], maxSize: UInt16 = Virtqueue.maximumSize) throws(VirtqueueError) -> Virtqueue {
        try Virtqueue(memory: memory, configuration: configuration, maxSize: maxSize, features: features)
    }

    // MARK: - Offering buffers (§2.7.13)

    /// Reserves `length` bytes of the data area, `alignment`-aligned. The area
    /// is reused circularly, so tests keep far less than its size in flight.
    public func allocate(_ length: Int, alignment: UInt64 = 16) -> GuestAddress {
        var start = (dataCursor + alignment - 1) & ~(alignment - 1)
        if start + UInt64(length) > layout.dataEnd.rawValue {
            start = (layout.dataStart.rawValue + alignment - 1) & ~(alignment - 1)
        }
        precondition(start + UInt64(length) <= layout.dataEnd.rawValue, "data area too small for \(length) bytes")
        dataCursor = start + UInt64(length)
        return GuestAddress(start)
    }

    /// Builds a chain for `segments` (§2.7.13.1), places its head in the next
    /// available ring entry (§2.7.13.2), and, with `publish`, makes it
    /// visible by bumping avail->idx (§2.7.13.3).
    ///
    /// With `indirect`, the segments go into an indirect table of their own
    /// (§2.7.5.3) and the chain takes one descriptor table entry.
    @discardableResult
    public func addChain(_ segments: [Segment], indirect: Bool = false, publish: Bool = true) throws -> Chain {
        precondition(!segments.isEmpty, "a chain has at least one buffer")
        // The buffers themselves.
        var buffers: [Buffer] = []
        for s in segments {
            switch s {
            case .readable(let bytes):
                let a = allocate(bytes.count)
                try memory.write(bytes: bytes, at: a)
                buffers.append(Buffer(address: a, length: UInt32(bytes.count), writable: false))
            case .writable(let count):
                let a = allocate(count)
                try memory.fill(Self.poison, at: a, count: UInt64(count))
                buffers.append(Buffer(address: a, length: UInt32(count), writable: true))
            }
        }
        // The descriptors: one per buffer, chained by `next`.
        func descriptors(next indexes: [UInt16]) -> [Descriptor] {
            buffers.enumerated().map { i, b in
                let last = i == buffers.count - 1
                return Descriptor(
                    addr: b.address.rawValue, len: b.length,
                    flags: (b.writable ? Self.flagWrite : 0) | (last ? 0 : Self.flagNext),
                    next: last ? 0 : indexes[i + 1])
            }
        }
        var chain: Chain
        if indirect {
            guard let entry = freeEntries.popLast() else { throw DriverError.outOfDescriptors }
            let table = allocate(16 * buffers.count)
            let entries = descriptors(next: (0..<UInt16(buffers.count)).map { $0 })
            var addresses = [descriptorAddress(entry)]
            for (i, d) in entries.enumerated() {
                let a = GuestAddress(table.rawValue + 16 * UInt64(i))
                try writeDescriptor(d, at: a)
                addresses.append(a)
            }
            try writeDescriptor(
                Descriptor(addr: table.rawValue, len: UInt32(16 * buffers.count), flags: Self.flagIndirect, next: 0),
                index: entry)
            chain = Chain(head: entry, buffers: buffers, descriptorAddresses: addresses, indirectTable: table, tableEntries: [entry])
        } else {
            guard freeEntries.count >= buffers.count else { throw DriverError.outOfDescriptors }
            let indexes = (0..<buffers.count).compactMap { _ in freeEntries.popLast() }
            for (i, d) in descriptors(next: indexes).enumerated() {
                try writeDescriptor(d, index: indexes[i])
            }
            chain = Chain(
                head: indexes[0], buffers: buffers, descriptorAddresses: indexes.map(descriptorAddress),
                indirectTable: nil, tableEntries: indexes)
        }
        // avail->ring[(idx + added) % size] = head
        try writeAvailEntry(slot: availIndex &+ unpublished, head: chain.head)
        unpublished &+= 1
        outstanding[chain.head] = chain
        if publish { try self.publish() }
        return chain
    }

    /// Bumps avail->idx by the number of heads placed since the last publish.
    /// (A real driver issues a write barrier first; here the device runs on
    /// the same thread.)
    public func publish() throws {
        availIndex &+= unpublished
        unpublished = 0
        try memory.write(availIndex, at: availIndexAddress)
    }

    // MARK: - Receiving used buffers (§2.7.14)

    /// used->idx as the device last wrote it.
    public func usedIndex() throws -> UInt16 { try memory.read(at: GuestAddress(layout.usedRing.rawValue + 2)) }

    /// used->flags (VIRTQ_USED_F_NO_NOTIFY is bit 0).
    public func usedFlags() throws -> UInt16 { try memory.read(at: layout.usedRing) }

    /// avail_event, after the used ring's entries.
    public func availEvent() throws -> UInt16 {
        try memory.read(at: GuestAddress(layout.usedRing.rawValue + 4 + 8 * UInt64(size)))
    }

    /// The used element in ring slot `slot % size`.
    public func usedElement(slot: UInt16) throws -> UsedElement {
        let a = layout.usedRing.rawValue + 4 + 8 * UInt64(slot % size)
        return UsedElement(id: try memory.read(at: GuestAddress(a)), len: try memory.read(at: GuestAddress(a + 4)))
    }

    /// The next used element and the chain it returns, or nil when the device
    /// has returned nothing new. The chain's descriptors go back to the free list.
    public func popUsed() throws -> (element: UsedElement, chain: Chain?)? {
        guard try usedIndex() != lastSeenUsed else { return nil }
        let element = try usedElement(slot: lastSeenUsed)
        lastSeenUsed &+= 1
        let chain = outstanding.removeValue(forKey: UInt16(truncatingIfNeeded: element.id))
        if let chain { freeEntries.append(contentsOf: chain.tableEntries) }
        return (element, chain)
    }

    /// The first `count` bytes of `chain`'s writable buffers, in order.
    public func readWritten(_ chain: Chain, count: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        for b in chain.buffers where b.writable && out.count < count {
            out += try memory.readBytes(at: b.address, count: min(Int(b.length), count - out.count))
        }
        return out
    }

    // MARK: - Raw access (for hostile tests)

    /// The address of descriptor table entry `index` (no range check: tests may ask for any).
    public func descriptorAddress(_ index: UInt16) -> GuestAddress {
        GuestAddress(layout.descriptorTable.rawValue + 16 * UInt64(index))
    }

    public func writeDescriptor(_ d: Descriptor, at address: GuestAddress) throws {
        try memory.write(d.addr, at: address)
        try memory.write(d.len, at: GuestAddress(address.rawValue + 8))
        try memory.write(d.flags, at: GuestAddress(address.rawValue + 12))
        try memory.write(d.next, at: GuestAddress(address.rawValue + 14))
    }

    public func writeDescriptor(_ d: Descriptor, index: UInt16) throws {
        try writeDescriptor(d, at: descriptorAddress(index))
    }

    public func readDescriptor(at address: GuestAddress) throws -> Descriptor {
        Descriptor(
            addr: try memory.read(at: address), len: try memory.read(at: GuestAddress(address.rawValue + 8)),
            flags: try memory.read(at: GuestAddress(address.rawValue + 12)),
            next: try memory.read(at: GuestAddress(address.rawValue + 14)))
    }

    /// Rewrites the descriptor at `address` through `body`.
    public func modifyDescriptor(at address: GuestAddress, _ body: (inout Descriptor) -> Void) throws {
        var d = try readDescriptor(at: address)
        body(&d)
        try writeDescriptor(d, at: address)
    }

    /// Points the last direct descriptor of `chain` back at its head (a loop).
    public func makeLoop(_ chain: Chain) throws {
        guard let last = chain.descriptorAddresses.last else { return }
        try modifyDescriptor(at: last) {
            $0.flags |= Self.flagNext
            $0.next = chain.indirectTable == nil ? chain.head : 0
        }
    }

    private var availIndexAddress: GuestAddress { GuestAddress(layout.availRing.rawValue + 2) }

    /// Writes avail->idx directly, without touching the driver's own count
    /// (to fake a jump or a decrement).
    public func writeAvailIndexRaw(_ value: UInt16) throws {
        try memory.write(value, at: availIndexAddress)
    }

    /// Writes `head` into available ring slot `slot % size`.
    public func writeAvailEntry(slot: UInt16, head: UInt16) throws {
        try memory.write(head, at: GuestAddress(layout.availRing.rawValue + 4 + 2 * UInt64(slot % size)))
    }

    /// Offers a raw head (whatever the descriptor table holds there) and publishes it.
    public func offerRawHead(_ head: UInt16) throws {
        try writeAvailEntry(slot: availIndex &+ unpublished, head: head)
        unpublished &+= 1
        try publish()
    }

    /// avail->flags (VIRTQ_AVAIL_F_NO_INTERRUPT is bit 0).
    public func setAvailFlags(_ flags: UInt16) throws {
        try memory.write(flags, at: layout.availRing)
    }

    /// used_event, after the available ring's entries.
    public func setUsedEvent(_ value: UInt16) throws {
        try memory.write(value, at: GuestAddress(layout.availRing.rawValue + 4 + 2 * UInt64(size)))
    }

    /// Errors of the mock itself (not of the device).
    public enum DriverError: Error, Equatable {
        /// Every descriptor table entry is in use.
        case outOfDescriptors
    }
}

/// A deterministic generator (SplitMix64) for property tests: the same seed
/// gives the same sequence on every run and machine.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
