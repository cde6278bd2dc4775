// VirtioBlockTests.swift: skvm's virtio-blk-pci device, exercised by a guest
// with its own minimal virtio-pci driver (guests/virtio-blk-test): PCI
// discovery, feature negotiation, reads, writes, flush, GET_ID, discard,
// write-zeroes, bad requests, read-only disks, two disks. After each run the
// image is checked sector by sector on the host (guests/tools/make-test-disk.sh
// --check), and where QEMU is installed the same guest runs on a copy of the
// same starting image under QEMU's virtio-blk-pci: the two resulting images
// must be byte-identical.

import Foundation
import Testing

enum Disk {
    static let script = Harness.root.appendingPathComponent("guests/tools/make-test-disk.sh").path

    /// A fresh 8 MiB image with the guest's 'orig' pattern.
    static func make(_ name: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        let r = try shell("bash", [script, path, "8M"])
        try #require(r == 0, "make-test-disk.sh failed")
        return path
    }

    /// make-test-disk.sh --check PATH MODE: 0 when every sector holds what it should.
    static func check(_ path: String, mode: String) throws -> Int32 { try shell("bash", [script, "--check", path, mode]) }

    static func shell(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
}

@Suite("virtio-blk", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct VirtioBlockTests {
    @Test("each test mode passes inside the guest, the image holds exactly what was written, and QEMU writes the same image",
          arguments: [("rw", ""), ("bad", ""), ("discard", ""), ("ro", ",readonly=on"), ("reset", ""), ("wrap", "")])
    func mode(_ mode: String, _ options: String) throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let image = try Disk.make("skvm.img")
        let original = try Disk.bytes(image)
        let r = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", "path=\(image),serial=SKVM-TEST-1\(options)",
                                 "--append", "test=\(mode) expect-serial=SKVM-TEST-1"])
        #expect(r.status == 1, "the guest's checks failed:\n\(r.stdout)")
        #expect(r.stdout.contains("virtio-blk-test: all "))
        #expect(try Disk.check(image, mode: mode) == 0, "the host image is not what test=\(mode) should leave")
        if mode == "ro" { #expect(try Disk.bytes(image) == original, "a read-only disk changed") }

        guard let qemu = Qemu.path else { return }
        _ = qemu
        let reference = try Disk.make("qemu.img")
        let readonly = options.contains("readonly=on") ? ",readonly=on" : ""
        let q = try Qemu.run(["-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "128", "-display", "none",
                              "-serial", "stdio", "-no-reboot", "-nodefaults", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                              // discard=unmap: QEMU's default (ignore) keeps discarded data, which the spec allows; skvm punches holes.
                              "-drive", "file=\(reference),format=raw,if=none,id=d0,cache=none,aio=threads,discard=unmap\(readonly)",
                              "-device", "virtio-blk-pci,drive=d0,disable-legacy=on,serial=SKVM-TEST-1",
                              "-kernel", "guests/build/virtio-blk-test.elf", "-append", "test=\(mode) expect-serial=SKVM-TEST-1"])
        #expect(q.status == 1, "the same guest under QEMU:\n\(q.stdout)")
        #expect(try Disk.bytes(reference) == Disk.bytes(image), "skvm and QEMU left different images")
    }

    @Test("virtio-mmio: each test mode passes through the mmio window, the image holds exactly what was written",
          arguments: [("rw", ""), ("bad", ""), ("discard", ""), ("ro", ",readonly=on"), ("reset", ""), ("wrap", "")])
    func mmioMode(_ mode: String, _ options: String) throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let image = try Disk.make("mmio.img")
        let original = try Disk.bytes(image)
        let r = try Harness.run(["run", "--no-input", "--stats", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", "path=\(image),serial=SKVM-MMIO-1,transport=mmio\(options)",
                                 "--append", "test=\(mode) transport=mmio expect-serial=SKVM-MMIO-1"])
        #expect(r.status == 1, "the guest's checks failed:\n\(r.stdout)")
        #expect(r.stdout.contains("virtio-mmio window #0: MagicValue \"virt\", Version 2, DeviceID 2 (block): ok"))
        #expect(r.stdout.contains("virtio-blk-test: all "))
        // QueueNotify (0xd0000050) is caught by the ioeventfds: it never exits to skvm.
        #expect(r.stderr.contains("virtio-mmio-blk 0"), "the --stats table lists the window's registers:\n\(r.stderr)")
        #expect(!r.stderr.contains("0xd0000050"), "a queue notification exited to userspace:\n\(r.stderr)")
        #expect(try Disk.check(image, mode: mode) == 0, "the host image is not what test=\(mode) should leave")
        if mode == "ro" { #expect(try Disk.bytes(image) == original, "a read-only disk changed") }
    }

    @Test("a PCI disk and an mmio disk side by side: the guest drives the mmio one, the PCI one is untouched")
    func mixedTransports() throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let a = try Disk.make("pci.img"), b = try Disk.make("mmio.img")
        let before = try Disk.bytes(a)
        let r = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", a, "--disk", "path=\(b),transport=mmio", "--append", "test=rw transport=mmio"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(try Disk.check(b, mode: "rw") == 0)
        #expect(try Disk.bytes(a) == before)
        // Only one window exists: the guest finds nothing at #1.
        let none = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf",
                                    "--disk", "path=\(b),transport=mmio", "--append", "test=info transport=mmio disk=1"])
        #expect(none.status == 3, "\(none.stdout)")
        #expect(none.stdout.contains("virtio-mmio window #1: MagicValue \"virt\", Version 2, DeviceID 2 (block): FAIL (MagicValue reads 0xffffffff)"))
    }

    @Test("more virtio-mmio disks than windows, or more PCI devices than slots, is one clear line")
    func tooManyMMIODisks() throws {
        _ = try requireGuest("echo.elf")
        let image = try Disk.make("many.img")
        var arguments = ["run", "--kernel", "guests/build/echo.elf"]
        for _ in 0..<9 { arguments += ["--disk", "path=\(image),transport=mmio,readonly=on"] }
        BadInputTests.expectOneLineError(try Harness.run(arguments), containing: "9 devices with transport=mmio")
        var pci = ["run", "--kernel", "guests/build/echo.elf"]
        for _ in 0..<32 { pci += ["--disk", "path=\(image),readonly=on"] }
        BadInputTests.expectOneLineError(try Harness.run(pci), containing: "32 virtio devices on PCI: skvm's bus 0 has 31 slots")
    }

    @Test("--trace virtio shows the handshake, each chain popped, each used element and the interrupt decision, in order")
    func traceVirtio() throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let image = try Disk.make("trace.img")
        let r = try Harness.run(["run", "--no-input", "--quiet", "--trace", "virtio", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", image, "--append", "test=info"])
        #expect(r.status == 1, "\(r.stdout)")
        let lines = r.stderr.split(separator: "\n").map(String.init).filter { $0.hasPrefix("virtio: ") }
        let expected = [
            "virtio: virtio-blk 0: status 0: reset",
            "virtio: virtio-blk 0: status ACKNOWLEDGE",
            "virtio: virtio-blk 0: status ACKNOWLEDGE|DRIVER",
            "virtio: virtio-blk 0: features negotiated: bits {9, 32}",
            "virtio: virtio-blk 0: status ACKNOWLEDGE|DRIVER|FEATURES_OK",
        ]
        #expect(Array(lines.prefix(5)) == expected, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("virtio: virtio-blk 0: queue 0: size 16, descriptors 0x") })
        #expect(lines.contains("virtio: virtio-blk 0: DRIVER_OK: running"))
        // GET_ID: header (16 bytes) in, a 20-byte id and the status byte out.
        let getID = try #require(lines.firstIndex(of: "virtio: virtio-blk 0 q0: avail[0] head 0: 3 buffers, 16 bytes readable, 21 writable"))
        #expect(lines[getID - 1] == "virtio: virtio-blk 0: notify queue 0")
        #expect(lines[getID + 1] == "virtio: virtio-blk 0 q0: used[0] head 0, 21 bytes written")
        #expect(lines[getID + 2].hasPrefix("virtio: virtio-blk 0 q0: "))
        #expect(lines.last == "virtio: virtio-blk 0: status 0: reset")
    }

    @Test("one request at a time, the I/O thread allocates nothing per request (thousands of requests, a handful of allocations; release build)",
          .enabled(if: Harness.runReleaseTests, "needs the release build (make release); make test builds it"))
    func noAllocationPerRequest() throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let image = try Disk.make("alloc.img")
        let r = try Harness.run(["run", "--no-input", "--quiet", "--stats", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", image, "--append", "test=bench bench-mib=4 bench-random=3000 qd=1"], executable: Harness.releaseSkvm)
        #expect(r.status == 1, "\(r.stdout)")
        let io = try #require(r.stderr.split(separator: "\n").first { $0.hasPrefix("I/O thread: ") }, "\(r.stderr)")
        let allocations = Int(io.split(separator: ",").last?.split(separator: " ").first ?? "") ?? -1
        #expect(allocations >= 0 && allocations < 100, "\(io)")
    }

    @Test("cache=none (O_DIRECT with bounce buffers for unaligned guest buffers) reads and writes the same bytes")
    func directIO() throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let image = try Disk.make("direct.img")
        let r = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf",
                                 "--disk", "path=\(image),cache=none", "--append", "test=rw"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(try Disk.check(image, mode: "rw") == 0)
    }

    @Test("two disks: the guest drives the second one; the first is untouched")
    func twoDisks() throws {
        _ = try requireGuest("virtio-blk-test.elf")
        let a = try Disk.make("a.img"), b = try Disk.make("b.img")
        let before = try Disk.bytes(a)
        let r = try Harness.run(["run", "--no-input", "--kernel", "guests/build/virtio-blk-test.elf", "--disk", a, "--disk", b,
                                 "--append", "test=rw disk=1"])
        #expect(r.status == 1, "\(r.stdout)")
        #expect(try Disk.check(b, mode: "rw") == 0)
        #expect(try Disk.bytes(a) == before)
    }

    @Test("a second skvm cannot open the same image writable; bad --disk values are one line")
    func lockAndBadInput() throws {
        _ = try requireGuest("echo.elf")
        let image = try Disk.make("locked.img")
        let second = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--disk", image], keepInputOpen: true) { first in
            first.waitForOutput("echo: ready")
            let r = try? Harness.run(["run", "--kernel", "guests/build/echo.elf", "--disk", image])
            if let r { BadInputTests.expectOneLineError(r, containing: "is in use by another process") }
            first.terminate()
        }
        #expect(second.status == 143)
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--disk", "path=\(image),cache=fast"]),
                                         containing: "--disk cache 'fast' is not writeback or none")
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--disk", "/nonexistent.img"]),
                                         containing: "/nonexistent.img")
    }
}
