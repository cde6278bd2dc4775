// Block.swift: the virtio block device (virtio 1.2 §5.2).
//
// A request is one descriptor chain (§5.2.6):
//
//   readable:  struct virtio_blk_req { le32 type; le32 reserved; le64 sector; }
//              [data to write, for OUT; segments, for DISCARD and WRITE_ZEROES]
//   writable:  [data read, for IN; the serial, for GET_ID]
//              u8 status   (the chain's very last writable byte)
//
// Every number in a request comes from the guest and is checked before use:
// the header must be whole, the data a whole number of 512-byte sectors
// inside the disk, segments inside the disk and within the advertised
// limits. A bad request gets VIRTIO_BLK_S_IOERR (or UNSUPP for a type or
// flag the device does not do), never a crash or an access outside the disk
// or guest RAM. Data moves between the disk file and guest memory with no
// copy in between.
//
// Threading: the transport serialises every call into the device (config
// accesses from vCPU threads, `queueNotified` from the I/O thread) under its
// own lock. With an IOWorkerPool, requests also run on its threads: when
// more than one request is waiting (or some are already running), each
// goes to the pool, which serves them in parallel; a lone request is served
// on the I/O thread at once. A pool thread touches only the request's own
// chain (guest memory) and the backend (safe for concurrent use); it files
// its result in `done` and calls `completed`, and the machine answers that
// by notifying queue 0 again: the used ring is written only under the
// transport's lock, in `queueNotified`. Completion order is free (§2.7.8:
// used buffers need not come back in the order they were made available).

#if canImport(Glibc)
import Glibc
#endif
import Memory
import Synchronization
import Storage
import VirtioQueue

/// A virtio-blk device over a BlockBackend.
public final class VirtioBlock: VirtioDevice, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): every method is called under the transport's lock.

    // Request types and statuses (§5.2.6).
    static let typeIn: UInt32 = 0
    static let typeOut: UInt32 = 1
    static let typeFlush: UInt32 = 4
    static let typeGetID: UInt32 = 8
    static let typeDiscard: UInt32 = 11
    static let typeWriteZeroes: UInt32 = 13
    static let statusOK: UInt8 = 0
    static let statusIOError: UInt8 = 1
    static let statusUnsupported: UInt8 = 2

    // Feature bits (§5.2.3).
    static let featureSegMax = FeatureSet(bit: 2)
    static let featureReadOnly = FeatureSet(bit: 5)
    static let featureBlockSize = FeatureSet(bit: 6)
    static let featureFlush = FeatureSet(bit: 9)
    static let featureDiscard = FeatureSet(bit: 13)
    static let featureWriteZeroes = FeatureSet(bit: 14)

    public static let sectorSize: UInt64 = 512
    /// Queue size offered; the driver may choose a smaller power of two.
    public static let queueSize: UInt16 = 256
    /// Data segments per request the driver may use (seg_max): the queue size minus header and status.
    static let maxSegments: UInt32 = UInt32(queueSize) - 2
    /// One DISCARD or WRITE_ZEROES request carries one segment of at most this many sectors.
    static let maxDiscardSectors: UInt32 = 0x0020_0000   // 1 GiB
    /// The length of GET_ID's answer (§5.2.6: 20 bytes, not NUL-terminated when full).
    static let idLength = 20

    public let deviceType = VirtioDeviceType.block
    public let queueMaxSizes: [UInt16] = [VirtioBlock.queueSize]
    public let configSize = 60

    private let backend: any BlockBackend
    private let serial: [UInt8]
    private var queue: Virtqueue? = nil
    private var interrupt: (any InterruptSignal)? = nil
    private var features: FeatureSet = []
    private let failed = Atomic<UInt64>(0)
    /// Requests refused, for statistics and tests.
    public var failedRequests: UInt64 { failed.load(ordering: .relaxed) }
    /// Parallel request service (nil: every request on the calling thread).
    private let workers: IOWorkerPool?
    /// Called (on a pool thread) when a request finished there.
    private let completed: (@Sendable () -> Void)?
    /// Requests handed to the pool and not yet reaped.
    private let running = Atomic<Int>(0)
    /// What pool threads finished: used elements, and whether a request had no valid framing.
    private let done = Mutex<(elements: [UsedElement], malformed: Bool)>(([], false))
    private let resetReason = Mutex<String?>(nil)
    /// Set when the queue broke beyond repair (the transport reports DEVICE_NEEDS_RESET).
    public private(set) var needsReset = false

    /// A device for `backend`; `serial` is what GET_ID answers (at most 20
    /// bytes). With `workers`, waiting requests run in parallel on its
    /// threads, and `completed` is called after each; the caller must then
    /// notify queue 0 (through the transport) so the results are published.
    public init(backend: any BlockBackend, serial: String, workers: IOWorkerPool? = nil, completed: (@Sendable () -> Void)? = nil) {
        self.backend = backend
        self.serial = Array(serial.utf8.prefix(Self.idLength))
        self.workers = workers
        self.completed = completed
    }

    public var offeredFeatures: FeatureSet {
        var f: FeatureSet = [.version1, .ringIndirectDesc, .ringEventIdx, Self.featureSegMax, Self.featureBlockSize, Self.featureFlush]
        if backend.readOnly { f.insert(Self.featureReadOnly) } else { f.formUnion([Self.featureDiscard, Self.featureWriteZeroes]) }
        return f
    }

    /// The disk size in 512-byte sectors.
    var capacity: UInt64 { backend.size / Self.sectorSize }

    // MARK: Configuration space (§5.2.4)

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, size >= 1, size <= 8, offset + size <= configSize else { return 0 }
        var bytes = [UInt8](repeating: 0, count: configSize)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0..<n { bytes[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(capacity, 0, 8)
        put(UInt64(Self.maxSegments), 12, 4)               // seg_max
        put(UInt64(backend.sectorSize), 20, 4)             // blk_size
        put(1, 34, 2)                                      // num_queues
        if !backend.readOnly {
            put(UInt64(Self.maxDiscardSectors), 36, 4)      // max_discard_sectors
            put(1, 40, 4)                                   // max_discard_seg
            put(UInt64(backend.sectorSize / 512), 44, 4)    // discard_sector_alignment
            put(UInt64(Self.maxDiscardSectors), 48, 4)      // max_write_zeroes_sectors
            put(1, 52, 4)                                   // max_write_zeroes_seg
            put(1, 56, 1)                                   // write_zeroes_may_unmap
        }
        var value: UInt64 = 0
        for i in 0..<size { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return value
    }

    /// The block device's configuration is read-only for the driver (writeback is not offered).
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    // MARK: Life cycle

    public func activate(queues: [Virtqueue?], features: FeatureSet, memory: GuestMemory, interrupt: any InterruptSignal) throws {
        guard let first = queues.first, let q = first else { throw VirtqueueError.queueBroken }
        queue = q
        self.features = features
        self.interrupt = interrupt
        needsReset = false
    }

    public func reset() {
        // Requests still running on the pool write into the old queue's
        // buffers: wait for them, then forget their results (§2.4: after a
        // reset the device uses nothing of the old session).
        quiesce()
        done.withLock { $0 = ([], false) }
        queue = nil
        interrupt = nil
        features = []
        needsReset = false
    }

    // MARK: Requests

    public func queueNotified(_ index: Int) {
        // Take the queue out while working on it: a second reference (self.queue
        // beside q) would make every pop copy the chain storage (an allocation).
        guard index == 0, !needsReset, var q = queue.take() else { return }
        defer { queue = q }
        var completed = reap(&q)
        // Drain, then ask for the next notification (§2.7.10: with EVENT_IDX
        // this publishes avail_event = the next index we will read; without
        // it, clears NO_NOTIFY). A driver that added buffers in between will
        // not notify for them, so if any are waiting, drain again.
        repeat {
            while !needsReset, let chain = popNext(&q) {
                // Several requests waiting, or some running: in parallel.
                if let workers, running.load(ordering: .acquiring) > 0 || ((try? q.hasAvailable()) ?? false) {
                    running.add(1, ordering: .acquiringAndReleasing)
                    if workers.submit({ [self] in self.serveInBackground(chain) }) { continue }
                    running.subtract(1, ordering: .acquiringAndReleasing)
                }
                guard let written = process(chain) else {
                    // A request without the framing §5.2.6 requires: a broken driver (QEMU agrees).
                    markNeedsReset("request at head \(chain.headIndex) has no 16-byte header or no status byte")
                    break
                }
                do {
                    try q.addUsed(head: chain.headIndex, length: written)
                    completed = true
                } catch {
                    markNeedsReset("device bug: \(error)")
                }
            }
        } while !needsReset && q.enableNotification()
        if completed && q.needsNotification() { interrupt?.signalUsedBuffer(queueIndex: 0) }
    }

    /// A pool thread's part: serve the request, file the result, tell the machine.
    private func serveInBackground(_ chain: DescriptorChain) {
        let written = process(chain)
        done.withLock { d in
            if let written { d.elements.append(UsedElement(head: chain.headIndex, length: written)) } else { d.malformed = true }
        }
        running.subtract(1, ordering: .acquiringAndReleasing)
        completed?()
    }

    /// Publishes what pool threads finished; true when anything was.
    private func reap(_ q: inout Virtqueue) -> Bool {
        guard workers != nil else { return false }
        let (elements, malformed) = done.withLock { d -> ([UsedElement], Bool) in
            let taken = (d.elements, d.malformed)
            d.elements.removeAll(keepingCapacity: true)
            d.malformed = false
            return taken
        }
        if malformed { markNeedsReset("a request served on the I/O pool had no 16-byte header or no status byte") }
        guard !elements.isEmpty else { return false }
        do { try q.addUsed(elements) } catch {
            markNeedsReset("device bug: \(error)")
            return false
        }
        return true
    }

    /// Waits until no request is running on the pool (a reset, or the machine stopping).
    public func quiesce() {
        while running.load(ordering: .acquiring) > 0 { usleep(50) }
    }

    /// The next available chain, or nil when none is waiting or the queue is broken.
    private func popNext(_ q: inout Virtqueue) -> DescriptorChain? {
        guard !needsReset else { return nil }
        do { return try q.popAvailable() } catch {
            // A malformed chain (a loop, an index or buffer out of range, a
            // readable buffer after a writable one) means a broken or hostile
            // driver: stop serving the queue until it resets the device, as
            // QEMU does (§2.1.2, DEVICE_NEEDS_RESET).
            markNeedsReset("malformed chain: \(error)")
            return nil
        }
    }

    private func markNeedsReset(_ why: String) {
        failed.add(1, ordering: .relaxed)
        needsReset = true
        resetReason.withLock { $0 = why }
        interrupt?.signalNeedsReset()
    }

    /// Why the device last set DEVICE_NEEDS_RESET (for `--stats`), nil if it never did.
    public var needsResetReason: String? { resetReason.withLock { $0 } }

    /// Serves one request; returns the bytes written into the chain's writable
    /// buffers, or nil when the request lacks the framing §5.2.6 requires (a
    /// 16-byte header, and a status byte in a non-empty last writable buffer):
    /// then there is no way to answer, and the device needs a reset.
    func process(_ chain: DescriptorChain) -> UInt32? {
        guard let last = chain.writableBuffers.last, last.length >= 1 else { return nil }
        // The header, read into 16 bytes on the stack (no allocation per request).
        let header = withUnsafeTemporaryAllocation(byteCount: 16, alignment: 8) { raw -> (type: UInt32, sector: UInt64)? in
            guard (try? chain.readReadable(from: 0, into: raw)) == 16 else { return nil }
            return (raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian,
                    raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian)
        }
        guard let (type, sector) = header else { return nil }
        let dataIn = chain.writableByteCount - 1          // writable bytes before the status
        let dataOut = chain.readableByteCount - 16        // readable bytes after the header

        switch type {
        case Self.typeIn:
            guard let offset = range(sector: sector, bytes: UInt64(dataIn)) else { return finish(chain, status: Self.statusIOError, dataWritten: 0) }
            let ok = transfer(chain, writable: true, skip: 0, count: dataIn, diskOffset: offset)
            return finish(chain, status: ok ? Self.statusOK : Self.statusIOError, dataWritten: ok ? dataIn : 0)
        case Self.typeOut:
            guard !backend.readOnly, let offset = range(sector: sector, bytes: UInt64(dataOut)) else {
                return finish(chain, status: Self.statusIOError, dataWritten: 0)
            }
            let ok = transfer(chain, writable: false, skip: 16, count: dataOut, diskOffset: offset)
            return finish(chain, status: ok ? Self.statusOK : Self.statusIOError, dataWritten: 0)
        case Self.typeFlush:
            let ok = (try? backend.flush()) != nil
            return finish(chain, status: ok ? Self.statusOK : Self.statusIOError, dataWritten: 0)
        case Self.typeGetID:
            let n = min(dataIn, Self.idLength)
            var id = [UInt8](repeating: 0, count: n)
            for i in 0..<min(n, serial.count) { id[i] = serial[i] }
            let written = (try? chain.writeWritable(id, at: 0)) ?? 0
            return finish(chain, status: written == n ? Self.statusOK : Self.statusIOError, dataWritten: written)
        case Self.typeDiscard, Self.typeWriteZeroes:
            let discard = type == Self.typeDiscard
            guard features.contains(discard ? Self.featureDiscard : Self.featureWriteZeroes) else {
                return finish(chain, status: Self.statusUnsupported, dataWritten: 0)
            }
            return finish(chain, status: segments(chain, count: dataOut, discard: discard), dataWritten: 0)
        default:
            return finish(chain, status: Self.statusUnsupported, dataWritten: 0)
        }
    }

    /// The byte offset of `sector` when `bytes` (a whole number of sectors) fit inside the disk.
    private func range(sector: UInt64, bytes: UInt64) -> UInt64? {
        guard bytes % Self.sectorSize == 0, sector <= capacity else { return nil }
        let (offset, overflow) = sector.multipliedReportingOverflow(by: Self.sectorSize)
        guard !overflow, bytes <= backend.size - offset else { return nil }
        return offset
    }

    /// Moves `count` bytes between the disk at `diskOffset` and the chain's
    /// writable (IN) or readable (OUT) buffers, skipping the first `skip` bytes.
    private func transfer(_ chain: DescriptorChain, writable: Bool, skip: Int, count: Int, diskOffset: UInt64) -> Bool {
        var toSkip = skip, left = count, disk = diskOffset
        for buffer in (writable ? chain.writableBuffers : chain.readableBuffers) where left > 0 {
            let length = Int(buffer.length)
            if toSkip >= length { toSkip -= length; continue }
            let n = min(length - toSkip, left)
            guard let start = buffer.address.adding(UInt64(toSkip)) else { return false }
            do {
                try chain.memory.withMutableBytes(at: start, count: n) { guest in
                    if writable { try backend.read(at: disk, into: guest) } else { try backend.write(at: disk, from: UnsafeRawBufferPointer(guest)) }
                }
            } catch {
                return false
            }
            toSkip = 0
            left -= n
            disk += UInt64(n)
        }
        return left == 0
    }

    /// DISCARD and WRITE_ZEROES segments (§5.2.6.2): { le64 sector; le32 num_sectors; le32 flags }.
    private func segments(_ chain: DescriptorChain, count: Int, discard: Bool) -> UInt8 {
        guard !backend.readOnly else { return Self.statusIOError }
        guard count == 16 else { return Self.statusIOError }  // max_*_seg is 1
        var bytes: [UInt8] = []
        guard (try? chain.readReadable(from: 16, maxCount: 16, appendingTo: &bytes)) == 16 else { return Self.statusIOError }
        let sector = le64(bytes, 0), sectors = le32(bytes, 8), flags = le32(bytes, 12)
        let unmap = flags & 1 != 0
        // Discard has no flags; write-zeroes knows only "unmap" (bit 0).
        guard flags & ~1 == 0, !(discard && unmap) else { return Self.statusUnsupported }
        guard sectors <= Self.maxDiscardSectors, let offset = range(sector: sector, bytes: UInt64(sectors) * Self.sectorSize) else {
            return Self.statusIOError
        }
        do {
            if discard { try backend.discard(at: offset, length: UInt64(sectors) * Self.sectorSize) }
            else { try backend.writeZeroes(at: offset, length: UInt64(sectors) * Self.sectorSize, mayUnmap: unmap) }
        } catch {
            return Self.statusIOError
        }
        return Self.statusOK
    }

    /// Writes the status byte (the chain's last writable byte); returns the used length.
    private func finish(_ chain: DescriptorChain, status: UInt8, dataWritten: Int) -> UInt32 {
        if status != Self.statusOK { failed.add(1, ordering: .relaxed) }
        // The status is the last byte of the last writable buffer (checked non-empty in `process`).
        if let last = chain.writableBuffers.last, last.length > 0 {
            try? chain.memory.write(status, at: GuestAddress(last.address.rawValue &+ UInt64(last.length - 1)))
        }
        return UInt32(dataWritten + 1)
    }
}

private func le32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * UInt32($1)) } }
private func le64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) } }
