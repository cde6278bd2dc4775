// ImageFile.swift: opening a disk image file the way every backend must.
//
// Raw images and qcow2 images (and a qcow2 image's backing files) are opened
// alike: refuse directories and anything that is not a regular file (or, for
// raw, a block device) before using it, and take a flock(2) that says who
// else may use the file: shared when read-only, exclusive when writable,
// never waiting (QEMU's image locking, with flock instead of OFD locks).

#if canImport(Glibc)
import Glibc
#endif

/// Opens `path` read-only or read-write and locks it; returns the descriptor
/// (the caller owns it; O_NONBLOCK is still set) and its status read under
/// the lock. `allowBlockDevice` admits block devices beside regular files;
/// `refuse` describes any other file type for the error.
func openLockedImage(path: String, readOnly: Bool, allowBlockDevice: Bool,
                     refuse: (mode_t) -> String) throws(BlockError) -> (fd: Int32, status: stat) {
    // O_NONBLOCK so that a FIFO given by mistake is refused rather than
    // blocking the open; the caller clears it.
    let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK
    var fd: Int32 = -1
    repeat { fd = open(path, flags) } while fd < 0 && errno == EINTR
    guard fd >= 0 else {
        let e = errno
        throw e == EISDIR ? .isDirectory(path: path) : .openFailed(path: path, errno: e)
    }
    // From here on every failure must close fd (which also drops the lock).
    var opened = false
    defer { if !opened { close(fd) } }

    var st = stat()
    guard fstat(fd, &st) == 0 else { throw .openFailed(path: path, errno: errno) }
    let type = st.st_mode & S_IFMT
    if type == S_IFDIR { throw .isDirectory(path: path) }
    guard type == S_IFREG || (allowBlockDevice && type == S_IFBLK) else {
        throw .unsupportedFileType(path: path, kind: refuse(type))
    }
    // A conflicting lock held for an instant is not a conflict: a process
    // that forks holds a copy of every descriptor (ours included, when this
    // process forked) until its exec closes them. Five tries 2 ms apart
    // outlast that window; a real user of the image holds on.
    var r: Int32 = 0
    for attempt in 0..<5 {
        repeat { r = flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) } while r < 0 && errno == EINTR
        guard r < 0, errno == EWOULDBLOCK, attempt < 4 else { break }
        usleep(2000)
    }
    if r < 0 {
        let e = errno
        throw e == EWOULDBLOCK ? .locked(path: path, readOnly: readOnly) : .openFailed(path: path, errno: e)
    }
    // The size is the one we own from here on: read it again under the lock.
    guard fstat(fd, &st) == 0 else { throw .openFailed(path: path, errno: errno) }
    opened = true
    return (fd, st)
}
