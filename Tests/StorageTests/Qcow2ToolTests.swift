// Qcow2ToolTests.swift: the header codec, and `skvm img`'s logic (create,
// check, info, io, convert, resize) against qemu-img's view of the results.

import Foundation
import Storage
import Testing

@Suite("qcow2: header codec")
struct Qcow2HeaderTests {
    @Test("serialize then parse gives the same header, unknown extensions preserved")
    func roundTrip() throws {
        var h = Qcow2Header()
        h.size = 1 << 30
        h.clusterBits = 12
        h.l1Size = 64
        h.l1TableOffset = 3 << 12
        h.refcountTableOffset = 1 << 12
        h.refcountTableClusters = 1
        h.compatibleFeatures = Qcow2Header.lazyRefcountsBit
        h.backingFile = "../base image.raw"
        h.backingFormat = "raw"
        h.unknownExtensions = [Qcow2HeaderExtension(type: 0x1234_5678, data: [1, 2, 3, 4, 5])]
        h.additionalFields = [0, 0, 0, 0, 0, 0, 7]  // bytes 105..<112, preserved as they are
        let bytes = try #require(h.serialized())
        var parsed = try Qcow2Header.parse(bytes + [UInt8](repeating: 0, count: 4096 - bytes.count), path: "x")
        #expect(parsed.featureNames.count == Qcow2Header.defaultFeatureNamesCount)
        parsed.featureNames = []
        var expected = h
        expected.backingFileOffset = parsed.backingFileOffset
        expected.backingFileSize = UInt32("../base image.raw".utf8.count)
        #expect(parsed == expected)
        #expect(parsed.backingFileOffset > 112)
    }

    @Test("a header that does not fit in its cluster is not serialized")
    func tooLarge() {
        var h = Qcow2Header()
        h.clusterBits = 9
        h.backingFile = String(repeating: "a", count: 600)
        #expect(h.serialized() == nil)
    }

    @Test("unknown incompatible bits are named from the image's feature name table")
    func featureNames() throws {
        var h = Qcow2Header()
        h.incompatibleFeatures = 1 << 7
        h.featureNames = [Qcow2FeatureName(type: 0, bit: 7, name: "quantum entanglement")]
        #expect(throws: BlockError.unsupportedImage(path: "p", reason: "unknown incompatible feature bit 7 (quantum entanglement)")) {
            try h.checkSupported(writable: false, path: "p")
        }
    }

    @Test("sizes parse and print like qemu-img's")
    func sizes() {
        #expect(ImageSize.parse("10G") == 10 << 30)
        #expect(ImageSize.parse("512M") == 512 << 20)
        #expect(ImageSize.parse("64k") == 64 << 10)
        #expect(ImageSize.parse("2TiB") == 2 << 40)
        #expect(ImageSize.parse("4096") == 4096)
        #expect(ImageSize.parse("12X") == nil)
        #expect(ImageSize.parse("99999999999E") == nil)
        #expect(ImageSize.human(8 << 20) == "8 MiB")
        #expect(ImageSize.human(200_704) == "196 KiB")
        #expect(ImageSize.human(0) == "0 B")
        #expect(ImageSize.human(2 << 40) == "2 TiB")
        #expect(ImageSize.human(1000) == "0.977 KiB")
    }
}

@Suite("skvm img: create, check, info, io, convert, resize", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2ToolTests {
    @Test("create makes images qemu-img checks clean, for every cluster size and refcount width",
          arguments: [(512, 16, 3), (4096, 1, 3), (65536, 16, 3), (65536, 64, 3), (2 << 20, 16, 3), (65536, 16, 2), (512, 64, 3)])
    func create(clusterSize: Int, refcountBits: Int, version: Int) throws {
        let dir = try TempFolder()
        let path = dir.file("n.qcow2")
        try ImageTool.create(path: path, format: .qcow2, size: 16 << 20, clusterSize: UInt64(clusterSize),
                             refcountBits: UInt64(refcountBits), version: UInt32(version))
        let check = try QemuTools.check(path)
        #expect(check.status == 0, "\(check.output)")
        let info = try QemuTools.qemuImg("info", path)
        #expect(info.contains("virtual size: 16 MiB (16777216 bytes)"))
        #expect(info.contains("cluster_size: \(clusterSize)"))
        #expect(info.contains("compat: \(version == 3 ? "1.1" : "0.10")"))
        if version == 3 { #expect(info.contains("refcount bits: \(refcountBits)")) }
        // Written by skvm, still clean, and our own check agrees.
        let q = try Qcow2Image(path: path)
        try backendWrite(q, pattern(at: 0, count: 300_000), at: 12345)
        q.close()
        #expect(try QemuTools.check(path).status == 0)
        #expect(try Qcow2Checker.check(path: path).exitStatus == 0)
        #expect(try fileBytes(path).count % clusterSize == 0)
    }

    @Test("create with a relative backing file takes its size and format; no leftover temporary files")
    func createBacking() throws {
        let dir = try TempFolder()
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 3 << 20))
        try ImageTool.create(path: dir.file("top.qcow2"), format: .qcow2, size: nil, backingFile: "base.raw")
        let info = try QemuTools.qemuImg("info", dir.file("top.qcow2"))
        #expect(info.contains("virtual size: 3 MiB"))
        #expect(info.contains("backing file: base.raw"))
        #expect(info.contains("backing file format: raw"))
        let q = try Qcow2Image(path: dir.file("top.qcow2"), readOnly: true)
        #expect(try backendBytes(q, at: 1000, count: 100) == pattern(at: 1000, count: 100))
        q.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["base.raw", "top.qcow2"])
        // A missing backing file is refused and leaves nothing behind.
        #expect(throws: BlockError.self) {
            try ImageTool.create(path: dir.file("bad.qcow2"), format: .qcow2, size: nil, backingFile: "missing.raw")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("bad.qcow2")))
    }

    @Test("check agrees with qemu-img check: clean, leaked, corrupt")
    func checkAgrees() throws {
        let dir = try TempFolder()
        let path = dir.file("k.qcow2")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", path, "8M")
        try QemuTools.qemuIO(path, ["write -P 1 0 1m", "write -c -P 2 2m 128k", "write -z 3m 64k"])
        try QemuTools.qemuImg("snapshot", "-c", "s", path)
        try QemuTools.qemuIO(path, ["write -P 3 0 64k"])
        var report = try Qcow2Checker.check(path: path)
        #expect(report.exitStatus == 0, "\(report.messages)")
        #expect(report.text.contains("No errors were found on the image."))
        #expect(try QemuTools.check(path).status == 0)

        // A leak: one more cluster at the end of the file, with refcount 1.
        let h = try fileBytes(path)
        func be64At(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 << 8 | UInt64(h[at + $1]) } }
        let refcountBlock = Int(be64At(Int(be64At(48))))
        let endCluster = h.count / 65536
        try patch(path, at: h.count, [UInt8](repeating: 0, count: 65536))
        try patch(path, at: refcountBlock + 2 * endCluster, [0, 1])
        report = try Qcow2Checker.check(path: path)
        #expect(report.exitStatus == 3)
        #expect(report.leaks == 1)
        #expect(report.messages.first == "Leaked cluster \(endCluster) refcount=1 reference=0")
        let qemuLeak = try QemuTools.check(path)
        #expect(qemuLeak.status == 3)
        #expect(qemuLeak.output.contains("1 leaked clusters were found on the image."))

        // A corruption: the first data cluster's refcount dropped to 0.
        let l1 = Int(be64At(40))
        let l2 = Int(be64At(l1) & 0x00FF_FFFF_FFFF_FE00)
        let data = Int(be64At(l2) & 0x00FF_FFFF_FFFF_FE00) / 65536
        try patch(path, at: refcountBlock + 2 * data, [0, 0])
        report = try Qcow2Checker.check(path: path)
        #expect(report.exitStatus == 2)
        #expect(report.messages.contains("ERROR cluster \(data) refcount=0 reference=1"))
        #expect(try QemuTools.check(path).status == 2)
    }

    @Test("info reports what qemu-img info reports")
    func info() throws {
        let dir = try TempFolder()
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,compression_type=zstd", "base.qcow2", "3M", cwd: dir.path)
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "5M", cwd: dir.path)
        try QemuTools.qemuImg("snapshot", "-c", "first", dir.file("top.qcow2"))
        let info = try ImageInfo.gather(path: dir.file("top.qcow2"), backingChain: true)
        #expect(info.format == .qcow2)
        #expect(info.virtualSize == 5 << 20)
        #expect(info.backingFile == "base.qcow2")
        #expect(info.backingFormat == "qcow2")
        #expect(info.snapshots.map(\.name) == ["first"])
        #expect(info.backingChain.count == 1)
        #expect(info.backingChain.first?.header?.compressionType == 1)
        #expect(!info.dirty)
        let ours = info.text, theirs = try QemuTools.qemuImg("info", dir.file("top.qcow2"))
        for line in ["virtual size: 5 MiB (5242880 bytes)", "cluster_size: 65536", "backing file format: qcow2",
                     "Snapshot list:", "    compat: 1.1", "    refcount bits: 16"] {
            #expect(ours.contains(line) && theirs.contains(line), "\(line)")
        }
        #expect(info.json.contains("\"backing-chain\": [{\"filename\": \"\(dir.path)/base.qcow2\""))
        #expect(info.json.contains("\"dirty-flag\": false"))
    }

    @Test("io applies operations in order: write, flush, read, discard, zero")
    func io() throws {
        let dir = try TempFolder()
        let path = dir.file("io.qcow2")
        try ImageTool.create(path: path, format: .qcow2, size: 1 << 20, clusterSize: 4096)
        var out: [UInt8] = []
        try ImageTool.io(path: path, operations: [
            .write(offset: 4000, data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
            .flush,
            .read(offset: 3998, length: 14),
            .writeZeroes(offset: 4002, length: 2),
            .read(offset: 4000, length: 6),
            .discard(offset: 0, length: 8192),
            .read(offset: 4000, length: 4),
        ]) { out += $0 }
        #expect(out == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0] + [1, 2, 0, 0, 5, 6] + [0, 0, 0, 0])
        #expect(try QemuTools.check(path).status == 0)
    }

    @Test("convert: qcow2 with a backing file and compressed clusters to raw and to qcow2")
    func convert() throws {
        let dir = try TempFolder()
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 2 << 20))
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "src.qcow2", "4M", cwd: dir.path)
        try QemuTools.qemuIO(dir.file("src.qcow2"), ["write -c -P 7 1m 64k", "write -P 8 3m 4k", "write -z 0 64k"])
        try QemuTools.qemuImg("convert", "-O", "raw", dir.file("src.qcow2"), dir.file("qemu.raw"))
        var fractions: [Double] = []
        try ImageTool.convert(source: dir.file("src.qcow2"), destination: dir.file("ours.raw"), format: .raw) { fractions.append($0) }
        #expect(try fileBytes(dir.file("ours.raw")) == fileBytes(dir.file("qemu.raw")))
        #expect(fractions.last == 1)
        try ImageTool.convert(source: dir.file("src.qcow2"), destination: dir.file("ours.qcow2"), format: .qcow2)
        #expect(try QemuTools.check(dir.file("ours.qcow2")).status == 0)
        try expectSameContents(qcow2: dir.file("ours.qcow2"), raw: dir.file("qemu.raw"))
        let info = try ImageInfo.gather(path: dir.file("ours.qcow2"))
        #expect(info.backingFile == nil)
    }

    @Test("resize grows the L1 table; data survives; shrinking qcow2 is refused", arguments: [512, 65536])
    func resize(clusterSize: Int) throws {
        let dir = try TempFolder()
        let path = dir.file("r.qcow2")
        try ImageTool.create(path: path, format: .qcow2, size: 4 << 20, clusterSize: UInt64(clusterSize))
        try ImageTool.io(path: path, operations: [.write(offset: 100, data: [9, 9, 9])]) { _ in }
        let newSize: UInt64 = clusterSize == 512 ? 64 << 20 : 3 << 30
        try ImageTool.resize(path: path, size: newSize)
        #expect(try QemuTools.check(path).status == 0)
        let q = try Qcow2Image(path: path)
        #expect(q.size == newSize)
        #expect(try backendBytes(q, at: 100, count: 3) == [9, 9, 9])
        try backendWrite(q, [5, 5], at: newSize - 2)
        q.close()
        #expect(try QemuTools.check(path).status == 0)
        #expect(throws: BlockError.self) { try ImageTool.resize(path: path, size: 1 << 20) }
    }
}
