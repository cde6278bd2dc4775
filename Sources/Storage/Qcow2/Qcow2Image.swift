// Qcow2Image.swift: a qcow2 disk image as a BlockBackend (QEMU's
// docs/interop/qcow2.txt, versions 2 and 3).
//
// The pieces, one file each: Qcow2Header (header and extensions),
// Qcow2Layout (geometry, entry formats), Qcow2Cache (bounded table cache),
// Qcow2Refcounts and Qcow2Allocator (refcounts, allocation, table growth),
// Qcow2Compressed (deflate and zstd clusters), Qcow2Backing (the backing
// chain), Qcow2Engine (validation and reads), Qcow2Writer (writes, zeroes,
// discard, flush and their crash-safe order). docs/qcow2.md is the guide.
//
// One mutex serialises the metadata work of all requests on an image:
// updates are read-modify-write sequences across the L1 table, L2 tables and
// refcount blocks, and one lock keeps their ordering argument simple. Reads
// and in-place writes take it only to map their range; the data of
// allocated clusters moves after it is released (Qcow2Engine.planRead,
// planWrite), so that several of virtio-blk's workers work at once.

import Synchronization

/// A qcow2 image opened for reading, or for reading and writing.
public final class Qcow2Image: BlockBackend {
    /// The path the image was opened from.
    public let path: String
    /// The virtual disk size in bytes (the header's, rounded up to 512).
    public let size: UInt64
    public let readOnly: Bool
    public let sectorSize = 512
    /// The cluster size in bytes.
    public let clusterSize: UInt64
    /// The header as read at open (autoclear bits cleared on a writable open).
    public let header: Qcow2Header

    private let engine: Mutex<Qcow2Engine?>

    /// Opens the qcow2 image at `path`.
    ///
    /// Takes a shared flock when `readOnly`, else an exclusive one, like
    /// RawImage. Opens the backing chain read-only. Throws `.invalidImage`
    /// for metadata that is inconsistent or out of bounds, and
    /// `.unsupportedImage` for features skvm lacks (encryption, unknown
    /// incompatible bits, external data files, extended L2 entries, a dirty
    /// or corrupt image opened writable).
    public convenience init(path: String, readOnly: Bool = false) throws(BlockError) {
        try self.init(path: path, readOnly: readOnly, chain: [])
    }

    /// `chain`: canonical paths of the images above this one (backing files only).
    init(path: String, readOnly: Bool, chain: [String]) throws(BlockError) {
        let file = try Qcow2File(path: path, readOnly: readOnly)
        let engine = try Qcow2Engine(file: file, chain: chain)
        self.path = path
        self.readOnly = readOnly
        self.size = engine.size
        self.clusterSize = engine.geometry.clusterSize
        self.header = engine.header
        self.engine = Mutex(engine)
    }

    deinit { close() }

    /// Runs `body` on the open engine, or throws `.closed`.
    private func withEngine(_ op: BlockOperation, _ body: (Qcow2Engine) throws(BlockError) -> Void) throws(BlockError) {
        try engine.withLock { (e: inout Qcow2Engine?) throws(BlockError) in
            guard let engine = e else { throw .closed(operation: op) }
            try body(engine)
        }
    }

    // MARK: - BlockBackend

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try checkRange(.read, offset: offset, length: UInt64(buffer.count))
        guard let base = buffer.baseAddress else { return }
        // Map under the lock, read the allocated data without it (see planRead).
        var plan = Qcow2ReadPlan()
        var done = 0
        while done < buffer.count {
            let (next, fd) = try engine.withLock { (e: inout Qcow2Engine?) throws(BlockError) -> (Int, Int32) in
                guard let engine = e else { throw .closed(operation: .read) }
                return (try engine.planRead(at: offset, into: buffer, from: done, plan: &plan), engine.file.descriptor)
            }
            for i in 0..<plan.count {
                let x = plan.extents[i]
                // SAFETY: planRead made [start, start + length) a part of the buffer.
                try preadAll(fd, base + x.start, count: x.length, offset: x.host, operation: .read)
            }
            done = next
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        guard !readOnly else { throw .readOnly(operation: .write) }
        try checkRange(.write, offset: offset, length: UInt64(buffer.count))
        guard let base = buffer.baseAddress else { return }
        // Allocating writes under the lock; in-place ones after it (see planWrite).
        var plan = Qcow2ReadPlan()
        var done = 0
        while done < buffer.count {
            let (next, fd) = try engine.withLock { (e: inout Qcow2Engine?) throws(BlockError) -> (Int, Int32) in
                guard let engine = e else { throw .closed(operation: .write) }
                return (try engine.planWrite(at: offset, from: buffer, from: done, plan: &plan), engine.file.descriptor)
            }
            for i in 0..<plan.count {
                let x = plan.extents[i]
                // SAFETY: planWrite made [start, start + length) a part of the buffer.
                try pwriteAll(fd, base + x.start, count: x.length, offset: x.host, operation: .write)
            }
            done = next
        }
    }

    public func flush() throws(BlockError) {
        try withEngine(.flush) { (e) throws(BlockError) in try e.flushMetadata() }
    }

    public func discard(at offset: UInt64, length: UInt64) throws(BlockError) {
        guard !readOnly else { throw .readOnly(operation: .discard) }
        try checkRange(.discard, offset: offset, length: length)
        try withEngine(.discard) { (e) throws(BlockError) in try e.zero(at: offset, length: length, discard: true) }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayUnmap: Bool) throws(BlockError) {
        guard !readOnly else { throw .readOnly(operation: .writeZeroes) }
        try checkRange(.writeZeroes, offset: offset, length: length)
        try withEngine(.writeZeroes) { (e) throws(BlockError) in try e.zero(at: offset, length: length, discard: false) }
    }

    /// Writes every pending metadata change (like `flush`), then closes the
    /// image and its backing chain. A failure to write is lost here (close
    /// cannot throw): call `flush` first to see it; the image stays
    /// consistent either way, with at most leaked clusters.
    public func close() {
        engine.withLock { e in
            guard let engine = e else { return }
            try? engine.flushMetadata()
            engine.backing?.close()
            engine.file.close()
            e = nil
        }
    }
}
