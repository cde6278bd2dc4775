// Qcow2DiskTests.swift: virtio-blk on a qcow2 overlay over a raw base.
//
// The virtio-blk-test guest runs its modes on a qcow2 image made by
// `skvm img create -b base.img`; afterwards the base is byte-identical to
// what it was, `qemu-img check` (where installed) finds no problem, and the
// overlay, converted to raw by `skvm img convert`, holds exactly what
// make-test-disk.sh expects of that mode.

import Foundation
import Testing

@Suite("virtio-blk on qcow2", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct Qcow2DiskTests {
    @Test("each mode passes on a qcow2 overlay; the raw base is unchanged", arguments: ["rw", "discard", "ro", "reset", "wrap"])
    func overlay(_ mode: String) throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let base = try Disk.make("base.img")
        let original = try Disk.bytes(base)
        let folder = URL(fileURLWithPath: base).deletingLastPathComponent().path
        let overlay = folder + "/overlay.qcow2", raw = folder + "/overlay.raw"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let created = try Harness.run(["img", "create", "-f", "qcow2", "-b", "base.img", "-F", "raw", overlay])
        try #require(created.status == 0, "skvm img create: \(created.stderr)")
        let options = mode == "ro" ? ",readonly=on" : ""
        let r = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", "path=\(overlay),serial=SKVM-TEST-1\(options)",
                                 "--append", "test=\(mode) expect-serial=SKVM-TEST-1"])
        #expect(r.status == 1, "the guest's checks failed:\n\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("virtio-blk-test: all "))
        #expect(try Disk.bytes(base) == original, "the base image changed")
        let check = try Harness.run(["img", "check", overlay])
        #expect(check.status == 0, "skvm img check: \(check.stdout)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img") {
            #expect(try Disk.shell("qemu-img", ["check", overlay]) == 0)
        }
        let converted = try Harness.run(["img", "convert", "-O", "raw", overlay, raw])
        try #require(converted.status == 0, "skvm img convert: \(converted.stderr)")
        #expect(try Disk.check(raw, mode: mode) == 0, "the overlay does not hold what test=\(mode) should leave")
    }
}
