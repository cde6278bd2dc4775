// VirtioMMIOTests.swift: the virtio-mmio transport, version 2 (virtio 1.2
// §4.2), driven register by register as a guest driver would: the
// identification registers, feature negotiation (§2.2, §3.1.1), queue setup
// (§4.2.3.2) and a virtio-blk request path end to end over guest memory,
// interrupts (§4.2.3.4: InterruptStatus, InterruptACK and a level-triggered
// line), and every way a hostile driver can get the registers wrong
// (§4.2.2.2). Register offsets and values are written out from the spec's
// table, not taken from the implementation's constants.

import Devices
import Foundation
import Memory
import Storage
import Synchronization
import Testing
import TestSupport
import VirtioQueue
@testable import Virtio

/// A device model that records what its transport does to it.
final class RecordingVirtioDevice: VirtioDevice, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the transport calls it under its lock; tests
    // read it from their own thread only after the calls returned (or threads joined).
    struct Activation: Equatable {
        var queues: [QueueConfiguration?]
        var features: FeatureSet
    }

    let deviceType = VirtioDeviceType.entropy
    /// Word 0 = 0x2000_0008 (bits 3, 29), word 1 = 0x1 (bit 32).
    let offeredFeatures: FeatureSet = [.version1, .ringEventIdx, FeatureSet(bit: 3)]
    let queueMaxSizes: [UInt16] = [256, 8]
    let configSize = 8
    let config: [UInt8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
    /// Makes `activate` throw.
    var failActivation = false
    /// Signal a used buffer on every notification.
    var signalOnNotify = false

    private(set) var activations: [Activation] = []
    private(set) var notified: [Int] = []
    private(set) var resets = 0
    private(set) var configWrites: [[UInt64]] = []
    private(set) var interrupt: (any InterruptSignal)? = nil

    func readConfig(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, offset + size <= configSize else { return 0 }
        return (0..<size).reduce(UInt64(0)) { $0 | UInt64(config[offset + $1]) << (8 * UInt64($1)) }
    }

    func writeConfig(offset: Int, size: Int, value: UInt64) { configWrites.append([UInt64(offset), UInt64(size), value]) }

    func activate(queues: [Virtqueue?], features: FeatureSet, memory: GuestMemory, interrupt: any InterruptSignal) throws {
        if failActivation { throw VirtqueueError.queueBroken }
        activations.append(Activation(queues: queues.map { $0?.configuration }, features: features))
        self.interrupt = interrupt
    }

    func queueNotified(_ index: Int) {
        notified.append(index)
        if signalOnNotify { interrupt?.signalUsedBuffer(queueIndex: index) }
    }

    func reset() {
        resets += 1
        interrupt = nil
    }
}

/// A recording line that takes a varying while to drive the level, as an
/// ioctl would: a level computed under one lock and driven after it is
/// released would then often land out of order.
final class SlowRecordingLine: InterruptLine {
    let recorder = RecordingInterruptLine()
    private let calls = Atomic<UInt64>(0)

    func setLevel(_ high: Bool) {
        let n = calls.add(1, ordering: .relaxed).newValue
        var spin = UInt64(0)
        for i in 0..<((n &* 2_654_435_761) % 2_000) { spin &+= i }
        if spin == UInt64.max { return }  // keeps the loop from being optimised away
        recorder.setLevel(high)
    }
}

/// What the two threads of the race test share.
final class RaceState: Sendable {
    let ready = Atomic<Int>(0)
    let done = Atomic<Bool>(false)
}

// Status bits (§2.1).
private let acknowledge: UInt64 = 1, driver: UInt64 = 2, driverOK: UInt64 = 4, featuresOK: UInt64 = 8, needsReset: UInt64 = 64

extension VirtioMMIODevice {
    /// A 32-bit register read.
    func r(_ offset: UInt64) -> UInt64 { read(offset: offset, size: 4) }
    /// A 32-bit register write.
    func w(_ offset: UInt64, _ value: UInt64) { write(offset: offset, size: 4, value: value) }

    /// ACKNOWLEDGE, DRIVER, both driver feature words, FEATURES_OK; returns Status as read back.
    @discardableResult
    func negotiate(_ features: FeatureSet) -> UInt64 {
        w(0x070, acknowledge)
        w(0x070, acknowledge | driver)
        w(0x024, 0); w(0x020, features.rawValue & 0xFFFF_FFFF)
        w(0x024, 1); w(0x020, features.rawValue >> 32)
        w(0x070, acknowledge | driver | featuresOK)
        return r(0x070)
    }

    /// §4.2.3.2: select, size (unless nil), the three areas (low and high words), ready.
    func setUpQueue(_ index: UInt64, size: UInt64?, desc: UInt64, driver: UInt64, device: UInt64) {
        w(0x030, index)
        if let size { w(0x038, size) }
        w(0x080, desc & 0xFFFF_FFFF); w(0x084, desc >> 32)
        w(0x090, driver & 0xFFFF_FFFF); w(0x094, driver >> 32)
        w(0x0A0, device & 0xFFFF_FFFF); w(0x0A4, device >> 32)
        w(0x044, 1)
    }
}

/// A transport over a RecordingVirtioDevice in 1 MiB of guest RAM.
struct RecordingRig {
    let memory: GuestMemory
    let device = RecordingVirtioDevice()
    let line: RecordingInterruptLine
    let transport: VirtioMMIODevice

    init(line slow: SlowRecordingLine? = nil) throws {
        memory = try makeGuestMemory(size: 1 << 20)
        line = slow?.recorder ?? RecordingInterruptLine()
        let driven: any InterruptLine
        if let slow { driven = slow } else { driven = line }
        transport = VirtioMMIODevice(name: "virtio-mmio test", device: device, memory: memory, interrupt: driven)
    }

    static let queue0 = QueueConfiguration(size: 64, descriptorTable: GuestAddress(0x4000), availRing: GuestAddress(0x5000), usedRing: GuestAddress(0x6000))
    static let queue1 = QueueConfiguration(size: 4, descriptorTable: GuestAddress(0x8000), availRing: GuestAddress(0x8100), usedRing: GuestAddress(0x8200))

    /// Negotiates every offered feature, sets up queue 0 (and queue 1), DRIVER_OK.
    func start(queue1: Bool = false) {
        transport.negotiate(device.offeredFeatures)
        let q = Self.queue0
        transport.setUpQueue(0, size: UInt64(q.size), desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        if queue1 {
            let q1 = Self.queue1
            transport.setUpQueue(1, size: UInt64(q1.size), desc: q1.descriptorTable.rawValue, driver: q1.availRing.rawValue, device: q1.usedRing.rawValue)
        }
        transport.w(0x070, acknowledge | driver | featuresOK | driverOK)
    }
}

/// A transport over a VirtioBlock on a 64-sector in-memory disk, and a driver-side queue.
struct BlockMMIORig {
    let backend: MemoryBackend
    let device: VirtioBlock
    let line = RecordingInterruptLine()
    let transport: VirtioMMIODevice
    let driver: VirtqueueDriver
    /// VERSION_1, SEG_MAX, BLK_SIZE, FLUSH: no EVENT_IDX, so every completion interrupts.
    static let features: FeatureSet = [.version1, FeatureSet(bit: 2), FeatureSet(bit: 6), FeatureSet(bit: 9)]

    init() throws {
        let pattern = (0..<(64 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512 &* 7 &+ $0) }
        backend = MemoryBackend(bytes: pattern)
        device = VirtioBlock(backend: backend, serial: "SKVM-MMIO-1")
        let memory = try makeGuestMemory(size: 1 << 20)
        transport = VirtioMMIODevice(name: "virtio-mmio blk", device: device, memory: memory, interrupt: line)
        driver = try VirtqueueDriver(memory: memory, layout: .init(
            size: 16, descriptorTable: GuestAddress(0x4000), availRing: GuestAddress(0x5000), usedRing: GuestAddress(0x6000),
            dataStart: GuestAddress(0x1_0000), dataEnd: GuestAddress(0x10_0000)))
    }

    func sectorBytes(_ sector: Int, count: Int = 1) -> [UInt8] { Array(backend.bytes[(sector * 512)..<((sector + count) * 512)]) }
}

@Suite("virtio-mmio")
struct VirtioMMIOTests {
    @Test("identification: MagicValue, Version 2, DeviceID, VendorID; QueueNumMax per queue, 0 beyond; nothing pending")
    func identification() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        #expect(t.r(0x000) == 0x7472_6976)
        #expect(t.r(0x004) == 2)
        #expect(t.r(0x008) == 4)            // entropy
        #expect(t.r(0x00C) == 0x1AF4)
        #expect(t.r(0x034) == 256)          // QueueSel 0 after reset
        t.w(0x030, 1)
        #expect(t.r(0x034) == 8)
        t.w(0x030, 2)
        #expect(t.r(0x034) == 0)            // no queue 2: "not available"
        t.w(0x030, 0xFFFF_FFFF)
        #expect(t.r(0x034) == 0)
        #expect(t.r(0x044) == 0)
        #expect(t.r(0x070) == 0)
        #expect(t.r(0x060) == 0)
        #expect(t.r(0x0FC) == 0)
        // No shared memory regions: length and base read as -1.
        for offset: UInt64 in [0x0B0, 0x0B4, 0x0B8, 0x0BC] { #expect(t.r(offset) == 0xFFFF_FFFF) }
        let block = try BlockMMIORig()
        #expect(block.transport.r(0x008) == 2)
        #expect(block.transport.r(0x034) == 256)
        #expect(rig.line.levels == [])
    }

    @Test("feature words through DeviceFeaturesSel; FEATURES_OK refused without VERSION_1 or with unoffered bits; words fixed after FEATURES_OK")
    func featureNegotiation() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        #expect(t.r(0x010) == 0x2000_0008)   // select 0 after reset
        t.w(0x014, 1)
        #expect(t.r(0x010) == 0x1)
        t.w(0x014, 2)
        #expect(t.r(0x010) == 0)
        t.w(0x014, 0xFFFF_FFFF)
        #expect(t.r(0x010) == 0)

        // Without VERSION_1: FEATURES_OK does not stick.
        #expect(t.negotiate([FeatureSet(bit: 3)]) == acknowledge | driver)
        // VERSION_1 plus an unoffered high bit (34, RING_PACKED), then an unoffered low bit (0).
        #expect(t.negotiate([.version1, .ringPacked]) == acknowledge | driver)
        #expect(t.negotiate([.version1, FeatureSet(bit: 0)]) == acknowledge | driver)
        // Select 2 names no word: the write changes nothing.
        t.w(0x024, 2); t.w(0x020, 0xFFFF_FFFF)
        #expect(t.negotiate([.version1, .ringEventIdx]) == acknowledge | driver | featuresOK)
        // After FEATURES_OK the words are fixed.
        t.w(0x024, 0); t.w(0x020, 0xFFFF_FFFF)
        t.w(0x024, 1); t.w(0x020, 0)
        let q = RecordingRig.queue0
        t.setUpQueue(0, size: 64, desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        t.w(0x070, acknowledge | driver | featuresOK | driverOK)
        #expect(t.r(0x070) == 0x0F)
        #expect(rig.device.activations == [.init(queues: [q, nil], features: [.version1, .ringEventIdx])])
    }

    @Test("DRIVER_OK without FEATURES_OK is dropped and starts nothing")
    func driverOKWithoutFeatures() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        let q = RecordingRig.queue0
        t.setUpQueue(0, size: 64, desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        t.w(0x070, acknowledge | driver | driverOK)
        #expect(t.r(0x070) == acknowledge | driver)
        #expect(rig.device.activations.isEmpty)
        t.w(0x050, 0)
        #expect(rig.device.notified == [])
    }

    @Test("a virtio-blk queue laid out at register-written addresses: IN and OUT, used ring, InterruptStatus bit 0, the line, ACK")
    func blockPath() throws {
        let rig = try BlockMMIORig()
        let t = rig.transport
        #expect(t.negotiate(BlockMMIORig.features) == 0x0B)
        t.setUpQueue(0, size: 16, desc: 0x4000, driver: 0x5000, device: 0x6000)
        #expect(t.r(0x044) == 1)
        t.w(0x070, 0x0F)
        #expect(t.r(0x070) == 0x0F)

        // IN: sectors 3-5 into three writable buffers, then the status byte.
        let read = try rig.driver.addChain([.readable(BlockRig.header(0, sector: 3)), .writable(512), .writable(1024), .writable(1)])
        #expect(rig.line.levels == [])
        t.w(0x050, 0)                                   // QueueNotify, queue 0
        let used = try #require(try rig.driver.popUsed())
        #expect(used.element == .init(id: UInt32(read.head), len: 1537))
        let data = try rig.driver.readWritten(read, count: 1537)
        #expect(Array(data.prefix(1536)) == rig.sectorBytes(3, count: 3))
        #expect(data.last == 0)                         // VIRTIO_BLK_S_OK
        #expect(t.r(0x060) == 1)                        // used buffer notification
        #expect(rig.line.levels == [true])

        // OUT, notified through the ioeventfd entry point, before the driver ACKed:
        // the bit stays set and the line is not driven again.
        let bytes = (0..<1024).map { UInt8(truncatingIfNeeded: 3 &* $0 &+ 1) }
        let write = try rig.driver.addChain([.readable(BlockRig.header(1, sector: 40)), .readable(bytes), .writable(1)])
        t.notify(queue: 0)
        let used2 = try #require(try rig.driver.popUsed())
        #expect(used2.element == .init(id: UInt32(write.head), len: 1))
        #expect(try rig.driver.readWritten(write, count: 1) == [0])
        #expect(rig.sectorBytes(40, count: 2) == bytes)
        #expect(t.r(0x060) == 1)
        #expect(rig.line.levels == [true])

        // ACK of an unset bit changes nothing; ACK of bit 0 drops the line.
        t.w(0x064, 2)
        #expect(t.r(0x060) == 1)
        #expect(rig.line.levels == [true])
        t.w(0x064, 1)
        #expect(t.r(0x060) == 0)
        #expect(rig.line.levels == [true, false])

        // The next completion raises it again.
        _ = try rig.driver.addChain([.readable(BlockRig.header(4, sector: 0)), .writable(1)])
        t.w(0x050, 0)
        #expect(rig.backend.flushes == 1)
        #expect(t.r(0x060) == 1)
        #expect(rig.line.levels == [true, false, true])
        #expect(rig.device.failedRequests == 0)
    }

    @Test("QueueNotify reaches the device only after DRIVER_OK, for an enabled queue, with a 32-bit write of its index")
    func notifications() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        t.w(0x050, 0)
        t.notify(queue: 0)
        #expect(rig.device.notified == [])              // not started yet
        rig.start()
        t.w(0x050, 0)
        t.notify(queue: 0)
        t.w(0x050, 1)                                   // queue 1 was never made ready
        t.notify(queue: 1)
        t.w(0x050, 2)                                   // no such queue
        t.notify(queue: 2)
        t.notify(queue: -1)
        t.w(0x050, 0x0001_0000)                         // no VIRTIO_F_NOTIFICATION_DATA: not queue 0
        t.write(offset: 0x050, size: 2, value: 0)       // wrong width
        t.write(offset: 0x050, size: 1, value: 0)
        #expect(rig.device.notified == [0, 0])
        #expect(rig.line.levels == [])
    }

    @Test("hostile QueueNum: zero, not a power of two, above QueueNumMax, or only a power of two once truncated to 16 bits")
    func queueSize() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        t.negotiate(rig.device.offeredFeatures)
        let q = RecordingRig.queue0
        t.w(0x030, 0)
        for bad: UInt64 in [0, 3, 96, 384, 512, 0x0002_0000, 0x0001_0080, 0xFFFF_FFFF] { t.w(0x038, bad) }
        t.setUpQueue(0, size: nil, desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        t.w(0x030, 1)
        t.w(0x038, 16)                                  // above queue 1's maximum of 8
        t.w(0x038, 4)
        t.w(0x038, 6)
        let q1 = RecordingRig.queue1
        t.setUpQueue(1, size: nil, desc: q1.descriptorTable.rawValue, driver: q1.availRing.rawValue, device: q1.usedRing.rawValue)
        t.w(0x030, 2)                                   // no queue 2: nothing to size or enable
        t.w(0x038, 4)
        t.w(0x044, 1)
        #expect(t.r(0x044) == 0)
        t.w(0x070, 0x0F)
        #expect(t.r(0x070) == 0x0F)
        var full = q
        full.size = 256                                 // every bad write ignored: still QueueNumMax
        #expect(rig.device.activations == [.init(queues: [full, q1], features: rig.device.offeredFeatures)])
    }

    @Test("a queue's registers are frozen once QueueReady is 1; QueueReady 0 releases it before DRIVER_OK only")
    func frozenQueue() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        t.negotiate(rig.device.offeredFeatures)
        let q = RecordingRig.queue0
        t.setUpQueue(0, size: 64, desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        for (offset, value): (UInt64, UInt64) in [(0x038, 128), (0x080, 0xDEAD_0000), (0x084, 1), (0x090, 0x7000), (0x094, 2), (0x0A0, 0x9000), (0x0A4, 3)] {
            t.w(offset, value)
        }
        #expect(t.r(0x044) == 1)
        // Queue 1: ready, given up (0), rewritten, left not ready: the device never sees it.
        t.setUpQueue(1, size: 4, desc: 0x8000, driver: 0x8100, device: 0x8200)
        t.w(0x044, 0)
        #expect(t.r(0x044) == 0)
        t.w(0x080, 0xA000)
        t.w(0x044, 2)                                   // neither 0 nor 1: ignored
        #expect(t.r(0x044) == 0)
        t.w(0x070, 0x0F)
        #expect(rig.device.activations == [.init(queues: [q, nil], features: rig.device.offeredFeatures)])
        // After DRIVER_OK the device owns queue 0: QueueReady 0 is ignored, notifications still arrive.
        t.w(0x030, 0)
        t.w(0x044, 0)
        #expect(t.r(0x044) == 1)
        t.w(0x050, 0)
        #expect(rig.device.notified == [0])
    }

    @Test("rings outside guest RAM (a high word written), or a device that cannot start: DEVICE_NEEDS_RESET at DRIVER_OK, a config interrupt")
    func ringsOutsideRAM() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        t.negotiate(rig.device.offeredFeatures)
        t.setUpQueue(0, size: 64, desc: 0x1_0000_4000, driver: 0x5000, device: 0x6000)
        t.w(0x070, 0x0F)
        #expect(t.r(0x070) == 0x0F | needsReset)
        #expect(rig.device.activations.isEmpty)
        #expect(t.r(0x060) == 2)                        // configuration change
        #expect(t.r(0x0FC) == 1)
        #expect(rig.line.levels == [true])
        t.w(0x050, 0)
        #expect(rig.device.notified == [])
        t.w(0x064, 2)
        #expect(rig.line.levels == [true, false])
        #expect(t.r(0x070) == 0x0F | needsReset)        // still needs a reset

        t.w(0x070, 0)
        #expect(t.r(0x070) == 0)
        #expect(t.r(0x0FC) == 0)
        #expect(rig.device.resets == 1)

        // A device whose activate throws.
        rig.device.failActivation = true
        rig.start()
        #expect(t.r(0x070) == 0x0F | needsReset)
        #expect(t.r(0x060) == 2)
        #expect(rig.line.levels == [true, false, true])
    }

    @Test("a device reporting DEVICE_NEEDS_RESET or a configuration change: Status, InterruptStatus bit 1, ConfigGeneration")
    func deviceSignals() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        rig.start()
        let signal = try #require(rig.device.interrupt)
        signal.signalConfigChange()
        #expect(t.r(0x060) == 2)
        #expect(t.r(0x0FC) == 1)
        #expect(t.r(0x070) == 0x0F)
        signal.signalUsedBuffer(queueIndex: 0)
        #expect(t.r(0x060) == 3)
        t.w(0x064, 3)
        #expect(t.r(0x060) == 0)
        signal.signalNeedsReset()
        #expect(t.r(0x070) == 0x0F | needsReset)
        #expect(t.r(0x060) == 2)
        #expect(t.r(0x0FC) == 2)
        #expect(rig.line.levels == [true, false, true])
        t.w(0x070, 0)
        #expect(t.r(0x070) == 0)
        #expect(rig.line.levels == [true, false, true, false])
    }

    @Test("8-, 16- and 64-bit or unaligned accesses to the 32-bit registers are ignored; reads return 0")
    func wrongWidths() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        for size in [1, 2, 8] { #expect(t.read(offset: 0x000, size: size) == 0) }
        #expect(t.read(offset: 0x001, size: 4) == 0)
        #expect(t.read(offset: 0x002, size: 4) == 0)
        #expect(t.read(offset: 0x000, size: 3) == 0)
        t.write(offset: 0x070, size: 1, value: acknowledge)
        t.write(offset: 0x070, size: 2, value: acknowledge)
        t.write(offset: 0x070, size: 8, value: acknowledge)
        t.write(offset: 0x071, size: 4, value: acknowledge)
        #expect(t.r(0x070) == 0)
        t.w(0x030, 1)
        t.write(offset: 0x030, size: 1, value: 0)
        t.write(offset: 0x030, size: 2, value: 0)
        #expect(t.r(0x034) == 8)                        // still queue 1
        #expect(t.read(offset: 0x034, size: 2) == 0)
        t.w(0x014, 1)
        t.write(offset: 0x014, size: 2, value: 0)
        #expect(t.r(0x010) == 1)                        // still word 1

        rig.start()
        rig.device.interrupt?.signalUsedBuffer(queueIndex: 0)
        t.write(offset: 0x064, size: 1, value: 1)        // ACK of the wrong width
        t.write(offset: 0x064, size: 2, value: 1)
        #expect(t.read(offset: 0x060, size: 1) == 0)
        #expect(t.r(0x060) == 1)
        #expect(rig.line.isHigh)
        t.write(offset: 0x070, size: 1, value: 0)        // a byte-wide "reset"
        #expect(t.r(0x070) == 0x0F)
        #expect(rig.device.resets == 0)
    }

    @Test("Status with reserved bits is ignored (0x100 is not a reset); read-only and legacy registers ignore writes")
    func readOnlyAndReserved() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        t.w(0x070, acknowledge | driver)
        t.w(0x070, 0x100)
        t.w(0x070, 0x103)
        #expect(t.r(0x070) == 3)
        #expect(rig.device.resets == 0)
        for offset: UInt64 in [0x000, 0x004, 0x008, 0x00C, 0x010, 0x034, 0x060, 0x0B0, 0x0FC] { t.w(offset, 0x55) }
        #expect(t.r(0x000) == 0x7472_6976)
        #expect(t.r(0x004) == 2)
        #expect(t.r(0x008) == 4)
        #expect(t.r(0x010) == 0x2000_0008)
        #expect(t.r(0x034) == 256)
        #expect(t.r(0x0FC) == 0)
        // Legacy (version 1) GuestPageSize, QueueAlign, QueuePFN; QueueReset; reserved offsets.
        for offset: UInt64 in [0x028, 0x03C, 0x040, 0x0C0, 0x0F8] {
            t.w(offset, 1)
            #expect(t.r(offset) == 0)
        }
        // Write-only registers read as 0.
        t.w(0x030, 1)
        t.w(0x038, 4)
        for offset: UInt64 in [0x014, 0x020, 0x024, 0x030, 0x038, 0x050, 0x064, 0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4, 0x0AC] {
            #expect(t.r(offset) == 0)
        }
        #expect(rig.line.levels == [])
    }

    @Test("offsets past the 0x200-byte window read 0 and ignore writes")
    func outOfWindow() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        for offset: UInt64 in [0x200, 0x204, 0x270, 0xFFC, 0x1000, UInt64.max - 3, UInt64.max] {
            #expect(t.read(offset: offset, size: 4) == 0)
            #expect(t.read(offset: offset, size: 1) == 0)
        }
        t.w(0x270, acknowledge)                          // Status + 0x200
        t.w(0x200 + 0x100, 1)                           // config + 0x200
        #expect(t.r(0x070) == 0)
        #expect(rig.device.configWrites.isEmpty)
        rig.start()
        t.w(0x250, 0)                                   // QueueNotify + 0x200
        t.w(0x1070, 0)                                  // Status + 0x1000: not a reset
        #expect(rig.device.notified == [])
        #expect(t.r(0x070) == 0x0F)
    }

    @Test("the configuration space at 0x100: 8-, 16- and 32-bit reads and writes reach the device; 64-bit ones do not")
    func configSpace() throws {
        let block = try BlockMMIORig()
        let b = block.transport
        #expect(b.read(offset: 0x100, size: 4) == 64)   // capacity, low half
        #expect(b.read(offset: 0x104, size: 4) == 0)    // capacity, high half
        #expect(b.read(offset: 0x100, size: 2) == 64)
        #expect(b.read(offset: 0x100, size: 1) == 64)
        #expect(b.read(offset: 0x100, size: 8) == 0)    // 64-bit accesses: two 32-bit halves instead (§4.2.2.2)
        #expect(b.read(offset: 0x10C, size: 4) == 254)  // seg_max
        #expect(b.read(offset: 0x114, size: 4) == 512)  // blk_size
        #expect(b.read(offset: 0x122, size: 2) == 1)    // num_queues
        #expect(b.read(offset: 0x138, size: 1) == 1)    // write_zeroes_may_unmap
        #expect(b.read(offset: 0x13C, size: 4) == 0)    // past the 60 bytes
        #expect(b.read(offset: 0x1FC, size: 4) == 0)
        #expect(b.read(offset: 0x100, size: 3) == 0)

        let rig = try RecordingRig()
        let t = rig.transport
        #expect(t.read(offset: 0x100, size: 4) == 0x4433_2211)
        #expect(t.read(offset: 0x101, size: 2) == 0x3322)
        #expect(t.read(offset: 0x107, size: 1) == 0x88)
        #expect(t.read(offset: 0x104, size: 4) == 0x8877_6655)
        t.write(offset: 0x102, size: 2, value: 0xBEEF)
        t.write(offset: 0x107, size: 1, value: 0x5A)
        t.write(offset: 0x104, size: 4, value: 0x0102_0304)
        t.write(offset: 0x100, size: 8, value: 1)
        #expect(rig.device.configWrites == [[2, 2, 0xBEEF], [7, 1, 0x5A], [4, 4, 0x0102_0304]])
        #expect(t.r(0x0FC) == 0)                        // reading or writing it is no configuration change
    }

    @Test("Status 0 resets everything: device, status, features, selects, queue sizes and readiness, InterruptStatus, the line, ConfigGeneration")
    func reset() throws {
        let rig = try RecordingRig()
        let t = rig.transport
        rig.start(queue1: true)
        let signal = try #require(rig.device.interrupt)
        signal.signalConfigChange()
        signal.signalUsedBuffer(queueIndex: 1)
        t.w(0x014, 1)
        t.w(0x030, 1)
        #expect(t.r(0x060) == 3)
        #expect(t.r(0x0FC) == 1)
        #expect(rig.line.levels == [true])

        t.w(0x070, 0)
        #expect(rig.device.resets == 1)
        #expect(t.r(0x070) == 0)
        #expect(t.r(0x060) == 0)
        #expect(t.r(0x0FC) == 0)
        #expect(rig.line.levels == [true, false])
        #expect(t.r(0x010) == 0x2000_0008)              // DeviceFeaturesSel back to 0
        #expect(t.r(0x034) == 256)                      // QueueSel back to 0
        #expect(t.r(0x044) == 0)
        t.w(0x030, 1)
        #expect(t.r(0x044) == 0)
        t.w(0x050, 0)
        #expect(rig.device.notified == [])

        // The driver's features are gone: FEATURES_OK without writing them again is refused.
        t.w(0x070, acknowledge | driver | featuresOK)
        #expect(t.r(0x070) == acknowledge | driver)
        // Queue sizes are back at QueueNumMax: set up without QueueNum, queue 0 is 256 entries.
        t.negotiate(rig.device.offeredFeatures)
        let q = RecordingRig.queue0
        t.setUpQueue(0, size: nil, desc: q.descriptorTable.rawValue, driver: q.availRing.rawValue, device: q.usedRing.rawValue)
        t.w(0x070, 0x0F)
        var full = q
        full.size = 256
        #expect(rig.device.activations.last == .init(queues: [full, nil], features: rig.device.offeredFeatures))
        #expect(rig.device.activations.count == 2)
    }

    @Test("used buffers from the I/O thread racing the driver's ACKs on a vCPU thread: the line follows InterruptStatus exactly")
    func concurrentSignalsAndACKs() throws {
        let rig = try RecordingRig(line: SlowRecordingLine())
        rig.device.signalOnNotify = true
        rig.start()
        let t = rig.transport
        let shared = RaceState()
        let acks = 2_000
        let finished = DispatchGroup()
        func spawn(_ body: @escaping @Sendable () -> Void) {
            finished.enter()
            Thread.detachNewThread {
                // Both sides start together.
                shared.ready.add(1, ordering: .acquiringAndReleasing)
                while shared.ready.load(ordering: .acquiring) < 2 {}
                body()
                finished.leave()
            }
        }
        spawn {  // the I/O thread: ioeventfd notifications, each completing a buffer
            while !shared.done.load(ordering: .acquiring) { t.notify(queue: 0) }
        }
        spawn {  // the guest's handler: read InterruptStatus, ACK what it saw, 2000 times
            var handled = 0
            while handled < acks {
                let pending = t.r(0x060)
                if pending != 0 {
                    t.w(0x064, pending)
                    handled += 1
                }
            }
            shared.done.store(true, ordering: .releasing)
        }
        finished.wait()
        let levels = rig.line.levels
        #expect(levels.first == true)
        // Each ACK of a pending event dropped the line once; each raise came after a drop.
        #expect(levels.filter { !$0 }.count == acks)
        #expect(levels.count == 2 * acks || levels.count == 2 * acks + 1)
        // Driven only on a change, in the order of the changes: strictly alternating.
        #expect(zip(levels, levels.dropFirst()).allSatisfy { $0 != $1 })
        #expect(rig.line.isHigh == (t.r(0x060) != 0))
        t.w(0x064, 3)
        #expect(t.r(0x060) == 0)
        #expect(!rig.line.isHigh)
    }
}
