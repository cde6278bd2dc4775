// Machine.swift: a MachineConfig turned into a running VM.
//
// The steps, in order (docs/architecture.md has the picture):
//   1. open /dev/kvm, check the API version and the capabilities skvm needs;
//   2. map guest RAM and hand it to KVM as memory slots;
//   3. create the in-kernel interrupt controllers (PIC, IOAPIC, LAPIC) and PIT;
//   4. load the kernel into guest memory: this decides the boot CPU state;
//   5. put the devices on the port bus;
//   6. create the vCPU, give it CPUID, apply the boot CPU state;
//   7. run: one thread per vCPU, this thread handles stdin and signals.

#if canImport(Glibc)
import Glibc
#endif
import Boot
import CKVM
import Devices
import KVM
import Memory

/// A VM that could not be built or run, with the exit status to report.
public struct VMMError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let status: Int32
    public init(_ message: String, status: Int32) {
        self.message = message
        self.status = status
    }
    public var description: String { message }
}

/// One virtual machine, built and ready to run.
public final class Machine {
    public let config: MachineConfig
    public let kernel: LoadedKernel
    public let diagnostics: Diagnostics
    private let kvm: KVMSystem
    private let vm: VirtualMachine
    private let memory: GuestMemory
    private let stopController: StopController
    private let pio: Bus
    private let mmio: Bus
    private let serial: Serial16550
    private let runners: [VCPURunner]

    /// The capabilities skvm cannot run without, with the reason for each.
    public static let requiredCapabilities: [(capability: Int32, name: String, why: String)] = [
        (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM from the VMM's own memory"),
        (KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel PIC, IOAPIC and LAPIC"),
        (KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel i8254 timer"),
        (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2"),
        (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs without races"),
        (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "real-mode guests on Intel VT-x"),
    ]

    /// Builds the VM (steps 1-6). Nothing runs until `run()`.
    public init(config: MachineConfig) throws(VMMError) {
        self.config = config
        let diagnostics = Diagnostics(quiet: config.quiet, collectStatistics: config.statistics)
        self.diagnostics = diagnostics

        // The kernel file first: a typo in a path should not need /dev/kvm to be reported.
        let image: [UInt8]
        do { image = try readInputFile(config.kernelPath, what: "kernel") } catch {
            throw VMMError(error.message, status: ExitStatus.usage)
        }

        // 1. /dev/kvm.
        func host<T>(_ body: () throws(KVMError) -> T) throws(VMMError) -> T {
            do { return try body() } catch { throw VMMError(error.description, status: ExitStatus.hostFailure) }
        }
        let kvm: KVMSystem
        do { kvm = try KVMSystem(path: config.kvmDevicePath) } catch {
            throw VMMError("cannot open \(config.kvmDevicePath): \(errnoString(error.errno)) (run 'skvm check' for a diagnosis)",
                           status: ExitStatus.hostFailure)
        }
        let version = try host { () throws(KVMError) in try kvm.apiVersion() }
        guard version == KVMSystem.expectedAPIVersion else {
            throw VMMError("\(config.kvmDevicePath) speaks KVM API version \(version), skvm needs \(KVMSystem.expectedAPIVersion)",
                           status: ExitStatus.hostFailure)
        }
        for c in Self.requiredCapabilities where kvm.checkExtension(c.capability) == 0 {
            throw VMMError("this host's KVM lacks \(c.name) (\(c.why))", status: ExitStatus.hostFailure)
        }
        let supportedCPUID = try host { () throws(KVMError) in try kvm.supportedCPUID() }
        try Self.checkAddressWidth(memorySize: config.memorySize, cpuid: supportedCPUID)
        self.kvm = kvm

        // 2. Guest RAM.
        let memory: GuestMemory
        do {
            memory = try GuestMemory(layout: MachineMap.ramLayout(size: config.memorySize), backing: config.memoryBacking)
        } catch {
            throw VMMError(error.description, status: ExitStatus.hostFailure)
        }
        self.memory = memory
        let vm = try host { () throws(KVMError) in try kvm.createVM() }
        self.vm = vm
        for (slot, region) in memory.regions.enumerated() {
            try host { () throws(KVMError) in try vm.setUserMemoryRegion(slot: UInt32(slot), region: region, memory: memory) }
        }

        // 3. Interrupt controllers and timer; the TSS and identity-map pages VT-x needs (in the MMIO hole).
        try host { () throws(KVMError) in
            try vm.setTSSAddress(MachineMap.kvmTSSAddress)
            try vm.setIdentityMapAddress(MachineMap.kvmIdentityMapAddress)
            try vm.createIRQChip()
            try vm.createPIT2()
        }

        // 4. The kernel.
        let kernel: LoadedKernel
        do {
            switch config.kernelFormat {
            case .flat: kernel = try FlatBinaryLoader.load(image, memory: memory)
            case .auto: kernel = try Self.loadDetected(image, config: config, memory: memory)
            }
        } catch {
            throw VMMError("kernel '\(config.kernelPath)': \(error.message)", status: ExitStatus.usage)
        }
        self.kernel = kernel

        // 5. Devices.
        let stopController = try host { () throws(KVMError) in try StopController() }
        self.stopController = stopController
        let serial = Serial16550(name: "serial (COM1)", interrupt: IRQLine(vm: vm, irq: MachineMap.com1IRQ, diagnostics: diagnostics),
                                 output: ConsoleOutput())
        self.serial = serial
        var pio = Bus()
        do {
            try pio.insert(serial, base: MachineMap.com1Port, length: 8)
            try pio.insert(I8042(control: stopController), base: MachineMap.i8042Port, length: 5)
            try pio.insert(DebugExit(control: stopController), base: MachineMap.debugExitPort, length: 1)
        } catch {
            throw VMMError("device layout: \(error)", status: ExitStatus.hostFailure)
        }
        self.pio = pio
        self.mmio = Bus()

        // 6. The boot vCPU.
        let vcpu = try host { () throws(KVMError) in try vm.createVCPU(id: 0) }
        try host { () throws(KVMError) in
            try vcpu.setCPUID(CPUIDTable.forVCPU(supported: supportedCPUID, apicID: 0))
            try vcpu.apply(kernel.cpu)
        }
        stopController.register(run: vcpu.runPage, thread: nil)
        runners = [VCPURunner(vcpu: vcpu, pio: pio, mmio: mmio, stopController: stopController, diagnostics: diagnostics)]
    }

    /// Multiboot kernels are recognised by their header; anything else gets a
    /// message saying what it looks like instead.
    static func loadDetected(_ image: [UInt8], config: MachineConfig, memory: GuestMemory) throws(BootError) -> LoadedKernel {
        if try MultibootHeader.find(in: image) != nil {
            return try MultibootLoader.load(kernel: image, path: config.kernelPath, append: config.append, memory: memory)
        }
        if image.count > 0x206, image[0x202..<0x206].elementsEqual("HdrS".utf8) {
            throw BootError("a Linux bzImage; this version of skvm boots multiboot kernels and flat binaries only")
        }
        if ELFImage.isELF(image) {
            throw BootError("an ELF file without a multiboot header in its first 8 KiB")
        }
        throw BootError("not a kernel skvm can boot: no multiboot header in the first 8 KiB (for a raw real-mode binary, add --flat)")
    }

    /// Refuses memory sizes beyond the guest-physical address width KVM supports.
    static func checkAddressWidth(memorySize: UInt64, cpuid: [kvm_cpuid_entry2]) throws(VMMError) {
        // CPUID 0x80000008 EAX[7:0]: physical address bits (36 when absent, per the SDM).
        let bits = cpuid.first { $0.function == 0x8000_0008 }.map { UInt64($0.eax & 0xFF) } ?? 36
        let limit: UInt64 = bits >= 64 ? .max : 1 << bits
        // RAM above 3 GiB is placed from 4 GiB, so the top address is size + 1 GiB.
        let top = memorySize > MachineMap.mmioHoleStart ? memorySize.addingReportingOverflow(1 << 30) : (partialValue: memorySize, overflow: false)
        guard !top.overflow, top.partialValue <= limit else {
            throw VMMError("--memory \(formatBytes(memorySize)) is more than this host's KVM can address (\(bits)-bit guest physical addresses: \(formatBytes(limit)) including the 1 GiB hole below 4 GiB)",
                           status: ExitStatus.usage)
        }
    }

    // MARK: - Running

    /// Runs the VM until it stops, and returns why (step 7).
    public func run() -> StopReason {
        // Signals for the whole process arrive on a signalfd read by this thread:
        // block them before any other thread exists so every thread inherits the mask.
        var handled = sigset_t()
        sigemptyset(&handled)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&handled, s) }
        var previousMask = sigset_t()
        pthread_sigmask(SIG_BLOCK, &handled, &previousMask)
        defer { pthread_sigmask(SIG_SETMASK, &previousMask, nil) }
        let signalFD = signalfd(-1, &handled, Int32(SFD_CLOEXEC | SFD_NONBLOCK))
        defer { if signalFD >= 0 { close(signalFD) } }
        signal(SIGPIPE, SIG_IGN)
        HostThread.installKickHandler()

        let terminal = TerminalMode()
        if config.consoleInput { terminal.enterRawMode() }
        defer { terminal.restore() }

        diagnostics.info("\(kernel.summary); \(formatBytes(config.memorySize)) RAM, \(runners.count) vCPU")
        var threads: [HostThread] = []
        for (i, runner) in runners.enumerated() {
            switch HostThread.spawn({ runner.run() }) {
            case .success(let t):
                threads.append(t)
                stopController.setThread(t, forVCPU: i)
            case .failure(let e):
                stopController.stop(.hostError(e.description))
            }
        }

        ioLoop(signalFD: signalFD)
        for t in threads { t.join() }
        terminal.restore()
        return stopController.reason ?? .hostError("the machine stopped without a reason")
    }

    /// Waits for the stop event, signals and console input, until the machine stops.
    private func ioLoop(signalFD: Int32) {
        var escape = ConsoleEscape()
        var inputOpen = config.consoleInput
        var pending: [UInt8] = []    // typed bytes the UART's FIFO had no room for yet
        var buffer = [UInt8](repeating: 0, count: 256)
        while !stopController.isStopping {
            var fds = [
                pollfd(fd: stopController.wakeFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0),
            ]
            if inputOpen && pending.isEmpty { fds.append(pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)) }
            // With bytes pending, poll briefly and retry: the guest drains the FIFO by reading RBR.
            let r = poll(&fds, nfds_t(fds.count), pending.isEmpty ? -1 : 10)
            if r < 0 && errno != EINTR {
                stopController.stop(.hostError("poll failed: \(errnoString(errno))"))
                break
            }
            if fds[1].revents & Int16(POLLIN) != 0 {
                var info = signalfd_siginfo()
                if read(signalFD, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
                    stopController.stop(.signal(Int32(info.ssi_signo)))
                }
            }
            if fds.count > 2 && fds[2].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                if n > 0 {
                    for b in buffer[0..<n] {
                        switch escape.process(b) {
                        case .send(let byte): pending.append(byte)
                        case .quit: stopController.stop(.consoleQuit)
                        case .none: break
                        }
                    }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    inputOpen = false  // EOF or a dead stdin: the guest simply gets no more input
                }
            }
            var delivered = 0
            while delivered < pending.count && serial.receive(pending[delivered]) { delivered += 1 }
            pending.removeFirst(delivered)
        }
    }

    /// All vCPUs' exit counters merged (call after `run()` returned).
    public var statistics: ExitStatistics {
        var total = ExitStatistics()
        for r in runners { total.merge(r.statistics) }
        return total
    }

    /// The `--stats` table.
    public func statisticsTable() -> String {
        statistics.table(
            pioNames: { pio.entry(containing: $0)?.device.name ?? "(none)" },
            mmioNames: { mmio.entry(containing: $0)?.device.name ?? "(none)" })
    }
}

/// An ISA interrupt line of the in-kernel PIC/IOAPIC, driven with KVM_IRQ_LINE.
struct IRQLine: InterruptLine {
    let vm: VirtualMachine
    let irq: UInt32
    let diagnostics: Diagnostics

    func setLevel(_ high: Bool) {
        do { try vm.setIRQLine(irq, level: high) } catch {
            diagnostics.warn("\(error)")
        }
    }
}
