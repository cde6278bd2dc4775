// Qcow2ReadInteropTests.swift: images QEMU made, read by Qcow2Image, must
// match `qemu-img convert -O raw` byte for byte.

import Foundation
import Storage
import Testing

/// One qemu-img configuration.
struct ImageRecipe: CustomTestStringConvertible, Sendable {
    let name: String
    /// `-o` options for qemu-img create.
    let options: String
    var size = "8M"
    var testDescription: String { name }
}

/// qemu-io commands covering data, zero clusters, discards, unaligned and
/// cluster-crossing writes within 8 MiB.
let qemuIOWrites = [
    "write -P 0x5a 0 64k",
    "write -P 0xa5 65536 1k",
    "write -P 0x11 200k 300k",
    "write -z 256k 128k",
    "write -P 0x22 1m 2m",
    "discard 1536k 512k",
    "write -P 0x33 7m 1m",
    "write -P 0x44 3583k 2k",
    "write -z 7680k 64k",
]

@Suite("qcow2: reading images made by QEMU", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2ReadInteropTests {
    static let recipes: [ImageRecipe] = [
        .init(name: "512 B clusters", options: "cluster_size=512"),
        .init(name: "4 KiB clusters", options: "cluster_size=4096"),
        .init(name: "64 KiB clusters", options: "cluster_size=65536"),
        .init(name: "2 MiB clusters", options: "cluster_size=2097152"),
        .init(name: "version 2 (compat=0.10)", options: "compat=0.10"),
        .init(name: "version 2, 4 KiB clusters", options: "compat=0.10,cluster_size=4096"),
        .init(name: "refcount_bits=1", options: "refcount_bits=1"),
        .init(name: "refcount_bits=64, 512 B clusters", options: "refcount_bits=64,cluster_size=512"),
        .init(name: "lazy refcounts", options: "lazy_refcounts=on"),
    ]

    @Test("qemu-io writes read back bit-exactly", arguments: recipes)
    func written(recipe: ImageRecipe) throws {
        let dir = try TempFolder()
        let image = dir.file("a.qcow2"), raw = dir.file("a.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", recipe.options, image, recipe.size)
        try QemuTools.qemuIO(image, qemuIOWrites)
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        try expectSameContents(qcow2: image, raw: raw)
        // The writes are really there (the comparison is not zeros against zeros).
        let q = try Qcow2Image(path: image, readOnly: true)
        #expect(try backendBytes(q, at: 65536, count: 4) == [0xA5, 0xA5, 0xA5, 0xA5])
        #expect(try backendBytes(q, at: 7 << 20, count: 2) == [0x33, 0x33])
        q.close()
    }

    @Test("compressed clusters, zlib and zstd", arguments: ["zlib", "zstd"])
    func compressed(type: String) throws {
        let dir = try TempFolder()
        let source = dir.file("s.qcow2"), image = dir.file("c.qcow2"), raw = dir.file("c.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", source, "8M")
        // Compressible and incompressible data, and a partial last cluster of data.
        try writeFile(dir.file("random.bin"), (0..<(256 << 10)).map { _ in UInt8.random(in: 0...255) })
        try QemuTools.qemuIO(source, qemuIOWrites + ["write -P 0x77 4000k 5k", "write -s \(dir.file("random.bin")) 2m 256k"])
        try QemuTools.qemuImg("convert", "-c", "-O", "qcow2", "-o", "compression_type=\(type)", source, image)
        try QemuTools.qemuIO(image, ["write -c -P 0x66 6m 64k"])
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let info = try QemuTools.qemuImg("info", image)
        #expect(info.contains("compression type: \(type)"))
        try expectSameContents(qcow2: image, raw: raw)
    }

    @Test("internal snapshots: the active layer reads as QEMU sees it")
    func snapshots() throws {
        let dir = try TempFolder()
        let image = dir.file("s.qcow2"), raw = dir.file("s.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", image, "8M")
        try QemuTools.qemuIO(image, ["write -P 0x01 0 4m"])
        try QemuTools.qemuImg("snapshot", "-c", "one", image)
        try QemuTools.qemuIO(image, ["write -P 0x02 1m 1m", "write -z 3m 64k"])
        try QemuTools.qemuImg("snapshot", "-c", "two", image)
        try QemuTools.qemuIO(image, ["write -P 0x03 1536k 8k", "discard 0 64k"])
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        try expectSameContents(qcow2: image, raw: raw)
    }

    @Test("a backing chain three deep with relative names, a short raw base")
    func backingChain() throws {
        let dir = try TempFolder()
        try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
        // base.raw (3 MiB) <- mid.qcow2 (6 MiB, v2) <- sub/top.qcow2 (8 MiB)
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 3 << 20))
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "base.raw", "-F", "raw", "mid.qcow2", "6M", cwd: dir.path)
        try QemuTools.qemuIO(dir.file("mid.qcow2"), ["write -P 0x61 1m 64k", "write -P 0x62 5m 100k"])
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-b", "../mid.qcow2", "-F", "qcow2", "sub/top.qcow2", "8M", cwd: dir.path)
        try QemuTools.qemuIO(dir.file("sub/top.qcow2"), ["write -P 0x71 1040k 8k", "write -z 2m 64k", "write -P 0x72 7m 4k"])
        try QemuTools.qemuImg("convert", "-O", "raw", dir.file("sub/top.qcow2"), dir.file("top.raw"))
        // Opened from another working directory: names resolve against each image's folder.
        try expectSameContents(qcow2: dir.file("sub/top.qcow2"), raw: dir.file("top.raw"))
    }

    @Test("a 2 TiB image: written ranges far apart read back")
    func twoTebibytes() throws {
        let dir = try TempFolder()
        let image = dir.file("big.qcow2")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", image, "2T")
        let offsets: [UInt64] = [0, 1 << 30, (1 << 40) + 12345 * 512, (2 << 40) - (64 << 10)]
        try QemuTools.qemuIO(image, offsets.enumerated().map { "write -P \(0x10 + $0.offset) \($0.element) 64k" })
        let q = try Qcow2Image(path: image, readOnly: true)
        defer { q.close() }
        #expect(q.size == 2 << 40)
        for (i, offset) in offsets.enumerated() {
            let got = try backendBytes(q, at: offset, count: 64 << 10)
            #expect(got == [UInt8](repeating: UInt8(0x10 + i), count: 64 << 10), "at \(offset)")
            // Just before each written range: unallocated, zeros.
            if offset > 0 { #expect(try backendBytes(q, at: offset - 4096, count: 4096) == [UInt8](repeating: 0, count: 4096)) }
        }
    }
}
