// BootProbeTests.swift: the boot-protocol probe kernel (guests/boot-probe)
// checks from the inside everything skvm's Linux loader promises a kernel:
// CPU state, zero page, E820, command line, initrd bytes, MP table, CPUID on
// every vCPU, and that every AP answers INIT-SIPI-SIPI.

import Foundation
import Testing

@Suite("Boot-protocol probe", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct BootProbeTests {
    /// A deterministic initrd and its byte sum, written to a temporary file.
    static func initrd(size: Int) throws -> (path: String, sum: UInt32) {
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        let path = try BadInputTests.tempFile(bytes, name: "initrd.bin")
        return (path, bytes.reduce(UInt32(0)) { $0 &+ UInt32($1) })
    }

    static func expectAllPassed(_ r: Harness.Result, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 1, "the probe reports failures: \(r.stdout)", sourceLocation: sourceLocation)
        #expect(!r.stdout.contains("FAIL"), sourceLocation: sourceLocation)
        #expect(r.stdout.split(separator: "\n").last?.hasPrefix("boot-probe: all ") == true, sourceLocation: sourceLocation)
    }

    @Test("vmlinux and bzImage, 1, 2 and 4 vCPUs, with an initrd: every check passes and every AP comes online",
          arguments: ["boot-probe.vmlinux", "boot-probe.bzimage"], [1, 2, 4])
    func probe(_ image: String, _ cpus: Int) throws {
        _ = try requireGuest(image)
        let (path, sum) = try Self.initrd(size: 100 * 1024 + 17)
        let r = try Harness.run(["run", "--kernel", "guests/build/\(image)", "--cpus", "\(cpus)", "--memory", "128M", "--initrd", path,
                                 "--append", "probe.cpus=\(cpus) probe.mem=128 probe.initrd=\(100 * 1024 + 17):\(sum)"])
        Self.expectAllPassed(r)
        #expect(r.stdout.contains("boot-probe: initrd byte sum \(sum): ok"))
        #expect(r.stdout.contains("boot-probe: mp table: \(cpus) cpus, ioapic id \(cpus)"))
        for id in 1..<cpus { #expect(r.stdout.contains("boot-probe: cpu \(id) online (apic id \(id)): ok")) }
        #expect(r.stdout.contains("boot-probe: smp: \(cpus) of \(cpus) cpus online: ok"))
        let pvm = LinuxAssets.fullBootPossible ? "" : " noxsave"
        #expect(r.stdout.contains("boot-probe: cmdline: console=ttyS0 reboot=k panic=-1\(pvm) probe.cpus=\(cpus)"))
    }

    @Test("4 GiB: the E820 map has RAM on both sides of the hole and the probe accounts for all of it")
    func aboveFourGiB() throws {
        _ = try requireGuest("boot-probe.bzimage")
        let r = try Harness.run(["run", "--kernel", "guests/build/boot-probe.bzimage", "--memory", "4G", "--append", "probe.cpus=1 probe.mem=4096"])
        Self.expectAllPassed(r)
        #expect(r.stdout.contains("boot-probe: e820 0x0000000000100000-0x00000000BFFFFFFF 1 (usable)"))
        #expect(r.stdout.contains("boot-probe: e820 0x0000000100000000-0x000000013FFFFFFF 1 (usable)"))
    }

    @Test("A wrong expectation fails inside the guest, with the reason and status 3")
    func mismatch() throws {
        _ = try requireGuest("boot-probe.vmlinux")
        let r = try Harness.run(["run", "--kernel", "guests/build/boot-probe.vmlinux", "--cpus", "2", "--append", "probe.cpus=3 probe.mem=128"])
        #expect(r.status == 3)
        #expect(r.stdout.contains("boot-probe: mp processor entries: 2 (probe.cpus=3): FAIL"))
        #expect(r.stdout.contains("boot-probe: smp: 2 of 3 cpus online: FAIL"))
    }

    @Test("An initrd too large for guest memory is refused before anything runs")
    func initrdTooLarge() throws {
        _ = try requireGuest("boot-probe.bzimage")
        let (path, _) = try Self.initrd(size: 40 << 20)
        let r = try Harness.run(["run", "--kernel", "guests/build/boot-probe.bzimage", "--memory", "32M", "--initrd", path])
        BadInputTests.expectOneLineError(r, containing: "the initrd (40 MiB) does not fit in guest RAM above the kernel")
    }
}
