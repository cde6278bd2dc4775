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

/// `skvm img` as a user runs it: arguments, stdout, stderr, exit status.
@Suite("skvm img command line")
struct ImgCommandTests {
    @Test("create, io in order, info --json, check, and errors on one line with status 1")
    func commandLine() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-img-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let image = folder + "/a.qcow2", data = folder + "/data.bin"
        let created = try Harness.run(["img", "create", "--cluster-size", "4K", image, "1M"])
        #expect(created.status == 0)
        #expect(created.stdout == "Formatting '\(image)', fmt=qcow2 size=1048576\n")
        try Data("hello, qcow2".utf8).write(to: URL(fileURLWithPath: data))
        let io = try Harness.run(["img", "io", image, "--read", "4090", "4", "--write", "4090", "--from", data,
                                  "--flush", "--read", "4090", "12", "--zero", "4090", "5", "--read", "4090", "12"])
        #expect(io.status == 0, "\(io.stderr)")
        #expect(io.stdout == "\0\0\0\0" + "hello, qcow2" + "\0\0\0\0\0, qcow2")
        let info = try Harness.run(["img", "info", "--json", image])
        #expect(info.stdout.hasPrefix("{\"filename\": \"\(image)\", \"format\": \"qcow2\", \"virtual-size\": 1048576,"))
        #expect(info.stdout.contains("\"cluster-size\": 4096"))
        let check = try Harness.run(["img", "check", image])
        #expect(check.status == 0)
        #expect(check.stdout.hasPrefix("No errors were found on the image.\n"))
        let missing = try Harness.run(["img", "info", folder + "/missing.qcow2"])
        #expect(missing.status == 1)
        #expect(missing.stderr == "skvm: img info: cannot open disk image '\(folder)/missing.qcow2': No such file or directory\n")
        let outside = try Harness.run(["img", "io", image, "--read", "1M", "1"])
        #expect(outside.status == 1)
        #expect(outside.stderr == "skvm: img io: read of 1 bytes at offset 1048576 ends past the end of the 1048576-byte image\n")
        let bad = try Harness.run(["img", "io", image, "--frobnicate"])
        #expect(bad.status == 2)
    }
}
