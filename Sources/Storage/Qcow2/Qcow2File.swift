// Qcow2File.swift: the image file under a qcow2 image.
//
// One descriptor, locked like RawImage's (flock: shared when read-only,
// exclusive when writable, never waiting), with whole-range reads and
// writes and the file's current length. The length grows as clusters are
// appended; the metadata checks compare offsets against it.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// An open, locked image file. Not thread-safe: `Qcow2Image` serialises access.
final class Qcow2File {
    let path: String
    let readOnly: Bool
    private(set) var descriptor: Int32
    /// The file's length in bytes (st_size at open, then grown by our writes).
    private(set) var length: UInt64
    /// True after a write that a later fdatasync must cover.
    var unsynced = false

    init(path: String, readOnly: Bool, cache: CacheMode = .writeback) throws(BlockError) {
        let (fd, st) = try openLockedImage(path: path, readOnly: readOnly, allowBlockDevice: false) { _ in
            "not a regular file (qcow2 images must be files)"
        }
        var opened = false
        defer { if !opened { Glibc.close(fd) } }
        let current = fcntl(fd, F_GETFL)
        guard current >= 0, fcntl(fd, F_SETFL, current & ~O_NONBLOCK) == 0 else { throw .openFailed(path: path, errno: errno) }
        self.path = path
        self.readOnly = readOnly
        self.descriptor = fd
        self.length = UInt64(st.st_size)
        opened = true
    }

    deinit { close() }

    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Reads exactly `buffer.count` bytes at `offset`. The caller has checked
    /// the range against `length`.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, operation: BlockOperation = .read) throws(BlockError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard descriptor >= 0 else { throw .closed(operation: operation) }
        try preadAll(descriptor, base, count: buffer.count, offset: offset, operation: operation)
    }

    /// Reads `count` bytes at `offset` into a new array (metadata only).
    func readArray(at offset: UInt64, count: Int) throws(BlockError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(BlockError) in try read(at: offset, into: b) }
        return bytes
    }

    /// Writes all of `buffer` at `offset`, growing `length` when it ends past it.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer, operation: BlockOperation = .write) throws(BlockError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard descriptor >= 0 else { throw .closed(operation: operation) }
        guard !readOnly else { throw .readOnly(operation: operation) }
        try pwriteAll(descriptor, base, count: buffer.count, offset: offset, operation: operation)
        length = max(length, offset + UInt64(buffer.count))
        unsynced = true
    }

    /// Writes `bytes` at `offset`.
    func write(at offset: UInt64, bytes: [UInt8], operation: BlockOperation = .write) throws(BlockError) {
        try bytes.withBytes { (b: UnsafeRawBufferPointer) throws(BlockError) in try write(at: offset, from: b, operation: operation) }
    }

    /// fdatasync(2): every completed write is durable afterwards.
    func sync() throws(BlockError) {
        guard descriptor >= 0 else { throw .closed(operation: .flush) }
        guard !readOnly else { return }
        while fdatasync(descriptor) < 0 {
            let e = errno
            if e == EINTR { continue }
            throw .ioFailed(operation: .flush, offset: 0, length: 0, errno: e)
        }
        unsynced = false
    }

    /// fdatasync only when something was written since the last one: the
    /// ordering barrier between dependent metadata writes.
    func barrier() throws(BlockError) {
        if unsynced { try sync() }
    }

    /// The space the file takes on disk (st_blocks * 512).
    func allocatedBytes() -> UInt64 {
        var st = stat()
        guard descriptor >= 0, fstat(descriptor, &st) == 0 else { return 0 }
        return UInt64(st.st_blocks) * 512
    }
}
