// Qcow2FuzzTests.swift: random damage to a real image's metadata never
// crashes or hangs skvm; every problem is a thrown BlockError.
//
// A qemu-img image with data, zero and compressed clusters, a snapshot and
// a backing file is damaged at random (bytes of the header cluster, the L1,
// refcount and snapshot tables, refcount blocks and L2 tables: the first
// clusters of the file, where qemu-img puts them), then opened, read
// whole, inspected, checked, and written. A trap (an index out of range, an
// arithmetic overflow) would kill the test process: the test passes by
// surviving. Deterministic seeds, so a failure replays.

import Foundation
import Storage
import Testing

@Suite("qcow2: damaged metadata never crashes", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2FuzzTests {
    @Test("300 randomly damaged images: open, read, info, check, write; errors only")
    func damage() throws {
        let dir = try TempFolder()
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 1 << 20))
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw", "-F", "raw", "src.qcow2", "2M", cwd: dir.path)
        try QemuTools.qemuIO(dir.file("src.qcow2"), ["write -P 1 0 256k", "write -c -P 2 512k 64k", "write -z 768k 64k"])
        try QemuTools.qemuImg("snapshot", "-c", "s", dir.file("src.qcow2"))
        try QemuTools.qemuIO(dir.file("src.qcow2"), ["write -P 3 4k 8k"])
        let original = try fileBytes(dir.file("src.qcow2"))
        // Metadata sits in the first clusters; data clusters come later.
        let metadataEnd = min(original.count, 16 * 4096)
        var rng = SplitMix(state: 0x5EED)
        var outcomes: [String: Int] = [:]
        let path = dir.file("damaged.qcow2")
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 << 20, alignment: 8)
        defer { buffer.deallocate() }
        for round in 0..<300 {
            var bytes = original
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                if Bool.random(using: &rng) {
                    let at = Int.random(in: 0..<metadataEnd, using: &rng)
                    // A bit flip or a wild byte.
                    bytes[at] = Bool.random(using: &rng) ? bytes[at] ^ (1 << UInt8.random(in: 0...7, using: &rng)) : UInt8.random(in: 0...255, using: &rng)
                } else {
                    // A whole field or table entry (8 bytes, or 4 at a 4-byte
                    // boundary) set to an extreme or plausible-looking value.
                    let at = Int.random(in: 0..<(metadataEnd / 4 - 1), using: &rng) * 4
                    let candidates: [UInt64] = [0, .max, 1 << 63, 1 << 62 | UInt64.random(in: 0..<(1 << 40), using: &rng),
                                                UInt64.random(in: 0...(.max), using: &rng), UInt64.random(in: 0..<64, using: &rng) * 4096 | 1 << 63,
                                                UInt64(original.count), UInt64(original.count) - 4096, 0xFFFF_FFFF, 1 << 56]
                    let v = candidates[Int.random(in: 0..<candidates.count, using: &rng)]
                    let width = Bool.random(using: &rng) ? 8 : 4
                    for k in 0..<width { bytes[at + k] = UInt8(truncatingIfNeeded: v >> UInt64(8 * (width - 1 - k))) }
                }
            }
            try writeFile(path, bytes)
            var outcome = "ok"
            do throws(BlockError) {
                let image = try Qcow2Image(path: path, readOnly: true)
                defer { image.close() }
                try image.read(at: 0, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(image.size, 2 << 20))]))
            } catch {
                outcome = "read: " + String(describing: error).split(separator: ":").prefix(1).joined()
            }
            _ = try? ImageInfo.gather(path: path, backingChain: true)
            _ = try? Qcow2Checker.check(path: path)
            do throws(BlockError) {
                let image = try Qcow2Image(path: path)
                try image.write(at: 4000, from: UnsafeRawBufferPointer(rebasing: buffer[0..<70000]))
                try image.discard(at: 512 << 10, length: 64 << 10)
                try image.flush()
                image.close()
            } catch {
                if outcome == "ok" { outcome = "write" }
            }
            outcomes[outcome, default: 0] += 1
            _ = round
        }
        // Some damage is harmless (unused bytes), much is caught: both must occur.
        #expect(outcomes["ok", default: 0] > 0)
        #expect(outcomes.count > 1)
    }
}
