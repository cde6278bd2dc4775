// Qcow2LinuxTests.swift: Linux on a qcow2 overlay over a raw base image
// (issue 5): ext4 files written in one boot are there in the next, the
// base is unchanged, the overlay is clean, and its file system too.

import Foundation
import Testing

@Suite("Linux on a qcow2 overlay (real KVM only)",
       .enabled(if: LinuxAssets.fullBootPossible && Harness.kvmUsable,
                "this host's KVM is PVM: guest kernel code is emulated and a stock kernel cannot finish booting (docs/pvm.md)"))
struct Qcow2LinuxTests {
    /// Runs the Debian kernel with `disk` and the initramfs command `command`.
    func boot(_ command: String, disk: String) throws -> Harness.Result {
        try Harness.run(["run", "--kernel", LinuxAssets.bzImage, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--no-input",
                         "--disk", disk, "--append", "quiet skvm.cmd=\"\(command)\""], timeout: 120)
    }

    @Test("ext4 on a qcow2 overlay: files survive a reboot, the raw base is unchanged, check and e2fsck are clean")
    func overlay() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let base = try Disk.make("base.img")
        #expect(try Disk.shell("mkfs.ext4", ["-q", "-F", base]) == 0)
        let original = try Disk.bytes(base)
        let folder = URL(fileURLWithPath: base).deletingLastPathComponent().path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let overlay = folder + "/overlay.qcow2"
        let created = try Harness.run(["img", "create", "-f", "qcow2", "-b", "base.img", "-F", "raw", overlay])
        try #require(created.status == 0, "skvm img create: \(created.stderr)")
        let first = try boot("mount /dev/vda /mnt && echo skvm-was-here > /mnt/hello && sync && umount /mnt", disk: overlay)
        #expect(first.stdout.contains("skvm-initramfs: command exited with status 0"), "\(first.stdout)")
        #expect(first.status == 0)
        let second = try boot("mount /dev/vda /mnt && cat /mnt/hello && umount /mnt", disk: overlay)
        #expect(second.stdout.contains("skvm-was-here"), "the file survived the reboot")
        #expect(try Disk.bytes(base) == original, "the base image changed")
        #expect(try Harness.run(["img", "check", overlay]).status == 0)
        let raw = folder + "/overlay.raw"
        #expect(try Harness.run(["img", "convert", "-O", "raw", overlay, raw]).status == 0)
        #expect(try Disk.shell("e2fsck", ["-fn", raw]) == 0, "e2fsck finds the overlay's file system clean")
    }
}
