// BlockError.swift: everything that can go wrong opening or using a disk image.
//
// Each case names the operation and carries the errno or the numbers that
// explain it, so that a message reaches the user intact ("cannot open disk
// image 'a.img': Permission denied") and so that the virtio-blk device can
// choose the request status from the case alone (see BlockBackend.swift).

#if canImport(Glibc)
import Glibc
#endif

/// The block operations, named in errors.
public enum BlockOperation: String, Sendable, Equatable {
    case read
    case write
    case flush
    case discard
    case writeZeroes = "write-zeroes"
}

/// An error from opening a disk image or from one request on it.
public enum BlockError: Error, Equatable, Sendable, CustomStringConvertible {
    // MARK: Opening

    /// open(2), fstat(2) or the size query on `path` failed with `errno`.
    case openFailed(path: String, errno: Int32)
    /// `path` is a directory.
    case isDirectory(path: String)
    /// `path` is neither a regular file nor a block device (`kind` says what it is).
    case unsupportedFileType(path: String, kind: String)
    /// Another open file description holds a conflicting flock(2) on `path`:
    /// another skvm (or this one, twice) has it open.
    case locked(path: String, readOnly: Bool)
    /// The image's size is not a multiple of `multiple` (512, or the host's
    /// direct-I/O block size with `cache=none`).
    case sizeNotMultiple(path: String, size: UInt64, multiple: Int)
    /// `cache=none` was asked for but the filesystem refuses O_DIRECT.
    case directIOUnsupported(path: String, errno: Int32)
    /// The image's metadata is inconsistent, out of bounds or hostile
    /// (`reason` says which structure and why). Also thrown by a request
    /// that meets such metadata.
    case invalidImage(path: String, reason: String)
    /// The image is valid but uses a feature skvm does not implement
    /// (`reason` names it: encryption, an unknown incompatible bit, ...).
    case unsupportedImage(path: String, reason: String)

    // MARK: Requests

    /// [offset, offset + length) is not inside the image, or offset + length
    /// overflows 64 bits.
    case outOfRange(operation: BlockOperation, offset: UInt64, length: UInt64, size: UInt64)
    /// A write, discard or write-zeroes on an image opened read-only.
    case readOnly(operation: BlockOperation)
    /// The host failed the operation: pread, pwrite, fdatasync or fallocate
    /// returned `errno` (EIO, ENOSPC, ...).
    case ioFailed(operation: BlockOperation, offset: UInt64, length: UInt64, errno: Int32)
    /// The file ended before `offset` although the image is larger: another
    /// process truncated it underneath us.
    case unexpectedEndOfFile(operation: BlockOperation, offset: UInt64)
    /// The backend was closed.
    case closed(operation: BlockOperation)

    public var description: String {
        switch self {
        case .openFailed(let path, let e):
            var text = "cannot open disk image '\(path)': \(errorString(e))"
            if e == EACCES || e == EROFS || e == EPERM {
                text += " (open it read-only if it should not be written)"
            }
            return text
        case .isDirectory(let path):
            return "disk image '\(path)' is a directory"
        case .unsupportedFileType(let path, let kind):
            return "disk image '\(path)' is a \(kind), not a regular file or a block device"
        case .locked(let path, let readOnly):
            let why = readOnly ? "someone has it open for writing" : "someone has it open"
            return "disk image '\(path)' is in use by another process (locked): \(why)"
        case .sizeNotMultiple(let path, let size, let multiple):
            let m = UInt64(multiple)
            // size is an st_size or BLKGETSIZE64, well below UInt64.max - m.
            let up = (size / m + (size % m == 0 ? 0 : 1)) * m
            let text = "disk image '\(path)' is \(size) bytes, not a multiple of \(multiple);"
                + " pad it with `truncate -s \(up) '\(path)'`"
            // Only cache=none asks for more than 512 (the host's direct-I/O block).
            return multiple > 512 ? text + " or use cache=writeback" : text
        case .directIOUnsupported(let path, let e):
            return "disk image '\(path)': the filesystem refuses direct I/O (O_DIRECT: \(errorString(e)));"
                + " use cache=writeback or put the image on a filesystem such as ext4 or xfs"
        case .invalidImage(let path, let reason):
            return "disk image '\(path)' is invalid: \(reason)"
        case .unsupportedImage(let path, let reason):
            return "disk image '\(path)' is not supported: \(reason)"
        case .outOfRange(let op, let offset, let length, let size):
            let (_, overflow) = offset.addingReportingOverflow(length)
            let what = "\(op.rawValue) of \(length) bytes at offset \(offset)"
            return overflow
                ? "\(what) overflows 64 bits"
                : "\(what) ends past the end of the \(size)-byte image"
        case .readOnly(let op):
            return "\(op.rawValue) refused: the disk image is read-only"
        case .ioFailed(let op, let offset, let length, let e):
            if op == .flush { return "flush failed: \(errorString(e))" }
            return "\(op.rawValue) of \(length) bytes at offset \(offset) failed: \(errorString(e))"
        case .unexpectedEndOfFile(let op, let offset):
            return "\(op.rawValue) at offset \(offset) met the end of the file: the image shrank while in use"
        case .closed(let op):
            return "\(op.rawValue) on a closed disk image"
        }
    }
}

/// `strerror(e)` as a Swift string.
func errorString(_ e: Int32) -> String {
    guard let s = strerror(e) else { return "errno \(e)" }
    return String(cString: s)
}
