// HostileTests.swift: a driver that breaks the rules of virtio 1.2 §2.7.
//
// Each test builds one violation with the driver mock, checks the exact error
// `popAvailable()` (or `addUsed`) throws, and then states what is left:
//   - chain errors: the head is consumed and in flight, the queue is usable
//     (`expectUsable` completes the bad head and pops a good chain after it);
//   - ring errors (an available index jump): the queue is broken for good
//     (`expectBroken`: every later call throws `queueBroken`).

import Memory
import Testing
import TestSupport
import VirtioQueue

/// The queue survived: the failed head can be returned, and a well-formed
/// chain offered afterwards pops intact.
private func expectUsable(_ q: inout Virtqueue, _ driver: VirtqueueDriver, failedHead: UInt16?, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(!q.isBroken, sourceLocation: sourceLocation)
    if let failedHead {
        #expect(q.inFlight == 1, sourceLocation: sourceLocation)
        try q.addUsed(head: failedHead, length: 0)
        let used = try #require(try driver.popUsed(), sourceLocation: sourceLocation)
        #expect(used.element == .init(id: UInt32(failedHead), len: 0), sourceLocation: sourceLocation)
    }
    #expect(q.inFlight == 0, sourceLocation: sourceLocation)
    let good = try driver.addChain([.readable([0x42]), .writable(1)])
    let chain = try #require(try q.popAvailable(), sourceLocation: sourceLocation)
    #expect(chain.headIndex == good.head, sourceLocation: sourceLocation)
    #expect(try chain.readReadable(maxCount: 1) == [0x42], sourceLocation: sourceLocation)
}

/// The queue is broken: it refuses every operation until rebuilt.
private func expectBroken(_ q: inout Virtqueue, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(q.isBroken, sourceLocation: sourceLocation)
    #expect(throws: VirtqueueError.queueBroken, sourceLocation: sourceLocation) { try q.popAvailable() }
    #expect(throws: VirtqueueError.queueBroken, sourceLocation: sourceLocation) { try q.addUsed(head: 0, length: 0) }
}

@Suite("Virtqueue: hostile chains")
struct HostileChainTests {
    @Test("a head index beyond the queue size: slot consumed, nothing in flight, queue usable")
    func headOutOfRange() throws {
        var (driver, q) = try makePair(size: 8)
        try driver.offerRawHead(8)
        #expect(throws: VirtqueueError.headIndexOutOfRange(head: 8, size: 8)) { try q.popAvailable() }
        #expect(q.nextAvail == 1 && q.inFlight == 0)
        #expect(VirtqueueError.headIndexOutOfRange(head: 8, size: 8).head == nil)
        try expectUsable(&q, driver, failedHead: nil)
    }

    @Test("a next index beyond the queue size")
    func nextOutOfRange() throws {
        var (driver, q) = try makePair(size: 8)
        let c = try driver.addChain([.readable([1]), .readable([2])])
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) { $0.next = 8 }
        let expected = VirtqueueError.nextIndexOutOfRange(head: c.head, next: 8, tableLength: 8, indirect: false)
        #expect(throws: expected) { try q.popAvailable() }
        #expect(expected.head == c.head && !expected.isQueueFatal)
        #expect(q.nextAvail == 1)
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a loop back to the head is caught by the time-to-live")
    func loop() throws {
        var (driver, q) = try makePair(size: 8)
        // All readable, so that the walk meets nothing but the loop.
        let c = try driver.addChain([.readable([1]), .readable([2]), .readable([3])])
        try driver.makeLoop(c)
        #expect(throws: VirtqueueError.chainTooLong(head: c.head, limit: 8, indirect: false)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a descriptor that chains to itself")
    func selfLoop() throws {
        var (driver, q) = try makePair(size: 4)
        let c = try driver.addChain([.readable([1])])
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) {
            $0.flags |= VirtqueueDriver.flagNext
            $0.next = c.head
        }
        #expect(throws: VirtqueueError.chainTooLong(head: c.head, limit: 4, indirect: false)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a buffer partly outside guest RAM, and one far outside")
    func bufferOutsideMemory() throws {
        var (driver, q) = try makePair()
        let end = driver.memory.size
        let c = try driver.addChain([.readable([1]), .writable(8)])
        try driver.modifyDescriptor(at: c.descriptorAddresses[1]) { $0.addr = end - 4 }
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: c.head, address: end - 4, length: 8)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)

        let d = try driver.addChain([.readable([1, 2])])
        try driver.modifyDescriptor(at: d.descriptorAddresses[0]) { $0.addr = 1 << 40 }
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: d.head, address: 1 << 40, length: 2)) { try q.popAvailable() }
        #expect(q.inFlight == 2)  // d, and the good chain expectUsable left in flight
    }

    @Test("addr + len overflowing 64 bits")
    func bufferOverflow() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([1]), .readable([2])])
        try driver.modifyDescriptor(at: c.descriptorAddresses[1]) {
            $0.addr = 0xFFFF_FFFF_FFFF_FFF8
            $0.len = 16
        }
        #expect(throws: VirtqueueError.bufferAddressOverflow(head: c.head, address: 0xFFFF_FFFF_FFFF_FFF8, length: 16)) {
            try q.popAvailable()
        }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a device-readable buffer after a device-writable one (§2.7.4.2)")
    func readableAfterWritable() throws {
        var (driver, q) = try makePair()
        let c = try driver.addChain([.readable([1]), .writable(4), .readable([2])])
        #expect(throws: VirtqueueError.readableAfterWritable(head: c.head)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("more than 2^32 - 1 bytes in one chain (§2.7.5.2)")
    func tooManyBytes() throws {
        // 3 GiB of MAP_NORESERVE memory: only the pages touched are allocated.
        let m = try makeGuestMemory(size: 3 << 30)
        let driver = try VirtqueueDriver(memory: m, layout: .packed(size: 8, memoryEnd: 1 << 20))
        var q = try driver.makeQueue()
        let c = try driver.addChain([.readable([1]), .readable([2])])
        for a in c.descriptorAddresses {
            try driver.modifyDescriptor(at: a) {
                $0.addr = 1 << 30
                $0.len = 0x8000_0000  // two of these: exactly 2^32 bytes
            }
        }
        #expect(throws: VirtqueueError.chainTooManyBytes(head: c.head)) { try q.popAvailable() }

        // 2^32 - 1 bytes is the most a chain may describe.
        let d = try driver.addChain([.readable([1]), .readable([2])])
        try driver.modifyDescriptor(at: d.descriptorAddresses[0]) { $0.addr = 1 << 30; $0.len = 0x8000_0000 }
        try driver.modifyDescriptor(at: d.descriptorAddresses[1]) { $0.addr = 1 << 30; $0.len = 0x7FFF_FFFF }
        let chain = try #require(try q.popAvailable())
        #expect(chain.readableByteCount == 0xFFFF_FFFF)
    }
}

@Suite("Virtqueue: hostile indirect descriptors")
struct HostileIndirectTests {
    @Test("INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated")
    func notNegotiated() throws {
        var (driver, q) = try makePair(features: [])
        let c = try driver.addChain([.readable([1])], indirect: true)
        #expect(throws: VirtqueueError.indirectNotNegotiated(head: c.head)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("INDIRECT together with NEXT")
    func indirectWithNext() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1])], indirect: true)
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) {
            $0.flags |= VirtqueueDriver.flagNext
            $0.next = 1
        }
        #expect(throws: VirtqueueError.indirectWithNext(head: c.head)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("an indirect descriptor inside an indirect table (nested)")
    func nested() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1]), .writable(2)], indirect: true)
        // Entry 1 of the table now claims to be another indirect table (a valid one, even).
        try driver.modifyDescriptor(at: c.descriptorAddresses[2]) {
            $0.flags = VirtqueueDriver.flagIndirect
            $0.addr = c.indirectTable?.rawValue ?? 0
            $0.len = 32
        }
        #expect(throws: VirtqueueError.nestedIndirect(head: c.head)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("an indirect length that is not a non-zero multiple of 16", arguments: [UInt32(20), 0, 15, 33])
    func badLength(length: UInt32) throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1]), .readable([2])], indirect: true)
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) { $0.len = length }
        #expect(throws: VirtqueueError.invalidIndirectLength(head: c.head, length: length)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("an indirect table of more than 1024 entries")
    func tooLarge() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1])], indirect: true)
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) { $0.len = 1025 * 16 }
        #expect(throws: VirtqueueError.indirectTableTooLarge(head: c.head, entries: 1025)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("an indirect table outside guest RAM, or overflowing the address space")
    func tableOutsideMemory() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let end = driver.memory.size
        let c = try driver.addChain([.readable([1]), .readable([2])], indirect: true)
        try driver.modifyDescriptor(at: c.descriptorAddresses[0]) { $0.addr = end - 16 }
        #expect(throws: VirtqueueError.indirectTableOutsideMemory(head: c.head, address: end - 16, length: 32)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)

        let d = try driver.addChain([.readable([1]), .readable([2])], indirect: true)
        try driver.modifyDescriptor(at: d.descriptorAddresses[0]) { $0.addr = 0xFFFF_FFFF_FFFF_FFF0 }
        #expect(throws: VirtqueueError.indirectTableOutsideMemory(head: d.head, address: 0xFFFF_FFFF_FFFF_FFF0, length: 32)) {
            try q.popAvailable()
        }
    }

    @Test("a next index beyond the indirect table's length")
    func nextOutOfRangeInTable() throws {
        var (driver, q) = try makePair(size: 8, features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1]), .readable([2]), .writable(1)], indirect: true)
        // Index 3 is inside the queue's table (size 8) but not inside this 3-entry table.
        try driver.modifyDescriptor(at: c.descriptorAddresses[2]) { $0.next = 3 }
        #expect(throws: VirtqueueError.nextIndexOutOfRange(head: c.head, next: 3, tableLength: 3, indirect: true)) {
            try q.popAvailable()
        }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a loop inside an indirect table")
    func loopInTable() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1]), .readable([2]), .readable([3])], indirect: true)
        try driver.makeLoop(c)  // the last entry chains back to entry 0
        #expect(throws: VirtqueueError.chainTooLong(head: c.head, limit: 3, indirect: true)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }

    @Test("a buffer outside RAM inside an indirect table")
    func bufferOutsideInTable() throws {
        var (driver, q) = try makePair(features: [.ringIndirectDesc])
        let c = try driver.addChain([.readable([1]), .writable(4)], indirect: true)
        try driver.modifyDescriptor(at: c.descriptorAddresses[2]) { $0.addr = 1 << 33 }
        #expect(throws: VirtqueueError.bufferOutsideMemory(head: c.head, address: 1 << 33, length: 4)) { try q.popAvailable() }
        try expectUsable(&q, driver, failedHead: c.head)
    }
}

@Suite("Virtqueue: hostile available index and device mistakes")
struct HostileRingTests {
    @Test("avail->idx jumping more than `size` ahead breaks the queue")
    func availIndexJump() throws {
        var (driver, q) = try makePair(size: 8)
        try driver.writeAvailIndexRaw(9)
        let expected = VirtqueueError.availIndexJump(nextAvail: 0, availIndex: 9, size: 8)
        #expect(throws: expected) { try q.popAvailable() }
        #expect(expected.isQueueFatal && expected.head == nil)
        expectBroken(&q)
        // Even a driver that puts idx back cannot revive it: only a reset does.
        try driver.writeAvailIndexRaw(0)
        expectBroken(&q)
        #expect(q.nextAvail == 0)
    }

    @Test("avail->idx moving backwards (a decrement, §2.7.6.1) breaks the queue")
    func availIndexDecrement() throws {
        var (driver, q) = try makePair(size: 8)
        try driver.addChain([.readable([1])])
        try driver.addChain([.readable([2])])
        _ = try #require(try q.popAvailable())
        _ = try #require(try q.popAvailable())
        try driver.writeAvailIndexRaw(1)
        #expect(throws: VirtqueueError.availIndexJump(nextAvail: 2, availIndex: 1, size: 8)) { try q.popAvailable() }
        expectBroken(&q)
    }

    @Test("a jump is judged from the device's position, across the 16-bit wrap")
    func jumpAcrossWrap() throws {
        var (driver, q) = try makePair(size: 4)
        // Run both indexes up to 65534, then offer 4 more (a full ring, legal):
        // avail->idx wraps to 2.
        for _ in 0..<65534 {
            try driver.addChain([.readable([0])])
            let c = try #require(try q.popAvailable())
            try q.addUsed(head: c.headIndex, length: 0)
            _ = try driver.popUsed()
        }
        #expect(q.nextAvail == 65534)
        for _ in 0..<4 { try driver.addChain([.readable([1])]) }
        #expect(driver.availIndex == 2)
        _ = try #require(try q.popAvailable())  // reads idx 2: 4 ahead, fine
        // The device still has 3 known entries to pop, which need no new idx load.
        try driver.writeAvailIndexRaw(3)
        for _ in 0..<3 { _ = try #require(try q.popAvailable()) }
        #expect(q.nextAvail == 2)
        // Now it reads idx again: 3 is 1 ahead of 2, fine (slot 2 holds a stale but valid head).
        _ = try #require(try q.popAvailable())
        #expect(q.nextAvail == 3)
        // 8 is 5 ahead of 3: more than the ring holds.
        try driver.writeAvailIndexRaw(8)
        #expect(throws: VirtqueueError.availIndexJump(nextAvail: 3, availIndex: 8, size: 4)) { try q.popAvailable() }
        expectBroken(&q)
    }

    @Test("addUsed with a head beyond the queue size writes nothing")
    func usedHeadOutOfRange() throws {
        var (driver, q) = try makePair(size: 8)
        try driver.addChain([.readable([1])])
        let c = try #require(try q.popAvailable())
        #expect(throws: VirtqueueError.usedHeadOutOfRange(head: 8, size: 8)) { try q.addUsed(head: 8, length: 1) }
        #expect(try driver.usedIndex() == 0 && q.nextUsed == 0 && q.inFlight == 1)
        try q.addUsed(head: c.headIndex, length: 0)
        #expect(try driver.usedIndex() == 1)
    }

    @Test("addUsed with no chain in flight would overrun the used ring")
    func usedRingOverflow() throws {
        var (driver, q) = try makePair(size: 8)
        #expect(throws: VirtqueueError.usedRingOverflow(head: 0)) { try q.addUsed(head: 0, length: 0) }
        #expect(try driver.usedIndex() == 0 && q.nextUsed == 0)
        try expectUsable(&q, driver, failedHead: nil)
    }

    @Test("error descriptions name the violation")
    func descriptions() {
        #expect(VirtqueueError.availIndexJump(nextAvail: 0, availIndex: 9, size: 8).description
            == "available index moved from 0 to 9, more than the queue size 8")
        #expect(VirtqueueError.chainTooLong(head: 3, limit: 8, indirect: false).description
            == "chain 3: more than 8 descriptors (a loop)")
        #expect(VirtqueueError.misalignedRing(part: .usedRing, address: 0x3002, alignment: 4).description
            == "virtqueue used ring at 0x3002 is not 4-byte aligned")
        #expect(VirtqueueError.bufferOutsideMemory(head: 1, address: 0x10_0000, length: 8).description
            == "chain 1: buffer [0x100000, +0x8) is outside guest RAM")
    }
}
