// Qcow2WriteInteropTests.swift: images skvm writes must pass `qemu-img
// check` and match, under `qemu-img compare`, a raw reference that received
// the same operations.

import Foundation
import Storage
import Testing

/// A raw file receiving the same operations as a qcow2 image, with qcow2's
/// discard semantics (whole clusters read as zeros afterwards, partial ones
/// keep their data; nothing at all on a version 2 image with a backing file).
final class RawReference {
    let path: String
    var bytes: [UInt8]

    init(path: String) throws {
        self.path = path
        bytes = try fileBytes(path)
    }

    func write(_ data: [UInt8], at offset: Int) { bytes.replaceSubrange(offset..<(offset + data.count), with: data) }

    func zero(at offset: Int, count: Int) { bytes.replaceSubrange(offset..<(offset + count), with: repeatElement(0, count: count)) }

    func discard(at offset: Int, count: Int, clusterSize: Int, mapsZero: Bool) {
        guard mapsZero else { return }
        let start = (offset + clusterSize - 1) / clusterSize * clusterSize
        let end = (offset + count) / clusterSize * clusterSize
        if start < end { zero(at: start, count: end - start) }
    }

    func save() throws { try writeFile(path, bytes) }
}

/// Applies `count` random operations (unaligned writes of up to three
/// clusters, write-zeroes, discards, flushes) to both.
func randomOperations(_ image: Qcow2Image, _ reference: RawReference, count: Int, seed: UInt64, mapsZero: Bool) throws {
    var rng = SplitMix(state: seed)
    let cs = Int(image.clusterSize)
    let size = Int(image.size)
    for step in 0..<count {
        let kind = Int.random(in: 0..<10, using: &rng)
        let length = Int.random(in: 1...(3 * cs), using: &rng)
        let offset = Int.random(in: 0...(size - length), using: &rng)
        switch kind {
        case 0..<6:
            // A slice of the precomputed pattern, shifted per step (fast in debug builds).
            let data = pattern(at: (offset + step * 7919) % (2 << 20), count: length)
            try backendWrite(image, data, at: UInt64(offset))
            reference.write(data, at: offset)
        case 6, 7:
            try image.writeZeroes(at: UInt64(offset), length: UInt64(length), mayUnmap: kind == 7)
            reference.zero(at: offset, count: length)
        case 8:
            try image.discard(at: UInt64(offset), length: UInt64(length))
            reference.discard(at: offset, count: length, clusterSize: cs, mapsZero: mapsZero)
        default:
            // Alternately a flush and a read-back through the same open image
            // (caches, the decompressed cluster, dirty L2 tables must agree).
            if step % 2 == 0 {
                try image.flush()
            } else {
                let got = try backendBytes(image, at: UInt64(offset), count: length)
                if let m = mismatch(got, Array(reference.bytes[offset..<(offset + length)])) {
                    Issue.record("step \(step): read at \(offset) of \(length): \(m)")
                }
            }
        }
    }
}

/// `qemu-img check` is clean and `qemu-img compare` finds the image equal to `raw`.
func expectCleanAndEqual(_ image: String, raw: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let check = try QemuTools.check(image)
    #expect(check.status == 0, "qemu-img check: \(check.output)", sourceLocation: sourceLocation)
    let compare = try QemuTools.run(QemuTools.img, ["compare", "-f", "qcow2", "-F", "raw", image, raw])
    #expect(compare.status == 0, "qemu-img compare: \(compare.output)", sourceLocation: sourceLocation)
}

@Suite("qcow2: images skvm writes pass qemu-img check and compare", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2WriteInteropTests {
    static let recipes: [ImageRecipe] = [
        .init(name: "512 B clusters", options: "cluster_size=512", size: "2M"),
        .init(name: "4 KiB clusters", options: "cluster_size=4096"),
        .init(name: "64 KiB clusters", options: "cluster_size=65536"),
        .init(name: "2 MiB clusters", options: "cluster_size=2097152", size: "16M"),
        .init(name: "version 2", options: "compat=0.10"),
        .init(name: "refcount_bits=1", options: "refcount_bits=1,cluster_size=4096"),
        .init(name: "refcount_bits=64, 512 B clusters", options: "refcount_bits=64,cluster_size=512", size: "2M"),
        .init(name: "refcount_bits=2", options: "refcount_bits=2,cluster_size=1024", size: "4M"),
    ]

    @Test("random unaligned writes, zeroes and discards over qemu-io data", arguments: recipes)
    func randomWrites(recipe: ImageRecipe) throws {
        let dir = try TempFolder()
        let image = dir.file("a.qcow2"), raw = dir.file("a.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", recipe.options, image, recipe.size)
        try QemuTools.qemuIO(image, ["write -P 0x5a 0 64k", "write -P 0x11 200k 300k", "write -z 640k 64k"])
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let reference = try RawReference(path: raw)
        let q = try Qcow2Image(path: image)
        try randomOperations(q, reference, count: 150, seed: 42, mapsZero: true)
        q.close()
        try reference.save()
        try expectCleanAndEqual(image, raw: raw)
        try expectSameContents(qcow2: image, raw: raw)
    }

    @Test("writing the active layer never changes an internal snapshot")
    func overSnapshots() throws {
        let dir = try TempFolder()
        let image = dir.file("s.qcow2"), raw = dir.file("s.raw"), before = dir.file("before.raw"), snap = dir.file("snap.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image, "4M")
        try QemuTools.qemuIO(image, ["write -P 0x01 0 2m", "write -c -P 0x02 2m 64k", "write -z 3m 64k"])
        try QemuTools.qemuImg("snapshot", "-c", "one", image)
        try QemuTools.qemuImg("convert", "-O", "raw", image, before)
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let reference = try RawReference(path: raw)
        let q = try Qcow2Image(path: image)
        try randomOperations(q, reference, count: 120, seed: 7, mapsZero: true)
        q.close()
        try reference.save()
        try expectCleanAndEqual(image, raw: raw)
        try QemuTools.qemuImg("convert", "-l", "snapshot.name=one", "-O", "raw", image, snap)
        #expect(mismatch(try fileBytes(snap), try fileBytes(before)) == nil, "the snapshot changed")
    }

    @Test("writes over compressed clusters rewrite them", arguments: ["zlib", "zstd"])
    func overCompressed(type: String) throws {
        let dir = try TempFolder()
        let source = dir.file("s.qcow2"), image = dir.file("c.qcow2"), raw = dir.file("c.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", source, "4M")
        try QemuTools.qemuIO(source, ["write -P 0x31 0 4m"])
        try QemuTools.qemuImg("convert", "-c", "-O", "qcow2", "-o", "compression_type=\(type)", source, image)
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let reference = try RawReference(path: raw)
        let q = try Qcow2Image(path: image)
        // A partial write (old data decompressed around it), a whole cluster, a discard.
        for (offset, data) in [(100, pattern(at: 100, count: 5000, seed: 3)), (65536, pattern(at: 0, count: 65536, seed: 4))] {
            try backendWrite(q, data, at: UInt64(offset))
            reference.write(data, at: offset)
        }
        try q.discard(at: 1 << 20, length: 128 << 10)
        reference.discard(at: 1 << 20, count: 128 << 10, clusterSize: 65536, mapsZero: true)
        try randomOperations(q, reference, count: 60, seed: 9, mapsZero: true)
        q.close()
        try reference.save()
        try expectCleanAndEqual(image, raw: raw)
    }

    @Test("an overlay larger than its backing file: partial clusters across the backing end", arguments: ["1.1", "0.10"])
    func beyondBackingEnd(compat: String) throws {
        let dir = try TempFolder()
        let image = dir.file("top.qcow2"), raw = dir.file("top.raw")
        // A base that ends in the middle of a 64 KiB cluster.
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: (1 << 20) + 4096))
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=\(compat)", "-b", "base.raw", "-F", "raw", "top.qcow2", "4M", cwd: dir.path)
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let reference = try RawReference(path: raw)
        let q = try Qcow2Image(path: image)
        for (offset, count) in [((1 << 20) + 100, 10), ((1 << 20) - 10, 8000), (3 << 20, 1)] {
            let data = [UInt8](repeating: 0x99, count: count)
            try backendWrite(q, data, at: UInt64(offset))
            reference.write(data, at: offset)
        }
        try randomOperations(q, reference, count: 60, seed: 11, mapsZero: compat == "1.1")
        q.close()
        try reference.save()
        try expectCleanAndEqual(image, raw: raw)
        // The base is never written.
        #expect(try fileBytes(dir.file("base.raw")) == pattern(at: 0, count: (1 << 20) + 4096))
    }

    @Test("the refcount table grows: 512 B clusters, 64-bit refcounts, 6 MiB written")
    func refcountTableGrowth() throws {
        let dir = try TempFolder()
        let image = dir.file("g.qcow2"), raw = dir.file("g.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", image, "8M")
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        let reference = try RawReference(path: raw)
        let q = try Qcow2Image(path: image)
        let tableBefore = q.header.refcountTableOffset
        for i in 0..<96 {
            let data = pattern(at: i * 65536, count: 65536, seed: 5)
            try backendWrite(q, data, at: UInt64(i * 65536))
            reference.write(data, at: i * 65536)
        }
        q.close()
        try reference.save()
        try expectCleanAndEqual(image, raw: raw)
        let info = try Qcow2Image(path: image, readOnly: true)
        #expect(info.header.refcountTableOffset != tableBefore, "the table was expected to move")
        info.close()
    }

    @Test("more L2 tables than the cache holds: dirty tables are evicted and written back in order")
    func l2Eviction() throws {
        let dir = try TempFolder()
        let image = dir.file("e.qcow2")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", image, "2T")
        let q = try Qcow2Image(path: image)
        // 64 KiB clusters: one L2 table maps 512 MiB, and the cache holds 256 tables.
        let step: UInt64 = 512 << 20
        let count = 300
        for i in 0..<count {
            try backendWrite(q, [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 100), at: UInt64(i) * step + 1000)
        }
        for i in stride(from: 0, to: count, by: 37) {
            #expect(try backendBytes(q, at: UInt64(i) * step + 999, count: 102)
                == [0] + [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 100) + [0])
        }
        q.close()
        let check = try QemuTools.check(image)
        #expect(check.status == 0, "\(check.output)")
        for i in [0, 1, 255, 256, 299] {
            try QemuTools.qemuIO(image, ["read -P \(i % 256) \(UInt64(i) * step + 1000) 100", "read -P 0 \(UInt64(i) * step + 1100) 64k"])
        }
    }

    @Test("four threads writing and reading disjoint ranges at once")
    func concurrent() async throws {
        let dir = try TempFolder()
        let image = dir.file("t.qcow2"), raw = dir.file("t.raw")
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image, "16M")
        let q = try Qcow2Image(path: image)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    let base = UInt64(t) << 22
                    for i in 0..<200 {
                        let offset = base + UInt64(i * 20_000 % (4 << 20 - 9000))
                        let data = [UInt8](repeating: UInt8(t * 50 + i % 50), count: 9000)
                        try backendWrite(q, data, at: offset)
                        #expect(try backendBytes(q, at: offset, count: 9000) == data)
                        if i % 50 == 0 { try q.flush() }
                    }
                }
            }
            try await group.waitForAll()
        }
        q.close()
        #expect(try QemuTools.check(image).status == 0)
        try QemuTools.qemuImg("convert", "-O", "raw", image, raw)
        try expectSameContents(qcow2: image, raw: raw)
    }

    @Test("discard gives the space back to the host: freed clusters become holes")
    func discardPunchesHoles() throws {
        let dir = try TempFolder()
        let image = dir.file("d.qcow2")
        try ImageTool.create(path: image, format: .qcow2, size: 16 << 20)
        let q = try Qcow2Image(path: image)
        try backendWrite(q, pattern(at: 0, count: 8 << 20), at: 0)
        try q.flush()
        var st = stat()
        try #require(stat(image, &st) == 0)
        let before = Int(st.st_blocks) * 512
        try q.discard(at: 0, length: 8 << 20)
        try q.flush()
        try #require(stat(image, &st) == 0)
        let after = Int(st.st_blocks) * 512
        #expect(before - after >= 7 << 20, "\(before) bytes allocated before the discard, \(after) after")
        #expect(try backendBytes(q, at: 4096, count: 4096) == [UInt8](repeating: 0, count: 4096))
        q.close()
        #expect(try QemuTools.check(image).status == 0)
    }
}
