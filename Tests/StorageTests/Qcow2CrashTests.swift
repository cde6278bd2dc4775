// Qcow2CrashTests.swift: SIGKILL during a write storm never corrupts an image.
//
// A child process (a Swift Testing exit test) opens the image writable and
// issues random writes, write-zeroes, discards and flushes until a timer
// set to a random moment kills it with SIGKILL: no deinit, no close, no
// flush. `qemu-img check` must then report no corruption (exit 0, or 3 for
// leaked clusters), and the next child reopens the image where the last
// one died. The page cache survives SIGKILL, so this tests the order of
// writes as the kernel received them, which is the order the crash-safety
// argument in docs/qcow2.md relies on (with fdatasync barriers for power
// loss).

import Foundation
import Storage
import Testing

@Suite("qcow2: crash safety", .enabled(if: QemuTools.shouldRun, QemuTools.skipReason))
struct Qcow2CrashTests {
    @Test("30 SIGKILLs during random writes over a snapshot and a backing file: qemu-img check never finds corruption",
          arguments: ["cluster_size=4096", "cluster_size=512,refcount_bits=64"])
    func sigkillStorm(options: String) async throws {
        let dir = try TempFolder()
        try writeFile(dir.file("base.raw"), pattern(at: 0, count: 2 << 20))
        // The second: refcount blocks every 32 KiB and the refcount table growing every few MiB.
        try QemuTools.qemuImg("create", "-q", "-f", "qcow2", "-o", options, "-b", "base.raw", "-F", "raw", "c.qcow2", "6M", cwd: dir.path)
        let image = dir.file("c.qcow2")
        try QemuTools.qemuIO(image, ["write -P 0x5a 0 1m", "write -c -P 0x11 3m 256k"])
        try QemuTools.qemuImg("snapshot", "-c", "s", image)
        var leaks = 0
        for round in 0..<30 {
            await #expect(processExitsWith: .signal(SIGKILL)) { [image = image as String, round = round as Int] in
                signal(SIGALRM) { _ in kill(getpid(), SIGKILL) }
                // Die somewhere in the first 2-60 ms of writing.
                var rng = SplitMix(state: UInt64(round) &* 0x9E37 &+ UInt64(getpid()))
                ualarm(useconds_t(2000 + Int.random(in: 0..<58_000, using: &rng)), 0)
                let q: Qcow2Image
                do { q = try Qcow2Image(path: image) } catch { exit(1) }
                var data = [UInt8](repeating: UInt8(truncatingIfNeeded: round), count: 3 * Int(q.clusterSize))
                while true {
                    let length = Int.random(in: 1...data.count, using: &rng)
                    let offset = UInt64(Int.random(in: 0...(Int(q.size) - length), using: &rng))
                    do {
                        switch Int.random(in: 0..<8, using: &rng) {
                        case 0: try q.flush()
                        case 1: try q.discard(at: offset, length: UInt64(length))
                        case 2: try q.writeZeroes(at: offset, length: UInt64(length), mayUnmap: true)
                        default:
                            data[0] = UInt8(truncatingIfNeeded: length)
                            try data.withUnsafeBytes { try q.write(at: offset, from: UnsafeRawBufferPointer(rebasing: $0[0..<length])) }
                        }
                    } catch {
                        exit(2)
                    }
                }
            }
            let check = try QemuTools.check(image)
            #expect(check.status == 0 || check.status == 3, "round \(round): qemu-img check exit \(check.status): \(check.output)")
            #expect(!check.output.contains("ERROR"), "round \(round): \(check.output)")
            if check.status == 3 { leaks += 1 }
            if check.status != 0 && check.status != 3 { break }
        }
        // The snapshot and the base survive every crash.
        try QemuTools.qemuImg("convert", "-l", "snapshot.name=s", "-O", "raw", image, dir.file("snap.raw"))
        let snap = try fileBytes(dir.file("snap.raw"))
        #expect(snap[0..<(1 << 20)].allSatisfy { $0 == 0x5A })
        #expect(Array(snap[(1 << 20)..<(2 << 20)]) == pattern(at: 1 << 20, count: 1 << 20))
        #expect(try fileBytes(dir.file("base.raw")) == pattern(at: 0, count: 2 << 20))
        // The image still opens, reads and writes after the last crash.
        let q = try Qcow2Image(path: image)
        try backendWrite(q, [1, 2, 3], at: 5)
        #expect(try backendBytes(q, at: 5, count: 3) == [1, 2, 3])
        q.close()
        print("qcow2 crash test (\(options)): \(leaks) of 30 kills left leaked clusters; file \(try fileBytes(image).count) bytes")
    }
}
