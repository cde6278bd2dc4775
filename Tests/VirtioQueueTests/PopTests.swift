// PopTests.swift: well-formed chains through the available and used rings
// (virtio 1.2 §2.7.5 descriptor table, §2.7.5.3 indirect descriptors, §2.7.6
// available ring, §2.7.8 used ring, §2.7.13 the driver's side).
//
// Every queue here lives in a real GuestMemory, laid out and driven by
// TestSupport's VirtqueueDriver playing the guest.

import Memory
import Testing
import TestSupport
import VirtioQueue

/// A driver over 1 MiB of fresh guest memory, and the device's queue on it.
func makePair(size: UInt16 = 8, features: FeatureSet = [], memory: UInt64 = 1 << 20) throws -> (VirtqueueDriver, Virtqueue) {
    let m = try makeGuestMemory(size: memory)
    let driver = try VirtqueueDriver(memory: m, size: size)
    return (driver, try driver.makeQueue(features: features))
}

/// The driver's buffers as the device should see them.
func expectedBuffers(_ chain: VirtqueueDriver.Chain) -> [DescriptorBuffer] {
    chain.buffers.map { DescriptorBuffer(address: $0.address, length: $0.length, isWritable: $0.writable) }
}

@Suite("Virtqueue: popping well-formed chains")
struct PopTests {
    @Test("an empty ring pops nil and changes nothing")
    func empty() throws {
        var (_, q) = try makePair()
        #expect(try q.popAvailable() == nil)
        #expect(try q.popAvailable() == nil)
        #expect(q.nextAvail == 0 && q.inFlight == 0)
    }

    @Test("a single readable descriptor")
    func singleDescriptor() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([1, 2, 3, 4, 5])])
        let chain = try #require(try q.popAvailable())
        #expect(chain.headIndex == c.head)
        #expect(chain.buffers == expectedBuffers(c))
        #expect(chain.readableByteCount == 5 && chain.writableByteCount == 0)
        #expect(chain.firstWritableIndex == 1 && chain.writableBuffers.isEmpty)
        #expect(try chain.readReadable(maxCount: 100) == [1, 2, 3, 4, 5])
        #expect(try chain.writeWritable([9, 9]) == 0)  // nothing writable: nothing written
        #expect(!chain.usedIndirectTable)
        #expect(q.nextAvail == 1 && q.inFlight == 1)
        #expect(try q.popAvailable() == nil)
    }

    @Test("a chain of three: two readable, one writable, with exact buffers and counts")
    func chainOfThree() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([0xA1, 0xA2, 0xA3]), .readable([0xB1]), .writable(6)])
        let chain = try #require(try q.popAvailable())
        #expect(chain.headIndex == 0)
        #expect(chain.buffers == expectedBuffers(c))
        #expect(chain.buffers.map(\.isWritable) == [false, false, true])
        #expect(chain.readableBuffers.count == 2 && chain.writableBuffers.count == 1)
        #expect(chain.readableByteCount == 4 && chain.writableByteCount == 6)
        #expect(try chain.readReadable(maxCount: 4) == [0xA1, 0xA2, 0xA3, 0xB1])

        #expect(try chain.writeWritable([1, 2, 3, 4]) == 4)
        try q.addUsed(head: chain.headIndex, length: 4)
        let used = try #require(try driver.popUsed())
        #expect(used.element == VirtqueueDriver.UsedElement(id: 0, len: 4))
        #expect(used.chain == c)
        // The 4 bytes written, then the untouched poison.
        #expect(try driver.readWritten(c, count: 6) == [1, 2, 3, 4, 0xEE, 0xEE])
    }

    @Test("reading the readable part: bounded, from an offset, across buffer boundaries")
    func boundedReads() throws {
        var (driver, q) = try makePair()
        try driver.addChain([.readable([0, 1, 2]), .readable([3, 4]), .readable([]), .readable([5, 6, 7, 8]), .writable(2)])
        let chain = try #require(try q.popAvailable())
        #expect(chain.readableByteCount == 9)
        #expect(try chain.readReadable(maxCount: 9) == [0, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect(try chain.readReadable(maxCount: 4) == [0, 1, 2, 3])
        #expect(try chain.readReadable(from: 2, maxCount: 4) == [2, 3, 4, 5])
        #expect(try chain.readReadable(from: 5, maxCount: 100) == [5, 6, 7, 8])
        #expect(try chain.readReadable(from: 9, maxCount: 100) == [])
        #expect(try chain.readReadable(from: 1000, maxCount: 100) == [])
        #expect(try chain.readReadable(from: -5, maxCount: 2) == [0, 1])
        #expect(try chain.readReadable(maxCount: -1) == [])
        // Appending to a caller's buffer.
        var buffer: [UInt8] = [0xFF]
        #expect(try chain.readReadable(from: 3, maxCount: 3, appendingTo: &buffer) == 3)
        #expect(buffer == [0xFF, 3, 4, 5])
        // The writable part is never read through this helper.
        #expect(try chain.readReadable(from: 8, maxCount: 10) == [8])
    }

    @Test("writing the writable part: bounded, from an offset, across buffer boundaries")
    func boundedWrites() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([7]), .writable(3), .writable(2), .writable(4)])
        let chain = try #require(try q.popAvailable())
        #expect(chain.writableByteCount == 9)
        #expect(chain.firstWritableIndex == 1)
        #expect(try chain.writeWritable([1, 2, 3, 4, 5]) == 5)
        #expect(try chain.writeWritable([0x66], at: 8) == 1)  // a status byte at the very end
        #expect(try chain.writeWritable([0x77, 0x78], at: 8) == 1)  // only one byte of room left there
        #expect(try chain.writeWritable([0x55], at: 9) == 0)
        #expect(try chain.writeWritable([0x55], at: -1) == 0)
        #expect(try chain.writeWritable(Array(repeating: 0xAB, count: 20), at: 6) == 3)
        #expect(try driver.readWritten(c, count: 9) == [1, 2, 3, 4, 5, 0xEE, 0xAB, 0xAB, 0xAB])
        // The readable buffer is never written.
        #expect(try driver.memory.readBytes(at: c.buffers[0].address, count: 1) == [7])
    }

    @Test("chains pop in ring order and come back through the used ring in completion order")
    func severalChains() throws {
        var (driver, q) = try makePair()
        let a = try driver.addChain([.readable([1]), .writable(1)])
        let b = try driver.addChain([.readable([2, 2])], publish: false)
        let c = try driver.addChain([.writable(3)], publish: false)
        // b and c are in the ring but not published: the device sees only a.
        let first = try #require(try q.popAvailable())
        #expect(first.headIndex == a.head)
        #expect(try q.popAvailable() == nil)
        try driver.publish()
        let second = try #require(try q.popAvailable())
        let third = try #require(try q.popAvailable())
        #expect(try q.popAvailable() == nil)
        #expect([second.headIndex, third.headIndex] == [b.head, c.head])
        #expect(third.buffers == expectedBuffers(c))
        #expect(q.inFlight == 3)

        // Complete out of order: c, a, b.
        try q.addUsed(head: third.headIndex, length: 3)
        try q.addUsed(head: first.headIndex, length: 1)
        try q.addUsed(head: second.headIndex, length: 0)
        #expect(q.nextUsed == 3 && q.inFlight == 0)
        #expect(try driver.usedIndex() == 3)
        #expect(try driver.usedElement(slot: 0) == .init(id: UInt32(c.head), len: 3))
        #expect(try driver.usedElement(slot: 1) == .init(id: UInt32(a.head), len: 1))
        #expect(try driver.usedElement(slot: 2) == .init(id: UInt32(b.head), len: 0))
    }

    @Test("a full ring: exactly `size` chains outstanding pop one by one")
    func fullRing() throws {
        var (driver, q) = try makePair(size: 4)
        for i in 0..<4 { try driver.addChain([.readable([UInt8(i)])]) }
        #expect(driver.availIndex == 4)
        for i in 0..<4 {
            let chain = try #require(try q.popAvailable())
            #expect(try chain.readReadable(maxCount: 1) == [UInt8(i)])
        }
        #expect(try q.popAvailable() == nil)
    }

    @Test("an indirect table: one table entry, the buffers in the table")
    func indirect() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1, 2]), .readable([3]), .writable(4), .writable(1)], indirect: true)
        let chain = try #require(try q.popAvailable())
        #expect(chain.headIndex == c.head)
        #expect(chain.usedIndirectTable)
        #expect(chain.buffers == expectedBuffers(c))
        #expect(chain.buffers.count == 4)
        #expect(chain.readableByteCount == 3 && chain.writableByteCount == 5)
        #expect(try chain.readReadable(maxCount: 10) == [1, 2, 3])
        #expect(try chain.writeWritable([9, 8, 7, 6, 5]) == 5)
        try q.addUsed(head: chain.headIndex, length: 5)
        let used = try #require(try driver.popUsed())
        #expect(used.element == .init(id: UInt32(c.head), len: 5))
        #expect(try driver.readWritten(c, count: 5) == [9, 8, 7, 6, 5])
    }

    @Test("direct descriptors followed by an indirect one (§2.7.5.3.2: the device MUST handle it)")
    func directThenIndirect() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let m = driver.memory
        let header = driver.allocate(4)
        try m.write(bytes: [0xDE, 0xAD, 0xBE, 0xEF], at: header)
        let payload = driver.allocate(2)
        try m.write(bytes: [0x11, 0x22], at: payload)
        let status = driver.allocate(1)
        // An indirect table with a readable payload and a writable status byte.
        let table = driver.allocate(32)
        try driver.writeDescriptor(.init(addr: payload.rawValue, len: 2, flags: VirtqueueDriver.flagNext, next: 1), at: table)
        try driver.writeDescriptor(.init(addr: status.rawValue, len: 1, flags: VirtqueueDriver.flagWrite, next: 0), at: GuestAddress(table.rawValue + 16))
        // Table entry 5: the header, then entry 2: the indirect descriptor.
        try driver.writeDescriptor(.init(addr: header.rawValue, len: 4, flags: VirtqueueDriver.flagNext, next: 2), index: 5)
        try driver.writeDescriptor(.init(addr: table.rawValue, len: 32, flags: VirtqueueDriver.flagIndirect, next: 0), index: 2)
        try driver.offerRawHead(5)

        let chain = try #require(try q.popAvailable())
        #expect(chain.headIndex == 5)
        #expect(chain.usedIndirectTable)
        #expect(chain.buffers == [
            DescriptorBuffer(address: header, length: 4, isWritable: false),
            DescriptorBuffer(address: payload, length: 2, isWritable: false),
            DescriptorBuffer(address: status, length: 1, isWritable: true),
        ])
        #expect(try chain.readReadable(maxCount: 6) == [0xDE, 0xAD, 0xBE, 0xEF, 0x11, 0x22])
    }

    @Test("an indirect table need not be aligned, and its descriptor's WRITE flag is ignored")
    func indirectUnalignedTable() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let data = driver.allocate(3)
        try driver.memory.write(bytes: [4, 5, 6], at: data)
        let table = GuestAddress(driver.allocate(32).rawValue + 3)
        try driver.writeDescriptor(.init(addr: data.rawValue, len: 3, flags: 0, next: 0), at: table)
        try driver.writeDescriptor(
            .init(addr: table.rawValue, len: 16, flags: VirtqueueDriver.flagIndirect | VirtqueueDriver.flagWrite, next: 0), index: 0)
        try driver.offerRawHead(0)
        let chain = try #require(try q.popAvailable())
        #expect(chain.buffers == [DescriptorBuffer(address: data, length: 3, isWritable: false)])
    }

    @Test("an indirect table of the maximum 1024 entries is accepted")
    func largestIndirectTable() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let table = driver.allocate(16 * 1024)
        let data = driver.allocate(1024)
        for i in 0..<1024 {
            let last = i == 1023
            try driver.writeDescriptor(
                .init(addr: data.rawValue + UInt64(i), len: 1, flags: last ? 0 : VirtqueueDriver.flagNext, next: last ? 0 : UInt16(i + 1)),
                at: GuestAddress(table.rawValue + 16 * UInt64(i)))
        }
        try driver.writeDescriptor(.init(addr: table.rawValue, len: 16 * 1024, flags: VirtqueueDriver.flagIndirect, next: 0), index: 3)
        try driver.offerRawHead(3)
        let chain = try #require(try q.popAvailable())
        #expect(chain.buffers.count == 1024)
        #expect(chain.readableByteCount == 1024)
        #expect(chain.buffers.last == DescriptorBuffer(address: GuestAddress(data.rawValue + 1023), length: 1, isWritable: false))
    }

    @Test("a chain using every descriptor of the table is not a loop")
    func longestDirectChain() throws {
        var (driver, q) = try makePair(size: 16)
        let segments = (0..<16).map { VirtqueueDriver.Segment.readable([UInt8($0)]) }
        try driver.addChain(segments)
        let chain = try #require(try q.popAvailable())
        #expect(chain.buffers.count == 16)
        #expect(try chain.readReadable(maxCount: 16) == (0..<16).map { UInt8($0) })
    }

    @Test("zero-length buffers are kept, and point anywhere without harm")
    func zeroLengthBuffers() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([]), .readable([1]), .writable(0)])
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) { $0.addr = 0xFFFF_FFFF_FFFF_FFFF }
        let chain = try #require(try q.popAvailable())
        #expect(chain.buffers.map(\.length) == [0, 1, 0])
        #expect(chain.buffers[0].address == GuestAddress(0xFFFF_FFFF_FFFF_FFFF))
        #expect(try chain.readReadable(maxCount: 5) == [1])
        #expect(try chain.writeWritable([1]) == 0)
    }

    @Test("the 16-bit indexes wrap past 65535 (65538 chains through a size-8 queue)")
    func indexWrapAround() throws {
        var (driver, q) = try makePair(size: 8, features: [.ringEventIdx])
        // used_event = 65535: the driver wants one interrupt, when entry 65535 is used.
        try driver.setUsedEvent(65535)
        var notifiedRounds: [Int] = []
        for round in 0..<21846 {  // 3 chains a round: 65538 chains
            var heads: [UInt16] = []
            for k in 0..<3 {
                let tag = UInt8(truncatingIfNeeded: round &* 3 &+ k)
                try driver.addChain([.readable([tag, 0x5A]), .writable(2)], publish: k == 2)
            }
            for k in 0..<3 {
                let chain = try #require(try q.popAvailable())
                let tag = UInt8(truncatingIfNeeded: round &* 3 &+ k)
                #expect(try chain.readReadable(maxCount: 2) == [tag, 0x5A])
                #expect(try chain.writeWritable([tag ^ 0xFF]) == 1)
                heads.append(chain.headIndex)
            }
            #expect(try q.popAvailable() == nil)
            for h in heads { try q.addUsed(head: h, length: 1) }
            if q.needsNotification() { notifiedRounds.append(round) }
            for k in 0..<3 {
                let used = try #require(try driver.popUsed())
                let chain = try #require(used.chain)
                #expect(used.element.len == 1)
                let tag = UInt8(truncatingIfNeeded: round &* 3 &+ k)
                #expect(try driver.readWritten(chain, count: 1) == [tag ^ 0xFF])
            }
        }
        // 65538 mod 65536: both free-running indexes wrapped to 2.
        #expect(driver.availIndex == 2)
        #expect(q.nextAvail == 2 && q.nextUsed == 2)
        #expect(try driver.usedIndex() == 2)
        #expect(driver.lastSeenUsed == 2)
        // Entry 65535 is the first of round 21845 (3 * 21845 = 65535), whose
        // batch moved used->idx from 65535 across 0 to 2.
        #expect(notifiedRounds == [21845])
    }

    @Test("steady state: a pop reuses the previous chain's buffer storage (no allocation)")
    func storageReuse() throws {
        var (driver, q) = try makePair()
        try driver.addChain([.readable([1]), .readable([2]), .writable(3)])
        try driver.addChain([.readable([1]), .writable(3)])
        var firstStorage: UInt = 0
        do {
            let first = try #require(try q.popAvailable())
            firstStorage = first.buffers.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
            try q.addUsed(head: first.headIndex, length: 0)
        }  // the device is done with the first chain: its buffer list is released here
        let second = try #require(try q.popAvailable())
        let secondStorage = second.buffers.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        #expect(second.buffers.count == 2)
        #expect(firstStorage != 0)
        #expect(firstStorage == secondStorage)
    }
}

@Suite("GuestMemory.readBytes(at:count:appendingTo:), which chains gather through")
struct GatherTests {
    @Test("appends exactly the bytes asked for; on any error the buffer is unchanged")
    func appendingRead() throws {
        let m = try makeGuestMemory(size: 1 << 20)
        try m.write(bytes: [1, 2, 3, 4], at: GuestAddress(0x100))
        var buffer: [UInt8] = [9]
        try m.readBytes(at: GuestAddress(0x101), count: 2, appendingTo: &buffer)
        try m.readBytes(at: GuestAddress(0x100), count: 0, appendingTo: &buffer)
        #expect(buffer == [9, 2, 3])
        #expect(throws: MemoryError.outOfRange(address: 0xF_FFFE, size: 4)) {
            try m.readBytes(at: GuestAddress(0xF_FFFE), count: 4, appendingTo: &buffer)
        }
        #expect(throws: MemoryError.overflow(address: 0xFFFF_FFFF_FFFF_FFFF, size: 2)) {
            try m.readBytes(at: GuestAddress(0xFFFF_FFFF_FFFF_FFFF), count: 2, appendingTo: &buffer)
        }
        #expect(throws: MemoryError.outOfRange(address: 0x100, size: 0xFFFF_FFFF_FFFF_FFFF)) {
            try m.readBytes(at: GuestAddress(0x100), count: -1, appendingTo: &buffer)
        }
        #expect(buffer == [9, 2, 3])
    }
}
