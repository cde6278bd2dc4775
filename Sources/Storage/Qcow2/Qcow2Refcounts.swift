// Qcow2Refcounts.swift: the two-level refcount structure (qcow2.txt,
// "Host cluster management").
//
// The refcount table (at most 8 MiB, QEMU's limit) is kept in memory;
// refcount blocks go through a small cache. Every change is written
// through at once (one pwrite of the entry's bytes): the on-disk refcounts
// never lag the in-memory ones, which is what the crash-safety argument in
// docs/qcow2.md needs. Entries are 1 << refcount_order bits wide, 1 to 64;
// sub-byte entries start at the least significant bit.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// Refcount lookups and updates for one image. Not thread-safe.
final class Qcow2Refcounts {
    let file: Qcow2File
    let geometry: Qcow2Geometry
    /// log2 of the entry width in bits (0...6).
    let order: UInt64
    /// Entries per refcount block.
    let blockEntries: UInt64
    /// The largest refcount an entry can hold.
    let maxRefcount: UInt64

    /// The refcount table, host-endian. Its length is refcountTableClusters * cluster_size / 8.
    var table: [UInt64]
    var tableOffset: UInt64
    var tableClusters: UInt64
    /// The next cluster index to allocate (append at the end; see Qcow2Allocator.swift).
    var nextFree: UInt64 = 0
    /// Metadata ranges no refcount block may overlap: the header cluster,
    /// the L1 table, the refcount table (checked when a block is loaded).
    var protected: [(start: UInt64, end: UInt64, what: String)] = []

    var blocks: Qcow2Cache<[UInt8]>

    /// QEMU's limit on the refcount table's size.
    static let maxTableBytes: UInt64 = 8 << 20

    init(file: Qcow2File, geometry: Qcow2Geometry, order: UInt32, tableOffset: UInt64, tableClusters: UInt64) throws(BlockError) {
        self.file = file
        self.geometry = geometry
        self.order = UInt64(order)
        let bits: UInt64 = 1 << UInt64(order)
        blockEntries = geometry.clusterSize * 8 / bits
        maxRefcount = bits == 64 ? UInt64.max : (1 << bits) - 1
        self.tableOffset = tableOffset
        self.tableClusters = tableClusters
        let bytes = Int(tableClusters * geometry.clusterSize)  // <= 8 MiB, checked by the caller
        let raw = try file.readArray(at: tableOffset, count: bytes)
        table = (0..<(bytes / 8)).map { raw.be64($0 * 8) }
        blocks = Qcow2Cache(capacity: 8, empty: [UInt8](repeating: 0, count: Int(geometry.clusterSize)))
    }

    func invalid(_ reason: String) -> BlockError { .invalidImage(path: file.path, reason: reason) }

    // MARK: - Blocks

    /// The cache slot of refcount block `blockIndex`, or nil when the table
    /// says it is not allocated (every refcount it covers is 0).
    func block(_ blockIndex: UInt64) throws(BlockError) -> Int? {
        guard blockIndex < UInt64(table.count) else { return nil }
        let entry = table[Int(blockIndex)]
        let offset = entry & Qcow2Entry.offsetMask
        guard offset != 0 else { return nil }
        if let slot = blocks.lookup(offset) { return slot }
        let cs = geometry.clusterSize
        guard entry & 0x1FF == 0, offset & (cs - 1) == 0 else {
            throw invalid("refcount block \(blockIndex) at offset \(offset) is not cluster-aligned")
        }
        guard offset + cs <= file.length else {
            throw invalid("refcount block \(blockIndex) at offset \(offset) lies past the end of the file (\(file.length) bytes)")
        }
        for p in protected where offset < p.end && p.start < offset + cs {
            throw invalid("refcount block \(blockIndex) at offset \(offset) overlaps the \(p.what)")
        }
        let slot = blocks.victim()
        blocks.drop(slot)
        try blocks[slot].table.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(BlockError) in
            try file.read(at: offset, into: b)
        }
        blocks.assign(slot, offset: offset)
        return slot
    }

    /// Entry `i` of a block's bytes.
    func entry(_ bytes: [UInt8], _ i: UInt64) -> UInt64 {
        if order >= 3 {
            let width = Int(1 << (order - 3))
            var v: UInt64 = 0
            for k in 0..<width { v = v << 8 | UInt64(bytes[Int(i) * width + k]) }
            return v
        }
        let bits = UInt64(1) << order
        let perByte = 8 / bits
        let byte = UInt64(bytes[Int(i / perByte)])
        return (byte >> ((i % perByte) * bits)) & ((1 << bits) - 1)
    }

    /// Stores entry `i` into a block's bytes; returns the byte range changed.
    func setEntry(_ bytes: inout [UInt8], _ i: UInt64, _ value: UInt64) -> Range<Int> {
        if order >= 3 {
            let width = Int(1 << (order - 3))
            let start = Int(i) * width
            for k in 0..<width { bytes[start + k] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - k))) }
            return start..<(start + width)
        }
        let bits = UInt64(1) << order
        let perByte = 8 / bits
        let at = Int(i / perByte)
        let shift = (i % perByte) * bits
        let mask = UInt8(truncatingIfNeeded: ((1 << bits) - 1) << shift)
        bytes[at] = (bytes[at] & ~mask) | (UInt8(truncatingIfNeeded: value << shift) & mask)
        return at..<(at + 1)
    }

    // MARK: - Refcounts

    /// The refcount of host cluster `cluster` (an index, offset / cluster_size).
    func refcount(_ cluster: UInt64) throws(BlockError) -> UInt64 {
        guard let slot = try block(cluster / blockEntries) else { return 0 }
        return entry(blocks[slot].table, cluster % blockEntries)
    }

    /// Sets the refcount of `cluster`, writing the changed bytes through.
    /// The cluster's refcount block must exist.
    func setRefcount(_ cluster: UInt64, _ value: UInt64) throws(BlockError) {
        guard let slot = try block(cluster / blockEntries), let offset = blocks[slot].offset else {
            throw invalid("no refcount block covers cluster \(cluster)")
        }
        let changed = setEntry(&blocks[slot].table, cluster % blockEntries, value)
        do throws(BlockError) {
            try blocks[slot].table.withBytes { (b) throws(BlockError) in
                try file.write(at: offset + UInt64(changed.lowerBound), from: UnsafeRawBufferPointer(rebasing: b[changed]))
            }
        } catch {
            // Memory and disk may now differ: forget the cached block.
            blocks.drop(slot)
            throw error
        }
    }

    /// Drops the refcount of every cluster in [start, end) by one (a
    /// reference to them went away). A cluster that becomes free gets a
    /// hole punched in the file, so a discard gives the space back to the
    /// host (the cluster is never allocated again; see Qcow2Allocator.swift).
    func release(_ start: UInt64, _ end: UInt64) throws(BlockError) {
        let cs = geometry.clusterSize
        var c = start / cs
        while c * cs < end {
            let r = try refcount(c)
            guard r > 0 else { throw invalid("refcount of cluster \(c) would drop below 0") }
            try setRefcount(c, r - 1)
            if r == 1, c * cs + cs <= file.length {
                // A hint: a filesystem without hole punching keeps the bytes.
                _ = fallocateRetrying(file.descriptor, mode: FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset: c * cs, length: cs)
            }
            c += 1
        }
    }

    /// The first cluster index after every cluster with a non-zero refcount
    /// (0 for an image without any). Reads only the last allocated block.
    func endOfReferencedClusters() throws(BlockError) -> UInt64 {
        guard let last = table.lastIndex(where: { $0 & Qcow2Entry.offsetMask != 0 }) else { return 0 }
        var bi = UInt64(last)
        // Each distinct block is scanned once, so a hostile table pointing
        // every entry at one empty block costs one scan, not millions.
        var scanned: Set<UInt64> = []
        while true {
            let offset = table[Int(bi)] & Qcow2Entry.offsetMask
            if offset != 0, scanned.insert(offset).inserted, let slot = try block(bi) {
                let bytes = blocks[slot].table
                var i = blockEntries
                while i > 0 {
                    if entry(bytes, i - 1) != 0 { return bi * blockEntries + i }
                    i -= 1
                }
            }
            guard bi > 0 else { return 0 }
            bi -= 1
        }
    }
}
