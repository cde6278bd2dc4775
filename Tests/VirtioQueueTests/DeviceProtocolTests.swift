// DeviceProtocolTests.swift: a toy device written against the VirtioDevice
// and InterruptSignal protocols (virtio 1.2 §2, §3.1), showing the calls a
// device makes on its queue: pop until nil, read the request, write the
// response, addUsed, then one needsNotification per batch; and, on a
// malformed chain, DEVICE_NEEDS_RESET plus a configuration change
// notification (§2.1.2).

import Memory
import Testing
import TestSupport
import VirtioQueue

/// An echo device: each chain's readable bytes are copied to its writable
/// part. Its 4-byte configuration space counts the requests served.
private final class EchoDevice: VirtioDevice {
    let deviceType = VirtioDeviceType(rawValue: 0x7E57)
    let offeredFeatures: FeatureSet = [.version1, .ringEventIdx, .ringIndirectDesc]
    let queueMaxSizes: [UInt16] = [16]
    let configSize = 4

    private(set) var queue: Virtqueue?
    private(set) var interrupt: (any InterruptSignal)?
    private(set) var served: UInt32 = 0
    private(set) var needsReset = false

    func readConfig(offset: Int, size: Int) -> UInt64 {
        (UInt64(served) >> (8 * UInt64(offset))) & (size == 8 ? ~0 : (1 << (8 * UInt64(size))) - 1)
    }

    func writeConfig(offset: Int, size: Int, value: UInt64) {}  // read-only

    func activate(queues: [Virtqueue?], features: FeatureSet, memory: GuestMemory, interrupt: any InterruptSignal) throws {
        guard let q = queues.first ?? nil else { throw VirtqueueError.queueBroken }
        queue = q
        self.interrupt = interrupt
    }

    func queueNotified(_ index: Int) {}

    func reset() {
        queue = nil
        interrupt = nil
        served = 0
        needsReset = false
    }

    /// What the I/O thread runs when queue 0 is notified.
    func processQueue() {
        guard var q = queue, !needsReset else { return }
        defer { queue = q }
        do {
            while let chain = try q.popAvailable() {
                let request = try chain.readReadable(maxCount: chain.readableByteCount)
                let n = try chain.writeWritable(request)
                try q.addUsed(head: chain.headIndex, length: UInt32(n))
                served += 1
            }
        } catch {
            needsReset = true
            interrupt?.signalConfigChange()
        }
        if q.needsNotification() { interrupt?.signalUsedBuffer(queueIndex: 0) }
    }
}

@Suite("VirtioDevice protocol: a toy device end to end")
struct DeviceProtocolTests {
    @Test("requests are echoed, one interrupt per batch, the config space counts them")
    func echo() throws {
        let m = try makeGuestMemory(size: 1 << 20)
        let driver = try VirtqueueDriver(memory: m, size: 16)
        let device = EchoDevice()
        let irq = RecordingInterruptSignal()
        let features = device.offeredFeatures
        try device.activate(queues: [try driver.makeQueue(features: features, maxSize: device.queueMaxSizes[0])], features: features, memory: m, interrupt: irq)

        let a = try driver.addChain([.readable([1, 2, 3]), .writable(8)])
        let b = try driver.addChain([.readable([4]), .readable([5]), .writable(1), .writable(1)], indirect: true)
        device.processQueue()
        #expect(irq.events == [.usedBuffer(queueIndex: 0)])
        let first = try #require(try driver.popUsed())
        let second = try #require(try driver.popUsed())
        #expect(first.element == .init(id: UInt32(a.head), len: 3))
        #expect(second.element == .init(id: UInt32(b.head), len: 2))
        #expect(try driver.readWritten(a, count: 3) == [1, 2, 3])
        #expect(try driver.readWritten(b, count: 2) == [4, 5])
        #expect(device.readConfig(offset: 0, size: 4) == 2)
        #expect(device.readConfig(offset: 1, size: 1) == 0)

        // With EVENT_IDX and used_event still 0, the next batch does not interrupt.
        try driver.addChain([.readable([6]), .writable(1)])
        irq.clear()
        device.processQueue()
        #expect(irq.events.isEmpty)
        #expect(device.served == 3)
    }

    @Test("a malformed chain: DEVICE_NEEDS_RESET and a configuration change notification")
    func malformed() throws {
        let m = try makeGuestMemory(size: 1 << 20)
        let driver = try VirtqueueDriver(memory: m, size: 16)
        let device = EchoDevice()
        let irq = RecordingInterruptSignal()
        try device.activate(queues: [try driver.makeQueue(features: device.offeredFeatures)], features: device.offeredFeatures, memory: m, interrupt: irq)
        try driver.addChain([.readable([1]), .writable(1)])
        let bad = try driver.addChain([.writable(1), .readable([2])])
        device.processQueue()
        #expect(device.needsReset)
        #expect(device.served == 1)
        // The good chain was returned (and notified); the bad head was not.
        #expect(irq.events == [.configChange, .usedBuffer(queueIndex: 0)])
        #expect(try driver.popUsed()?.element.id == 0)
        #expect(try driver.popUsed() == nil)
        #expect(driver.outstanding.keys.contains(bad.head))
        device.reset()
        #expect(device.queue == nil && !device.needsReset)
    }
}
