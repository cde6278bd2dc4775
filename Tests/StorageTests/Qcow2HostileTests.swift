// Qcow2HostileTests.swift: images that lie are refused with an error that
// names the problem; never a crash, a hang, or an allocation the size of a lie.

import Foundation
import Storage
import Testing

/// Overwrites bytes of the file at `path` at `offset`.
func patch(_ path: String, at offset: Int, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY)
    try #require(fd >= 0)
    defer { close(fd) }
    let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
    try #require(n == bytes.count)
}

func be64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) } }
func be32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32($0))) } }

/// The error opening `path` (and, when it opens, reading 1 MiB from it) throws, or nil.
///
/// `.locked` is retried: tests run in parallel, and a process another test
/// forks holds a copy of every descriptor until its exec closes them.
func qcow2Error(_ path: String, readOnly: Bool = true) -> BlockError? {
    var error = qcow2ErrorOnce(path, readOnly: readOnly)
    for _ in 0..<20 {
        guard case .locked = error else { break }
        usleep(50_000)
        error = qcow2ErrorOnce(path, readOnly: readOnly)
    }
    return error
}

private func qcow2ErrorOnce(_ path: String, readOnly: Bool) -> BlockError? {
    do throws(BlockError) {
        let image = try Qcow2Image(path: path, readOnly: readOnly)
        defer { image.close() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { buffer.deallocate() }
        try image.read(at: 0, into: buffer)
        return nil
    } catch {
        return error
    }
}

/// A 4 MiB qcow2 image with data in its first 1 MiB; the header fields at
/// 40 (l1_table_offset) and 48 (refcount_table_offset) as qemu-img put them.
func sampleImage(_ dir: TempFolder, _ name: String = "h.qcow2", options: String = "cluster_size=65536") throws -> (path: String, l1: UInt64, refcountTable: UInt64) {
    let path = dir.file(name)
    try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", options, path, "4M")
    try QemuTools.qemuIO(path, ["write -P 0x5a 0 1m"])
    let h = try fileBytes(path)
    func field(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(h[at + $1]) } }
    return (path, field(40), field(48))
}

@Suite("qcow2: hostile images", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2HostileTests {
    /// Expects an error whose message contains `text`.
    func expectRefused(_ path: String, readOnly: Bool = true, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = qcow2Error(path, readOnly: readOnly)
        #expect(error != nil, "opened and read without error", sourceLocation: sourceLocation)
        if let error {
            #expect(error.description.contains(text), "\(error)", sourceLocation: sourceLocation)
            #expect(!error.description.contains("\n"), sourceLocation: sourceLocation)
        }
    }

    @Test("header fields that lie")
    func header() throws {
        let dir = try TempFolder()
        let cases: [(String, Int, [UInt8], String)] = [
            ("L1 past EOF", 40, be64(1 << 40), "L1 table at offset 1099511627776 (8 bytes) lies past the end of the file"),
            ("L1 unaligned", 40, be64(0x30000 + 8), "L1 table at offset 196616 is not cluster-aligned"),
            ("refcount table in the header", 48, be64(0), "refcount table at offset 0 lies inside the header cluster"),
            ("absurd size", 24, be64(1 << 62), "virtual size 4611686018427387904 is above 2^56 bytes"),
            ("l1_size too small", 36, be32(0), "l1_size 0 is too small"),
            ("l1_size absurd", 36, be32(0xFFFF_FFFF), "above QEMU's 32 MiB limit"),
            ("cluster_bits 31", 20, be32(31), "cluster_bits 31 is outside 9...21"),
            ("refcount clusters absurd", 56, be32(0xFFFF_FFFF), "refcount_table_clusters 4294967295"),
            ("version 4", 4, be32(4), "qcow2 version 4"),
            ("snapshots absurd", 60, be32(0xFFFF_FFFF), "nb_snapshots 4294967295"),
            ("encrypted", 32, be32(1), "it is encrypted (crypt_method 1, AES)"),
            ("unknown incompatible bits", 72, be64(1 << 40 | 1 << 9), "unknown incompatible feature bits 9, 40"),
            ("extended L2", 72, be64(1 << 4), "extended L2 entries"),
            ("header_length odd", 100, be32(107), "header_length 107"),
            ("refcount_order 7", 96, be32(7), "refcount_order 7 is above 6"),
            ("huge header extension", 112, be32(0xE279_2ACA) + be32(0xFFFF_FFF0), "runs past the header cluster"),
            ("backing name outside the cluster", 8, be64(65530) + be32(100), "backing file name at offset 65530"),
        ]
        for (name, offset, bytes, message) in cases {
            let image = try sampleImage(dir, name.replacingOccurrences(of: " ", with: "-") + ".qcow2")
            try patch(image.path, at: offset, bytes)
            expectRefused(image.path, message)
            expectRefused(image.path, readOnly: false, message)
        }
    }

    @Test("tables that overlap each other")
    func overlaps() throws {
        let dir = try TempFolder()
        let a = try sampleImage(dir, "a.qcow2")
        try patch(a.path, at: 40, be64(a.refcountTable))
        expectRefused(a.path, "the L1 table and the refcount table overlap")
        // An L1 entry pointing at the L1 table itself, and one at the refcount table.
        let b = try sampleImage(dir, "b.qcow2")
        try patch(b.path, at: Int(b.l1), be64(b.l1 | 1 << 63))
        expectRefused(b.path, "L1 entry 0: L2 table at offset \(b.l1) overlaps the L1 table")
        let c = try sampleImage(dir, "c.qcow2")
        try patch(c.path, at: Int(c.l1), be64(c.refcountTable))
        expectRefused(c.path, "overlaps the refcount table")
    }

    @Test("L2 and data offsets past the end of the file, malformed entries")
    func entries() throws {
        let dir = try TempFolder()
        let a = try sampleImage(dir, "a.qcow2")
        try patch(a.path, at: Int(a.l1), be64(1 << 45 | 1 << 63))
        expectRefused(a.path, "L1 entry 0: L2 table at offset 35184372088832 lies past the end of the file")
        // The first L2 table: its entry 0 past EOF, then unaligned, then compressed garbage.
        let b = try sampleImage(dir, "b.qcow2")
        let h = try fileBytes(b.path)
        let bl2 = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(h[Int(b.l1) + $1]) } & 0x00FF_FFFF_FFFF_FE00
        try patch(b.path, at: Int(bl2), be64(1 << 50 | 1 << 63))
        expectRefused(b.path, "guest cluster 0 maps to offset 1125899906842624, past the end of the file")
        try patch(b.path, at: Int(bl2), be64(0x10000 + 512 | 1 << 63))
        expectRefused(b.path, "L2 entry for guest cluster 0 (0x8000000000010200) is malformed")
        // Compressed: inside the file but not deflate data; then past the end.
        try patch(b.path, at: Int(bl2), be64(1 << 62 | 0x200))
        expectRefused(b.path, "compressed cluster at offset 512 is not a valid deflate stream")
        try patch(b.path, at: Int(bl2), be64(1 << 62 | (1 << 40)))
        expectRefused(b.path, "lies past the end of the file")
        // A refcount block past the end: found when opened for writing.
        let c = try sampleImage(dir, "c.qcow2")
        try patch(c.path, at: Int(c.refcountTable), be64(1 << 44))
        expectRefused(c.path, readOnly: false, "refcount block 0 at offset 17592186044416 lies past the end of the file")
    }

    @Test("a file too short for a header, and one that is not qcow2")
    func shortFiles() throws {
        let dir = try TempFolder()
        try writeFile(dir.file("short"), [0x51, 0x46, 0x49, 0xFB, 0, 0, 0, 3])
        expectRefused(dir.file("short"), "too short for a qcow2 header")
        try writeFile(dir.file("zeros"), [UInt8](repeating: 0, count: 4096))
        expectRefused(dir.file("zeros"), "not a qcow2 image")
    }

    @Test("backing file loops and missing backing files")
    func backingLoops() throws {
        let dir = try TempFolder()
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2", "a.qcow2", "1M", cwd: dir.path)
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2", "b.qcow2", "1M", cwd: dir.path)
        expectRefused(dir.file("a.qcow2"), "backing file loop")
        // "./self.qcow2": qemu-img refuses the plain name as its own backing file.
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", "./self.qcow2", "-F", "qcow2", "self.qcow2", "1M", cwd: dir.path)
        expectRefused(dir.file("self.qcow2"), "backing file loop")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", "missing.raw", "-F", "raw", "m.qcow2", "1M", cwd: dir.path)
        expectRefused(dir.file("m.qcow2"), "cannot open disk image '\(dir.path)/missing.raw': No such file or directory")
    }

    @Test("dirty and corrupt images open read-only only; unknown autoclear bits are cleared")
    func featureBits() throws {
        let dir = try TempFolder()
        let dirty = try sampleImage(dir, "d.qcow2", options: "lazy_refcounts=on")
        try patch(dirty.path, at: 72, be64(1))
        #expect(qcow2Error(dirty.path) == nil)
        expectRefused(dirty.path, readOnly: false, "the dirty bit is set")
        let corrupt = try sampleImage(dir, "c.qcow2")
        try patch(corrupt.path, at: 72, be64(2))
        #expect(qcow2Error(corrupt.path) == nil)
        expectRefused(corrupt.path, readOnly: false, "the corrupt bit is set")

        let auto = try sampleImage(dir, "a.qcow2")
        try patch(auto.path, at: 88, be64(1 << 33 | 1))
        let image = try Qcow2Image(path: auto.path)
        #expect(image.header.autoclearFeatures == 0)
        image.close()
        #expect(try fileBytes(auto.path)[88..<96].allSatisfy { $0 == 0 })
        #expect(try QemuTools.check(auto.path).status == 0)
    }

    @Test("a refcount table whose every entry points at one block: open and check stay fast")
    func repeatedRefcountBlock() throws {
        let dir = try TempFolder()
        let image = try sampleImage(dir, "r.qcow2")
        // A cluster of zeros as the shared "block", at 2 MiB in the guest.
        try QemuTools.qemuIO(image.path, ["write -P 0 2m 64k"])
        let h = try fileBytes(image.path)
        let l1 = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(h[Int(image.l1) + $1]) } & 0x00FF_FFFF_FFFF_FE00
        let entry = Int(l1) + 32 * 8  // guest cluster 32 = 2 MiB
        let zeros = (0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(h[entry + $1]) } & 0x00FF_FFFF_FFFF_FE00
        try #require(zeros != 0)
        try patch(image.path, at: Int(image.refcountTable) + 8, (1..<8192).flatMap { _ in be64(zeros) })
        let start = ContinuousClock.now
        let image2 = try Qcow2Image(path: image.path)
        image2.close()
        let report = try Qcow2Checker.check(path: image.path)
        #expect(report.exitStatus == 2, "the zeros cluster is referenced as data and as 8191 blocks")
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test("a snapshot whose L1 table offset is at the top of the 64-bit range: check reports it")
    func snapshotL1Overflow() throws {
        let dir = try TempFolder()
        let image = try sampleImage(dir, "s.qcow2")
        try QemuTools.qemuImg("snapshot", "-c", "s", image.path)
        let h = try fileBytes(image.path)
        let table = Int((0..<8).reduce(UInt64(0)) { $0 << 8 | UInt64(h[64 + $1]) })
        try patch(image.path, at: table, be64(.max - 3))
        let report = try Qcow2Checker.check(path: image.path)
        #expect(report.exitStatus == 2)
        #expect(report.messages.contains { $0.contains("snapshot L1 table at offset 18446744073709551612 lies past the end of the file") })
        // The active layer is not affected.
        #expect(qcow2Error(image.path) == nil)
    }
}
