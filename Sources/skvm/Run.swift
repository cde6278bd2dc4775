// Run.swift: `skvm run`, boot a kernel.

import ArgumentParser
import CAllocationCounter
import Boot
import VMM

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a kernel in a new virtual machine.",
        discussion: """
            Kernel formats, detected from the file:
              Linux      a bzImage or an uncompressed ELF vmlinux (64-bit),
                         entered through the 64-bit boot protocol; skvm puts
                         "console=ttyS0 reboot=k panic=-1" (and on PVM hosts
                         "noxsave") in front of --append.
              multiboot  (v1) an ELF or a.out-kludge kernel with a multiboot
                         header in its first 8 KiB, entered in 32-bit
                         protected mode as GRUB and QEMU do; its command line
                         is the kernel's path, a space, then --append.
              --flat     a raw real-mode binary, loaded at 0x1000 and
                         entered at 0000:1000.

            Devices: COM1 (16550 UART, port 0x3f8, IRQ 4) on stdin/stdout;
            the i8042 reset line (port 0x64, command 0xfe); the CMOS clock
            (0x70); fw_cfg (0x510); QEMU's debug-exit port 0xf4; a PCI host
            bridge (0xcf8) with a modern virtio-blk function per --disk
            (MSI-X, notifications through ioeventfds), or with
            transport=mmio a virtio-mmio window at 0xd0000000 + n * 0x1000,
            IOAPIC pin 16 + n (a Linux kernel is told through
            virtio_mmio.device= on its command line); a virtio-net function
            per --net, on a tap device; with --test-device,
            QEMU's pc-testdev. PIC, IOAPIC, LAPIC and PIT are KVM's
            in-kernel models.

            Console: when stdin is a terminal it is put in raw mode. Ctrl-A x
            quits; Ctrl-A Ctrl-A sends one Ctrl-A to the guest.

            Exit status:
              0      the guest reset or powered off the machine, or Ctrl-A x
              odd    the guest wrote v to port 0xf4: (v << 1) | 1
              2      bad command line or input file (nothing was started)
              4      the host could not run the VM (see skvm check)
              6      the guest triple-faulted
              8      KVM could not run the guest's code
              10     the VM ran longer than --timeout
              128+n  stopped by signal n (130 SIGINT, 143 SIGTERM)
            """)

    @Option(name: .long, help: ArgumentHelp("The kernel to boot.", valueName: "file"))
    var kernel: String

    @Flag(name: .long, help: "Treat the kernel as a flat real-mode binary (loaded at 0x1000).")
    var flat = false

    @Option(name: .long, help: ArgumentHelp(
        "Guest RAM: a number with a unit, K, M, G or T (powers of 1024); a bare number means MiB.",
        valueName: "size"))
    var memory: String = "128M"

    @Option(name: .long, help: ArgumentHelp("Text for the kernel's command line.", valueName: "text"))
    var append: String = ""

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp(
        "A Linux kernel's initial ramdisk; or, repeated, multiboot modules as \"FILE [ARGS]\" (the module's string is the whole text, as with QEMU's -initrd).",
        valueName: "file"))
    var initrd: [String] = []

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp(
        "A virtio-blk disk: PATH, or path=PATH,format=raw|auto,readonly=on|off,cache=writeback|none,serial=ID,transport=pci|mmio (repeatable; PCI by default). A writable image is locked against other writers.",
        valueName: "disk"))
    var disk: [String] = []

    @Option(name: .long, parsing: .singleValue, help: ArgumentHelp(
        "A virtio-net NIC on a tap: tap=NAME (created when missing, removed on exit) or fd=N (an open tap with vnet_hdr from the parent), then ,mac=52:54:00:xx:xx:xx (default: stable per tap), ,transport=pci|mmio (repeatable). docs/networking.md shows bridges and NAT.",
        valueName: "net"))
    var net: [String] = []

    @Flag(name: .customLong("test-device"), help: "Add QEMU's pc-testdev: scratch ports 0xe0-0xeb, flush-page 0xe4, IRQ lines at 0x2000+n, 64 KiB scratch MMIO at 0xff000000.")
    var testDevice = false

    @Option(name: .long, help: ArgumentHelp("Number of vCPUs (listed in an MP table; APs wait for INIT/SIPI).", valueName: "n"))
    var cpus: Int = 1

    @Option(name: .long, help: ArgumentHelp(
        "Pin vCPU i to the i-th host CPU of this list, e.g. 0,1 or 2-5 (one per vCPU). Check with: grep Cpus_allowed_list /proc/$(pidof skvm)/task/*/status",
        valueName: "cpus"))
    var pin: String?

    @Flag(name: .long, help: "Back guest RAM with 2 MiB hugetlb pages from the host's pool (refuses to start if the pool is short).")
    var hugepages = false

    @Flag(name: .long, help: "Allocate all guest RAM before the guest starts.")
    var prefault = false

    @Option(name: .customLong("cpuid-mask"), parsing: .singleValue, help: ArgumentHelp(
        "Hide a CPUID feature from the guest: a /proc/cpuinfo name (cx16, xsave, avx, x2apic, ...) or LEAF[.SUB]:REG:BIT like 0x1:ecx:13. Repeatable.",
        valueName: "feature"))
    var cpuidMask: [String] = []

    @Option(name: .customLong("cpuid-unmask"), parsing: .singleValue, help: ArgumentHelp(
        "Keep a CPUID feature skvm would hide by policy (on PVM hosts: cx16; xsave leaves out the noxsave skvm adds for Linux). Repeatable.",
        valueName: "feature"))
    var cpuidUnmask: [String] = []

    @Option(name: .long, help: ArgumentHelp("Stop the VM after this many seconds (exit status 10).", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp(
        "Print each event: exits (every VM exit by reason), pio (port, direction, size, data, device), mmio, virtio; comma-separated, or all.",
        valueName: "what"))
    var trace: String?

    @Option(name: .customLong("trace-file"), help: ArgumentHelp("Write --trace lines to this file instead of stderr.", valueName: "file"))
    var traceFile: String?

    @Flag(name: .long, help: "At exit, print a table of VM exits by reason, port and MMIO address.")
    var stats = false

    @Flag(name: .long, help: "Print only the guest's output and errors (no start/stop lines, no warnings).")
    var quiet = false

    @Flag(name: .customLong("no-input"), help: "Do not feed stdin to the guest's serial port.")
    var noInput = false

    @Option(name: .customLong("kvm-device"), help: ArgumentHelp(
        "The KVM device (default: $SKVM_KVM_DEVICE or /dev/kvm).", valueName: "path"))
    var kvmDevice: String?

    mutating func run() throws {
        var config = MachineConfig(kernelPath: kernel)
        do {
            config.memorySize = try ByteSize.parseMemory(memory)
        } catch {
            printError("skvm: \(error.message)")
            throw ExitWithStatus(status: ExitStatus.usage)
        }
        do {
            config.pinning = try pin.map { (text) throws(ConfigError) in try CPUList.parse(text) }
        } catch {
            printError("skvm: --pin \(error.message)")
            throw ExitWithStatus(status: ExitStatus.usage)
        }
        for (option, list) in [("--cpuid-mask", cpuidMask), ("--cpuid-unmask", cpuidUnmask)] {
            for text in list where CPUIDFeature.parse(text) == nil {
                printError("skvm: \(option) '\(text)' is not a feature name or LEAF[.SUB]:REG:BIT (e.g. cx16, 0x1:ecx:13)")
                throw ExitWithStatus(status: ExitStatus.usage)
            }
        }
        config.hiddenFeatures = cpuidMask.compactMap(CPUIDFeature.parse)
        config.keptFeatures = cpuidUnmask.compactMap(CPUIDFeature.parse)
        config.cpus = cpus
        if let trace {
            guard let options = TraceOptions.parse(trace) else {
                printError("skvm: --trace '\(trace)' is not a list of exits, pio, mmio, virtio or all")
                throw ExitWithStatus(status: ExitStatus.usage)
            }
            config.trace = options
        } else if traceFile != nil {
            config.trace = [.exits, .pio, .mmio, .virtio]
        }
        config.traceFile = traceFile
        do {
            config.disks = try disk.map { (text) throws(ConfigError) in try DiskConfig.parse(text) }
            config.nets = try net.map { (text) throws(ConfigError) in try NetConfig.parse(text) }
        } catch {
            printError("skvm: \(error.message)")
            throw ExitWithStatus(status: ExitStatus.usage)
        }
        config.initrds = initrd
        config.testDevice = testDevice
        config.memoryBacking = hugepages ? .hugetlb : .transparentHugepages
        config.prefault = prefault
        config.kernelFormat = flat ? .flat : .auto
        config.append = append
        config.statistics = stats
        config.quiet = quiet
        config.consoleInput = !noInput
        config.kvmDevicePath = kvmDevicePath(kvmDevice)

        let machine: Machine
        do { machine = try Machine(config: config, allocationCounter: { UInt64(skvm_thread_allocations()) }) } catch {
            printError("skvm: \(error.message)")
            throw ExitWithStatus(status: error.status)
        }
        if let timeout, !(timeout > 0) {
            printError("skvm: --timeout must be a positive number of seconds")
            throw ExitWithStatus(status: ExitStatus.usage)
        }
        let reason = machine.run(timeout: timeout)
        if stats { printError(machine.statisticsTable()) }
        // Failures are always reported; ordinary stops only without --quiet.
        if reason.exitStatus == 0 || reason.exitStatus & 1 == 1 || reason == .signal(2) || reason == .signal(15) {
            machine.diagnostics.info(reason.summary)
        } else {
            printError("skvm: " + reason.summary)
        }
        throw ExitWithStatus(status: reason.exitStatus)
    }
}
