// LinuxTests.swift: the Debian kernel under skvm.
//
// Two tiers (docs/linux-boot.md):
//   - the bounded smoke test, on every KVM host: the kernel reaches its banner
//     and prints the command line, the E820 map, the initrd and the MP table
//     skvm gave it; skvm is then stopped with SIGTERM. On a PVM host (like CI's)
//     this takes a minute or two, because the kernel's code is emulated.
//   - the full boot (`make test-linux`), only where KVM runs guest kernels
//     natively: the initramfs runs a command and the guest reboots.
// The assets come from `make linux` (guests/build/linux).

import Foundation
import Testing

enum LinuxAssets {
    static var vmlinux: String { Harness.guest("linux/vmlinux") }
    static var bzImage: String { Harness.guest("linux/bzImage") }
    static var initrd: String { Harness.guest("linux/initrd.img") }
    static var built: Bool { FileManager.default.fileExists(atPath: vmlinux) && FileManager.default.fileExists(atPath: initrd) }
    /// Where KVM runs guest kernel code natively, a full boot takes ~100 ms.
    static let fullBootPossible = !FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm")
}

/// Runs skvm until its stdout contains every one of `markers` (or it exits),
/// then stops it with SIGTERM; returns the result.
func runUntil(_ arguments: [String], markers: [String], timeout: TimeInterval = 400) throws -> Harness.Result {
    let box = DataBox()
    let out = Pipe(), err = Pipe()
    let p = Process()
    p.executableURL = URL(fileURLWithPath: Harness.skvm)
    p.arguments = arguments
    p.currentDirectoryURL = Harness.root
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    let lock = NSLock()
    out.fileHandleForReading.readabilityHandler = { h in
        let d = h.availableData
        lock.lock(); box.append(d); lock.unlock()
    }
    try p.run()
    let seen = Harness.waitFor({
        lock.lock(); defer { lock.unlock() }
        let text = String(decoding: box.data, as: UTF8.self)
        return !p.isRunning || markers.allSatisfy { text.contains($0) }
    }, timeout: timeout)
    if p.isRunning { p.terminate() }  // SIGTERM: skvm stops its vCPUs and exits 143
    p.waitUntilExit()
    out.fileHandleForReading.readabilityHandler = nil
    lock.lock(); box.append(out.fileHandleForReading.readDataToEndOfFile()); lock.unlock()
    if !seen { Issue.record("markers not seen within \(timeout) s") }
    // Linux's serial console ends lines with "\r\n".
    let stdout = String(decoding: box.data, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
    return Harness.Result(status: p.terminationStatus, stdout: stdout,
                          stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

@Suite("Linux smoke test (to the banner)", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct LinuxSmokeTests {
    @Test("vmlinux with an initrd and 2 vCPUs: banner, command line, E820 map, initrd, MP table")
    func vmlinuxBanner() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let initrdSize = try #require(try FileManager.default.attributesOfItem(atPath: LinuxAssets.initrd)[.size] as? Int)
        let r = try runUntil(["run", "--kernel", LinuxAssets.vmlinux, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--cpus", "2",
                              "--append", "earlyprintk=serial,ttyS0 skvm.test=smoke"],
                             markers: ["found SMP MP-table at [mem 0x0009fc00-0x0009fc0f]", "RAMDISK: [mem "])
        #expect(r.stdout.contains("Linux version 6."))
        let pvm = LinuxAssets.fullBootPossible ? "" : " noxsave"
        #expect(r.stdout.contains("Command line: console=ttyS0 reboot=k panic=-1\(pvm) earlyprintk=serial,ttyS0 skvm.test=smoke\n"))
        #expect(r.stdout.contains("BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n"))
        #expect(r.stdout.contains("BIOS-e820: [mem 0x000000000009fc00-0x00000000000fffff] reserved\n"))
        #expect(r.stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x000000001fffffff] usable\n"))
        // The initrd sits page-aligned at the top of RAM: it ends within the last page.
        let pages = (initrdSize + 0xFFF) / 0x1000
        let start = 0x2000_0000 - pages * 0x1000
        let expected = String(format: "RAMDISK: [mem 0x%08x-0x%08x]", start, start + pages * 0x1000 - 1)
        #expect(r.stdout.contains(expected), "expected \(expected)")
        #expect(r.status == 143, "skvm stops on SIGTERM with 128 + 15")
    }

    @Test("5 GiB: the E820 map has the hole below 4 GiB and RAM above it")
    func memoryAboveFourGiB() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let r = try runUntil(["run", "--kernel", LinuxAssets.vmlinux, "--memory", "5G", "--append", "earlyprintk=serial,ttyS0"],
                             markers: ["BIOS-e820: [mem 0x0000000100000000-0x000000017fffffff] usable"])
        #expect(r.stdout.contains("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable\n"))
        #expect(r.stdout.contains("BIOS-e820: [mem 0x0000000100000000-0x000000017fffffff] usable\n"))
        #expect(r.status == 143)
    }
}

@Suite("Linux full boot (real KVM only)",
       .enabled(if: LinuxAssets.fullBootPossible && Harness.kvmUsable,
                "this host's KVM is PVM: guest kernel code is emulated and a stock kernel cannot finish booting (docs/pvm.md)"))
struct LinuxFullBootTests {
    @Test("The initramfs runs a command, sees the vCPUs and memory, and the guest reboots")
    func runsCommand() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let r = try Harness.run(["run", "--kernel", LinuxAssets.bzImage, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--cpus", "2",
                                 "--append", "quiet skvm.cmd=echo cpus=$(nproc) && grep MemTotal /proc/meminfo"], timeout: 120)
        #expect(r.stdout.contains("skvm-initramfs: ready"))
        #expect(r.stdout.contains("cpus=2"))
        let memTotal = r.stdout.split(separator: "\n").first { $0.contains("MemTotal:") }
        let kib = memTotal.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        #expect(kib > 400_000 && kib <= 524_288, "MemTotal \(kib) KiB for 512 MiB")
        #expect(r.stdout.contains("skvm-initramfs: command exited with status 0"))
        #expect(r.status == 0, "the guest's reboot -f ends the VM with status 0")
    }

    /// Runs the Debian kernel with `disks` and the initramfs command `command`.
    func boot(_ command: String, disks: [String], timeout: TimeInterval = 120) throws -> Harness.Result {
        try Harness.run(["run", "--kernel", LinuxAssets.bzImage, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--no-input"]
                        + disks.flatMap { ["--disk", $0] } + ["--append", "quiet skvm.cmd=\"\(command)\""], timeout: timeout)
    }

    @Test("virtio-blk under Linux: the PCI device, /dev/vda's size, ext4 files that survive a reboot, a clean e2fsck")
    func disk() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let image = try Disk.make("linux.img")
        #expect(try Disk.shell("mkfs.ext4", ["-q", "-F", image]) == 0)
        let first = try boot("grep -l 0x1af4 /sys/bus/pci/devices/*/vendor | wc -l; cat /sys/block/vda/size; mount /dev/vda /mnt && echo skvm-was-here > /mnt/hello && sync && umount /mnt", disks: [image])
        #expect(first.stdout.contains("skvm-initramfs: command exited with status 0"), "\(first.stdout)")
        #expect(first.stdout.contains("\n1\n") || first.stdout.contains("\n1\r\n"), "one virtio device on PCI")
        #expect(first.stdout.contains("16384"), "8 MiB = 16384 sectors")
        #expect(first.status == 0)
        let second = try boot("mount /dev/vda /mnt && cat /mnt/hello && umount /mnt", disks: [image])
        #expect(second.stdout.contains("skvm-was-here"), "the file survived the reboot")
        #expect(try Disk.shell("e2fsck", ["-fn", image]) == 0, "e2fsck finds the file system clean")
    }

    @Test("a read-only disk refuses writes in the guest; two disks appear as vda and vdb")
    func readOnlyAndTwoDisks() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let a = try Disk.make("ro.img"), b = try Disk.make("rw.img")
        let before = try Disk.bytes(a)
        let r = try boot("cat /sys/block/vda/ro /sys/block/vdb/ro; dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync 2>/dev/null && echo wrote || echo refused",
                         disks: ["path=\(a),readonly=on", b])
        #expect(r.stdout.contains("refused"), "\(r.stdout)")
        #expect(r.stdout.contains("1\n0") || r.stdout.contains("1\r\n0"), "vda read-only, vdb writable")
        #expect(try Disk.bytes(a) == before)
    }
}

@Suite("Linux full boot with virtio-net (real KVM only)",
       .enabled(if: LinuxAssets.fullBootPossible && Harness.kvmUsable && NetNamespace.runTests,
                "needs a VT-x/AMD-V host (this host's KVM is PVM: a stock kernel cannot finish booting, docs/pvm.md), root and iproute2"),
       .serialized)
struct LinuxNetTests {
    /// The static busybox of the Linux assets' cache, unpacked for the host side (its nc).
    static func hostBusybox() throws -> String {
        let cache = Harness.root.appendingPathComponent("guests/build/linux/cache")
        let deb = try #require(try FileManager.default.contentsOfDirectory(atPath: cache.path).first { $0.hasPrefix("busybox-static_") },
                               "no busybox-static .deb in \(cache.path): run 'make linux'")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-busybox-\(UUID().uuidString)")
        #expect(try Disk.shell("dpkg-deb", ["-x", cache.appendingPathComponent(deb).path, dir.path]) == 0)
        return dir.appendingPathComponent("bin/busybox").path
    }

    @Test("eth0: the MAC given, link up, ping the host, 4 MiB over TCP each way with matching checksums")
    func tcp() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let busybox = try Self.hostBusybox()
        let ns = try NetNamespace()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-net-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let toGuest = dir.appendingPathComponent("to-guest.bin").path, fromGuest = dir.appendingPathComponent("from-guest.bin").path
        #expect(try Disk.shell("dd", ["if=/dev/urandom", "of=\(toGuest)", "bs=1M", "count=4", "status=none"]) == 0)
        // The host side: one nc receiving the guest's file, one serving ours.
        let receiver = Process(), sender = Process()
        receiver.executableURL = URL(fileURLWithPath: "/bin/sh")
        receiver.arguments = ["-c", "exec \(ns.exec.joined(separator: " ")) \(busybox) nc -l -p 5001 > \(fromGuest)"]
        sender.executableURL = URL(fileURLWithPath: "/bin/sh")
        sender.arguments = ["-c", "exec \(ns.exec.joined(separator: " ")) \(busybox) nc -l -p 5002 < \(toGuest)"]
        try receiver.run()
        try sender.run()
        defer { receiver.terminate(); sender.terminate() }
        let command = "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && cat /sys/class/net/eth0/address /sys/class/net/eth0/operstate"
            + " && ping -c 3 -W 2 10.0.2.2 && dd if=/dev/urandom of=/tmp/out bs=1M count=4 2>/dev/null && md5sum /tmp/out"
            + " && nc -w 3 10.0.2.2 5001 < /tmp/out; nc -w 3 10.0.2.2 5002 > /tmp/in; md5sum /tmp/in"
        let r = try Harness.run(["run", "--kernel", LinuxAssets.bzImage, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--no-input",
                                 "--net", "tap=tap0,mac=52:54:00:12:34:56", "--append", "quiet skvm.cmd=\"\(command)\""],
                                timeout: 180, prefix: ns.exec)
        #expect(r.stdout.contains("52:54:00:12:34:56"), "\(r.stdout)")
        #expect(r.stdout.contains("\nup"), "operstate up")
        #expect(r.stdout.contains("3 packets transmitted, 3 packets received"))
        receiver.waitUntilExit()
        let md5 = { (path: String) throws -> String in
            let r = try NetNamespace.run("/usr/bin/md5sum", [path])
            return String(r.output.prefix(32))
        }
        let sent = try md5(fromGuest), served = try md5(toGuest)
        #expect(r.stdout.contains("\(sent)  /tmp/out"), "the file the guest sent arrived whole")
        #expect(r.stdout.contains("\(served)  /tmp/in"), "the file the host served arrived whole")
        #expect(r.status == 0)
    }

    @Test("two NICs: eth0 and eth1, each with its own MAC, both link up")
    func twoNICs() throws {
        try #require(LinuxAssets.built, "Linux assets are not built: run 'make linux'")
        let ns = try NetNamespace()
        try ns.run([NetNamespace.ip ?? "ip", "tuntap", "add", "dev", "tap1", "mode", "tap", "vnet_hdr"])
        let r = try Harness.run(["run", "--kernel", LinuxAssets.bzImage, "--initrd", LinuxAssets.initrd, "--memory", "512M", "--no-input",
                                 "--net", "tap=tap0,mac=52:54:00:00:00:0a", "--net", "tap=tap1,mac=52:54:00:00:00:0b",
                                 "--append", "quiet skvm.cmd=\"ip link set eth0 up; ip link set eth1 up; sleep 1; cat /sys/class/net/eth0/address /sys/class/net/eth1/address /sys/class/net/eth0/carrier /sys/class/net/eth1/carrier\""],
                                timeout: 120, prefix: ns.exec)
        #expect(r.stdout.contains("52:54:00:00:00:0a"))
        #expect(r.stdout.contains("52:54:00:00:00:0b"))
        #expect(r.stdout.contains("1\n1") || r.stdout.contains("1\r\n1"), "both carriers up: \(r.stdout)")
    }
}
