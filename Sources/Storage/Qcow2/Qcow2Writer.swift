// Qcow2Writer.swift: writes, write-zeroes, discard and flush, ordered for
// crash safety (docs/qcow2.md, "Crash safety", argues each step).
//
// The rules, in the order the code applies them:
// 1. A cluster's refcount is written (through, Qcow2Refcounts) before
//    anything is written into it, and anything that points to a cluster is
//    written only after a barrier (fdatasync) that follows the cluster's
//    contents: new data before the L2 entry, a new L2 table before the L1
//    entry.
// 2. L2 and L1 changes stay in memory (dirty cache slots, `dirtyL1`) until
//    `flushMetadata` or an eviction writes them, after that barrier.
// 3. A reference that goes away (a cluster rewritten by copy-on-write, a
//    discarded cluster, an L2 table replaced by its copy) releases its
//    refcount only after the metadata that no longer points to it is
//    durable (`pendingReleases`, applied at the end of `flushMetadata`).
// So a crash at any point leaves refcounts at or above the truth: leaked
// clusters at worst, never a reference to a cluster with refcount 0.
//
// Copy-on-write (qcow2.txt, "Host cluster management"): bit 63 (COPIED) of
// an active L1 or L2 entry says the refcount is exactly 1, so the cluster
// may be written in place. Without it (an internal snapshot shares the
// cluster) a write goes to a new cluster and the old one loses the active
// table's reference. Compressed clusters and zero clusters are always
// rewritten to a new standard cluster.

extension Qcow2Engine {
    /// The refcounts, which exist whenever the image is writable.
    private func allocator(_ op: BlockOperation) throws(BlockError) -> Qcow2Refcounts {
        guard let refcounts else { throw .readOnly(operation: op) }
        return refcounts
    }

    /// The cache slot of the active, writable (COPIED) L2 table for
    /// `l1Index`: allocated zeroed when there is none, copied when shared.
    func writableL2(_ l1Index: Int, op: BlockOperation) throws(BlockError) -> Int {
        let entry = l1[l1Index]
        let old = entry & Qcow2Entry.offsetMask
        if old != 0, entry & Qcow2Entry.copied != 0 { return try loadL2(old, l1Index: l1Index) }
        let refcounts = try allocator(op)
        // The copy's contents: the shared table's entries, each COPIED only
        // when its cluster's refcount is exactly 1.
        var contents = [UInt64](repeating: 0, count: Int(geometry.l2Entries))
        if old != 0 {
            let source = try loadL2(old, l1Index: l1Index)
            contents = l2Cache[source].table
            for i in contents.indices {
                let e = contents[i]
                guard e & Qcow2Entry.compressed == 0 else { continue }
                let host = e & Qcow2Entry.offsetMask
                var copied = false
                if host != 0 { copied = try refcounts.refcount(host / geometry.clusterSize) == 1 }
                contents[i] = copied ? e | Qcow2Entry.copied : e & ~Qcow2Entry.copied
            }
        }
        let newOffset = try refcounts.allocateCluster()
        let slot = try freeSlot()
        l2Cache[slot].table = contents
        l2Cache.assign(slot, offset: newOffset)
        // Written before the L1 entry by flushMetadata (or at eviction).
        l2Cache[slot].dirty = true
        l1[l1Index] = newOffset | Qcow2Entry.copied
        dirtyL1.insert(l1Index)
        if old != 0 { pendingReleases.append((old, old + geometry.clusterSize)) }
        return slot
    }

    /// Sets L2 entry `cluster` to `entry`, releasing (later) what the old entry referenced.
    func setL2Entry(_ cluster: UInt64, _ entry: UInt64, op: BlockOperation) throws(BlockError) {
        let slot = try writableL2(Int(cluster >> geometry.l2Bits), op: op)
        let i = Int(cluster & (geometry.l2Entries - 1))
        let oldEntry = l2Cache[slot].table[i]
        l2Cache[slot].table[i] = entry
        l2Cache[slot].dirty = true
        if let old = Qcow2Mapping(entry: oldEntry, geometry: geometry),
           let range = old.referencedRange(clusterSize: geometry.clusterSize) {
            pendingReleases.append(range)
            if case .compressed = old { decompressor.invalidate() }
        }
        if pendingReleases.count > 65536 { try flushMetadata() }
    }

    // MARK: - Writes

    /// Writes guest bytes [offset + start, offset + buffer.count),
    /// range-checked by the caller, except the parts that go in place.
    ///
    /// Clusters with COPIED (refcount 1) are written in place: no metadata
    /// changes, so they become extents in `plan` (coalesced while
    /// host-contiguous) that the caller pwrites after releasing the lock.
    /// Everything that allocates is done here, under the lock, data before
    /// metadata. Stops early when `plan` is full; returns how far the
    /// buffer is written or planned.
    func planWrite(at offset: UInt64, from buffer: UnsafeRawBufferPointer, from start: Int,
                   plan: inout Qcow2ReadPlan) throws(BlockError) -> Int {
        let cs = geometry.clusterSize
        var done = start
        plan.count = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let cluster = pos / cs
            let inCluster = pos & (cs - 1)
            var count = Int(min(cs - inCluster, UInt64(buffer.count - done)))
            if case .standard(let host, copied: true) = try mapping(ofCluster: cluster) {
                guard plan.count < Qcow2ReadPlan.capacity else { return done }
                try checkData(host, cluster: cluster)
                var next = cluster + 1
                var hostEnd = host + cs
                while done + count < buffer.count, case .standard(let h, copied: true) = try mapping(ofCluster: next), h == hostEnd {
                    try checkData(h, cluster: next)
                    count += Int(min(cs, UInt64(buffer.count - done - count)))
                    next += 1
                    hostEnd += cs
                }
                plan.extents[plan.count] = Qcow2ReadPlan.Extent(start: done, length: count, host: host + inCluster)
                plan.count += 1
            } else if inCluster == 0 && count == Int(cs) {
                count = try writeNewClusters(from: cluster, UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } else {
                try writeCluster(cluster, inCluster: Int(inCluster), UnsafeRawBufferPointer(rebasing: buffer[done..<(done + count)]))
            }
            done += count
        }
        return done
    }

    /// Writes whole clusters from guest cluster `first` on into newly
    /// allocated, host-contiguous clusters with one pwrite, for as long as
    /// `data` covers them whole, they need a new cluster, they share one L2
    /// table and the allocator continues the run (at most 256 clusters).
    /// Returns the bytes written. The L2 entries are set after the data.
    private func writeNewClusters(from first: UInt64, _ data: UnsafeRawBufferPointer) throws(BlockError) -> Int {
        let cs = geometry.clusterSize
        let refcounts = try allocator(.write)
        _ = try writableL2(Int(first >> geometry.l2Bits), op: .write)
        let start = try refcounts.allocateCluster()
        let limit = min(UInt64(data.count) / cs, geometry.l2Entries - (first & (geometry.l2Entries - 1)), 256)
        var n: UInt64 = 1
        while n < limit, refcounts.nextAllocationIsContiguous, refcounts.nextFree * cs == start + n * cs {
            if case .standard(_, copied: true) = try mapping(ofCluster: first + n) { break }
            guard try refcounts.allocateCluster() == start + n * cs else {
                throw invalid("the allocator broke a run of clusters at \(start + n * cs)")
            }
            n += 1
        }
        try file.write(at: start, from: UnsafeRawBufferPointer(rebasing: data[0..<Int(n * cs)]))
        for i in 0..<n { try setL2Entry(first + i, (start + i * cs) | Qcow2Entry.copied, op: .write) }
        return Int(n * cs)
    }

    /// Writes `piece` at byte `inCluster` of guest cluster `cluster`.
    private func writeCluster(_ cluster: UInt64, inCluster: Int, _ piece: UnsafeRawBufferPointer) throws(BlockError) {
        let cs = geometry.clusterSize
        let current = try mapping(ofCluster: cluster)
        if case .standard(let host, copied: true) = current {
            // Refcount 1: in place, no metadata changes.
            try checkData(host, cluster: cluster)
            try file.write(at: host + UInt64(inCluster), from: piece)
            return
        }
        let refcounts = try allocator(.write)
        // Allocate the L2 table first, so that the data cluster follows it.
        _ = try writableL2(Int(cluster >> geometry.l2Bits), op: .write)
        let host = try refcounts.allocateCluster()
        if piece.count == Int(cs) {
            try file.write(at: host, from: piece)
        } else {
            // Partial: the rest of the cluster keeps what the guest saw
            // (backing file, zeros, old or decompressed data).
            try loadClusterContents(cluster, mapping: current)
            clusterBuffer.withUnsafeMutableBytes { b in
                UnsafeMutableRawBufferPointer(rebasing: b[inCluster..<(inCluster + piece.count)]).copyMemory(from: piece)
            }
            try file.write(at: host, bytes: clusterBuffer)
        }
        try setL2Entry(cluster, host | Qcow2Entry.copied, op: .write)
    }

    /// write-zeroes (`discard == false`) or discard over a checked range.
    ///
    /// Whole clusters become zero clusters (version 3) or unallocated
    /// (version 2 without a backing file); the parts of clusters a request
    /// covers only partly are written with zeros by write-zeroes and left
    /// alone by discard (a hint). On a version 2 image with a backing file,
    /// unallocated would expose the backing file's data, so discard does
    /// nothing and write-zeroes writes zeros.
    func zero(at offset: UInt64, length: UInt64, discard: Bool) throws(BlockError) {
        let op: BlockOperation = discard ? .discard : .writeZeroes
        let cs = geometry.clusterSize
        let end = offset + length
        var pos = offset
        let canMapZero = header.version >= 3 || backing == nil
        while pos < end {
            let cluster = pos / cs
            let inCluster = pos & (cs - 1)
            let count = min(cs - inCluster, end - pos)
            defer { pos += count }
            if count < cs || !canMapZero {
                guard !discard else { continue }
                try zeroCluster.withBytes { (z: UnsafeRawBufferPointer) throws(BlockError) in
                    try writeCluster(cluster, inCluster: Int(inCluster), UnsafeRawBufferPointer(rebasing: z[0..<Int(count)]))
                }
                continue
            }
            let l1Index = Int(cluster >> geometry.l2Bits)
            // Nothing allocated and nothing behind: already reads as zeros.
            if backing == nil, l1[l1Index] & Qcow2Entry.offsetMask == 0 { continue }
            let current = try mapping(ofCluster: cluster)
            if current == .zero(host: 0) { continue }
            if current == .unallocated, backing == nil { continue }
            try setL2Entry(cluster, header.version >= 3 ? Qcow2Entry.zero : 0, op: op)
        }
    }

    // MARK: - Flush

    /// Writes every metadata change in the order that keeps the image
    /// consistent on disk, then releases the refcounts of references that
    /// went away. Ends with everything durable.
    func flushMetadata() throws(BlockError) {
        guard !file.readOnly else { return }
        let dirty = l2Cache.dirtySlots
        if !dirty.isEmpty || !dirtyL1.isEmpty || !pendingReleases.isEmpty {
            // 1. Data and refcounts durable before the tables that point to them.
            try file.barrier()
            // 2. L2 tables, then durable before the L1 entries pointing to them.
            for slot in dirty { try writeL2(slot) }
            try file.barrier()
            // 3. L1 entries.
            for i in dirtyL1.sorted() {
                var raw = [UInt8](repeating: 0, count: 8)
                raw.putBE64(l1[i], at: 0)
                try file.write(at: header.l1TableOffset + UInt64(i) * 8, bytes: raw)
            }
            dirtyL1.removeAll()
            try file.barrier()
            // 4. Only now may the clusters nothing points to lose their refcount.
            let releases = pendingReleases
            pendingReleases.removeAll()
            if let refcounts {
                for r in releases { try refcounts.release(r.start, r.end) }
            }
        }
        try file.sync()
    }
}
