// Qcow2Allocator.swift: cluster allocation at the end of the file, with
// refcount block creation and refcount table growth.
//
// Clusters are handed out in increasing order from `nextFree`, which starts
// past both the end of the file and the last cluster with a refcount.
// Freed clusters are not reused (see docs/qcow2.md, "Limits"): a fresh
// cluster therefore never holds data anyone references, and a crash after
// its refcount was written but before anything points to it leaks it, no
// worse.
//
// A new refcount block is placed at the very cluster it is first needed
// for, so it always covers itself. When the table itself is full, a new
// table and the blocks that cover it are laid out together at the end, the
// header is switched to the new table after they are durable, and the old
// table is freed afterwards.

#if canImport(Glibc)
import Glibc
#endif

extension Qcow2Refcounts {
    /// Allocates one cluster (refcount 0 -> 1, written through) and returns
    /// its host offset.
    func allocateCluster() throws(BlockError) -> UInt64 {
        let cs = geometry.clusterSize
        while true {
            let n = nextFree
            guard n < (1 << 56) / cs else { throw .ioFailed(operation: .write, offset: n * cs, length: cs, errno: EFBIG) }
            let bi = n / blockEntries
            if bi >= UInt64(table.count) {
                try growTable()
                continue
            }
            if table[Int(bi)] & Qcow2Entry.offsetMask == 0 {
                try createBlock(at: n, index: bi)
                continue
            }
            let current = try refcount(n)
            guard current == 0 else { throw invalid("cluster \(n) past the end of the image already has refcount \(current)") }
            try setRefcount(n, 1)
            nextFree = n + 1
            return n * cs
        }
    }

    /// True when the next `allocateCluster` returns cluster `nextFree`
    /// itself: its refcount block exists, so none is created on the way.
    var nextAllocationIsContiguous: Bool {
        let bi = nextFree / blockEntries
        return bi < UInt64(table.count) && table[Int(bi)] & Qcow2Entry.offsetMask != 0
    }

    /// Writes a new refcount block for table entry `index` at cluster `n`
    /// (which it covers, refcount 1), makes it durable, then points the
    /// table entry at it.
    private func createBlock(at n: UInt64, index: UInt64) throws(BlockError) {
        let cs = geometry.clusterSize
        var bytes = [UInt8](repeating: 0, count: Int(cs))
        _ = setEntry(&bytes, n % blockEntries, 1)
        try file.write(at: n * cs, bytes: bytes)
        nextFree = n + 1
        // The block must be on disk before the table entry that points to it.
        try file.barrier()
        var entry = [UInt8](repeating: 0, count: 8)
        entry.putBE64(n * cs, at: 0)
        try file.write(at: tableOffset + index * 8, bytes: entry)
        table[Int(index)] = n * cs
    }

    /// Replaces the refcount table by one at least twice as large, at the
    /// end of the file, together with the refcount blocks covering it.
    ///
    /// Order: new blocks and table written, fdatasync; header fields
    /// refcount_table_offset and refcount_table_clusters (bytes 48-59, one
    /// pwrite inside one sector) written, fdatasync; old table released.
    /// A crash before the header write leaves the old table in charge and
    /// the new clusters leaked; after it, the old table's clusters leaked.
    private func growTable() throws(BlockError) {
        let cs = geometry.clusterSize
        let entriesPerCluster = cs / 8
        let start = nextFree
        let oldCount = UInt64(table.count)
        var tableClustersNew: UInt64 = 0
        var missing: [UInt64] = []
        // Fixpoint: the new table and the new blocks must cover themselves.
        while true {
            let end = start + tableClustersNew + UInt64(missing.count)
            let lastBlock = end == start ? start / blockEntries : (end - 1) / blockEntries
            var needMissing: [UInt64] = []
            for bi in (start / blockEntries)...lastBlock where bi >= oldCount || table[Int(bi)] & Qcow2Entry.offsetMask == 0 {
                needMissing.append(bi)
            }
            let entries = max(oldCount * 2, lastBlock + 2)
            let clusters = (entries + entriesPerCluster - 1) / entriesPerCluster
            if clusters == tableClustersNew && needMissing == missing { break }
            tableClustersNew = clusters
            missing = needMissing
        }
        guard tableClustersNew * cs <= Self.maxTableBytes else {
            throw .ioFailed(operation: .write, offset: start * cs, length: 0, errno: EFBIG)
        }
        let blocksStart = start + tableClustersNew
        let end = blocksStart + UInt64(missing.count)
        var newTable = table + [UInt64](repeating: 0, count: Int(tableClustersNew * entriesPerCluster) - table.count)
        // Each missing block, at blocksStart + k, covers block index missing[k].
        var blockSlot: [UInt64: Int] = [:]
        var newBlocks: [[UInt8]] = []
        for (k, bi) in missing.enumerated() {
            newTable[Int(bi)] = (blocksStart + UInt64(k)) * cs
            blockSlot[bi] = k
            newBlocks.append([UInt8](repeating: 0, count: Int(cs)))
        }
        // Refcount 1 for every cluster of the new area: in a new block, or
        // written through into an existing one (still the old table's).
        for c in start..<end {
            let bi = c / blockEntries
            if let k = blockSlot[bi] {
                _ = setEntry(&newBlocks[k], c % blockEntries, 1)
            } else {
                guard try refcount(c) == 0 else { throw invalid("cluster \(c) past the end of the image already has a refcount") }
                try setRefcount(c, 1)
            }
        }
        for (k, bytes) in newBlocks.enumerated() {
            try file.write(at: (blocksStart + UInt64(k)) * cs, bytes: bytes)
        }
        var raw = [UInt8](repeating: 0, count: newTable.count * 8)
        for (i, e) in newTable.enumerated() { raw.putBE64(e, at: i * 8) }
        try file.write(at: start * cs, bytes: raw)
        try file.barrier()
        var fields = [UInt8](repeating: 0, count: 12)
        fields.putBE64(start * cs, at: 0)
        fields.putBE32(UInt32(tableClustersNew), at: 8)
        try file.write(at: 48, bytes: fields)
        try file.sync()
        let oldOffset = tableOffset, oldClusters = tableClusters
        table = newTable
        tableOffset = start * cs
        tableClusters = tableClustersNew
        nextFree = end
        if let i = protected.firstIndex(where: { $0.what == "refcount table" }) {
            protected[i] = (tableOffset, tableOffset + tableClusters * cs, "refcount table")
        }
        try release(oldOffset, oldOffset + oldClusters * cs)
    }
}
