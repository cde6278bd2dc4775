// BlockTests.swift: the virtio-blk device (virtio 1.2 §5.2) driven by real
// request chains in guest memory, against an in-memory disk: every request
// type, and every way a guest can get a request wrong.

import Foundation
import Memory
import Synchronization
import Storage
import Testing
import TestSupport
import VirtioQueue
@testable import Virtio

/// A device, its disk, and a driver-side queue to submit requests with.
struct BlockRig {
    let backend: MemoryBackend
    let device: VirtioBlock
    let driver: VirtqueueDriver
    let interrupt = RecordingInterruptSignal()
    static let sectors = 64

    init(readOnly: Bool = false, failing: Bool = false, features: FeatureSet? = nil) throws {
        let pattern = (0..<(Self.sectors * 512)).map { UInt8(truncatingIfNeeded: $0 / 512 &* 7 &+ $0) }
        backend = MemoryBackend(bytes: pattern, readOnly: readOnly, failing: failing)
        device = VirtioBlock(backend: backend, serial: "SKVM-TEST-1")
        let memory = try makeGuestMemory(size: 1 << 20)
        driver = try VirtqueueDriver(memory: memory, size: 16)
        let negotiated = features ?? device.offeredFeatures
        try device.activate(queues: [try driver.makeQueue(features: negotiated)], features: negotiated, memory: memory, interrupt: interrupt)
    }

    static func header(_ type: UInt32, sector: UInt64) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: type >> (8 * UInt32($0))) } + [0, 0, 0, 0]
            + (0..<8).map { UInt8(truncatingIfNeeded: sector >> (8 * UInt64($0))) }
    }

    /// Submits `segments`, lets the device run, returns (used length, status, data written before the status).
    func submit(_ segments: [VirtqueueDriver.Segment]) throws -> (length: UInt32, status: UInt8?, data: [UInt8]) {
        let chain = try driver.addChain(segments)
        device.queueNotified(0)
        let used = try #require(try driver.popUsed())
        #expect(used.element.id == UInt32(chain.head))
        let writable = chain.buffers.filter(\.writable).reduce(0) { $0 + Int($1.length) }
        let written = try driver.readWritten(chain, count: writable)
        return (used.element.len, written.last, Array(written.dropLast()))
    }

    func sectorBytes(_ sector: Int, count: Int = 1) -> [UInt8] { Array(backend.bytes[(sector * 512)..<((sector + count) * 512)]) }
}

@Suite("virtio-blk")
struct BlockTests {
    @Test("IN reads sectors into the guest's buffers, split over several descriptors")
    func read() throws {
        let rig = try BlockRig()
        let r = try rig.submit([.readable(BlockRig.header(0, sector: 3)), .writable(512), .writable(1024), .writable(1)])
        #expect(r.status == 0)
        #expect(r.length == 1537)
        #expect(r.data == rig.sectorBytes(3, count: 3))
        #expect(rig.interrupt.events == [.usedBuffer(queueIndex: 0)])
    }

    @Test("OUT writes the guest's data to the disk")
    func write() throws {
        let rig = try BlockRig()
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: 255 - $0) }
        let r = try rig.submit([.readable(BlockRig.header(1, sector: 10)), .readable(Array(data[..<512])), .readable(Array(data[512...])), .writable(1)])
        #expect(r.status == 0)
        #expect(r.length == 1)
        #expect(rig.sectorBytes(10, count: 2) == data)
        #expect(rig.sectorBytes(12) != data[..<512].map { $0 })
    }

    @Test("with EVENT_IDX, after draining the device publishes avail_event so the driver notifies again (Linux relies on it)")
    func eventIndex() throws {
        let rig = try BlockRig()  // negotiates everything offered, EVENT_IDX included
        #expect(rig.device.offeredFeatures.contains(.ringEventIdx))
        for round in 1...3 {
            let r = try rig.submit([.readable(BlockRig.header(0, sector: UInt64(round))), .writable(512), .writable(1)])
            #expect(r.status == 0)
            // avail_event (after the used ring) names the next available index: the driver's next add notifies.
            #expect(try rig.driver.availEvent() == UInt16(round), "round \(round)")
        }
    }

    @Test("FLUSH flushes the backend; GET_ID answers the serial, zero-padded to 20 bytes")
    func flushAndID() throws {
        let rig = try BlockRig()
        #expect(try rig.submit([.readable(BlockRig.header(4, sector: 0)), .writable(1)]).status == 0)
        #expect(rig.backend.flushes == 1)
        let id = try rig.submit([.readable(BlockRig.header(8, sector: 0)), .writable(20), .writable(1)])
        #expect(id.status == 0)
        #expect(id.data == Array("SKVM-TEST-1".utf8) + [UInt8](repeating: 0, count: 9))
    }

    @Test("DISCARD and WRITE_ZEROES take one segment; the range reads back as zeros")
    func discardAndWriteZeroes() throws {
        let rig = try BlockRig()
        func segment(_ sector: UInt64, _ count: UInt32, _ flags: UInt32) -> [UInt8] {
            (0..<8).map { UInt8(truncatingIfNeeded: sector >> (8 * UInt64($0))) } + (0..<4).map { UInt8(truncatingIfNeeded: count >> (8 * UInt32($0))) }
                + (0..<4).map { UInt8(truncatingIfNeeded: flags >> (8 * UInt32($0))) }
        }
        #expect(try rig.submit([.readable(BlockRig.header(11, sector: 0)), .readable(segment(4, 2, 0)), .writable(1)]).status == 0)
        #expect(rig.sectorBytes(4, count: 2) == [UInt8](repeating: 0, count: 1024))
        #expect(rig.backend.discards.map { "\($0.0)+\($0.1)" } == ["2048+1024"])
        #expect(try rig.submit([.readable(BlockRig.header(13, sector: 0)), .readable(segment(20, 1, 1)), .writable(1)]).status == 0)
        #expect(rig.backend.zeroes.map { "\($0.0)+\($0.1) \($0.2)" } == ["10240+512 true"])
        // Discard knows no flags; write-zeroes only "unmap".
        #expect(try rig.submit([.readable(BlockRig.header(11, sector: 0)), .readable(segment(4, 1, 1)), .writable(1)]).status == 2)
        #expect(try rig.submit([.readable(BlockRig.header(13, sector: 0)), .readable(segment(4, 1, 2)), .writable(1)]).status == 2)
        // A segment past the end, and two segments (max_*_seg is 1).
        #expect(try rig.submit([.readable(BlockRig.header(11, sector: 0)), .readable(segment(63, 2, 0)), .writable(1)]).status == 1)
        #expect(try rig.submit([.readable(BlockRig.header(13, sector: 0)), .readable(segment(1, 1, 0) + segment(2, 1, 0)), .writable(1)]).status == 1)
    }

    @Test("requests past the end of the disk, or not whole sectors, fail with IOERR and touch nothing", arguments: [
        (UInt64(63), 1024),           // runs off the end
        (UInt64(64), 512),            // starts at the end
        (UInt64.max / 256, 512),      // sector * 512 overflows
        (UInt64(0), 100),             // not a whole sector
    ])
    func outOfRange(_ sector: UInt64, _ length: Int) throws {
        let rig = try BlockRig()
        let before = rig.backend.bytes
        let read = try rig.submit([.readable(BlockRig.header(0, sector: sector)), .writable(length), .writable(1)])
        #expect(read.status == 1)
        #expect(read.length == 1, "only the status byte is reported written")
        let write = try rig.submit([.readable(BlockRig.header(1, sector: sector)), .readable([UInt8](repeating: 0xEE, count: length)), .writable(1)])
        #expect(write.status == 1)
        #expect(rig.backend.bytes == before)
    }

    @Test("an unknown type is UNSUPP; requests without §5.2.6's framing make the device need a reset", arguments: [
        [VirtqueueDriver.Segment.readable([1, 0, 0]), .writable(1)],                           // header cut short
        [.readable(BlockRig.header(0, sector: 0))],                                            // no status byte at all
        [.readable(BlockRig.header(0, sector: 0)), .writable(512), .writable(0)],              // an empty last status buffer
    ])
    func malformed(_ request: [VirtqueueDriver.Segment]) throws {
        let rig = try BlockRig()
        #expect(try rig.submit([.readable(BlockRig.header(99, sector: 0)), .writable(1)]).status == 2)  // unknown type: UNSUPP
        _ = try rig.driver.addChain(request)
        rig.device.queueNotified(0)
        #expect(try rig.driver.popUsed() == nil, "the malformed chain is not completed")
        #expect(rig.device.needsReset)
        #expect(rig.interrupt.events.last == .configChange)
        // Until the driver resets the device, nothing more is served.
        _ = try rig.driver.addChain([.readable(BlockRig.header(0, sector: 0)), .writable(512), .writable(1)])
        rig.device.queueNotified(0)
        #expect(try rig.driver.popUsed() == nil)
    }

    @Test("a read-only disk refuses OUT, DISCARD and WRITE_ZEROES, and offers RO without discard")
    func readOnly() throws {
        let rig = try BlockRig(readOnly: true)
        #expect(rig.device.offeredFeatures.contains(VirtioBlock.featureReadOnly))
        #expect(!rig.device.offeredFeatures.contains(VirtioBlock.featureDiscard))
        let before = rig.backend.bytes
        #expect(try rig.submit([.readable(BlockRig.header(1, sector: 0)), .readable([UInt8](repeating: 1, count: 512)), .writable(1)]).status == 1)
        #expect(try rig.submit([.readable(BlockRig.header(11, sector: 0)), .readable([UInt8](repeating: 0, count: 16)), .writable(1)]).status == 2)
        #expect(rig.backend.bytes == before)
        #expect(try rig.submit([.readable(BlockRig.header(0, sector: 0)), .writable(512), .writable(1)]).status == 0)
    }

    @Test("a failing backend turns into IOERR, not a crash")
    func backendErrors() throws {
        let rig = try BlockRig(failing: true)
        #expect(try rig.submit([.readable(BlockRig.header(0, sector: 0)), .writable(512), .writable(1)]).status == 1)
        #expect(try rig.submit([.readable(BlockRig.header(4, sector: 0)), .writable(1)]).status == 1)
    }

    @Test("the configuration space: capacity, seg_max, blk_size, discard limits; out-of-range reads are 0")
    func config() throws {
        let rig = try BlockRig()
        #expect(rig.device.readConfig(offset: 0, size: 8) == 64)
        #expect(rig.device.readConfig(offset: 12, size: 4) == 254)
        #expect(rig.device.readConfig(offset: 20, size: 4) == 512)
        #expect(rig.device.readConfig(offset: 40, size: 4) == 1)
        #expect(rig.device.readConfig(offset: 58, size: 4) == 0)
        #expect(rig.device.readConfig(offset: -1, size: 4) == 0)
        let ro = try BlockRig(readOnly: true)
        #expect(ro.device.readConfig(offset: 36, size: 4) == 0)
    }
}

@Suite("virtio-blk with an I/O pool")
struct BlockPoolTests {
    /// A device whose waiting requests run on `threads` pool threads; `finished` counts completions.
    final class Pooled: @unchecked Sendable {
        let backend: MemoryBackend
        let device: VirtioBlock
        let driver: VirtqueueDriver
        let pool: IOWorkerPool
        let interrupt = RecordingInterruptSignal()
        let finished = Atomic<Int>(0)

        init(threads: Int) throws {
            let pattern = (0..<(64 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512 &* 7 &+ $0) }
            backend = MemoryBackend(bytes: pattern, readOnly: false, failing: false)
            pool = IOWorkerPool(maximumThreads: threads) { body in
                let t = Thread { body() }
                t.start()
                return true
            }
            let counter = Atomic<Int>(0)
            let box = Box(counter)
            device = VirtioBlock(backend: backend, serial: "POOL", workers: pool, completed: { box.value.add(1, ordering: .relaxed) })
            counterBox = box
            let memory = try makeGuestMemory(size: 1 << 20)
            driver = try VirtqueueDriver(memory: memory, size: 32)
            try device.activate(queues: [try driver.makeQueue(features: device.offeredFeatures)], features: device.offeredFeatures,
                                memory: memory, interrupt: interrupt)
        }
        let counterBox: Box
        final class Box: @unchecked Sendable {
            let value: Atomic<Int>
            init(_ v: consuming Atomic<Int>) { value = v }
        }
        var completions: Int { counterBox.value.load(ordering: .relaxed) }
    }

    @Test("eight requests waiting at once run on the pool, complete in any order, and are published on the next notification")
    func parallel() throws {
        let rig = try Pooled(threads: 4)
        var chains: [VirtqueueDriver.Chain] = []
        for sector in 0..<8 {
            chains.append(try rig.driver.addChain([.readable(BlockRig.header(0, sector: UInt64(sector * 2))), .writable(1024), .writable(1)], publish: false))
        }
        try rig.driver.publish()
        rig.device.queueNotified(0)
        // The last request may be served at once on this thread, when the pool
        // already finished the others (nothing else waiting, nothing running).
        var seen: [UInt32: UInt32] = [:]
        let deadline = ContinuousClock.now + .seconds(10)
        while seen.count < 8 && ContinuousClock.now < deadline {
            usleep(1000)
            rig.device.queueNotified(0)   // what the machine does when the completion eventfd fires
            while let used = try rig.driver.popUsed() { seen[used.element.id] = used.element.len }
        }
        #expect(rig.completions >= 7, "the requests that found others waiting ran on the pool and called back")
        #expect(rig.pool.threadCount >= 1)
        #expect(seen.count == 8)
        for (i, chain) in chains.enumerated() {
            #expect(seen[UInt32(chain.head)] == 1025)
            let written = try rig.driver.readWritten(chain, count: 1025)
            #expect(written.last == 0, "status OK")
            #expect(Array(written.prefix(1024)) == Array(rig.backend.bytes[(i * 1024)..<((i + 1) * 1024)]))
        }
        rig.pool.shutdown()
    }

    @Test("a lone request is served at once on the notifying thread, without the pool")
    func lone() throws {
        let rig = try Pooled(threads: 4)
        try rig.driver.addChain([.readable(BlockRig.header(0, sector: 3)), .writable(512), .writable(1)])
        rig.device.queueNotified(0)
        #expect(try rig.driver.popUsed()?.element.len == 513)
        #expect(rig.completions == 0)
        #expect(rig.pool.threadCount == 0)
        rig.pool.shutdown()
    }

    @Test("a reset waits for requests running on the pool and drops their results")
    func resetDrains() throws {
        let rig = try Pooled(threads: 2)
        for sector in 0..<6 {
            try rig.driver.addChain([.readable(BlockRig.header(0, sector: UInt64(sector))), .writable(512), .writable(1)], publish: false)
        }
        try rig.driver.publish()
        rig.device.queueNotified(0)
        rig.device.reset()
        // Five found others waiting and went to the pool; the sixth may have been served inline.
        let afterReset = rig.completions
        #expect(afterReset >= 5, "reset returned only after every running request finished")
        usleep(50_000)
        #expect(rig.completions == afterReset, "nothing was still running on the pool after the reset")
        #expect(try rig.driver.usedIndex() <= 1, "results of the old session are not published after the reset")
        rig.pool.shutdown()
    }
}

@Suite("IOWorkerPool")
struct IOWorkerPoolTests {
    @Test("after shutdown the pool refuses jobs (the caller runs them), and never runs one it refused")
    func refusesAfterShutdown() throws {
        let pool = IOWorkerPool(maximumThreads: 2) { body in
            Thread { body() }.start()
            return true
        }
        final class Count: @unchecked Sendable { let value = Atomic<Int>(0) }
        let ran = Count()
        #expect(pool.submit { ran.value.add(1, ordering: .relaxed) })
        pool.shutdown()
        #expect(!pool.submit { ran.value.add(1, ordering: .relaxed) })
        usleep(50_000)
        #expect(ran.value.load(ordering: .relaxed) == 1)
    }

    @Test("when no thread can be started, the job comes back to the caller")
    func noThread() {
        let pool = IOWorkerPool(maximumThreads: 2) { _ in false }
        #expect(!pool.submit {})
        #expect(pool.threadCount == 0)
    }
}
