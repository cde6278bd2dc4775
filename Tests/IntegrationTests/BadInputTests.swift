// BadInputTests.swift: every bad input gets one clear line on stderr and a
// non-zero (even) status, never a crash or a stack trace.

import Foundation
import Testing

@Suite("Bad input")
struct BadInputTests {
    /// Writes `bytes` to a fresh temporary file and returns its path.
    static func tempFile(_ bytes: [UInt8], name: String = "kernel") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url.path
    }

    /// Asserts skvm failed with `status`, one stderr line starting "skvm: " containing `text`, no stdout.
    static func expectOneLineError(_ r: Harness.Result, status: Int32 = 2, containing text: String,
                                   sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == status, "status", sourceLocation: sourceLocation)
        #expect(r.stderrLines.count == 1, "expected one line, got: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("skvm: "), sourceLocation: sourceLocation)
        #expect(r.stderr.contains(text), "stderr was: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stdout == "", sourceLocation: sourceLocation)
    }

    @Test func missingKernel() throws {
        let r = try Harness.run(["run", "--kernel", "/nonexistent/kernel.elf"])
        Self.expectOneLineError(r, containing: "cannot open kernel '/nonexistent/kernel.elf': No such file or directory")
    }

    @Test func emptyKernel() throws {
        let path = try Self.tempFile([])
        Self.expectOneLineError(try Harness.run(["run", "--kernel", path]), containing: "is empty")
    }

    @Test func directoryAsKernel() throws {
        Self.expectOneLineError(try Harness.run(["run", "--kernel", "/tmp"]), containing: "is not a regular file")
    }

    @Test func missingKernelOption() throws {
        let r = try Harness.run(["run"])
        #expect(r.status == 2)
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains("--kernel"))
    }

    @Test("Memory sizes that make no sense", arguments: [
        ("0", "must be more than 0"),
        ("abc", "is not a size"),
        ("12Q", "unknown unit"),
        ("1000B", "less than the minimum"),
        ("4097K", "not a whole number of 4 KiB pages"),
        ("99999999999999999999", "too large"),
    ])
    func badMemory(_ value: String, _ message: String) throws {
        let r = try Harness.run(["run", "--kernel", "/nonexistent", "--memory", value])
        Self.expectOneLineError(r, containing: message)
    }

    @Test("Not a kernel: random bytes")
    func notAKernel() throws {
        let path = try Self.tempFile((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) })
        let r = try Harness.run(["run", "--kernel", path])
        Self.expectOneLineError(r, containing: "not a kernel skvm can boot: no multiboot header in the first 8 KiB and no Linux setup header (for a raw real-mode binary, add --flat)")
    }

    @Test("A flat binary too large for low memory")
    func flatTooLarge() throws {
        let path = try Self.tempFile([UInt8](repeating: 0x90, count: 700 * 1024))
        Self.expectOneLineError(try Harness.run(["run", "--flat", "--kernel", path]), containing: "at most 650240 fit")
    }
}

@Suite("Bad input that needs KVM", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct BadKernelTests {
    /// A multiboot kernel built by `make guests`, as bytes.
    static func multibootKernel() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: try requireGuest("multiboot-hello.elf"))))
    }

    /// The offset of the multiboot magic in `bytes`.
    static func headerOffset(_ bytes: [UInt8]) throws -> Int {
        let magic: [UInt8] = [0x02, 0xB0, 0xAD, 0x1B]
        return try #require(stride(from: 0, to: min(bytes.count, 8192) - 4, by: 4).first { Array(bytes[$0..<$0 + 4]) == magic })
    }

    @Test func badChecksum() throws {
        var bytes = try Self.multibootKernel()
        let at = try Self.headerOffset(bytes)
        bytes[at + 8] ^= 0xFF
        let r = try Harness.run(["run", "--kernel", try BadInputTests.tempFile(bytes)])
        BadInputTests.expectOneLineError(r, containing: "has a bad checksum")
    }

    @Test func truncatedELF() throws {
        let bytes = try Self.multibootKernel()
        // Keep the multiboot header, lose the segments' bytes after it.
        let cut = try Self.headerOffset(bytes) + 64
        let r = try Harness.run(["run", "--kernel", try BadInputTests.tempFile(Array(bytes.prefix(cut)))])
        BadInputTests.expectOneLineError(r, containing: "past the end of the file")
    }

    @Test("A kernel that does not fit in guest memory")
    func kernelOutsideMemory() throws {
        _ = try requireGuest("multiboot-hello.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/multiboot-hello.elf", "--memory", "1M"])
        BadInputTests.expectOneLineError(r, containing: "lies outside guest RAM (1 MiB)")
    }

    @Test("More memory than KVM can address")
    func absurdMemory() throws {
        _ = try requireGuest("multiboot-hello.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/multiboot-hello.elf", "--memory", "9999T"])
        BadInputTests.expectOneLineError(r, containing: "is more than this host's KVM can address")
    }
}

@Suite("Bad Linux kernels", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct BadLinuxKernelTests {
    static func debianBzImage() throws -> [UInt8] {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: LinuxAssets.bzImage)))
    }

    @Test("A truncated bzImage is refused before anything runs")
    func truncated() throws {
        let bytes = try Self.debianBzImage()
        let r = try Harness.run(["run", "--kernel", try BadInputTests.tempFile(Array(bytes.prefix(bytes.count / 2)))])
        BadInputTests.expectOneLineError(r, containing: "the bzImage is truncated")
    }

    @Test("A 32-bit-only kernel (no XLF_KERNEL_64) is refused")
    func thirtyTwoBit() throws {
        var bytes = try Self.debianBzImage()
        bytes[0x236] &= ~0x01
        let r = try Harness.run(["run", "--kernel", try BadInputTests.tempFile(bytes)])
        BadInputTests.expectOneLineError(r, containing: "a 32-bit kernel (XLF_KERNEL_64 is not set)")
    }

    @Test("Two initrds for a Linux kernel are refused")
    func twoInitrds() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let r = try Harness.run(["run", "--kernel", LinuxAssets.vmlinux, "--initrd", LinuxAssets.initrd, "--initrd", LinuxAssets.initrd])
        BadInputTests.expectOneLineError(r, containing: "--initrd is given 2 times; a Linux kernel takes one initrd")
    }
}
