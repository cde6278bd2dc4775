// QemuCompatTests.swift: test kernels written for `qemu-system-x86_64 -kernel`
// give the same console output and exit status under skvm (docs/qemu-test-kernels.md).
//
// Each guest (guests/mb-args, fwcfg, smp-mb, testdev) checks a convention from
// the inside. Each case runs under skvm; where QEMU is installed (CI installs
// it) the same kernel runs under QEMU with the equivalent flags in the same
// test, and the two outputs must be byte-identical.

import Foundation
import Testing

struct CompatCase: CustomStringConvertible, Sendable {
    let guest: String
    let append: String
    let cpus: Int
    let modules: [String]
    var description: String { "\(guest) cpus=\(cpus) append=\"\(append)\" modules=\(modules)" }

    var skvmArguments: [String] {
        ["run", "--no-input", "--kernel", "guests/build/\(guest).elf", "--append", append, "--cpus", "\(cpus)",
         "--memory", "128M", "--test-device"] + modules.flatMap { ["--initrd", $0] }
    }

    var qemuArguments: [String] {
        ["-enable-kvm", "-cpu", "host,-arch-capabilities", "-M", "pc", "-m", "128", "-smp", "\(cpus)", "-display", "none",
         "-serial", "stdio", "-no-reboot", "-nodefaults", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
         "-device", "pc-testdev", "-kernel", "guests/build/\(guest).elf", "-append", append]
            + (modules.isEmpty ? [] : ["-initrd", modules.joined(separator: ",")])
    }

    static let all: [CompatCase] = [
        CompatCase(guest: "mb-args", append: "alpha beta", cpus: 1, modules: ["guests/build/mod-a.txt one two", "guests/build/mod-b.bin"]),
        CompatCase(guest: "mb-args", append: "", cpus: 1, modules: []),
        CompatCase(guest: "fwcfg", append: "alpha beta", cpus: 1, modules: []),
        CompatCase(guest: "fwcfg", append: "", cpus: 4, modules: []),
        CompatCase(guest: "smp-mb", append: "", cpus: 1, modules: []),
        CompatCase(guest: "smp-mb", append: "", cpus: 2, modules: []),
        CompatCase(guest: "smp-mb", append: "", cpus: 4, modules: []),
        CompatCase(guest: "testdev", append: "", cpus: 1, modules: []),
    ]
}

enum Qemu {
    static let path = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs QEMU (stdout only), at most `timeout` seconds.
    static func run(_ arguments: [String], timeout: TimeInterval = 120) throws -> Harness.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(path))
        p.arguments = arguments
        p.currentDirectoryURL = Harness.root
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        let box = DataBox()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            box.data = out.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
        try p.run()
        if !Harness.waitFor({ !p.isRunning }, timeout: timeout) { p.terminate() }
        p.waitUntilExit()
        done.wait()
        return Harness.Result(status: p.terminationStatus, stdout: String(decoding: box.data, as: UTF8.self), stderr: "")
    }
}

@Suite("Test kernels written for QEMU", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct QemuCompatTests {
    @Test("each convention guest passes under skvm, and prints exactly what it prints under QEMU", arguments: CompatCase.all)
    func sameAsQemu(_ c: CompatCase) throws {
        _ = try requireGuest("\(c.guest).elf")
        let skvm = try Harness.run(c.skvmArguments)
        #expect(skvm.status == 1, "\(c): the guest's own checks failed under skvm:\n\(skvm.stdout)")
        #expect(skvm.stdout.contains("\(c.guest): all "), "\(c): \(skvm.stdout)")
        guard Qemu.path != nil else { return }  // QEMU not installed: skvm's own verdict stands
        let qemu = try Qemu.run(c.qemuArguments)
        #expect(qemu.status == skvm.status, "\(c): QEMU exited \(qemu.status), skvm \(skvm.status)")
        #expect(qemu.stdout == skvm.stdout, "\(c): outputs differ\n--- QEMU\n\(qemu.stdout)--- skvm\n\(skvm.stdout)")
    }

    @Test("the multiboot command line and modules, exactly")
    func mbArgs() throws {
        _ = try requireGuest("mb-args.elf")
        let r = try Harness.run(CompatCase.all[0].skvmArguments)
        #expect(r.stdout.contains("mb-args: arg[0] basename = mb-args.elf\nmb-args: text after arg[0] = \" alpha beta\"\n"))
        #expect(r.stdout.contains("mb-args: module 0: \"mod-a.txt one two\"\nmb-args: module 0: 30 bytes, byte sum 2619\n"))
        #expect(r.stdout.contains("mb-args: module 1: \"mod-b.bin\"\nmb-args: module 1: 5000 bytes, byte sum 637476\n"))
        let empty = try Harness.run(CompatCase.all[1].skvmArguments)
        #expect(empty.stdout.contains("mb-args: text after arg[0] = \" \"\n"), "QEMU's \"%s %s\" keeps the space")
    }
}
