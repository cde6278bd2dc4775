// Multiboot.swift: loading a Multiboot (version 1) kernel, as GRUB and QEMU do.
//
// The Multiboot Specification 0.6.96: a kernel carries a 12+ byte header,
// 32-bit aligned, in its first 8192 bytes: magic 0x1BADB002, flags, and a
// checksum making the three sum to zero (§3.1.1). Flags bits 0-15 are
// requirements the loader must meet or refuse the kernel; bit 16 says the
// header also carries load addresses (the "a.out kludge", §3.1.3), otherwise
// the kernel must be ELF and its program headers say where it goes.
//
// The kernel is entered in 32-bit protected mode with paging off (§3.2):
// EAX = 0x2BADB002, EBX = the physical address of the Multiboot information
// structure (§3.3), CS a flat 4 GiB code segment, the data segments flat,
// interrupts off. ESP is undefined and the GDTR may be invalid: the kernel
// sets up its own. skvm gives it a valid GDT anyway.

import Memory

/// A parsed Multiboot header.
public struct MultibootHeader: Equatable, Sendable {
    /// The header's offset in the file.
    public let offset: Int
    public let flags: UInt32
    /// The address fields, present when flags bit 16 is set (§3.1.3).
    public let addresses: Addresses?

    public struct Addresses: Equatable, Sendable {
        public let headerAddress: UInt32
        public let loadAddress: UInt32
        public let loadEndAddress: UInt32
        public let bssEndAddress: UInt32
        public let entryAddress: UInt32
    }

    public static let magic: UInt32 = 0x1BAD_B002
    /// What the loader leaves in EAX for the kernel (§3.2).
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    /// The header must lie within this many bytes of the file's start (§3.1.1).
    public static let searchLimit = 8192

    /// Requirement bits skvm meets: 0 (page-align modules), 1 (memory information),
    /// 2 (video mode: skvm has no display, which the flags in the information
    /// structure tell the kernel, as a loader without video support does).
    static let supportedRequirements: UInt32 = 0x0000_0007
    static let addressFieldsFlag: UInt32 = 1 << 16

    /// Finds the header in `bytes`. Returns nil when there is no magic at all;
    /// throws when a header is there but malformed.
    public static func find(in bytes: [UInt8]) throws(BootError) -> MultibootHeader? {
        let r = ByteReader(bytes: bytes)
        let limit = min(bytes.count, searchLimit)
        var badChecksumAt: Int? = nil
        var offset = 0
        while offset + 12 <= limit {
            defer { offset += 4 }
            guard r.u32(offset) == magic, let flags = r.u32(offset + 4), let checksum = r.u32(offset + 8) else { continue }
            guard magic &+ flags &+ checksum == 0 else {
                badChecksumAt = badChecksumAt ?? offset
                continue
            }
            let unsupported = flags & 0xFFFF & ~supportedRequirements
            guard unsupported == 0 else {
                throw BootError("the multiboot header requires features skvm does not provide (flags \(hex(unsupported)))")
            }
            var addresses: Addresses? = nil
            if flags & addressFieldsFlag != 0 {
                guard let h = r.u32(offset + 12), let l = r.u32(offset + 16), let le = r.u32(offset + 20),
                    let be = r.u32(offset + 24), let e = r.u32(offset + 28)
                else { throw BootError("the multiboot header's address fields are truncated") }
                addresses = Addresses(headerAddress: h, loadAddress: l, loadEndAddress: le, bssEndAddress: be, entryAddress: e)
            }
            return MultibootHeader(offset: offset, flags: flags, addresses: addresses)
        }
        if let at = badChecksumAt {
            throw BootError("the multiboot header at offset \(hex(at)) has a bad checksum")
        }
        return nil
    }
}

/// A kernel loaded into guest memory, ready to enter.
public struct LoadedKernel: Sendable {
    /// The boot vCPU's state at the kernel's first instruction.
    public let cpu: BootCPUState
    /// The guest ranges the image occupies.
    public let ranges: [GuestRange]
    /// One line for the user, e.g. "multiboot ELF32, 2 segments, entry 0x100000".
    public let summary: String
}

/// Loads Multiboot kernels.
public enum MultibootLoader {
    /// A piece of the image to place: `count` bytes of the file from `fileOffset`
    /// to `address`, then zeros up to `memorySize`.
    struct Placement {
        let address: UInt64
        let fileOffset: Int
        let fileSize: Int
        let memorySize: UInt64
    }

    /// A module to load (Multiboot §3.3): its bytes and its string, which by
    /// QEMU's and GRUB's convention starts with the file's own path.
    public struct ModuleFile: Sendable {
        public let bytes: [UInt8]
        public let string: String
        public init(bytes: [UInt8], string: String) {
            self.bytes = bytes
            self.string = string
        }
    }

    /// Loads `kernel` (read from `path`) into `memory` and prepares its boot state.
    /// The kernel's command line is `path`, a space, then `append` (as QEMU gives it,
    /// the space included when `append` is empty). `modules` are placed one after another, each page aligned, after the kernel.
    public static func load(kernel: [UInt8], path: String, append: String, modules: [ModuleFile] = [],
                            memory: GuestMemory) throws(BootError) -> LoadedKernel {
        guard let header = try MultibootHeader.find(in: kernel) else {
            throw BootError("no multiboot header in the first 8 KiB")
        }
        let (placements, entry, kind) = try layout(kernel: kernel, header: header)
        var ranges: [GuestRange] = []
        for p in placements {
            guard p.address.addingReportingOverflow(p.memorySize).overflow == false,
                p.address + p.memorySize <= 1 << 32
            else { throw BootError("kernel segment at \(hex(p.address)) reaches above 4 GiB, which 32-bit protected mode cannot address") }
            guard let range = GuestRange(start: GuestAddress(p.address), length: p.memorySize),
                memory.contains(range.start, size: range.length)
            else {
                throw BootError("kernel segment [\(hex(p.address)), +\(hex(p.memorySize))) lies outside guest RAM (\(formatBytes(memory.size)))")
            }
            ranges.append(range)
        }
        guard memory.contains(GuestAddress(entry), size: 1) else {
            throw BootError("kernel entry point \(hex(entry)) lies outside guest RAM")
        }
        do {
            for p in placements {
                try memory.write(bytes: kernel[p.fileOffset..<(p.fileOffset + p.fileSize)], at: GuestAddress(p.address))
                let bss = p.memorySize - UInt64(p.fileSize)
                if bss > 0 { try memory.fill(0, at: GuestAddress(p.address + UInt64(p.fileSize)), count: bss) }
            }
        } catch {
            throw BootError("cannot copy the kernel into guest memory: \(error)")
        }
        // Modules, page aligned after the kernel (QEMU's placement; header flag bit 0 asks for alignment).
        var loaded: [MultibootInfo.Module] = []
        var next = ((ranges.map(\.end.rawValue).max() ?? MachineMap.highMemoryStart) + 0xFFF) & ~0xFFF
        for (i, m) in modules.enumerated() {
            let size = UInt64(m.bytes.count)
            guard next.addingReportingOverflow(size).overflow == false, next + size <= 1 << 32,
                memory.contains(GuestAddress(next), size: max(size, 1))
            else {
                throw BootError("module \(i + 1) ('\(m.string)', \(formatBytes(size))) does not fit in guest RAM below 4 GiB after the kernel; add --memory")
            }
            do { try memory.write(bytes: m.bytes, at: GuestAddress(next)) } catch {
                throw BootError("cannot copy module \(i + 1) into guest memory: \(error)")
            }
            loaded.append(MultibootInfo.Module(start: UInt32(next), end: UInt32(next + size), string: m.string))
            if let r = GuestRange(start: GuestAddress(next), length: size) { ranges.append(r) }
            next = (next + size + 0xFFF) & ~0xFFF
        }
        // QEMU builds it as "%s %s": the space is there even with no append.
        let commandLine = path + " " + append
        let info = try MultibootInfo.write(commandLine: commandLine, modules: loaded, memory: memory, avoiding: ranges)
        var cpu = BootCPUState(
            rip: entry, cs: .flat32(selector: BootGDT.codeSelector, code: true),
            data: .flat32(selector: BootGDT.dataSelector, code: false),
            cr0: BootCPUState.cr0ProtectionEnable | BootCPUState.cr0ExtensionType)
        cpu.rax = UInt64(MultibootHeader.bootloaderMagic)
        cpu.rbx = info.infoAddress
        cpu.gdt = info.gdt
        let summary = "multiboot \(kind), \(placements.count) segment\(placements.count == 1 ? "" : "s"), entry \(hex(entry))"
        return LoadedKernel(cpu: cpu, ranges: ranges, summary: summary)
    }

    /// Where each part of the file goes, the entry point, and a word for the format.
    static func layout(kernel: [UInt8], header: MultibootHeader) throws(BootError) -> ([Placement], UInt64, String) {
        if let a = header.addresses {
            // §3.1.3: the header's own address tells where the file's bytes go.
            guard a.headerAddress >= a.loadAddress else {
                throw BootError("multiboot header_addr \(hex(a.headerAddress)) is below load_addr \(hex(a.loadAddress))")
            }
            let before = Int(a.headerAddress - a.loadAddress)
            guard before <= header.offset else {
                throw BootError("multiboot load_addr \(hex(a.loadAddress)) would start before the file does")
            }
            let fileOffset = header.offset - before
            let available = kernel.count - fileOffset
            var fileSize = available
            if a.loadEndAddress != 0 {
                guard a.loadEndAddress > a.loadAddress, Int(a.loadEndAddress - a.loadAddress) <= available else {
                    throw BootError("multiboot load_end_addr \(hex(a.loadEndAddress)) lies past the end of the file")
                }
                fileSize = Int(a.loadEndAddress - a.loadAddress)
            }
            var memorySize = UInt64(fileSize)
            if a.bssEndAddress != 0 {
                guard UInt64(a.bssEndAddress) >= UInt64(a.loadAddress) + UInt64(fileSize) else {
                    throw BootError("multiboot bss_end_addr \(hex(a.bssEndAddress)) is below the end of the loaded image")
                }
                memorySize = UInt64(a.bssEndAddress - a.loadAddress)
            }
            let p = Placement(address: UInt64(a.loadAddress), fileOffset: fileOffset, fileSize: fileSize, memorySize: memorySize)
            return ([p], UInt64(a.entryAddress), "a.out-kludge image")
        }
        guard ELFImage.isELF(kernel) else {
            throw BootError("the multiboot header has no address fields (flag 16), and the file is not ELF")
        }
        let elf = try ELFImage(kernel)
        let placements = elf.segments.map {
            Placement(address: $0.physicalAddress, fileOffset: Int($0.fileOffset), fileSize: Int($0.fileSize), memorySize: $0.memorySize)
        }
        let kind = elf.elfClass == .elf32 ? "ELF32" : "ELF64"
        return (placements, elf.physicalEntry, kind)
    }
}
