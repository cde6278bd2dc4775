// Qcow2Create.swift: writing a new, empty qcow2 image (`skvm img create`).
//
// Layout, as qemu-img lays it out: the header cluster, the refcount table,
// the refcount blocks covering the metadata, the L1 table; every data
// cluster unallocated. The counts depend on each other (the blocks must
// cover themselves and the table must hold the blocks), so they are found
// by iterating to a fixpoint. The file is written under a temporary name
// and renamed into place, so an error never leaves a half-written image.

#if canImport(Glibc)
import Glibc
#endif

/// What `Qcow2Creator.create` makes.
public struct Qcow2CreateOptions: Sendable, Equatable {
    /// Virtual size in bytes (rounded up to 512).
    public var size: UInt64
    /// 512 B to 2 MiB, a power of two.
    public var clusterSize: UInt64 = 65536
    /// refcount_bits = 1 << refcountOrder (0...6); must be 4 for version 2.
    public var refcountOrder: UInt32 = 4
    /// 2 (compat=0.10) or 3 (compat=1.1).
    public var version: UInt32 = 3
    /// The backing file name, stored as given (relative to the new image's folder).
    public var backingFile: String?
    /// "raw" or "qcow2", stored in the backing format extension.
    public var backingFormat: String?

    public init(size: UInt64) { self.size = size }
}

public enum Qcow2Creator {
    /// Creates (or replaces) the image at `path`.
    public static func create(path: String, options o: Qcow2CreateOptions) throws(BlockError) {
        func invalid(_ reason: String) -> BlockError { .unsupportedImage(path: path, reason: reason) }
        guard o.clusterSize >= 512, o.clusterSize <= 2 << 20, o.clusterSize & (o.clusterSize - 1) == 0 else {
            throw invalid("cluster size \(o.clusterSize) is not a power of two from 512 to 2097152")
        }
        guard o.version == 2 || o.version == 3 else { throw invalid("qcow2 version \(o.version)") }
        guard o.refcountOrder <= 6, o.version == 3 || o.refcountOrder == 4 else {
            throw invalid("refcount_order \(o.refcountOrder) (0...6, and 4 for version 2)")
        }
        guard let size = alignUp(o.size, 512), size <= Qcow2Engine.maxVirtualSize else { throw invalid("size \(o.size) is above 2^56 bytes") }
        let clusterBits = UInt32(o.clusterSize.trailingZeroBitCount)
        let g = Qcow2Geometry(clusterBits: clusterBits)
        let cs = g.clusterSize
        guard let l1Entries = g.l1Entries(forSize: size), l1Entries * 8 <= Qcow2Engine.maxL1Bytes else {
            throw invalid("size \(size) needs an L1 table above 32 MiB with \(cs)-byte clusters; use larger clusters")
        }
        let l1Clusters = max(1, (l1Entries * 8 + cs - 1) / cs)
        let blockEntries = cs * 8 / (1 << UInt64(o.refcountOrder))
        var tableClusters: UInt64 = 1, blocks: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blocks + l1Clusters
            let b = (total + blockEntries - 1) / blockEntries
            let t = max(1, (b * 8 + cs - 1) / cs)
            if b == blocks && t == tableClusters { break }
            blocks = b
            tableClusters = t
        }
        guard tableClusters * cs <= Qcow2Refcounts.maxTableBytes else { throw invalid("the refcount table would exceed 8 MiB") }
        let total = 1 + tableClusters + blocks + l1Clusters

        var h = Qcow2Header()
        h.version = o.version
        h.clusterBits = clusterBits
        h.size = size
        h.l1Size = UInt32(l1Entries)
        h.refcountTableOffset = cs
        h.refcountTableClusters = UInt32(tableClusters)
        h.l1TableOffset = (1 + tableClusters + blocks) * cs
        h.refcountOrder = o.refcountOrder
        h.headerLength = o.version == 3 ? 112 : 72
        h.backingFile = o.backingFile
        h.backingFormat = o.backingFormat
        guard let headerBytes = h.serialized() else { throw invalid("the header and backing file name do not fit in one \(cs)-byte cluster") }

        // The metadata, in memory (at most a few MiB: L1 32 MiB max is the worst case).
        var image = [UInt8](repeating: 0, count: Int(total * cs))
        image.replaceSubrange(0..<headerBytes.count, with: headerBytes)
        let refcounts = Qcow2Refcounts.Layout(order: UInt64(o.refcountOrder), blockEntries: blockEntries)
        for k in 0..<blocks {
            image.putBE64((1 + tableClusters + k) * cs, at: Int(cs + k * 8))
        }
        for c in 0..<total {
            let blockStart = Int((1 + tableClusters + c / blockEntries) * cs)
            refcounts.set(&image, base: blockStart, index: c % blockEntries, value: 1)
        }
        try writeAtomically(path: path, bytes: image)
    }

    /// Writes `bytes` to a temporary file beside `path`, fsyncs it, and renames it over `path`.
    static func writeAtomically(path: String, bytes: [UInt8], extraLength: UInt64 = 0) throws(BlockError) {
        let temporary = path + ".skvm-tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .openFailed(path: temporary, errno: errno) }
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        do throws(BlockError) {
            try bytes.withBytes { (b) throws(BlockError) in
                guard let base = b.baseAddress, b.count > 0 else { return }
                try pwriteAll(fd, base, count: b.count, offset: 0, operation: .write)
            }
            if extraLength > 0, ftruncate(fd, off_t(UInt64(bytes.count) + extraLength)) != 0 {
                throw BlockError.ioFailed(operation: .write, offset: 0, length: extraLength, errno: errno)
            }
            guard fsync(fd) == 0 else { throw BlockError.ioFailed(operation: .flush, offset: 0, length: 0, errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        guard rename(temporary, path) == 0 else { throw .openFailed(path: path, errno: errno) }
        ok = true
    }
}

extension Qcow2Refcounts {
    /// Entry packing without an open image (for `create`).
    struct Layout {
        let order: UInt64
        let blockEntries: UInt64

        func set(_ bytes: inout [UInt8], base: Int, index i: UInt64, value: UInt64) {
            if order >= 3 {
                let width = Int(1 << (order - 3))
                let start = base + Int(i) * width
                for k in 0..<width { bytes[start + k] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - k))) }
                return
            }
            let bits = UInt64(1) << order
            let perByte = 8 / bits
            let at = base + Int(i / perByte)
            let shift = (i % perByte) * bits
            bytes[at] |= UInt8(truncatingIfNeeded: value << shift)
        }
    }
}
