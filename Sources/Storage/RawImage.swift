// RawImage.swift: a disk that is a plain file or block device, byte for byte.
//
// The simplest disk image there is (QEMU's `format=raw`, kvmtool's
// disk/raw.c): guest byte N is file byte N. What makes it more than
// pread/pwrite is the host policy around it:
//
// - cache modes. `cache=writeback` (the default) goes through the host page
//   cache: fast, and durable only once the guest flushes (fdatasync).
//   `cache=none` opens the image O_DIRECT, bypassing the page cache, so the
//   guest's memory is not cached twice and the host sees I/O as the guest
//   issues it. O_DIRECT demands aligned offsets, lengths and buffer
//   addresses; a request that is not aligned goes through a bounce buffer.
// - a lock. Two VMs writing one image corrupt it. Every open takes a
//   flock(2): shared when read-only, exclusive when writable, never
//   waiting, so any number of read-only users may share an image but a
//   writer excludes everyone (QEMU's image locking, with flock instead of
//   OFD locks). flock belongs to the open file description, so even a second
//   open in the same process conflicts.
// - space management. Discard punches holes (the file gets sparser);
//   write-zeroes asks the filesystem to zero a range without writing it.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Synchronization

/// How a backend uses the host page cache (QEMU's `cache=` option).
public enum CacheMode: String, Sendable, Equatable, CaseIterable {
    /// Through the host page cache; data is durable after `flush`.
    case writeback
    /// O_DIRECT: bypass the host page cache; data is durable after `flush`
    /// (the disk's own write cache still needs it).
    case none
}

/// A raw disk image: a regular file or a block device, opened with a lock.
///
/// Thread safety: the descriptor is set once and only `close` clears it (an
/// atomic, so a request after `close` throws `.closed` rather than using a
/// reused descriptor number). pread/pwrite are safe to issue concurrently.
/// The bounce buffer is behind a mutex. So several threads may read and
/// write at once; `close` must still not race with requests in flight.
public final class RawImage: BlockBackend {
    /// The path the image was opened from.
    public let path: String
    /// The image's size in bytes: the file's size, or the device's (BLKGETSIZE64).
    public let size: UInt64
    /// True when opened read-only (O_RDONLY and a shared lock).
    public let readOnly: Bool
    /// The cache mode the image was opened with.
    public let cache: CacheMode
    /// True when the image is a block device rather than a regular file.
    public let isBlockDevice: Bool
    /// 512 with `cache=writeback`; with `cache=none`, the host's direct-I/O
    /// block size when that is larger than 512, so that a guest told to use
    /// it never causes a read-modify-write here.
    public let sectorSize: Int
    /// What O_DIRECT needs offsets and lengths aligned to (a power of two;
    /// 1 with `cache=writeback`, which needs no alignment).
    public let directIOAlignment: Int
    /// What O_DIRECT needs buffer addresses aligned to (a power of two;
    /// 1 with `cache=writeback`).
    public let memoryAlignment: Int

    /// The open descriptor, or -1 once closed.
    private let descriptor: Atomic<Int32>
    /// With `cache=none`, an aligned buffer of `bounceSize` bytes for the
    /// requests O_DIRECT cannot take as they are; empty with `cache=writeback`.
    ///
    /// One buffer per image, allocated at open, behind a mutex: unaligned
    /// requests are rare (Linux guests align virtio-blk buffers to 512 bytes
    /// and issue whole sectors), so the lock is uncontended in practice and
    /// the I/O path never allocates. A buffer per call would put malloc
    /// (of up to `bounceSize` bytes) on every unaligned request instead.
    private let bounce: Mutex<UnsafeMutableRawBufferPointer>

    /// The bounce buffer's size: large requests go through it in pieces.
    public static let bounceSize = 256 << 10
    /// The largest piece write-zeroes writes at once when the host cannot
    /// zero a range itself.
    static let zeroChunkSize: UInt64 = 1 << 20

    /// Opens the raw image at `path` (a regular file or a block device).
    ///
    /// Throws `.isDirectory` or `.unsupportedFileType` for anything else,
    /// `.locked` when another open file description holds a conflicting lock,
    /// `.sizeNotMultiple` when the size is not a whole number of sectors,
    /// `.directIOUnsupported` when `cache == .none` and the filesystem refuses
    /// O_DIRECT, and `.openFailed` for every other host error.
    public init(path: String, readOnly: Bool = false, cache: CacheMode = .writeback) throws(BlockError) {
        let (fd, st) = try openLockedImage(path: path, readOnly: readOnly, allowBlockDevice: true, refuse: Self.describe(fileType:))
        // From here on every failure must close fd (which also drops the lock).
        var opened = false
        defer { if !opened { Glibc.close(fd) } }
        let isBlockDevice = st.st_mode & S_IFMT == S_IFBLK

        let size: UInt64
        if isBlockDevice {
            var bytes: UInt64 = 0
            let r = ckvm_ioctl_ptr(fd, CKVM_BLKGETSIZE64, &bytes)
            guard r >= 0 else { throw .openFailed(path: path, errno: -r) }
            size = bytes
        } else {
            size = UInt64(st.st_size)  // st_size of a regular file is >= 0
        }
        // Every offset later becomes an off_t.
        guard size <= UInt64(Int64.max) else { throw .openFailed(path: path, errno: EFBIG) }

        // Clear O_NONBLOCK, and set O_DIRECT for cache=none. Setting O_DIRECT
        // with F_SETFL rather than at open tells "the filesystem refuses
        // O_DIRECT" (EINVAL here) apart from every other open failure.
        let current = fcntl(fd, F_GETFL)
        guard current >= 0 else { throw .openFailed(path: path, errno: errno) }
        var wanted = current & ~O_NONBLOCK
        if cache == .none { wanted |= CKVM_O_DIRECT }
        if fcntl(fd, F_SETFL, wanted) < 0 {
            let e = errno
            throw e == EINVAL && cache == .none ? .directIOUnsupported(path: path, errno: e) : .openFailed(path: path, errno: e)
        }

        var alignment = (offset: 1, memory: 1)
        if cache == .none {
            alignment = try Self.directIOAlignment(fd: fd, path: path, isBlockDevice: isBlockDevice)
        }
        let sectorSize = max(512, alignment.offset)
        guard size % UInt64(sectorSize) == 0 else {
            throw .sizeNotMultiple(path: path, size: size, multiple: sectorSize)
        }

        var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        if cache == .none {
            // A multiple of the block size, aligned for both offsets and memory
            // (and at least to a page, which every O_DIRECT user accepts).
            let bytes = (Self.bounceSize + alignment.offset - 1) / alignment.offset * alignment.offset
            buffer = .allocate(byteCount: bytes, alignment: max(4096, alignment.offset, alignment.memory))
        }

        self.path = path
        self.size = size
        self.readOnly = readOnly
        self.cache = cache
        self.isBlockDevice = isBlockDevice
        self.sectorSize = sectorSize
        self.directIOAlignment = alignment.offset
        self.memoryAlignment = alignment.memory
        self.descriptor = Atomic(fd)
        self.bounce = Mutex(buffer)
        opened = true
    }

    deinit {
        close()
        bounce.withLock { $0.deallocate() }
    }

    // MARK: - BlockBackend

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let fd = try openDescriptor(for: .read)
        try checkRange(.read, offset: offset, length: UInt64(buffer.count))
        try readAll(fd, at: offset, into: buffer, operation: .read)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        let fd = try openDescriptor(for: .write)
        guard !readOnly else { throw .readOnly(operation: .write) }
        try checkRange(.write, offset: offset, length: UInt64(buffer.count))
        try writeAll(fd, at: offset, from: buffer, operation: .write)
    }

    public func flush() throws(BlockError) {
        let fd = try openDescriptor(for: .flush)
        // Nothing written, nothing to make durable.
        guard !readOnly else { return }
        // fdatasync, not fsync: the file's size never changes and its
        // timestamps need not be durable. With cache=none it is still needed:
        // O_DIRECT bypasses the page cache, not the disk's volatile cache.
        while fdatasync(fd) < 0 {
            let e = errno
            if e == EINTR { continue }
            throw .ioFailed(operation: .flush, offset: 0, length: 0, errno: e)
        }
    }

    public func discard(at offset: UInt64, length: UInt64) throws(BlockError) {
        let fd = try openDescriptor(for: .discard)
        guard !readOnly else { throw .readOnly(operation: .discard) }
        try checkRange(.discard, offset: offset, length: length)
        guard length > 0 else { return }
        // KEEP_SIZE: a hole punched at the end must not shrink the disk.
        let r = fallocateRetrying(fd, mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
        // A discard is a hint (virtio 1.2 §5.2.6.2 lets the device ignore it):
        // a filesystem that cannot punch holes simply keeps the data.
        if r == 0 || r == -EOPNOTSUPP { return }
        throw .ioFailed(operation: .discard, offset: offset, length: length, errno: -r)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayUnmap: Bool) throws(BlockError) {
        let fd = try openDescriptor(for: .writeZeroes)
        guard !readOnly else { throw .readOnly(operation: .writeZeroes) }
        try checkRange(.writeZeroes, offset: offset, length: length)
        guard length > 0 else { return }
        // Three ways, cheapest first; each later one is used only when the
        // host says it cannot do the earlier one. A punched hole and a zeroed
        // range both read back as zeros (fallocate(2)).
        if mayUnmap {
            let r = fallocateRetrying(fd, mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
            if r == 0 { return }
            guard r == -EOPNOTSUPP else {
                throw .ioFailed(operation: .writeZeroes, offset: offset, length: length, errno: -r)
            }
        }
        let r = fallocateRetrying(fd, mode: FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset: offset, length: length)
        if r == 0 { return }
        // EOPNOTSUPP: the filesystem has no ZERO_RANGE (tmpfs, NFS).
        // EINVAL: a block device refuses a range not aligned to its sectors.
        // Writing zeros is correct in both cases.
        guard r == -EOPNOTSUPP || r == -EINVAL else {
            throw .ioFailed(operation: .writeZeroes, offset: offset, length: length, errno: -r)
        }
        try writeZeroBytes(fd, at: offset, length: length)
    }

    public func close() {
        // exchange, so that two closes cannot both close (or close a reused number).
        let fd = descriptor.exchange(-1, ordering: .acquiringAndReleasing)
        // Closing the last descriptor of the open file description drops the flock.
        if fd >= 0 { Glibc.close(fd) }
    }

    // MARK: - Transfers

    /// The descriptor, or `.closed`.
    private func openDescriptor(for operation: BlockOperation) throws(BlockError) -> Int32 {
        let fd = descriptor.load(ordering: .acquiring)
        guard fd >= 0 else { throw .closed(operation: operation) }
        return fd
    }

    /// True when O_DIRECT cannot take [offset, offset + count) to or from
    /// `address` as it is. Always false with `cache=writeback` (alignments 1).
    private func needsBounce(offset: UInt64, count: Int, address: UnsafeRawPointer) -> Bool {
        (offset | UInt64(count)) & UInt64(directIOAlignment - 1) != 0
            || UInt(bitPattern: address) & UInt(memoryAlignment - 1) != 0
    }

    /// Reads a range the caller has checked, directly or through the bounce buffer.
    private func readAll(_ fd: Int32, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, operation: BlockOperation) throws(BlockError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard needsBounce(offset: offset, count: buffer.count, address: base) else {
            return try preadAll(fd, base, count: buffer.count, offset: offset, operation: operation)
        }
        let a = UInt64(directIOAlignment)
        let end = offset + UInt64(buffer.count)  // checked against size
        let alignedStart = offset & ~(a - 1)
        // <= size: size is a multiple of the alignment.
        let alignedEnd = (end + a - 1) & ~(a - 1)
        try bounce.withLock { (bounce: inout UnsafeMutableRawBufferPointer) throws(BlockError) in
            // Cannot fire: only cache=none has alignments above 1, and it allocates the buffer at open.
            guard let bounceBase = bounce.baseAddress else { preconditionFailure("a bounce without a bounce buffer") }
            var chunkStart = alignedStart
            while chunkStart < alignedEnd {
                let chunkLength = min(UInt64(bounce.count), alignedEnd - chunkStart)
                try preadAll(fd, bounceBase, count: Int(chunkLength), offset: chunkStart, operation: operation)
                // The caller's part of this chunk.
                let from = max(offset, chunkStart)
                let to = min(end, chunkStart + chunkLength)
                // SAFETY: [from, to) lies in both the chunk and the request.
                (base + Int(from - offset)).copyMemory(from: bounceBase + Int(from - chunkStart), byteCount: Int(to - from))
                chunkStart += chunkLength
            }
        }
    }

    /// Writes a range the caller has checked, directly or through the bounce
    /// buffer. A request that covers only part of a block reads that block
    /// first (read-modify-write).
    ///
    /// The read-modify-write holds the bounce lock, so two unaligned writes
    /// never lose each other's bytes; an aligned write does not take the lock,
    /// so an aligned and an unaligned write to the same block at the same time
    /// may. Only overlapping requests in flight together meet that, and their
    /// outcome is undefined for the guest anyway; `sectorSize` tells the guest
    /// the block size so that it does not issue them.
    private func writeAll(_ fd: Int32, at offset: UInt64, from buffer: UnsafeRawBufferPointer, operation: BlockOperation) throws(BlockError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard needsBounce(offset: offset, count: buffer.count, address: base) else {
            return try pwriteAll(fd, base, count: buffer.count, offset: offset, operation: operation)
        }
        let a = UInt64(directIOAlignment)
        let end = offset + UInt64(buffer.count)
        let alignedStart = offset & ~(a - 1)
        let alignedEnd = (end + a - 1) & ~(a - 1)
        try bounce.withLock { (bounce: inout UnsafeMutableRawBufferPointer) throws(BlockError) in
            // Cannot fire: only cache=none has alignments above 1, and it allocates the buffer at open.
            guard let bounceBase = bounce.baseAddress else { preconditionFailure("a bounce without a bounce buffer") }
            var chunkStart = alignedStart
            while chunkStart < alignedEnd {
                let chunkLength = min(UInt64(bounce.count), alignedEnd - chunkStart)
                let chunkEnd = chunkStart + chunkLength
                let from = max(offset, chunkStart)
                let to = min(end, chunkEnd)
                // Only the first chunk can start mid-block and only the last
                // can end mid-block; read those blocks' current contents.
                let partialHead = from > chunkStart
                if partialHead {
                    try preadAll(fd, bounceBase, count: Int(a), offset: chunkStart, operation: operation)
                }
                if to < chunkEnd && !(partialHead && chunkLength == a) {
                    try preadAll(fd, bounceBase + Int(chunkLength - a), count: Int(a), offset: chunkEnd - a, operation: operation)
                }
                // SAFETY: [from, to) lies in both the chunk and the request.
                (bounceBase + Int(from - chunkStart)).copyMemory(from: base + Int(from - offset), byteCount: Int(to - from))
                try pwriteAll(fd, bounceBase, count: Int(chunkLength), offset: chunkStart, operation: operation)
                chunkStart = chunkEnd
            }
        }
    }

    /// Writes zeros over a checked range in pieces of at most `zeroChunkSize`
    /// bytes: the fallback for hosts that cannot zero a range themselves.
    /// Allocates (once per call, page-aligned so that O_DIRECT takes it
    /// directly); this path is cold.
    private func writeZeroBytes(_ fd: Int32, at offset: UInt64, length: UInt64) throws(BlockError) {
        let chunk = Int(min(length, Self.zeroChunkSize))
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: max(4096, memoryAlignment))
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let piece = Int(min(UInt64(chunk), length - done))
            try writeAll(fd, at: offset + done, from: UnsafeRawBufferPointer(rebasing: zeros[0..<piece]), operation: .writeZeroes)
            done += UInt64(piece)
        }
    }

    // MARK: - Opening

    /// The alignments O_DIRECT needs on `fd`: of offsets and lengths, and of
    /// buffer addresses.
    ///
    /// statx(STATX_DIOALIGN) answers exactly on Linux 6.1 and later for the
    /// filesystems that implement it (ext4, xfs, btrfs, f2fs; block devices
    /// from 6.11). Else a block device's logical sector size (BLKSSZGET) is
    /// the answer. Else try a 512-byte and then a 4096-byte read.
    private static func directIOAlignment(fd: Int32, path: String, isBlockDevice: Bool) throws(BlockError) -> (offset: Int, memory: Int) {
        func valid(_ n: Int) -> Bool { n > 0 && n & (n - 1) == 0 }
        var sx = statx()
        if ckvm_fstatx(fd, UInt32(STATX_DIOALIGN), &sx) == 0, sx.stx_mask & UInt32(STATX_DIOALIGN) != 0 {
            // The kernel reports 0 when this file cannot do direct I/O at all.
            let offset = Int(sx.stx_dio_offset_align), memory = Int(sx.stx_dio_mem_align)
            guard valid(offset), valid(memory) else { throw .directIOUnsupported(path: path, errno: EINVAL) }
            return (offset, memory)
        }
        if isBlockDevice {
            var sector: Int32 = 0
            let r = ckvm_ioctl_ptr(fd, CKVM_BLKSSZGET, &sector)
            guard r >= 0 else { throw .openFailed(path: path, errno: -r) }
            guard valid(Int(sector)) else { throw .directIOUnsupported(path: path, errno: EINVAL) }
            return (Int(sector), Int(sector))
        }
        // Probe: an aligned read at offset 0 fails with EINVAL when the
        // alignment is too small. (An empty file cannot tell; 512 is as good
        // as any answer for a disk nothing can be read from.)
        let probe = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { probe.deallocate() }
        for candidate in [512, 4096] {
            guard let base = probe.baseAddress else { break }
            var n: Int
            // A short read (a file smaller than the candidate) still succeeds.
            repeat { n = pread(fd, base, candidate, 0) } while n < 0 && errno == EINTR
            if n >= 0 { return (candidate, candidate) }
            let e = errno
            guard e == EINVAL else { throw .openFailed(path: path, errno: e) }
        }
        throw .directIOUnsupported(path: path, errno: EINVAL)
    }

    /// A person's name for a file type (S_IFMT bits).
    private static func describe(fileType: mode_t) -> String {
        switch fileType {
        case S_IFCHR: return "character device"
        case S_IFIFO: return "FIFO"
        case S_IFSOCK: return "socket"
        case S_IFLNK: return "symbolic link"
        default: return "file of unknown type"
        }
    }
}
