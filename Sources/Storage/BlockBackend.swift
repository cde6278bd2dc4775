// BlockBackend.swift: what a virtio-blk device reads and writes through.
//
// A disk is, to the guest, an array of 512-byte sectors with five operations
// (virtio 1.2 §5.2.6: VIRTIO_BLK_T_IN, _OUT, _FLUSH, _DISCARD, _WRITE_ZEROES).
// This protocol is that array as the host holds it: a raw file or block device
// today, a qcow2 image later. It speaks bytes, not sectors, so a backend
// checks every range against its own size; the device converts sectors
// (sector * 512, checked) before calling.
//
// Mapping errors to virtio-blk status (the device's job, stated here once):
// - `.outOfRange`, `.readOnly`, `.ioFailed`, `.unexpectedEndOfFile`,
//   `.closed`: VIRTIO_BLK_S_IOERR. The spec requires IOERR for a write to a
//   device offering VIRTIO_BLK_F_RO (§5.2.6.2), and for sectors past capacity.
// - VIRTIO_BLK_S_UNSUPP is for request types the device does not implement or
//   did not negotiate (a DISCARD without VIRTIO_BLK_F_DISCARD); backends never
//   answer "unsupported": `discard` succeeds as a no-op where the host cannot
//   discard (a discard is a hint), and `writeZeroes` falls back to writing
//   zeros.

/// A disk image: a fixed number of bytes that can be read, written, flushed,
/// discarded and zeroed.
///
/// Backends are shared between the I/O thread and whoever stops the machine,
/// so they are `Sendable`; `read` and `write` may run concurrently on several
/// threads, but `close` must not race with them (call it after the threads
/// that issue I/O have stopped).
public protocol BlockBackend: AnyObject, Sendable {
    /// The image's size in bytes, fixed when it was opened (a multiple of `sectorSize`).
    var size: UInt64 { get }
    /// True when writes, discards and write-zeroes are refused with `.readOnly`.
    var readOnly: Bool { get }
    /// The logical block size in bytes the guest should use: 512, or the
    /// host's direct-I/O block size when that is larger (VIRTIO_BLK_F_BLK_SIZE).
    var sectorSize: Int { get }

    /// Reads `buffer.count` bytes at byte `offset` into `buffer`.
    ///
    /// Zero-copy: `buffer` is normally a piece of guest memory, lent by
    /// `GuestMemory` for the duration of this call. The backend uses it only
    /// until it returns and never keeps the pointer. Any alignment is allowed.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError)

    /// Writes all of `buffer` at byte `offset`. The same borrowing rule as
    /// `read`: the buffer is used only until this returns.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockError)

    /// Makes every completed write durable (VIRTIO_BLK_T_FLUSH). A no-op that
    /// succeeds on a read-only backend.
    func flush() throws(BlockError)

    /// Tells the host that [offset, offset + length) is no longer needed
    /// (VIRTIO_BLK_T_DISCARD). Afterwards the range reads as zeros if the host
    /// could release it, or unchanged if it could not; either way it succeeds.
    func discard(at offset: UInt64, length: UInt64) throws(BlockError)

    /// Makes [offset, offset + length) read as zeros (VIRTIO_BLK_T_WRITE_ZEROES).
    /// With `mayUnmap` (the request's VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) the
    /// host may release the space too.
    func writeZeroes(at offset: UInt64, length: UInt64, mayUnmap: Bool) throws(BlockError)

    /// Closes the image and releases its lock. Later requests throw `.closed`;
    /// closing twice is harmless.
    func close()
}

extension BlockBackend {
    /// Throws `.outOfRange` unless [offset, offset + length) lies inside the
    /// image (a zero-length range may sit at the very end).
    public func checkRange(_ operation: BlockOperation, offset: UInt64, length: UInt64) throws(BlockError) {
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= size else {
            throw .outOfRange(operation: operation, offset: offset, length: length, size: size)
        }
    }
}
