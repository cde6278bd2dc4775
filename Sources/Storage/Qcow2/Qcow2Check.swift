// Qcow2Check.swift: `skvm img check`, refcounts rebuilt from the tables
// and compared with the stored ones (like `qemu-img check`).
//
// Every cluster something points to is counted: the header cluster, the
// active L1 table, the refcount table and its blocks, the snapshot table,
// each snapshot's L1 table, and through every L1 table (active and
// snapshots) its L2 tables and their data clusters (a compressed cluster
// counts once for each host cluster it touches). A stored refcount below
// the count is a corruption (data could be overwritten); above it, a leak
// (wasted space only). In the active tables, bit 63 (COPIED) must be set
// exactly when the refcount is 1. Bitmaps (autoclear bit 0) are not
// counted: an image with bitmaps reports their clusters as leaks.

#if canImport(Glibc)
import Glibc
#endif

/// What `Qcow2Checker.check` found.
public struct Qcow2CheckReport: Sendable, Equatable {
    /// References to clusters whose refcount is too low, COPIED flags that
    /// disagree with refcounts, offsets outside the file or malformed.
    public var corruptions = 0
    /// Clusters whose refcount is higher than their references.
    public var leaks = 0
    /// One line per problem, qemu-img style ("ERROR cluster 5 refcount=0 reference=1").
    public var messages: [String] = []
    /// Guest clusters with data (standard or compressed) in the active layer.
    public var allocatedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    /// Guest clusters of the virtual disk.
    public var totalClusters: UInt64 = 0
    /// The end of the last cluster in use.
    public var imageEndOffset: UInt64 = 0

    /// `qemu-img check`'s exit status: 0 clean, 2 corruptions, 3 leaks only.
    public var exitStatus: Int32 { corruptions > 0 ? 2 : leaks > 0 ? 3 : 0 }

    /// The report as qemu-img check prints it.
    public var text: String {
        var out = messages.map { $0 + "\n" }.joined()
        if corruptions == 0 && leaks == 0 {
            out += "No errors were found on the image.\n"
        } else {
            if leaks > 0 {
                out += "\n\(leaks) leaked clusters were found on the image.\n"
                out += "This means waste of disk space, but no harm to data.\n"
            }
            if corruptions > 0 {
                out += "\n\(corruptions) errors were found on the image.\n"
                out += "Data may be corrupted, or further writes to the image may corrupt it.\n"
            }
        }
        func percent(_ n: UInt64) -> String {
            let hundredths = totalClusters == 0 ? 0 : n * 10000 / totalClusters
            let frac = hundredths % 100
            return "\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)%"
        }
        let fragmented = allocatedClusters == 0 ? "0.00%" : {
            let h = fragmentedClusters * 10000 / allocatedClusters
            return "\(h / 100).\(h % 100 < 10 ? "0" : "")\(h % 100)%"
        }()
        let compressed = allocatedClusters == 0 ? "0.00%" : {
            let h = compressedClusters * 10000 / allocatedClusters
            return "\(h / 100).\(h % 100 < 10 ? "0" : "")\(h % 100)%"
        }()
        out += "\(allocatedClusters)/\(totalClusters) = \(percent(allocatedClusters)) allocated, \(fragmented) fragmented, \(compressed) compressed clusters\n"
        out += "Image end offset: \(imageEndOffset)\n"
        return out
    }
}

/// Rebuilds refcounts from an image's tables.
public enum Qcow2Checker {
    /// Checks the qcow2 image at `path` (opened read-only, shared lock).
    /// Throws only when the image cannot be opened at all; problems in the
    /// tables are counted in the report.
    public static func check(path: String) throws(BlockError) -> Qcow2CheckReport {
        let file = try Qcow2File(path: path, readOnly: true)
        defer { file.close() }
        let engine = try Qcow2Engine(file: file, chain: [], openBacking: false)
        let h = engine.header
        let g = engine.geometry
        let cs = g.clusterSize
        let refcounts = try Qcow2Refcounts(file: file, geometry: g, order: h.refcountOrder,
                                           tableOffset: h.refcountTableOffset, tableClusters: UInt64(h.refcountTableClusters))
        var report = Qcow2CheckReport()
        report.totalClusters = (h.size + cs - 1) / cs
        let fileClusters = (file.length + cs - 1) / cs
        var counts = [UInt32](repeating: 0, count: Int(fileClusters))

        func corrupt(_ text: String) {
            report.corruptions += 1
            if report.messages.count < 1000 { report.messages.append("ERROR " + text) }
        }
        /// Counts one reference to every cluster in [offset, offset + length).
        func reference(_ offset: UInt64, _ length: UInt64, _ what: String) {
            guard length > 0 else { return }
            let first = offset / cs
            let (end, overflow) = offset.addingReportingOverflow(length - 1)
            guard !overflow, end / cs < fileClusters else {
                corrupt("\(what) at offset \(offset) lies past the end of the file")
                return
            }
            for c in first...(end / cs) { counts[Int(c)] &+= 1 }
        }
        reference(0, cs, "header")
        reference(h.refcountTableOffset, UInt64(h.refcountTableClusters) * cs, "refcount table")
        for (i, e) in refcounts.table.enumerated() where e & Qcow2Entry.offsetMask != 0 {
            let offset = e & Qcow2Entry.offsetMask
            if offset & (cs - 1) != 0 { corrupt("refcount block \(i) is not cluster aligned; refcounts may be corrupt"); continue }
            reference(offset, cs, "refcount block \(i)")
        }

        // Active COPIED flags to verify once all refcounts are known: (host offset, flag set, description).
        var copiedChecks: [(UInt64, Bool, String)] = []
        var l2Buffer = [UInt8](repeating: 0, count: Int(cs))
        func walk(l1Offset: UInt64, l1Size: UInt32, active: Bool) {
            guard l1Size > 0 else { return }
            reference(l1Offset, UInt64(l1Size) * 8, active ? "L1 table" : "snapshot L1 table")
            let l1End = l1Offset.addingReportingOverflow(UInt64(l1Size) * 8)
            guard UInt64(l1Size) * 8 <= Qcow2Engine.maxL1Bytes, !l1End.overflow, l1End.partialValue <= file.length,
                  let l1 = try? file.readArray(at: l1Offset, count: Int(l1Size) * 8) else { return }
            var lastHost: UInt64 = 0
            // An L2 table twice in one L1 table is a corruption the refcount
            // comparison reports; scanning it once bounds the work by the file size.
            var seen: Set<UInt64> = []
            for i in 0..<Int(l1Size) {
                let entry = l1.be64(i * 8)
                let l2 = entry & Qcow2Entry.offsetMask
                guard l2 != 0 else { continue }
                if l2 & (cs - 1) != 0 { corrupt("L2 table offset \(l2) in L1 entry \(i) is not cluster-aligned"); continue }
                reference(l2, cs, "L2 table")
                guard seen.insert(l2).inserted else { continue }
                if active { copiedChecks.append((l2, entry & Qcow2Entry.copied != 0, "L2 table at \(l2)")) }
                guard l2 + cs <= file.length,
                      (try? l2Buffer.withMutableBytes { (b) throws(BlockError) in try file.read(at: l2, into: b) }) != nil
                else { continue }
                for j in 0..<Int(g.l2Entries) {
                    let e = l2Buffer.be64(j * 8)
                    guard e != 0 else { continue }
                    guard let m = Qcow2Mapping(entry: e, geometry: g) else {
                        corrupt("L2 entry 0x\(String(e, radix: 16)) in the table at \(l2) is malformed")
                        continue
                    }
                    switch m {
                    case .unallocated: break
                    case .zero(let host):
                        if host != 0 {
                            reference(host, cs, "preallocated zero cluster")
                            if active { copiedChecks.append((host, e & Qcow2Entry.copied != 0, "data cluster at \(host)")) }
                        }
                    case .standard(let host, let copied):
                        reference(host, cs, "data cluster")
                        if active {
                            copiedChecks.append((host, copied, "data cluster at \(host)"))
                            report.allocatedClusters += 1
                            if lastHost != 0 && host != lastHost + cs { report.fragmentedClusters += 1 }
                            lastHost = host
                        }
                    case .compressed(let offset, let length):
                        reference(offset & ~511, length + (offset & 511), "compressed cluster")
                        if active { report.allocatedClusters += 1; report.compressedClusters += 1 }
                    }
                }
            }
        }
        walk(l1Offset: h.l1TableOffset, l1Size: h.l1Size, active: true)
        if h.snapshotCount > 0 {
            do throws(BlockError) {
                let snapshots = try Qcow2Snapshot.readTable(file: file, offset: h.snapshotsOffset, count: h.snapshotCount, clusterSize: cs)
                reference(h.snapshotsOffset, try snapshotTableLength(file: file, offset: h.snapshotsOffset, count: h.snapshotCount), "snapshot table")
                for s in snapshots { walk(l1Offset: s.l1TableOffset, l1Size: s.l1Size, active: false) }
            } catch {
                report.corruptions += 1
                report.messages.append("ERROR \(error)")
            }
        }

        // Compare with the stored refcounts over the file's clusters...
        var c: UInt64 = 0
        while c < fileClusters {
            let bi = c / refcounts.blockEntries
            let stored: UInt64
            do throws(BlockError) {
                stored = try refcounts.refcount(c)
            } catch {
                corrupt("refcount block \(bi): \(error)")
                c = (bi + 1) * refcounts.blockEntries
                continue
            }
            let expected = c < fileClusters ? UInt64(counts[Int(c)]) : 0
            if stored != 0 || expected != 0 { report.imageEndOffset = max(report.imageEndOffset, (c + 1) * cs) }
            if stored < expected {
                corrupt("cluster \(c) refcount=\(stored) reference=\(expected)")
            } else if stored > expected {
                report.leaks += 1
                if report.messages.count < 1000 { report.messages.append("Leaked cluster \(c) refcount=\(stored) reference=\(expected)") }
            }
            c += 1
        }
        // ...and past its end, where every non-zero refcount is a leak. Each
        // distinct block is scanned once: the work is bounded by the file size.
        var scanned: Set<UInt64> = []
        let e = refcounts.blockEntries
        for (bi, entry) in refcounts.table.enumerated() where (UInt64(bi) + 1) * e > fileClusters {
            let offset = entry & Qcow2Entry.offsetMask
            guard offset != 0, scanned.insert(offset).inserted else { continue }
            guard let slot = try? refcounts.block(UInt64(bi)) else { continue }  // reported above when inside the file
            let bytes = refcounts.blocks[slot].table
            for i in max(UInt64(bi) * e, fileClusters) - UInt64(bi) * e..<e where refcounts.entry(bytes, i) != 0 {
                report.leaks += 1
                report.imageEndOffset = max(report.imageEndOffset, (UInt64(bi) * e + i + 1) * cs)
                if report.messages.count < 1000 {
                    report.messages.append("Leaked cluster \(UInt64(bi) * e + i) refcount=\(refcounts.entry(bytes, i)) reference=0")
                }
            }
        }
        for (host, copied, what) in copiedChecks {
            let r = (try? refcounts.refcount(host / cs)) ?? 0
            if copied != (r == 1) { corrupt("OFLAG_COPIED \(what): refcount=\(r), flag \(copied ? "set" : "clear")") }
        }
        return report
    }

    /// The byte length of the snapshot table (entries are padded to 8).
    private static func snapshotTableLength(file: Qcow2File, offset: UInt64, count: UInt32) throws(BlockError) -> UInt64 {
        let limit = Int(min(file.length - offset, 64 << 20))
        let bytes = try file.readArray(at: offset, count: limit)
        var at = 0
        for _ in 0..<Int(count) {
            guard at + 40 <= bytes.count else { break }
            let end = at + 40 + Int(bytes.be32(at + 36)) + Int(bytes.be16(at + 12)) + Int(bytes.be16(at + 14))
            at = (end + 7) & ~7
        }
        return UInt64(at)
    }
}
