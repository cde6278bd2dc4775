// Qcow2SelfTests.swift: qcow2 without QEMU's tools, so that a host without
// qemu-utils still tests the backend: images made by `ImageTool.create`,
// random operations mirrored on a raw file, read back after reopening, and
// `Qcow2Checker` (skvm's own refcount rebuild) finds them clean.

import Foundation
import Storage
import Testing

@Suite("qcow2: skvm alone (no qemu-img needed)")
struct Qcow2SelfTests {
    @Test("random operations, reopen, same bytes, clean check",
          arguments: [(512, 64, 3), (4096, 1, 3), (65536, 16, 3), (65536, 16, 2), (2 << 20, 8, 3)])
    func roundTrip(clusterSize: Int, refcountBits: Int, version: Int) throws {
        let dir = try TempFolder()
        let image = dir.file("s.qcow2"), raw = dir.file("s.raw")
        let size = clusterSize == 2 << 20 ? 8 << 20 : 2 << 20
        try ImageTool.create(path: image, format: .qcow2, size: UInt64(size), clusterSize: UInt64(clusterSize),
                             refcountBits: UInt64(refcountBits), version: UInt32(version))
        try writeFile(raw, [UInt8](repeating: 0, count: size))
        let reference = try RawReference(path: raw)
        for round in 0..<3 {
            let q = try Qcow2Image(path: image)
            try randomOperations(q, reference, count: 40, seed: UInt64(round * 1000 + clusterSize), mapsZero: true)
            q.close()
            let report = try Qcow2Checker.check(path: image)
            #expect(report.exitStatus == 0, "round \(round): \(report.messages.prefix(5))")
        }
        try reference.save()
        try expectSameContents(qcow2: image, raw: raw)
    }

    @Test("a qcow2 overlay over a qcow2 base over a raw base, all made by skvm")
    func chain() throws {
        let dir = try TempFolder()
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 1 << 20))
        try ImageTool.create(path: dir.file("mid.qcow2"), format: .qcow2, size: 2 << 20, backingFile: "base.raw", clusterSize: 4096)
        let mid = try Qcow2Image(path: dir.file("mid.qcow2"))
        try backendWrite(mid, [UInt8](repeating: 0x42, count: 5000), at: 1_000_000)
        mid.close()
        try ImageTool.create(path: dir.file("top.qcow2"), format: .qcow2, size: 3 << 20, backingFile: "mid.qcow2")
        let top = try Qcow2Image(path: dir.file("top.qcow2"))
        #expect(try backendBytes(top, at: 0, count: 1000) == pattern(at: 0, count: 1000))
        #expect(try backendBytes(top, at: 1_000_000, count: 5000) == [UInt8](repeating: 0x42, count: 5000))
        #expect(try backendBytes(top, at: 1_005_000, count: 43_576) == pattern(at: 1_005_000, count: 43_576))
        #expect(try backendBytes(top, at: 1 << 20, count: 4096) == [UInt8](repeating: 0, count: 4096), "past the raw base: zeros")
        #expect(try backendBytes(top, at: (2 << 20) + 10, count: 100) == [UInt8](repeating: 0, count: 100))
        // Discard in the top (v3): zeros, not the backing file's data.
        try top.discard(at: 0, length: 65536)
        #expect(try backendBytes(top, at: 100, count: 10) == [UInt8](repeating: 0, count: 10))
        top.close()
        #expect(try Qcow2Checker.check(path: dir.file("top.qcow2")).exitStatus == 0)
        #expect(try fileBytes(dir.file("base.raw")) == pattern(at: 0, count: 1 << 20))
        let info = try ImageInfo.gather(path: dir.file("top.qcow2"), backingChain: true)
        #expect(info.backingChain.map(\.format) == [.qcow2, .raw])
    }

    @Test("read-only images refuse writes; closed images refuse everything")
    func readOnlyAndClosed() throws {
        let dir = try TempFolder()
        let path = dir.file("r.qcow2")
        try ImageTool.create(path: path, format: .qcow2, size: 1 << 20)
        let ro = try Qcow2Image(path: path, readOnly: true)
        #expect(throws: BlockError.readOnly(operation: .write)) { try backendWrite(ro, [1], at: 0) }
        #expect(throws: BlockError.readOnly(operation: .discard)) { try ro.discard(at: 0, length: 512) }
        try ro.flush()
        // A second reader shares the image; a writer is locked out.
        let ro2 = try Qcow2Image(path: path, readOnly: true)
        #expect(throws: BlockError.locked(path: path, readOnly: false)) { _ = try Qcow2Image(path: path) }
        ro.close()
        ro2.close()
        let rw = try Qcow2Image(path: path)
        rw.close()
        rw.close()
        #expect(throws: BlockError.closed(operation: .read)) { _ = try backendBytes(rw, at: 0, count: 1) }
        #expect(throws: BlockError.outOfRange(operation: .read, offset: 1 << 20, length: 1, size: 1 << 20)) {
            let again = try Qcow2Image(path: path)
            defer { again.close() }
            _ = try backendBytes(again, at: 1 << 20, count: 1)
        }
    }

    @Test("create and convert refuse to replace an image someone has open")
    func replaceInUse() throws {
        let dir = try TempFolder()
        let path = dir.file("busy.qcow2")
        try ImageTool.create(path: path, format: .qcow2, size: 1 << 20)
        let holder = try Qcow2Image(path: path, readOnly: true)
        #expect(throws: BlockError.locked(path: path, readOnly: false)) {
            try ImageTool.create(path: path, format: .qcow2, size: 2 << 20)
        }
        try ImageTool.create(path: dir.file("src.qcow2"), format: .qcow2, size: 1 << 20)
        #expect(throws: BlockError.locked(path: path, readOnly: false)) {
            try ImageTool.convert(source: dir.file("src.qcow2"), destination: path, format: .qcow2)
        }
        holder.close()
        try ImageTool.create(path: path, format: .qcow2, size: 2 << 20)
        #expect(try ImageInfo.gather(path: path).virtualSize == 2 << 20)
    }
}
