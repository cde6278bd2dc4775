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
import Network
import PCI
import Storage
import Synchronization
import Virtio
import VirtioQueue

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
public final class Machine: Sendable {
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
    /// The virtio notify ioeventfds the I/O thread polls.
    private let notifiers: VirtioNotifiers
    /// Every disk's backend, flushed when the machine stops.
    private let backends: [any BlockBackend]
    /// Interrupt routing for MSI-X (kept alive with the machine).
    private let msiRouting: GSIRoutingTable
    /// Descriptors besides the ioeventfds that make the I/O thread run a
    /// device: each tap (while its guest has receive buffers) and each disk's
    /// completion eventfd (requests finished on the I/O pool).
    private let wakeSources: [WakeSource]
    /// The disks, drained when the machine stops.
    private let blockDevices: [VirtioBlock]
    /// The network devices, for `--stats`.
    private let nics: [VirtioNet]
    /// The I/O thread's loop iterations, and its heap allocations while the
    /// guest ran (when `run` was given a counter), for `--stats`.
    private let ioThreadWakeups = Atomic<UInt64>(0)
    private let ioThreadAllocations = Atomic<UInt64>(0)
    /// Reads the calling thread's allocation count (the skvm executable's malloc interposer).
    private let allocationCounter: (@Sendable () -> UInt64)?
    /// Threads for parallel block requests (started on demand).
    private let ioWorkers: IOWorkerPool

    /// The capabilities skvm cannot run without, with the reason for each.
    public static let requiredCapabilities: [(capability: Int32, name: String, why: String)] = [
        (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "guest RAM from the VMM's own memory"),
        (KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel PIC, IOAPIC and LAPIC"),
        (KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel i8254 timer"),
        (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2"),
        (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs without races"),
        (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "real-mode guests on Intel VT-x"),
    ]

    /// A device to add to a bus beside the standard ones (the benchmark's ports).
    public struct ExtraDevice {
        public let device: any BusDevice
        public let base: UInt64
        public let length: UInt64
        public init(_ device: any BusDevice, base: UInt64, length: UInt64) {
            self.device = device
            self.base = base
            self.length = length
        }
    }

    /// The disks' completion eventfds belong to the machine (taps close with their devices).
    deinit {
        for source in wakeSources where source.isEventFD { close(source.descriptor) }
    }

    /// Builds the VM (steps 1-6). Nothing runs until `run()`.
    /// `allocationCounter`: the calling thread's heap allocations so far, if
    /// the executable counts them; `--stats` then reports the I/O thread's.
    public init(config: MachineConfig, extraPortDevices: [ExtraDevice] = [], extraMMIODevices: [ExtraDevice] = [],
                allocationCounter: (@Sendable () -> UInt64)? = nil) throws(VMMError) {
        self.config = config
        self.allocationCounter = allocationCounter
        let diagnostics = Diagnostics(quiet: config.quiet, collectStatistics: config.statistics)
        self.diagnostics = diagnostics

        // Input files first: a typo in a path should not need /dev/kvm to be reported.
        let image: [UInt8]
        let kind: KernelKind
        var initrd: [UInt8]? = nil
        var modules: [MultibootLoader.ModuleFile] = []
        do throws(ConfigError) {
            image = try readInputFile(config.kernelPath, what: "kernel")
            do { kind = try KernelKind.detect(image, flat: config.kernelFormat == .flat) } catch {
                throw ConfigError("kernel '\(config.kernelPath)': \(error.message)")
            }
            switch kind {
            case .linux:
                guard config.initrds.count <= 1 else {
                    throw ConfigError("--initrd is given \(config.initrds.count) times; a Linux kernel takes one initrd (multiboot kernels take several modules)")
                }
                if let path = config.initrds.first { initrd = try readInputFile(path, what: "initrd", limit: 4 << 30) }
            case .multiboot:
                for spec in config.initrds {
                    // QEMU's form: "FILE ARGS"; the module's string is the whole text.
                    let path = String(spec.prefix { $0 != " " })
                    // An empty module is valid (QEMU loads it with mod_end == mod_start).
                    modules.append(.init(bytes: try readInputFile(path, what: "multiboot module", limit: 1 << 30, allowEmpty: true), string: spec))
                }
            case .flat:
                guard config.initrds.isEmpty else { throw ConfigError("--initrd needs a Linux or multiboot kernel, not a flat binary") }
            }
        } catch {
            throw VMMError(error.message, status: ExitStatus.usage)
        }
        try Self.checkUserLimits(config)

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
        let maxVCPUs = Int(max(kvm.checkExtension(KVM_CAP_MAX_VCPUS), kvm.checkExtension(KVM_CAP_NR_VCPUS), 1))
        guard config.cpus <= maxVCPUs else {
            throw VMMError("--cpus \(config.cpus) is more than this host's KVM allows (\(maxVCPUs))", status: ExitStatus.usage)
        }
        let supportedCPUID = try host { () throws(KVMError) in try kvm.supportedCPUID() }
        try Self.checkAddressWidth(memorySize: config.memorySize, cpuid: supportedCPUID)
        self.kvm = kvm
        let onPVM = access("/sys/module/kvm_pvm", F_OK) == 0
        let policy = Self.cpuidPolicy(config: config, onPVM: onPVM, diagnostics: diagnostics)

        // 2. Guest RAM.
        if config.memoryBacking == .hugetlb { try Self.checkHugepagePool(config.memorySize) }
        let memory: GuestMemory
        do {
            memory = try GuestMemory(layout: MachineMap.ramLayout(size: config.memorySize), backing: config.memoryBacking,
                                     prefault: config.prefault)
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
            try vm.initializePICsAsBIOS()
            try vm.createPIT2()
        }

        // 4. The kernel, and the MP table that lists the vCPUs.
        let kernel: LoadedKernel
        do throws(BootError) {
            kernel = try Self.loadKernel(image, kind: kind, initrd: initrd, modules: modules, config: config, onPVM: onPVM,
                                         diagnostics: diagnostics, memory: memory)
            let (signature, features) = CPUIDTable.signature(supportedCPUID)
            let mp = MPTable.build(at: MachineMap.mpTable.rawValue, cpus: config.cpus, signature: signature, features: features,
                                   levelTriggeredPins: Self.virtioMMIOWindows(config).map { UInt8($0.irq) })
            if let mpRange = GuestRange(start: MachineMap.mpTable, length: UInt64(mp.count)),
                !kernel.ranges.contains(where: { $0.overlaps(mpRange) }), memory.contains(MachineMap.mpTable, size: mpRange.length) {
                try? memory.write(bytes: mp, at: MachineMap.mpTable)
            } else if config.cpus > 1 {
                throw BootError("the kernel occupies \(MachineMap.mpTable), where the MP table listing the vCPUs goes")
            }
        } catch {
            throw VMMError("kernel '\(config.kernelPath)': \(error.message)", status: ExitStatus.usage)
        }
        self.kernel = kernel

        // 5. Devices.
        let stopController = try host { () throws(KVMError) in try StopController() }
        self.stopController = stopController
        let serial = Serial16550(name: "serial (COM1)", interrupt: IRQLine(vm: vm, irq: MachineMap.com1IRQ, diagnostics: diagnostics),
                                 output: config.serialOutput ?? ConsoleOutput())
        self.serial = serial
        var pio = Bus()
        do {
            try pio.insert(serial, base: MachineMap.com1Port, length: 8)
            try pio.insert(I8042(control: stopController), base: MachineMap.i8042Port, length: 5)
            try pio.insert(CMOS(memorySize: config.memorySize), base: MachineMap.cmosPort, length: 2)
            try pio.insert(IgnoredPort(name: "POST code (io delay)"), base: MachineMap.postCodePort, length: 1)
            try pio.insert(DebugExit(control: stopController), base: MachineMap.debugExitPort, length: 1)
            let fwcfgCommandLine = kind == .linux ? Self.linuxCommandLine(config.append, noxsave: onPVM && !config.keptFeatures.contains { $0.name == "xsave" },
                                                                          virtioMMIO: Self.virtioMMIOWindows(config)) : nil
            try pio.insert(FirmwareConfig(items: FirmwareConfig.standardItems(ramSize: config.memorySize, cpus: config.cpus,
                                                                                linuxCommandLine: fwcfgCommandLine)),
                           base: MachineMap.firmwareConfigPort, length: 2)
            if config.testDevice {
                let host = TestHost(vm: vm, memory: memory, diagnostics: diagnostics)
                try pio.insert(TestDevicePorts(host: host), base: TestDevicePorts.base, length: TestDevicePorts.length)
                try pio.insert(TestDeviceIRQLines(host: host), base: TestDeviceIRQLines.base, length: TestDeviceIRQLines.length)
            }
            for d in extraPortDevices { try pio.insert(d.device, base: d.base, length: d.length) }
        } catch {
            throw VMMError("device layout: \(error)", status: ExitStatus.hostFailure)
        }
        // PCI: the host bridge on 0xCF8, and a virtio-blk function per --disk
        // with its BAR already assigned (there is no firmware to do it).
        let routing = GSIRoutingTable(vm: vm, diagnostics: diagnostics)
        self.msiRouting = routing
        let notifiers = VirtioNotifiers(vm: vm, diagnostics: diagnostics)
        self.notifiers = notifiers
        let bridge = PCIHostBridge(listener: notifiers)
        var backends: [any BlockBackend] = []
        do {
            try pio.insert(bridge, base: PCIHostBridge.configAddressPort, length: PCIHostBridge.portCount)
        } catch {
            throw VMMError("device layout: \(error)", status: ExitStatus.hostFailure)
        }
        var allocator = PCIBarAllocator(memoryWindow: MachineMap.pciMemoryWindow)
        var wakeSources: [WakeSource] = []
        var blockDevices: [VirtioBlock] = []
        // Up to 8 threads serve disk requests in parallel (QEMU's aio=threads does the same with up to 64).
        let ioWorkers = IOWorkerPool(maximumThreads: 8) { body in
            if case .success = HostThread.spawn(body) { return true }
            return false
        }
        self.ioWorkers = ioWorkers
        var mmioWindows: [(device: VirtioMMIODevice, base: UInt64)] = []
        var completionFDs: [Int32] = []
        // Every virtio device in slot (or window) order: the disks, then the NICs.
        var virtioDevices: [(name: String, device: any VirtioDevice, transport: DiskConfig.Transport, what: String)] = []
        for (i, disk) in config.disks.enumerated() {
            let backend = try Self.openDisk(disk)
            backends.append(backend)
            let completion = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            guard completion >= 0 else { throw VMMError("eventfd: \(errnoString(errno))", status: ExitStatus.hostFailure) }
            let block = VirtioBlock(backend: backend, serial: disk.serial ?? "skvm-disk\(i)", workers: ioWorkers, completed: {
                var one: UInt64 = 1
                _ = write(completion, &one, 8)
            })
            blockDevices.append(block)
            completionFDs.append(completion)
            virtioDevices.append(("virtio-blk \(i)", block, disk.transport, "disk '\(disk.path)'"))
        }
        for (i, net) in config.nets.enumerated() {
            let device = try Self.openNet(net, index: i)
            virtioDevices.append(("virtio-net \(i)", device, net.transport, "--net \(device.backendName)"))
        }
        var pciSlot = 0
        var blockIndex = 0
        var traceable: [(name: String, transport: any QueueNotifiable)] = []
        for entry in virtioDevices {
            do {
                let queues = entry.device.queueMaxSizes.count
                let transport: any QueueNotifiable
                switch entry.transport {
                case .pci:
                    pciSlot += 1
                    let router = try KVMMSIRouter(vectors: queues + 1, vm: vm, table: routing)
                    let function = try VirtioPCIDevice(name: entry.name, device: entry.device, memory: memory, router: router)
                    let assigned = function.configuration.withSpace { space -> PCIError? in
                        do throws(PCIError) { try allocator.assign(&space) } catch { return error }
                        return nil
                    }
                    if let assigned { throw VMMError("\(entry.what): \(assigned)", status: ExitStatus.hostFailure) }
                    try notifiers.add(function, slot: pciSlot, queues: queues)
                    try bridge.register(function, slot: pciSlot)
                    transport = function
                case .mmio:
                    let n = mmioWindows.count
                    let irq = MachineMap.virtioMMIOFirstIRQ + UInt32(n)
                    let device = VirtioMMIODevice(name: "virtio-mmio-" + entry.name.dropFirst("virtio-".count), device: entry.device, memory: memory,
                                                  interrupt: IRQLine(vm: vm, irq: irq, diagnostics: diagnostics))
                    let base = MachineMap.virtioMMIOAddress(n)
                    try notifiers.add(device, base: base)
                    mmioWindows.append((device, base))
                    transport = device
                }
                traceable.append((entry.name, transport))
                if let nic = entry.device as? VirtioNet {
                    wakeSources.append(WakeSource(name: nic.backendName, descriptor: nic.backendPollDescriptor, transport: transport,
                                                  queue: VirtioNet.receiveQueue, isEventFD: false, wanted: { nic.wantsBackendInput }))
                } else if entry.device is VirtioBlock {
                    wakeSources.append(WakeSource(name: entry.name, descriptor: completionFDs[blockIndex], transport: transport,
                                                  queue: 0, isEventFD: true, wanted: { true }))
                    blockIndex += 1
                }
            } catch let e as VMMError {
                throw e
            } catch {
                throw VMMError("\(entry.what): \(error)", status: ExitStatus.hostFailure)
            }
        }
        self.wakeSources = wakeSources
        self.blockDevices = blockDevices
        self.nics = virtioDevices.compactMap { $0.device as? VirtioNet }
        self.backends = backends
        self.pio = pio
        var mmio = Bus()
        do {
            for w in mmioWindows { try mmio.insert(w.device, base: w.base, length: VirtioMMIODevice.windowSize) }
            if pciSlot > 0 {
                let window = MachineMap.pciMemoryWindow
                try mmio.insert(PCIBarWindow(bridge: bridge, space: .memory, base: window.lowerBound),
                                base: window.lowerBound, length: UInt64(window.count))
            }
            if config.testDevice { try mmio.insert(TestDeviceMemory(), base: TestDeviceMemory.base, length: TestDeviceMemory.length) }
            for d in extraMMIODevices { try mmio.insert(d.device, base: d.base, length: d.length) }
        } catch {
            throw VMMError("device layout: \(error)", status: ExitStatus.hostFailure)
        }
        self.mmio = mmio

        let tracer: Tracer?
        do { tracer = config.trace.isEmpty ? nil : try Tracer(options: config.trace, path: config.traceFile) } catch {
            throw VMMError(error.message, status: ExitStatus.usage)
        }
        if let tracer, tracer.options.contains(.virtio) {
            for t in traceable { t.transport.setTrace(VirtioTrace(name: t.name, sink: { tracer.emit($0) })) }
        }

        // 6. The vCPUs. Application processors keep KVM's reset state: they
        // wait in the in-kernel LAPIC for INIT and SIPI from the boot CPU.
        var runners: [VCPURunner] = []
        for id in 0..<config.cpus {
            let vcpu = try host { () throws(KVMError) in try vm.createVCPU(id: UInt32(id)) }
            try host { () throws(KVMError) in
                try vcpu.setCPUID(CPUIDTable.forVCPU(supported: supportedCPUID, apicID: UInt32(id), cpuCount: config.cpus, policy: policy))
                try vcpu.setMSRs(Self.bootMSRs)
                try vcpu.configureLINTsAsVirtualWire()
                if id == 0 { try vcpu.apply(kernel.cpu) }
            }
            stopController.register(run: vcpu.runPage, thread: nil)
            runners.append(VCPURunner(vcpu: vcpu, pio: pio, mmio: mmio, stopController: stopController,
                                      diagnostics: diagnostics, hostCPU: config.pinning?[id], tracer: tracer))
        }
        self.runners = runners
    }

    /// Opens a --disk's image: raw files and block devices, or qcow2 (format=qcow2, or format=auto and the "QFI\xfb" magic).
    static func openDisk(_ disk: DiskConfig) throws(VMMError) -> any BlockBackend {
        var isQcow2 = disk.format == .qcow2
        if disk.format == .auto { isQcow2 = readInputFileHead(disk.path, count: 4) == [0x51, 0x46, 0x49, 0xFB] }
        do {
            // qcow2 goes through the page cache whatever cache= says; flush makes it durable (docs/qcow2.md).
            if isQcow2 { return try Qcow2Image(path: disk.path, readOnly: disk.readOnly) }
            return try RawImage(path: disk.path, readOnly: disk.readOnly, cache: disk.cache == .none ? .none : .writeback)
        } catch {
            throw VMMError("\(error)", status: ExitStatus.usage)  // the message names the image
        }
    }

    /// The virtio-mmio windows the configuration asks for, in order: device n
    /// at `MachineMap.virtioMMIOAddress(n)` on IOAPIC pin 16 + n.
    static func virtioMMIOWindows(_ config: MachineConfig) -> [(address: UInt64, irq: UInt32)] {
        let count = config.disks.count { $0.transport == .mmio } + config.nets.count { $0.transport == .mmio }
        return (0..<count).map { (MachineMap.virtioMMIOAddress($0), MachineMap.virtioMMIOFirstIRQ + UInt32($0)) }
    }

    /// Opens a --net's tap and builds its device.
    static func openNet(_ net: NetConfig, index: Int) throws(VMMError) -> VirtioNet {
        let tap: TapDevice
        do {
            switch net.endpoint {
            case .tap(let name): tap = try TapDevice.open(name: name)
            case .fd(let fd): tap = try TapDevice.adopt(fd: fd)
            }
        } catch {
            throw VMMError(error.description, status: ExitStatus.usage)
        }
        let mac = net.mac ?? MACAddress.stable(seed: "\(tap.name)#\(index)")
        return VirtioNet(backend: tap, mac: mac)
    }

    /// MSRs set on every vCPU before it runs, as firmware leaves them.
    static let bootMSRs: [(index: UInt32, value: UInt64)] = [
        (0x1A0, 0x1),     // IA32_MISC_ENABLE: fast-string operations enabled
        (0x2FF, 0x806),   // IA32_MTRR_DEF_TYPE: MTRRs enabled, default type write-back
    ]

    /// Loads the kernel with the loader for its kind.
    static func loadKernel(_ image: [UInt8], kind: KernelKind, initrd: [UInt8]?, modules: [MultibootLoader.ModuleFile],
                           config: MachineConfig, onPVM: Bool, diagnostics: Diagnostics, memory: GuestMemory) throws(BootError) -> LoadedKernel {
        switch kind {
        case .flat:
            return try FlatBinaryLoader.load(image, memory: memory)
        case .multiboot:
            return try MultibootLoader.load(kernel: image, path: config.kernelPath, append: config.append, modules: modules, memory: memory)
        case .linux:
            let noxsave = onPVM && !config.keptFeatures.contains { $0.name == "xsave" }
            if noxsave {
                diagnostics.note("PVM keeps XSAVE visible to the guest and KVM's emulator cannot run xrstor: adding noxsave to the kernel command line (--cpuid-unmask xsave to leave it out)")
            }
            return try LinuxLoader.load(kernel: image, initrd: initrd,
                                        commandLine: linuxCommandLine(config.append, noxsave: noxsave, virtioMMIO: virtioMMIOWindows(config)),
                                        memory: memory)
        }
    }

    /// skvm's additions in front of the user's text (later options win in Linux):
    /// the console on COM1, `reboot=k` so that a guest reboot pulses the i8042
    /// reset line (which ends the VM), `panic=-1` so a panic reboots at once,
    /// and on PVM hosts `noxsave` (see `CPUIDPolicy.emulatorUnsupported`).
    /// Each virtio-mmio window is announced as `virtio_mmio.device=4K@ADDR:IRQ`
    /// (Documentation/admin-guide/kernel-parameters.txt; needs a kernel built
    /// with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, which Debian's lacks).
    public static func linuxCommandLine(_ append: String, noxsave: Bool = false,
                                        virtioMMIO: [(address: UInt64, irq: UInt32)] = []) -> String {
        var base = "console=ttyS0 reboot=k panic=-1" + (noxsave ? " noxsave" : "")
        for w in virtioMMIO { base += " virtio_mmio.device=4K@0x\(String(w.address, radix: 16)):\(w.irq)" }
        return append.isEmpty ? base : base + " " + append
    }

    /// The CPUID policy: on hosts whose KVM emulates guest kernel code, hide
    /// what the emulator cannot execute (said once on stderr); then the user's choices.
    static func cpuidPolicy(config: MachineConfig, onPVM: Bool, diagnostics: Diagnostics) -> CPUIDPolicy {
        var policy = CPUIDPolicy()
        if onPVM {
            let hidden = CPUIDPolicy.emulatorUnsupported.subtracting(config.keptFeatures)
            if !hidden.isEmpty {
                diagnostics.note("this host's KVM emulates guest kernel code (PVM): hiding \(hidden.map(\.description).sorted().joined(separator: ", ")) from the guest's CPUID (--cpuid-unmask NAME keeps one)")
            }
            policy.hidden = hidden
        }
        policy.hidden.formUnion(config.hiddenFeatures)
        policy.hidden.subtract(config.keptFeatures.filter { !config.hiddenFeatures.contains($0) })
        return policy
    }

    /// Checks the vCPU and pinning choices against this host.
    static func checkUserLimits(_ config: MachineConfig) throws(VMMError) {
        guard config.cpus >= 1 else { throw VMMError("--cpus must be at least 1", status: ExitStatus.usage) }
        let pciCount = config.disks.count { $0.transport == .pci } + config.nets.count { $0.transport == .pci }
        guard pciCount <= 31 else {
            throw VMMError("\(pciCount) virtio devices on PCI: skvm's bus 0 has 31 slots (slot 0 is the host bridge); give some transport=mmio",
                           status: ExitStatus.usage)
        }
        let mmioCount = virtioMMIOWindows(config).count
        guard mmioCount <= MachineMap.virtioMMIOSlots else {
            throw VMMError("\(mmioCount) devices with transport=mmio: skvm's machine has \(MachineMap.virtioMMIOSlots) virtio-mmio windows (IOAPIC pins 16-23); put the rest on PCI",
                           status: ExitStatus.usage)
        }
        // xAPIC ids are 8 bits and 255 is the broadcast id; the MP table gives
        // the vCPUs ids 0..N-1 and the IOAPIC id N, so N can be 254 at most.
        guard config.cpus <= MPTable.maximumCPUs else {
            throw VMMError("--cpus \(config.cpus) is more than the \(MPTable.maximumCPUs) vCPUs skvm's xAPIC machine can address", status: ExitStatus.usage)
        }
        guard let pins = config.pinning else { return }
        guard pins.count == config.cpus else {
            throw VMMError("--pin lists \(pins.count) host CPU\(pins.count == 1 ? "" : "s") for \(config.cpus) vCPU\(config.cpus == 1 ? "" : "s"): give one per vCPU", status: ExitStatus.usage)
        }
        var allowed = [Int32](repeating: 0, count: 4096)
        let n = Int(ckvm_allowed_cpus(&allowed, Int32(allowed.count)))
        let usable = Set(allowed.prefix(max(0, min(n, allowed.count))).map(Int.init))
        if let bad = pins.first(where: { !usable.contains($0) }) {
            let list = usable.sorted().map(String.init).joined(separator: ",")
            throw VMMError("--pin: host CPU \(bad) does not exist or is not available to skvm (available: \(list))", status: ExitStatus.usage)
        }
    }

    /// Refuses to start when the hugetlb pool cannot back all of guest RAM.
    static func checkHugepagePool(_ size: UInt64) throws(VMMError) {
        guard size % GuestMemory.hugepageSize == 0 else {
            throw VMMError("--hugepages needs --memory in whole 2 MiB pages (\(formatBytes(size)) is not)", status: ExitStatus.usage)
        }
        let needed = size / GuestMemory.hugepageSize
        let meminfo = readTextFile("/proc/meminfo") ?? ""
        let free = meminfo.split(separator: "\n").first { $0.hasPrefix("HugePages_Free:") }
            .flatMap { UInt64($0.split(separator: " ").last ?? "") } ?? 0
        guard free >= needed else {
            throw VMMError("--hugepages needs \(needed) free 2 MiB hugepages for \(formatBytes(size)), the host pool has \(free) (as root: echo \(needed) > /proc/sys/vm/nr_hugepages, or more if other users need some)",
                           status: ExitStatus.hostFailure)
        }
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

    /// The vCPUs, in id order.
    public var vcpus: [VCPU] { runners.map(\.vcpu) }

    /// Registers an ioeventfd (see `VirtualMachine.registerIOEventFD`).
    public func registerIOEventFD(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64? = nil) throws(KVMError) {
        try vm.registerIOEventFD(eventFD, address: address, length: length, pio: pio, datamatch: datamatch)
    }

    /// Stops the machine (from any thread).
    public func stop(_ reason: StopReason) { stopController.stop(reason) }

    /// True once the machine is stopping.
    public var isStopping: Bool { stopController.isStopping }

    /// Runs the VM until it stops, and returns why (step 7). With `timeout`
    /// (seconds) the VM is stopped when it runs longer. With `vcpuLoop`, each
    /// vCPU thread runs that instead of skvm's own loop (the benchmark's C floor).
    public func run(timeout: Double? = nil, vcpuLoop: (@Sendable (VCPU) -> Void)? = nil) -> StopReason {
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

        diagnostics.flushNotes()
        diagnostics.info("\(kernel.summary); \(formatBytes(config.memorySize)) RAM, \(runners.count) vCPU\(runners.count == 1 ? "" : "s")")
        var threads: [HostThread] = []
        for (i, runner) in runners.enumerated() {
            let body: @Sendable () -> Void = { runner.run(replacingLoopWith: vcpuLoop) }
            switch HostThread.spawn(body) {
            case .success(let t):
                threads.append(t)
                stopController.setThread(t, forVCPU: i)
            case .failure(let e):
                stopController.stop(.hostError(e.description))
            }
        }

        ioLoop(signalFD: signalFD, deadline: timeout.map { monotonicSeconds() + $0 }, timeout: timeout ?? 0)
        for t in threads { t.join() }
        terminal.restore()
        // Requests still running on the I/O pool finish first; then no more start.
        for b in blockDevices { b.quiesce() }
        ioWorkers.shutdown()
        // Flush means fsync: whatever the guest wrote is on disk before skvm exits.
        for b in backends where !b.readOnly {
            do { try b.flush() } catch { printError("skvm: \(error)") }
        }
        return stopController.reason ?? .hostError("the machine stopped without a reason")
    }

    /// Waits for the stop event, signals and console input, until the machine stops.
    private func ioLoop(signalFD: Int32, deadline: Double?, timeout: Double) {
        var escape = ConsoleEscape()
        var inputOpen = config.consoleInput
        var pending: [UInt8] = []    // typed bytes the UART's FIFO had no room for yet
        var buffer = [UInt8](repeating: 0, count: 256)
        // Virtio queue notifications (ioeventfds) come first in the poll set, after the two fixed fds.
        let notify = notifiers.pollTargets
        var sourceOpen = [Bool](repeating: true, count: wakeSources.count)
        var counter: UInt64 = 0
        // The poll set, built once: the stop eventfd, the signalfd, the queue
        // ioeventfds, the wake sources, stdin. Entries not wanted this round
        // get fd -1 (poll skips them), so the loop allocates nothing per wake-up.
        var fds = [
            pollfd(fd: stopController.wakeFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0),
        ] + notify.map { pollfd(fd: $0.eventFD, events: Int16(POLLIN), revents: 0) }
        let sourceIndex = fds.count
        fds += wakeSources.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
        let stdinIndex = fds.count
        fds.append(pollfd(fd: -1, events: Int16(POLLIN), revents: 0))
        let allocationsBefore = allocationCounter?() ?? 0
        defer {
            if let allocationCounter { ioThreadAllocations.store(allocationCounter() &- allocationsBefore, ordering: .relaxed) }
        }
        while !stopController.isStopping {
            ioThreadWakeups.add(1, ordering: .relaxed)
            for i in fds.indices { fds[i].revents = 0 }
            // Each tap while its device has guest buffers to fill; each disk's completions.
            for (i, source) in wakeSources.enumerated() {
                fds[sourceIndex + i].fd = sourceOpen[i] && source.wanted() ? source.descriptor : -1
            }
            fds[stdinIndex].fd = inputOpen && pending.isEmpty ? STDIN_FILENO : -1
            // With bytes pending, poll briefly and retry: the guest drains the FIFO by reading RBR.
            var wait: Int32 = pending.isEmpty ? -1 : 10
            if let deadline {
                let left = deadline - monotonicSeconds()
                if left <= 0 {
                    stopController.stop(.timedOut(seconds: timeout))
                    break
                }
                wait = wait < 0 ? Int32(min(left * 1000 + 1, 60_000)) : min(wait, Int32(left * 1000 + 1))
            }
            let r = poll(&fds, nfds_t(fds.count), wait)
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
            for (i, target) in notify.enumerated() where fds[2 + i].revents & Int16(POLLIN) != 0 {
                // Reading the eventfd resets it; then the device takes whatever the guest queued.
                if read(target.eventFD, &counter, 8) == 8 { target.device.notify(queue: target.queue) }
            }
            for (i, source) in wakeSources.enumerated() where fds[sourceIndex + i].revents != 0 {
                let revents = fds[sourceIndex + i].revents
                if revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                    // The tap went away (deleted, or its descriptor broke): stop polling it.
                    diagnostics.warn("\(source.name): the descriptor reports an error (poll events 0x\(String(revents, radix: 16))); the device gets nothing more from it")
                    sourceOpen[i] = false
                } else {
                    if source.isEventFD { _ = read(source.descriptor, &counter, 8) }
                    source.transport.wake(queue: source.queue, why: source.wakeReason)
                }
            }
            if fds[stdinIndex].revents != 0 {
                let n = readSome(STDIN_FILENO, into: &buffer)
                if n > 0 {
                    for b in buffer[0..<n] {
                        switch escape.process(b) {
                        case .send(let byte): pending.append(byte)
                        case .quit: stopController.stop(.consoleQuit)
                        case .none: break
                        }
                    }
                } else if n == 0 || (n != -Int(EINTR) && n != -Int(EAGAIN)) {
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
        var text = statistics.table(
            pioNames: { pio.entry(containing: $0)?.device.name ?? "(none)" },
            mmioNames: { mmio.entry(containing: $0)?.device.name ?? "(none)" })
        var devices: [String] = []
        for (i, b) in blockDevices.enumerated() where b.failedRequests > 0 {
            var line = "virtio-blk \(i): \(b.failedRequests) request\(b.failedRequests == 1 ? "" : "s") answered IOERR/UNSUPP or malformed"
            if let why = b.needsResetReason { line += "; DEVICE_NEEDS_RESET: \(why)" }
            devices.append(line)
        }
        for (i, n) in nics.enumerated() {
            let c = n.statistics
            var line = "virtio-net \(i) (\(n.backendName), \(n.mac)): sent \(c.txFrames) frames (\(c.txDropped) dropped), received \(c.rxFrames) (\(c.rxDropped) dropped)"
            if let why = c.lastDrop { line += "; last drop: \(why)" }
            devices.append(line)
        }
        // The I/O thread's work matters when it serves virtio devices.
        if !blockDevices.isEmpty || !nics.isEmpty {
            var io = "I/O thread: \(ioThreadWakeups.load(ordering: .relaxed)) wake-ups"
            if allocationCounter != nil { io += ", \(ioThreadAllocations.load(ordering: .relaxed)) heap allocations while the guest ran" }
            devices.append(io)
        }
        if !devices.isEmpty { text += "\n" + devices.joined(separator: "\n") + "\n" }
        return text
    }
}

/// A descriptor whose readiness means "run this device's queue".
struct WakeSource: @unchecked Sendable {
    let name: String
    let descriptor: Int32
    let transport: any QueueNotifiable
    let queue: Int
    /// An eventfd whose counter must be read (reset) on each wake-up.
    let isEventFD: Bool
    /// Whether to poll it now.
    let wanted: () -> Bool
    /// What its readiness means, for `--trace virtio` (made once: waking allocates nothing).
    let wakeReason: String

    init(name: String, descriptor: Int32, transport: any QueueNotifiable, queue: Int, isEventFD: Bool, wanted: @escaping () -> Bool) {
        (self.name, self.descriptor, self.transport, self.queue, self.isEventFD, self.wanted) = (name, descriptor, transport, queue, isEventFD, wanted)
        wakeReason = isEventFD ? "requests finished on the I/O pool" : "frames waiting on \(name)"
    }
}

/// What pc-testdev needs from the machine: interrupt lines and page remapping.
struct TestHost: TestDeviceHost {
    let vm: VirtualMachine
    let memory: GuestMemory
    let diagnostics: Diagnostics

    func setIRQ(_ irq: UInt32, level: Bool) {
        do { try vm.setIRQLine(irq, level: level) } catch { diagnostics.warn("pc-testdev: \(error)") }
    }

    func flushPage(_ address: UInt64) {
        // The address comes from the guest: one outside RAM is ignored, with a note.
        do { try memory.remapPage(at: GuestAddress(address)) } catch {
            diagnostics.warn("pc-testdev: flush-page \(hex(address)) ignored: \(error)")
        }
    }
}

/// CLOCK_MONOTONIC in seconds.
func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
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
