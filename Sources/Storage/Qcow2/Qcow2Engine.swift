// Qcow2Engine.swift: the state of one open qcow2 image, its validation at
// open, and the read path (qcow2.txt, "Cluster mapping").
//
// Everything here runs under Qcow2Image's lock. The active L1 table is held
// in memory (at most 32 MiB, QEMU's limit); L2 tables go through a bounded
// cache. Every offset read from the file is checked before it is used:
// alignment, inside the file, not overlapping the header, L1 table or
// refcount table. A check that fails is a `.invalidImage` naming the
// structure, never a trap.

/// Where the allocated parts of a read are in the file: filled under the
/// lock by `Qcow2Engine.planRead`, read by `Qcow2Image.read` without it.
/// A fixed number of extents on the stack: no allocation per request.
struct Qcow2ReadPlan {
    struct Extent {
        /// Byte offset in the request's buffer, and length.
        var start = 0
        var length = 0
        /// Where those bytes are in the file.
        var host: UInt64 = 0
    }

    static let capacity = 16
    var extents = InlineArray<16, Extent>(repeating: Extent())
    var count = 0
}

/// One open qcow2 image's metadata and buffers. Not thread-safe.
final class Qcow2Engine {
    let file: Qcow2File
    var header: Qcow2Header
    let geometry: Qcow2Geometry
    /// The virtual size rounded up to 512 bytes.
    let size: UInt64
    /// The active L1 table, host-endian; authoritative (the file catches up at flush).
    var l1: [UInt64]
    /// L1 indices changed in memory and not yet written.
    var dirtyL1: Set<Int> = []
    var l2Cache: Qcow2Cache<[UInt64]>
    let refcounts: Qcow2Refcounts?
    let backing: Qcow2Backing?
    let decompressor: Qcow2Decompressor
    /// Host byte ranges whose clusters lose one reference once the metadata
    /// that stopped pointing at them is durable (applied in `flushMetadata`).
    var pendingReleases: [(start: UInt64, end: UInt64)] = []
    /// One cluster, for read-modify-write of partial clusters.
    var clusterBuffer: [UInt8]
    /// One cluster of zeros.
    let zeroCluster: [UInt8]
    /// Header, L1 table and refcount table ranges, which no L2 table or data cluster may overlap.
    let protected: [(start: UInt64, end: UInt64, what: String)]

    /// QEMU's limit on the L1 table's size.
    static let maxL1Bytes: UInt64 = 32 << 20
    /// The largest virtual size accepted (qcow2.txt: 56 bits of populated clusters).
    static let maxVirtualSize: UInt64 = 1 << 56

    func invalid(_ reason: String) -> BlockError { .invalidImage(path: file.path, reason: reason) }

    /// Opens the image in `file`; `chain` holds the canonical paths of the
    /// images above it. `openBacking: false` (for `check` and `info`) skips
    /// the backing file.
    init(file: Qcow2File, chain: [String], openBacking: Bool = true) throws(BlockError) {
        self.file = file
        let path = file.path
        func invalid(_ reason: String) -> BlockError { .invalidImage(path: path, reason: reason) }
        guard file.length >= 72 else { throw invalid("the file is \(file.length) bytes, too short for a qcow2 header") }
        let head = try file.readArray(at: 0, count: Int(min(file.length, 512)))
        guard head.count >= 24, head.be32(0) == Qcow2Header.magic else { throw invalid("not a qcow2 image (no QFI\\xfb magic)") }
        let bits = head.be32(20)
        let firstCluster = (9...21).contains(bits) ? Int(min(file.length, 1 << UInt64(bits))) : head.count
        var header = try Qcow2Header.parse(try file.readArray(at: 0, count: firstCluster), path: path)
        try header.checkSupported(writable: !file.readOnly, path: path)
        let g = Qcow2Geometry(clusterBits: header.clusterBits)
        let cs = g.clusterSize
        geometry = g

        // Sizes (absurd values refused before anything is allocated).
        guard header.size <= Self.maxVirtualSize else { throw invalid("virtual size \(header.size) is above 2^56 bytes") }
        guard let needL1 = g.l1Entries(forSize: header.size), UInt64(header.l1Size) >= needL1 else {
            throw invalid("l1_size \(header.l1Size) is too small for a virtual size of \(header.size) bytes")
        }
        guard UInt64(header.l1Size) * 8 <= Self.maxL1Bytes else { throw invalid("l1_size \(header.l1Size) is above QEMU's 32 MiB limit") }
        guard header.refcountTableClusters > 0, UInt64(header.refcountTableClusters) * cs <= Qcow2Refcounts.maxTableBytes else {
            throw invalid("refcount_table_clusters \(header.refcountTableClusters) is 0 or above QEMU's 8 MiB limit")
        }
        size = alignUp(header.size, 512) ?? header.size

        // Placement: aligned, after the header cluster, inside the file, disjoint.
        let l1Bytes = UInt64(header.l1Size) * 8
        let rtBytes = UInt64(header.refcountTableClusters) * cs
        func place(_ offset: UInt64, _ length: UInt64, _ what: String) throws(BlockError) {
            guard offset & (cs - 1) == 0 else { throw invalid("the \(what) at offset \(offset) is not cluster-aligned") }
            guard offset >= cs else { throw invalid("the \(what) at offset \(offset) lies inside the header cluster") }
            let (end, overflow) = offset.addingReportingOverflow(length)
            guard !overflow, end <= file.length else {
                throw invalid("the \(what) at offset \(offset) (\(length) bytes) lies past the end of the file (\(file.length) bytes)")
            }
        }
        if header.l1Size > 0 { try place(header.l1TableOffset, l1Bytes, "L1 table") }
        try place(header.refcountTableOffset, rtBytes, "refcount table")
        if header.l1Size > 0, header.l1TableOffset < header.refcountTableOffset + rtBytes,
           header.refcountTableOffset < header.l1TableOffset + l1Bytes {
            throw invalid("the L1 table and the refcount table overlap")
        }
        if header.snapshotCount > 0 {
            guard header.snapshotCount <= 65536 else { throw invalid("nb_snapshots \(header.snapshotCount) is above 65536") }
            try place(header.snapshotsOffset, 40, "snapshot table")
        }
        var protected: [(start: UInt64, end: UInt64, what: String)] = [(0, cs, "header cluster")]
        if header.l1Size > 0 { protected.append((header.l1TableOffset, header.l1TableOffset + l1Bytes, "L1 table")) }
        protected.append((header.refcountTableOffset, header.refcountTableOffset + rtBytes, "refcount table"))
        self.protected = protected

        let rawL1 = try file.readArray(at: header.l1TableOffset, count: Int(l1Bytes))
        l1 = (0..<Int(header.l1Size)).map { rawL1.be64($0 * 8) }
        // Bounded: 16 MiB of tables, 16 to 1024 of them.
        let capacity = Int(max(16, min(1024, (16 << 20) / cs)))
        l2Cache = Qcow2Cache(capacity: capacity, empty: [UInt64](repeating: 0, count: Int(g.l2Entries)))
        decompressor = Qcow2Decompressor(clusterSize: Int(cs), compressionType: header.compressionType)
        clusterBuffer = [UInt8](repeating: 0, count: Int(cs))
        zeroCluster = [UInt8](repeating: 0, count: Int(cs))

        if file.readOnly {
            refcounts = nil
        } else {
            let r = try Qcow2Refcounts(file: file, geometry: g, order: header.refcountOrder,
                                       tableOffset: header.refcountTableOffset, tableClusters: UInt64(header.refcountTableClusters))
            r.protected = protected
            let fileClusters = (alignUp(file.length, cs) ?? file.length) / cs
            r.nextFree = max(fileClusters, try r.endOfReferencedClusters())
            refcounts = r
            // qcow2.txt: an implementation may only write an image with
            // unknown autoclear bits after clearing them. skvm maintains
            // none of them (bitmaps, raw external data), so it clears all.
            if header.autoclearFeatures != 0 {
                header.autoclearFeatures = 0
                var zero = [UInt8](repeating: 0, count: 8)
                zero.putBE64(0, at: 0)
                try file.write(at: 88, bytes: zero)
                try file.sync()
            }
        }
        self.header = header

        if let name = header.backingFile, openBacking {
            backing = try Qcow2Backing.open(name: name, format: header.backingFormat, imagePath: file.path,
                                            chain: chain.isEmpty ? [Qcow2Backing.canonical(file.path)] : chain)
        } else {
            backing = nil
        }
    }

    // MARK: - Mapping

    /// The L2 table for L1 entry `l1Index` as a cache slot, or nil when unallocated.
    func l2Slot(_ l1Index: Int) throws(BlockError) -> Int? {
        let entry = l1[l1Index]
        let offset = entry & Qcow2Entry.offsetMask
        guard offset != 0 else { return nil }
        return try loadL2(offset, l1Index: l1Index)
    }

    /// The cache slot holding the L2 table at `offset`, reading it on a miss.
    func loadL2(_ offset: UInt64, l1Index: Int) throws(BlockError) -> Int {
        if let slot = l2Cache.lookup(offset) { return slot }
        let cs = geometry.clusterSize
        guard offset & (cs - 1) == 0 else { throw invalid("L1 entry \(l1Index): L2 table offset \(offset) is not cluster-aligned") }
        guard offset + cs <= file.length else {
            throw invalid("L1 entry \(l1Index): L2 table at offset \(offset) lies past the end of the file (\(file.length) bytes)")
        }
        for p in protected where offset < p.end && p.start < offset + cs {
            throw invalid("L1 entry \(l1Index): L2 table at offset \(offset) overlaps the \(p.what)")
        }
        let slot = try freeSlot()
        do throws(BlockError) {
            try l2Cache[slot].table.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(BlockError) in
                try file.read(at: offset, into: b)
            }
        } catch {
            l2Cache.drop(slot)
            throw error
        }
        // Big-endian on disk, host-endian in the cache.
        for i in 0..<Int(geometry.l2Entries) { l2Cache[slot].table[i] = UInt64(bigEndian: l2Cache[slot].table[i]) }
        l2Cache.assign(slot, offset: offset)
        return slot
    }

    /// A cache slot that may be overwritten: the victim, written back first
    /// when dirty (after the barrier that makes what it points to durable).
    func freeSlot() throws(BlockError) -> Int {
        let slot = l2Cache.victim()
        if l2Cache[slot].dirty {
            try file.barrier()
            try writeL2(slot)
        }
        l2Cache.drop(slot)
        return slot
    }

    /// Writes a cached L2 table to its place in the file and marks it clean.
    func writeL2(_ slot: Int) throws(BlockError) {
        guard let offset = l2Cache[slot].offset else { return }
        // Big-endian into the partial-write buffer (free between requests).
        for (i, e) in l2Cache[slot].table.enumerated() { clusterBuffer.putBE64(e, at: i * 8) }
        try file.write(at: offset, bytes: clusterBuffer)
        l2Cache[slot].dirty = false
    }

    /// How guest cluster `cluster` is mapped.
    func mapping(ofCluster cluster: UInt64) throws(BlockError) -> Qcow2Mapping {
        let l1Index = Int(cluster >> geometry.l2Bits)
        guard l1Index < l1.count, let slot = try l2Slot(l1Index) else { return .unallocated }
        let entry = l2Cache[slot].table[Int(cluster & (geometry.l2Entries - 1))]
        guard let m = Qcow2Mapping(entry: entry, geometry: geometry) else {
            throw invalid("L2 entry for guest cluster \(cluster) (0x\(String(entry, radix: 16))) is malformed")
        }
        return m
    }

    /// Checks a standard cluster's host offset before data is read or written there.
    func checkData(_ host: UInt64, cluster: UInt64) throws(BlockError) {
        let cs = geometry.clusterSize
        guard host + cs <= file.length || host < file.length && header.size - cluster * cs < cs else {
            throw invalid("guest cluster \(cluster) maps to offset \(host), past the end of the file (\(file.length) bytes)")
        }
        for p in protected where host < p.end && p.start < host + cs {
            throw invalid("guest cluster \(cluster) maps to offset \(host), inside the \(p.what)")
        }
    }

    // MARK: - Reads

    /// Maps guest bytes [offset + start, offset + buffer.count) for a read,
    /// which the caller has checked against the size. Unallocated, zero and
    /// compressed pieces are filled in `buffer` here; standard clusters,
    /// coalesced while host-contiguous, become extents in `plan` for the
    /// caller to pread *after* releasing the lock, so that reads of
    /// allocated data run in parallel (the file descriptor and the data are
    /// not metadata; clusters are never reused for other guest data, so a
    /// stale extent can only meet a concurrent write to the same range,
    /// whose outcome is undefined for the guest anyway). Stops early when
    /// `plan` is full; returns how far the buffer is filled or planned.
    func planRead(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, from start: Int,
                  plan: inout Qcow2ReadPlan) throws(BlockError) -> Int {
        let cs = geometry.clusterSize
        var done = start
        plan.count = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let cluster = pos / cs
            let inCluster = pos & (cs - 1)
            var count = Int(min(cs - inCluster, UInt64(buffer.count - done)))
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
            switch try mapping(ofCluster: cluster) {
            case .unallocated:
                if let backing { try backing.read(at: pos, into: piece) } else { piece.initializeMemory(as: UInt8.self, repeating: 0) }
            case .zero:
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            case .standard(let host, _):
                guard plan.count < Qcow2ReadPlan.capacity else { return done }
                try checkData(host, cluster: cluster)
                // Coalesce the following clusters while they are contiguous on the host.
                var next = cluster + 1
                var hostEnd = host + cs
                while done + count < buffer.count, case .standard(let h, _) = try mapping(ofCluster: next), h == hostEnd {
                    try checkData(h, cluster: next)
                    count += Int(min(cs, UInt64(buffer.count - done - count)))
                    next += 1
                    hostEnd += cs
                }
                plan.extents[plan.count] = Qcow2ReadPlan.Extent(start: done, length: count, host: host + inCluster)
                plan.count += 1
            case .compressed(let off, let length):
                try decompressor.decompress(offset: off, length: length, file: file)
                decompressor.output.withUnsafeBytes { src in
                    piece.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[Int(inCluster)..<(Int(inCluster) + count)]))
                }
            }
            done += count
        }
        return done
    }

    /// Fills `clusterBuffer` with guest cluster `cluster`'s current contents
    /// (for a partial write that must allocate a new cluster).
    func loadClusterContents(_ cluster: UInt64, mapping: Qcow2Mapping) throws(BlockError) {
        let cs = geometry.clusterSize
        try clusterBuffer.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(BlockError) in
            switch mapping {
            case .unallocated:
                if let backing { try backing.read(at: cluster * cs, into: b) } else { b.initializeMemory(as: UInt8.self, repeating: 0) }
            case .zero:
                b.initializeMemory(as: UInt8.self, repeating: 0)
            case .standard(let host, _):
                try checkData(host, cluster: cluster)
                let available = Int(min(cs, file.length - host))
                try file.read(at: host, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<available]))
                if available < Int(cs) { UnsafeMutableRawBufferPointer(rebasing: b[available...]).initializeMemory(as: UInt8.self, repeating: 0) }
            case .compressed(let off, let length):
                try decompressor.decompress(offset: off, length: length, file: file)
                decompressor.output.withUnsafeBytes { b.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<Int(cs)])) }
            }
        }
    }
}
