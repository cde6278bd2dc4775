// MachineConfigTests.swift: what users type on the command line, parsed and
// checked: byte sizes for --memory (a bare number is MiB, as in QEMU,
// kvmtool and Firecracker; K/M/G/T are powers of 1024), host CPU lists for
// pinning (taskset's syntax), and the guest-physical address-width check
// (CPUID 0x80000008 EAX[7:0], Intel SDM vol. 2A "CPUID").

import CKVM
import Memory
import Testing
@testable import VMM

private let kib: UInt64 = 1 << 10
private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30
private let tib: UInt64 = 1 << 40

@Suite("ByteSize.parse and parseMemory")
struct ByteSizeTests {
    @Test(
        "valid sizes",
        arguments: [
            ("512M", 512 * mib), ("2G", 2 * gib), ("64MiB", 64 * mib), ("1024", gib), ("4096K", 4 * mib), ("1T", tib),
            ("1000B", 1000), ("2gb", 2 * gib), ("8kib", 8 * kib), (" 512M ", 512 * mib), ("0", 0),
            ("9999T", 9999 * tib), ("16777215T", 16_777_215 * tib),
        ] as [(String, UInt64)])
    func valid(_ text: String, _ bytes: UInt64) throws {
        #expect(try ByteSize.parse(text) == bytes)
    }

    @Test("a bare number is in the default unit")
    func defaultUnit() throws {
        #expect(try ByteSize.parse("1024", defaultUnit: 1) == 1024)
        #expect(try ByteSize.parse("3", defaultUnit: 1 << 30) == 3 * gib)
    }

    @Test(
        "invalid sizes name the problem",
        arguments: [
            ("", "'' is not a size (expected a number with an optional unit, like 512M or 2G)"),
            ("abc", "'abc' is not a size (expected a number with an optional unit, like 512M or 2G)"),
            ("-1G", "'-1G' is not a size (expected a number with an optional unit, like 512M or 2G)"),
            ("12Q", "'12Q' has an unknown unit 'Q' (use K, M, G or T)"),
            ("1.5G", "'1.5G' has an unknown unit '.5G' (use K, M, G or T)"),
            ("18446744073709551615T", "'18446744073709551615T' is too large"),
            ("16777216T", "'16777216T' is too large"),  // 2^24 TiB = 2^64 bytes
            ("99999999999999999999", "'99999999999999999999' is too large"),
        ] as [(String, String)])
    func invalid(_ text: String, _ message: String) {
        #expect(throws: ConfigError(message)) { try ByteSize.parse(text) }
    }

    @Test("parseMemory accepts whole pages from 1 MiB up", arguments: [("1M", mib), ("512M", 512 * mib), ("9999T", 9999 * tib), ("1052672B", mib + 4 * kib)] as [(String, UInt64)])
    func memoryValid(_ text: String, _ bytes: UInt64) throws {
        #expect(try ByteSize.parseMemory(text) == bytes)
    }

    @Test(
        "parseMemory refuses zero, less than 1 MiB, and partial pages",
        arguments: [
            ("0", "--memory must be more than 0"),
            ("0G", "--memory must be more than 0"),
            ("512K", "--memory 512K is less than the minimum of 1 MiB"),
            ("1000B", "--memory 1000B is less than the minimum of 1 MiB"),  // below the minimum before it is a partial page
            ("1048577B", "--memory 1048577B is not a whole number of 4 KiB pages"),
            ("1050000B", "--memory 1050000B is not a whole number of 4 KiB pages"),
            ("12Q", "'12Q' has an unknown unit 'Q' (use K, M, G or T)"),
        ] as [(String, String)])
    func memoryInvalid(_ text: String, _ message: String) {
        #expect(throws: ConfigError(message)) { try ByteSize.parseMemory(text) }
    }

    @Test("the defaults")
    func defaults() {
        let config = MachineConfig(kernelPath: "k")
        #expect(config.memorySize == 128 * mib)
        #expect(MachineConfig.minimumMemorySize == mib)
        #expect(config.kvmDevicePath == "/dev/kvm")
        #expect(config.kernelFormat == .auto)
        #expect(config.append == "")
    }
}

@Suite("CPUList.parse")
struct CPUListTests {
    @Test("lists and ranges", arguments: [("0", [0]), ("0,1", [0, 1]), ("2-5", [2, 3, 4, 5]), ("0,4-6", [0, 4, 5, 6]), ("7,3", [7, 3]), ("4095", [4095])] as [(String, [Int])])
    func valid(_ text: String, _ cpus: [Int]) throws {
        #expect(try CPUList.parse(text) == cpus)
    }

    @Test("malformed lists", arguments: ["", ",", "1,", "a", "-1", "1-", "3-2", "1-2-3", " 1", "4096", "0-4096"])
    func malformed(_ text: String) {
        #expect(throws: ConfigError("'\(text)' is not a CPU list (expected numbers and ranges like 0,1 or 2-5)")) {
            try CPUList.parse(text)
        }
    }

    @Test("a CPU named twice", arguments: ["0,0", "0-2,1"])
    func duplicate(_ text: String) {
        #expect(throws: ConfigError("CPU list '\(text)' names a CPU twice")) { try CPUList.parse(text) }
    }
}

@Suite("Machine.checkAddressWidth")
struct AddressWidthTests {
    private func cpuid(physicalBits: UInt32?) -> [kvm_cpuid_entry2] {
        guard let bits = physicalBits else { return [] }
        var e = kvm_cpuid_entry2()
        e.function = 0x8000_0008
        e.eax = 0x3000 | bits  // linear bits 48, physical bits as given
        return [e]
    }

    @Test(
        "memory that fits the guest-physical address width (RAM above 3 GiB sits 1 GiB higher)",
        arguments: [
            (39, 511 * gib), (39, 3 * gib), (32, 3 * gib), (36, 63 * gib), (48, 255 * tib), (52, 4095 * tib), (64, 9999 * tib),
        ] as [(UInt32, UInt64)])
    func fits(_ bits: UInt32, _ size: UInt64) throws {
        try Machine.checkAddressWidth(memorySize: size, cpuid: cpuid(physicalBits: bits))
    }

    @Test(
        "memory beyond it is a usage error (status 2)",
        arguments: [(39, 512 * gib), (32, 3 * gib + 4 * kib), (48, 9999 * tib), (36, 64 * gib)] as [(UInt32, UInt64)])
    func tooLarge(_ bits: UInt32, _ size: UInt64) throws {
        let error = try #require(throws: VMMError.self) {
            try Machine.checkAddressWidth(memorySize: size, cpuid: cpuid(physicalBits: bits))
        }
        #expect(error.status == 2)
        #expect(error.message.hasPrefix("--memory \(formatBytes(size)) is more than this host's KVM can address (\(bits)-bit guest physical addresses"))
    }

    @Test("without leaf 0x80000008 the width is 36 bits (64 GiB)")
    func defaultWidth() throws {
        try Machine.checkAddressWidth(memorySize: 63 * gib, cpuid: [])
        #expect(throws: VMMError.self) { try Machine.checkAddressWidth(memorySize: 63 * gib + 4 * kib, cpuid: []) }
    }

    @Test("a size whose top address would wrap past 2^64 is refused, not wrapped")
    func wraps() {
        #expect(throws: VMMError.self) {
            try Machine.checkAddressWidth(memorySize: UInt64.max - 4095, cpuid: cpuid(physicalBits: 52))
        }
    }
}

@Suite("--disk and the Linux command line")
struct DiskConfigTests {
    @Test("transport=pci|mmio; PCI by default")
    func transport() throws {
        #expect(try DiskConfig.parse("a.img").transport == .pci)
        #expect(try DiskConfig.parse("path=a.img,transport=mmio").transport == .mmio)
        #expect(try DiskConfig.parse("path=a.img,transport=pci").transport == .pci)
        #expect(throws: ConfigError.self) { try DiskConfig.parse("path=a.img,transport=isa") }
    }

    @Test("each virtio-mmio window is announced to Linux as virtio_mmio.device=4K@ADDR:IRQ, before the user's text")
    func commandLine() {
        var config = MachineConfig(kernelPath: "k")
        var d0 = DiskConfig(path: "a"); d0.transport = .mmio
        let d1 = DiskConfig(path: "b")
        var d2 = DiskConfig(path: "c"); d2.transport = .mmio
        config.disks = [d0, d1, d2]
        let windows = Machine.virtioMMIOWindows(config)
        #expect(windows.map(\.address) == [0xD000_0000, 0xD000_1000])
        #expect(windows.map(\.irq) == [16, 17])
        #expect(Machine.linuxCommandLine("root=/dev/vda", virtioMMIO: windows)
                == "console=ttyS0 reboot=k panic=-1 virtio_mmio.device=4K@0xd0000000:16 virtio_mmio.device=4K@0xd0001000:17 root=/dev/vda")
        #expect(Machine.linuxCommandLine("") == "console=ttyS0 reboot=k panic=-1")
    }
}

@Suite("--net")
struct NetConfigTests {
    @Test("tap=NAME or fd=N, then mac= and transport=")
    func parses() throws {
        let a = try NetConfig.parse("tap=tap0")
        #expect(a.endpoint == .tap("tap0") && a.mac == nil && a.transport == .pci)
        let b = try NetConfig.parse("fd=3,mac=52:54:00:aa:bb:cc,transport=mmio")
        #expect(b.endpoint == .fd(3))
        #expect(b.mac?.description == "52:54:00:aa:bb:cc")
        #expect(b.transport == .mmio)
    }

    @Test("mistakes are one clear line", arguments: [
        ("tap0", "is not key=value"), ("mac=52:54:00:12:34:56", "needs tap=NAME or fd=N"), ("tap=a,fd=3", "give one of tap= and fd="),
        ("fd=-1", "is not a descriptor number"), ("tap=t,mac=01:00:5e:00:00:01", "is not a unicast MAC address"),
        ("tap=t,speed=10", "unknown key 'speed'"), ("tap=t,transport=usb", "is not pci or mmio"),
    ])
    func mistakes(_ text: String, _ message: String) {
        do {
            _ = try NetConfig.parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.message.contains(message), "\(error.message)")
        }
    }

    @Test("NICs on transport=mmio take windows after the mmio disks")
    func mmioWindows() {
        var config = MachineConfig(kernelPath: "k")
        var d = DiskConfig(path: "a"); d.transport = .mmio
        var n = NetConfig(endpoint: .tap("t")); n.transport = .mmio
        config.disks = [d]
        config.nets = [n, NetConfig(endpoint: .tap("u"))]
        #expect(Machine.virtioMMIOWindows(config).map(\.irq) == [16, 17])
    }
}
