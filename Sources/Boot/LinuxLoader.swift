// LinuxLoader.swift: loading a 64-bit Linux kernel (bzImage or ELF vmlinux)
// with the 64-bit boot protocol (Documentation/arch/x86/boot.rst).
//
// What the kernel finds at its first instruction:
//   - the protected-mode kernel at its preferred address (bzImage: the bytes
//     after the setup code, entered at +0x200, the 64-bit entry point) or the
//     ELF segments at their physical addresses (vmlinux: entered at e_entry);
//   - `boot_params` at 0x7000 (RSI), with the setup header, the E820 map,
//     the command line pointer (0x20000) and the initrd's place and size;
//   - the initrd as high as initrd_addr_max and RAM below 4 GiB allow;
//   - long mode: paging on with the first 4 GiB identity-mapped, a GDT with
//     flat 64-bit code at 0x10 (__BOOT_CS) and data at 0x18 (__BOOT_DS),
//     interrupts off.

import Memory

/// Loads Linux kernels.
public enum LinuxLoader {
    /// COMMAND_LINE_SIZE on x86 is 2048 including the NUL; kernels without a
    /// setup header (ELF) get this limit.
    public static let defaultCommandLineSize = 2047
    /// initrd_addr_max for kernels that do not say (boot.rst: 0x37FFFFFF before
    /// protocol 2.03; ELF kernels accept anything below 2 GiB, as Firecracker assumes).
    static let elfInitrdAddressMax: UInt64 = 0x7FFF_FFFF
    /// Code selector __BOOT_CS and data selector __BOOT_DS of the boot protocol.
    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18

    /// True when `image` has a bzImage setup header.
    public static func isBzImage(_ image: [UInt8]) -> Bool {
        ByteReader(bytes: image).u32(LinuxSetupHeader.headerOffset) == LinuxSetupHeader.magic
    }

    /// True when `image` is an x86-64 ELF executable (a vmlinux).
    public static func isELFKernel(_ image: [UInt8]) -> Bool {
        ELFImage.isELF(image) && (try? ELFImage(image))?.machine == 62
    }

    /// Loads `kernel`, `initrd` and `commandLine` into `memory` and returns the boot CPU state.
    public static func load(kernel: [UInt8], initrd: [UInt8]?, commandLine: String, memory: GuestMemory) throws(BootError) -> LoadedKernel {
        var zeroPage: ZeroPage
        var ranges: [GuestRange] = []
        let entry: UInt64
        let kernelEnd: UInt64
        let commandLineLimit: Int
        let initrdMax: UInt64
        let summary: String
        let lowRAMEnd = min(memory.size, MachineMap.mmioHoleStart)

        if isBzImage(kernel) {
            let header = try LinuxSetupHeader(kernel)
            let payload = kernel[header.kernelOffset...]
            let load = header.version >= 0x020A && header.preferredAddress != 0 ? header.preferredAddress : MachineMap.linuxDefaultLoadAddress
            // Below 1 MiB lie skvm's boot data (zero page, page tables, command line, MP table).
            guard load >= MachineMap.highMemoryStart else {
                throw BootError("the kernel's preferred load address \(hex(load)) is below 1 MiB, where the boot data goes")
            }
            // The kernel needs init_size bytes from its load address to decompress into.
            let footprint = max(UInt64(header.initSize), UInt64(payload.count))
            try requireRAM(load, footprint, what: "the kernel (load address \(hex(load)), init_size \(formatBytes(footprint)))", lowRAMEnd: lowRAMEnd)
            try write(Array(payload), at: load, memory: memory, what: "the kernel")
            ranges.append(try range(load, footprint))
            entry = load + 0x200  // boot.rst: the 64-bit entry point is 0x200 past the 32-bit one
            kernelEnd = load + footprint
            zeroPage = ZeroPage(setupHeaderFrom: kernel, header: header)
            commandLineLimit = Int(header.commandLineSize)
            initrdMax = UInt64(header.initrdAddressMax)
            summary = "Linux bzImage, boot protocol \(LinuxSetupHeader.versionString(header.version)), \(formatBytes(UInt64(payload.count))) at \(hex(load))"
        } else if ELFImage.isELF(kernel) {
            let elf = try ELFImage(kernel)
            guard elf.elfClass == .elf64, elf.machine == 62 else {
                throw BootError("an ELF kernel that is not x86-64: skvm boots 64-bit Linux kernels")
            }
            var end: UInt64 = 0
            for s in elf.segments {
                guard s.physicalAddress >= MachineMap.highMemoryStart else {
                    throw BootError("ELF segment at \(hex(s.physicalAddress)) overlaps the boot data below 1 MiB")
                }
                try requireRAM(s.physicalAddress, s.memorySize, what: "ELF segment at \(hex(s.physicalAddress))", lowRAMEnd: lowRAMEnd)
                let bytes = Array(kernel[Int(s.fileOffset)..<Int(s.fileOffset + s.fileSize)])
                try write(bytes, at: s.physicalAddress, memory: memory, what: "the kernel")
                if s.memorySize > s.fileSize {
                    do { try memory.fill(0, at: GuestAddress(s.physicalAddress + s.fileSize), count: s.memorySize - s.fileSize) } catch {
                        throw BootError("cannot clear the kernel's bss: \(error)")
                    }
                }
                ranges.append(try range(s.physicalAddress, s.memorySize))
                end = max(end, s.physicalAddress + s.memorySize)
            }
            entry = elf.physicalEntry
            kernelEnd = end
            zeroPage = ZeroPage.forELFKernel()
            commandLineLimit = defaultCommandLineSize
            initrdMax = elfInitrdAddressMax
            summary = "Linux ELF vmlinux, \(elf.segments.count) segments, entry \(hex(entry))"
        } else {
            throw BootError("not a Linux kernel (neither a bzImage nor an ELF vmlinux)")
        }

        // The command line: at most what the kernel accepts, and it must end
        // before the MP table (boot.rst: the command line lives below 0xA0000).
        let maximumCommandLine = min(commandLineLimit, Int(MachineMap.mpTable.rawValue - MachineMap.linuxCommandLine.rawValue) - 1)
        let cmdline = Array(commandLine.utf8)
        guard !cmdline.contains(0) else { throw BootError("the kernel command line contains a NUL byte") }
        guard cmdline.count <= maximumCommandLine else {
            throw BootError("the kernel command line is \(cmdline.count) bytes; this kernel accepts at most \(maximumCommandLine)")
        }
        try write(cmdline + [0], at: MachineMap.linuxCommandLine.rawValue, memory: memory, what: "the command line")

        // The initrd: as high as allowed, page aligned, above the kernel.
        var initrdPlacement: (address: UInt32, size: UInt32)? = nil
        if let initrd, !initrd.isEmpty {  // an empty initrd is no initrd (ramdisk fields stay 0)
            let top = min(initrdMax &+ 1, lowRAMEnd)
            let size = UInt64(initrd.count)
            let alignedEnd = (kernelEnd + 0xFFF) & ~0xFFF
            guard size <= top, (top - size) & ~0xFFF >= alignedEnd else {
                let need = alignedEnd + ((size + 0xFFF) & ~0xFFF)
                if top < lowRAMEnd {
                    // The kernel's own limit, not guest RAM, is what is too small.
                    throw BootError("the initrd (\(formatBytes(size))) does not fit between the kernel (which ends at \(hex(kernelEnd))) and the kernel's initrd_addr_max \(hex(initrdMax)); more --memory will not help")
                }
                throw BootError("the initrd (\(formatBytes(size))) does not fit in guest RAM above the kernel (which ends at \(hex(kernelEnd))) and below \(hex(top)): it needs at least \(formatBytes((need + 0xFFFFF) & ~0xFFFFF)) of --memory")
            }
            let address = (top - size) & ~0xFFF
            try write(initrd, at: address, memory: memory, what: "the initrd")
            ranges.append(try range(address, size))
            initrdPlacement = (UInt32(address), UInt32(size))
        }

        zeroPage.configure(commandLineAddress: UInt32(MachineMap.linuxCommandLine.rawValue), initrd: initrdPlacement,
                           e820: MachineMap.memoryMap(size: memory.size))
        try write(zeroPage.bytes, at: MachineMap.zeroPage.rawValue, memory: memory, what: "the zero page")
        try write(IdentityPageTables.build(at: MachineMap.pageTables.rawValue), at: MachineMap.pageTables.rawValue, memory: memory, what: "the page tables")
        let code = SegmentState(selector: codeSelector, base: 0, limit: 0xFFFF_FFFF, type: 0xB, db: false, l: true, g: true)
        let data = SegmentState.flat32(selector: dataSelector, code: false)
        var gdt: [UInt8] = []
        for descriptor in [0, 0, code.descriptor, data.descriptor] as [UInt64] {
            for i in 0..<8 { gdt.append(UInt8(truncatingIfNeeded: descriptor >> (8 * UInt64(i)))) }
        }
        try write(gdt, at: MachineMap.linuxGDT.rawValue, memory: memory, what: "the GDT")

        var cpu = BootCPUState(rip: entry, cs: code, data: data,
                               cr0: BootCPUState.cr0ProtectionEnable | BootCPUState.cr0ExtensionType | BootCPUState.cr0Paging)
        cpu.cr3 = MachineMap.pageTables.rawValue
        cpu.cr4 = BootCPUState.cr4PAE
        cpu.efer = BootCPUState.eferLME | BootCPUState.eferLMA
        cpu.rsi = MachineMap.zeroPage.rawValue
        cpu.rsp = MachineMap.linuxBootStack
        cpu.gdt = TableRegister(base: MachineMap.linuxGDT.rawValue, limit: UInt16(gdt.count - 1))
        cpu.idt = TableRegister(base: 0, limit: 0)
        return LoadedKernel(cpu: cpu, ranges: ranges, summary: summary)
    }

    private static func range(_ start: UInt64, _ length: UInt64) throws(BootError) -> GuestRange {
        guard let r = GuestRange(start: GuestAddress(start), length: length) else {
            throw BootError("range \(hex(start)) + \(hex(length)) overflows")
        }
        return r
    }

    private static func requireRAM(_ start: UInt64, _ length: UInt64, what: String, lowRAMEnd: UInt64) throws(BootError) {
        guard start.addingReportingOverflow(length).overflow == false, start + length <= lowRAMEnd else {
            let needed = (start &+ length &+ 0xFFFFF) & ~0xFFFFF
            throw BootError("\(what) does not fit in guest RAM below \(hex(lowRAMEnd)): it needs at least \(formatBytes(needed)) of --memory")
        }
    }

    private static func write(_ bytes: [UInt8], at address: UInt64, memory: GuestMemory, what: String) throws(BootError) {
        do { try memory.write(bytes: bytes, at: GuestAddress(address)) } catch {
            throw BootError("cannot write \(what) into guest memory: \(error)")
        }
    }
}
