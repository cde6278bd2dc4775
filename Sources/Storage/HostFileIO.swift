// HostFileIO.swift: whole-range pread(2), pwrite(2) and fallocate(2).
//
// The kernel may move fewer bytes than asked (a signal, a request larger
// than 2 GiB, a device that splits it) and may fail with EINTR; the guest asks
// for all or nothing. These loops turn the one into the other, once, for
// every backend.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// Reads exactly `count` bytes at `offset` of `fd` into `buffer`, retrying
/// after EINTR and short reads. The caller has checked that
/// [offset, offset + count) lies inside a file of at most Int64.max bytes.
func preadAll(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, count: Int, offset: UInt64, operation: BlockOperation) throws(BlockError) {
    var done = 0
    while done < count {
        let at = offset + UInt64(done)
        // SAFETY: buffer covers count bytes (the caller's contract); done < count.
        let n = pread(fd, buffer + done, count - done, off_t(at))
        if n < 0 {
            let e = errno
            if e == EINTR { continue }
            throw .ioFailed(operation: operation, offset: at, length: UInt64(count - done), errno: e)
        }
        // A regular file or device inside its size never reads 0 bytes:
        // somebody truncated the file.
        guard n > 0 else { throw .unexpectedEndOfFile(operation: operation, offset: at) }
        done += n
    }
}

/// Writes exactly `count` bytes from `buffer` at `offset` of `fd`, retrying
/// after EINTR and short writes. Same contract as `preadAll`.
func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawPointer, count: Int, offset: UInt64, operation: BlockOperation) throws(BlockError) {
    var done = 0
    while done < count {
        let at = offset + UInt64(done)
        // SAFETY: buffer covers count bytes (the caller's contract); done < count.
        let n = pwrite(fd, buffer + done, count - done, off_t(at))
        if n < 0 {
            let e = errno
            if e == EINTR { continue }
            throw .ioFailed(operation: operation, offset: at, length: UInt64(count - done), errno: e)
        }
        // pwrite returns 0 for a non-empty request only on a broken device;
        // report it instead of looping forever.
        guard n > 0 else { throw .ioFailed(operation: operation, offset: at, length: UInt64(count - done), errno: EIO) }
        done += n
    }
}

/// fallocate(2) with `mode` on [offset, offset + length), retrying after
/// EINTR. Returns 0 or -errno. The caller has range-checked the arguments,
/// so both fit in an off_t.
func fallocateRetrying(_ fd: Int32, mode: Int32, offset: UInt64, length: UInt64) -> Int32 {
    while true {
        let r = ckvm_fallocate(fd, mode, Int64(offset), Int64(length))
        if r != -EINTR { return r }
    }
}
