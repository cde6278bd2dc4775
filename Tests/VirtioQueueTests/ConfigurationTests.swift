// ConfigurationTests.swift: validating a queue's size and layout (virtio 1.2
// §2.7: sizes are powers of 2 up to 32768; §2.7.1 and the alignment table:
// descriptor table 16-byte aligned, 16 * size bytes; available ring 2-byte
// aligned, 6 + 2 * size; used ring 4-byte aligned, 6 + 8 * size).

import Memory
import Testing
import TestSupport
import VirtioQueue

private let memorySize: UInt64 = 1 << 20

private func config(_ size: UInt16, desc: UInt64 = 0x1000, avail: UInt64 = 0x2000, used: UInt64 = 0x3000) -> QueueConfiguration {
    QueueConfiguration(size: size, descriptorTable: GuestAddress(desc), availRing: GuestAddress(avail), usedRing: GuestAddress(used))
}

@Suite("Virtqueue configuration")
struct ConfigurationTests {
    @Test("sizes: powers of 2 from 1 to the device maximum are accepted")
    func validSizes() throws {
        let m = try makeGuestMemory(size: 4 << 20)
        for shift in 0...15 {
            let size = UInt16(1) << UInt16(shift)
            let c = config(size, desc: 0x10_0000, avail: 0x20_0000, used: 0x30_0000)
            let q = try Virtqueue(memory: m, configuration: c, maxSize: 32768, features: [])
            #expect(q.size == size)
            #expect(q.nextAvail == 0 && q.nextUsed == 0 && q.inFlight == 0 && !q.isBroken)
        }
    }

    @Test("sizes: 0, non-powers of 2 and sizes above the maximum are refused")
    func invalidSizes() throws {
        let m = try makeGuestMemory(size: memorySize)
        for size: UInt16 in [0, 3, 6, 100, 255, 0xFFFF] {
            #expect(throws: VirtqueueError.invalidQueueSize(size: size, maximum: 256)) {
                try Virtqueue(memory: m, configuration: config(size), maxSize: 256, features: [])
            }
        }
        #expect(throws: VirtqueueError.invalidQueueSize(size: 512, maximum: 256)) {
            try Virtqueue(memory: m, configuration: config(512), maxSize: 256, features: [])
        }
        // A device maximum above 32768 is capped at the spec's limit.
        #expect(throws: VirtqueueError.invalidQueueSize(size: 0xFFFF, maximum: 32768)) {
            try Virtqueue(memory: m, configuration: config(0xFFFF), maxSize: 0xFFFF, features: [])
        }
    }

    @Test("each part must meet its alignment: 16, 2, 4")
    func alignment() throws {
        let m = try makeGuestMemory(size: memorySize)
        #expect(throws: VirtqueueError.misalignedRing(part: .descriptorTable, address: 0x1008, alignment: 16)) {
            try Virtqueue(memory: m, configuration: config(8, desc: 0x1008), maxSize: 256, features: [])
        }
        #expect(throws: VirtqueueError.misalignedRing(part: .availRing, address: 0x2001, alignment: 2)) {
            try Virtqueue(memory: m, configuration: config(8, avail: 0x2001), maxSize: 256, features: [])
        }
        #expect(throws: VirtqueueError.misalignedRing(part: .usedRing, address: 0x3002, alignment: 4)) {
            try Virtqueue(memory: m, configuration: config(8, used: 0x3002), maxSize: 256, features: [])
        }
        // The minimum alignments themselves are enough (no page alignment needed).
        let q = try Virtqueue(memory: m, configuration: config(8, desc: 0x1010, avail: 0x2002, used: 0x3004), maxSize: 256, features: [])
        #expect(q.configuration.availRing == GuestAddress(0x2002))
    }

    @Test("each part's whole length must be guest RAM, to the byte")
    func partsInsideMemory() throws {
        let m = try makeGuestMemory(size: memorySize)
        let size: UInt16 = 256
        // Ending exactly at the end of RAM is fine...
        let descEnd = memorySize - 16 * 256
        let availEnd = memorySize - (6 + 2 * 256)
        let usedEnd = memorySize - (6 + 8 * 256)
        _ = try Virtqueue(memory: m, configuration: config(size, desc: descEnd), maxSize: 256, features: [])
        _ = try Virtqueue(memory: m, configuration: config(size, avail: availEnd), maxSize: 256, features: [])
        _ = try Virtqueue(memory: m, configuration: config(size, used: usedEnd & ~3), maxSize: 256, features: [])
        // ...one alignment step further is not.
        #expect(throws: VirtqueueError.ringOutsideMemory(part: .descriptorTable, address: descEnd + 16, length: 4096)) {
            try Virtqueue(memory: m, configuration: config(size, desc: descEnd + 16), maxSize: 256, features: [])
        }
        #expect(throws: VirtqueueError.ringOutsideMemory(part: .availRing, address: availEnd + 2, length: 518)) {
            try Virtqueue(memory: m, configuration: config(size, avail: availEnd + 2), maxSize: 256, features: [])
        }
        // usedEnd = 0xFF7FA is not 4-aligned; 0xFF7FC is, and overruns by 2 bytes.
        #expect(throws: VirtqueueError.ringOutsideMemory(part: .usedRing, address: 0xF_F7FC, length: 2054)) {
            try Virtqueue(memory: m, configuration: config(size, used: 0xF_F7FC), maxSize: 256, features: [])
        }
        // Far outside, and at the top of the address space (address + length overflows).
        #expect(throws: VirtqueueError.ringOutsideMemory(part: .descriptorTable, address: 1 << 40, length: 4096)) {
            try Virtqueue(memory: m, configuration: config(size, desc: 1 << 40), maxSize: 256, features: [])
        }
        #expect(throws: VirtqueueError.ringOutsideMemory(part: .usedRing, address: 0xFFFF_FFFF_FFFF_FFF0, length: 2054)) {
            try Virtqueue(memory: m, configuration: config(size, used: 0xFFFF_FFFF_FFFF_FFF0), maxSize: 256, features: [])
        }
    }

    @Test("the part lengths and alignments of the spec's table")
    func partTable() {
        #expect(QueueConfiguration.length(of: .descriptorTable, size: 32768) == 524_288)
        #expect(QueueConfiguration.length(of: .availRing, size: 32768) == 65_542)
        #expect(QueueConfiguration.length(of: .usedRing, size: 32768) == 262_150)
        #expect(QueueConfiguration.alignment(of: .descriptorTable) == 16)
        #expect(QueueConfiguration.alignment(of: .availRing) == 2)
        #expect(QueueConfiguration.alignment(of: .usedRing) == 4)
    }

    @Test("negotiated features select event-idx and indirect descriptors")
    func features() throws {
        let m = try makeGuestMemory(size: memorySize)
        let plain = try Virtqueue(memory: m, configuration: config(8), maxSize: 8, features: [.version1])
        #expect(!plain.eventIndexEnabled && !plain.indirectDescriptorsEnabled)
        let both = try Virtqueue(memory: m, configuration: config(8), maxSize: 8, features: [.version1, .ringEventIdx, .ringIndirectDesc])
        #expect(both.eventIndexEnabled && both.indirectDescriptorsEnabled)
    }
}
