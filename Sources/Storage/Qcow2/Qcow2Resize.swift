// Qcow2Resize.swift: growing the virtual disk (`skvm img resize`).
//
// A larger disk may need a larger L1 table (qcow2.txt: the L1 table must be
// contiguous). The new table is written at the end of the file and made
// durable, then the header's l1_size and l1_table_offset (bytes 36-47, one
// pwrite inside one sector) switch to it, then the old table's clusters
// are released; a crash in between leaks one of the two tables. The size
// field (bytes 24-31) is written last: until then the image is the old size.

extension Qcow2Engine {
    /// Grows the virtual size to `newSize` bytes.
    func grow(to newSize: UInt64) throws(BlockError) {
        guard newSize >= header.size else {
            throw .unsupportedImage(path: file.path, reason: "shrinking a qcow2 image (from \(header.size) to \(newSize) bytes) is not supported")
        }
        guard newSize <= Self.maxVirtualSize, let need = geometry.l1Entries(forSize: newSize), need * 8 <= Self.maxL1Bytes else {
            throw .unsupportedImage(path: file.path, reason: "size \(newSize) needs an L1 table above 32 MiB")
        }
        guard let refcounts else { throw .readOnly(operation: .write) }
        try flushMetadata()
        let cs = geometry.clusterSize
        if need > UInt64(l1.count) {
            let clusters = (need * 8 + cs - 1) / cs
            // Contiguous clusters: a refcount block created on the way breaks
            // the run, so release the run and start again after it.
            var run: [UInt64] = []
            while UInt64(run.count) < clusters {
                let c = try refcounts.allocateCluster()
                if let last = run.last, c != last + cs {
                    for r in run { try refcounts.release(r, r + cs) }
                    run.removeAll()
                }
                run.append(c)
            }
            let start = run[0]
            var raw = [UInt8](repeating: 0, count: Int(clusters * cs))
            for (i, e) in l1.enumerated() { raw.putBE64(e, at: i * 8) }
            try file.write(at: start, bytes: raw)
            try file.sync()
            var fields = [UInt8](repeating: 0, count: 12)
            fields.putBE32(UInt32(need), at: 0)
            fields.putBE64(start, at: 4)
            try file.write(at: 36, bytes: fields)
            try file.sync()
            let oldStart = header.l1TableOffset
            let oldBytes = UInt64(header.l1Size) * 8
            if oldBytes > 0 { try refcounts.release(oldStart, oldStart + (oldBytes + cs - 1) / cs * cs) }
            header.l1Size = UInt32(need)
            header.l1TableOffset = start
            l1 += [UInt64](repeating: 0, count: Int(need) - l1.count)
        }
        var sizeField = [UInt8](repeating: 0, count: 8)
        sizeField.putBE64(newSize, at: 0)
        try file.write(at: 24, bytes: sizeField)
        header.size = newSize
        try file.sync()
    }
}
