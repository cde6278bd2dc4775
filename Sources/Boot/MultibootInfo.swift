// MultibootInfo.swift: the Multiboot information structure (spec §3.3) and
// the boot GDT, written into low guest memory.
//
// Layout of skvm's boot data block, placed at the lowest 4 KiB-aligned
// address from 0x1000 up that no part of the kernel occupies (kernels that
// start application processors overwrite low pages, so the block stays clear
// of page 0 and of the kernel, and below 640 KiB):
//
//   +0    GDT: null, flat 32-bit code (0x08), flat data (0x10)
//   +32   multiboot_info (116 bytes, the 0.6.96 layout; unused fields zero)
//   +160  memory map: entries of { u32 size = 20; u64 base; u64 length; u32 type }
//   ...   module list: entries of { u32 mod_start; u32 mod_end; u32 string; u32 reserved }
//   ...   "skvm\0", the command line "\0"-terminated, then each module's string

import Memory

/// The three-entry GDT skvm's 32-bit entry uses.
public enum BootGDT {
    public static let codeSelector: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    static let size = 24
}

/// Writes the Multiboot information structure.
public enum MultibootInfo {
    /// Flag bits of multiboot_info.flags (§3.3) that skvm fills in.
    static let flagMemory: UInt32 = 1 << 0          // mem_lower, mem_upper
    static let flagBootDevice: UInt32 = 1 << 1      // boot_device
    static let flagCommandLine: UInt32 = 1 << 2     // cmdline
    static let flagModules: UInt32 = 1 << 3         // mods_count, mods_addr
    static let flagMemoryMap: UInt32 = 1 << 6       // mmap_length, mmap_addr
    static let flagBootLoaderName: UInt32 = 1 << 9  // boot_loader_name

    static let infoOffset: UInt64 = 32
    static let infoSize = 116
    static let mapOffset: UInt64 = 160
    static let mapEntrySize: UInt64 = 24
    static let moduleEntrySize: UInt64 = 16
    public static let bootLoaderName = "skvm"
    /// boot_device as QEMU sets it: "no BIOS drive" (0x80 would be the first disk).
    static let bootDevice: UInt32 = 0x8000_FFFF

    /// A module already loaded into guest memory, for the module list.
    public struct Module: Equatable, Sendable {
        public let start: UInt32
        public let end: UInt32
        public let string: String
        public init(start: UInt32, end: UInt32, string: String) {
            self.start = start
            self.end = end
            self.string = string
        }
    }

    /// Where the block went.
    public struct Placement: Equatable, Sendable {
        public let blockAddress: UInt64
        public let infoAddress: UInt64
        public let gdt: TableRegister
    }

    /// Writes GDT, information structure, memory map, loader name and
    /// `commandLine`, clear of `avoiding`. Memory size comes from `memory`.
    public static func write(commandLine: String, modules: [Module] = [], memory: GuestMemory, avoiding: [GuestRange]) throws(BootError) -> Placement {
        let map = MachineMap.memoryMap(size: memory.size)
        let modulesOffset = mapOffset + UInt64(map.count) * mapEntrySize
        let nameOffset = modulesOffset + UInt64(modules.count) * moduleEntrySize
        let cmdlineOffset = nameOffset + UInt64(bootLoaderName.utf8.count + 1)
        let cmdline = Array(commandLine.utf8)
        guard !cmdline.contains(0) else { throw BootError("the command line contains a NUL byte") }
        var stringOffsets: [UInt64] = []
        var next = cmdlineOffset + UInt64(cmdline.count + 1)
        for m in modules {
            guard !m.string.utf8.contains(0) else { throw BootError("a module's command line contains a NUL byte") }
            stringOffsets.append(next)
            next += UInt64(m.string.utf8.count + 1)
        }
        let size = next
        let base = try findFreeBlock(size: size, avoiding: avoiding, limit: min(MachineMap.lowReservedStart, memory.size))

        // mem_lower: KiB of RAM from 0 (at most 640); mem_upper: KiB from 1 MiB
        // up to the first hole (§3.3).
        let lowRAM = map.first { $0.base == 0 }?.length ?? 0
        let upperRAM = map.first { $0.base == MachineMap.highMemoryStart }?.length ?? 0
        var info = [UInt8](repeating: 0, count: infoSize)
        func put(_ value: UInt32, at offset: Int) {
            for i in 0..<4 { info[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        }
        // The same flags QEMU's loader sets, so kernels that print them agree.
        put(flagMemory | flagBootDevice | flagCommandLine | flagModules | flagMemoryMap | flagBootLoaderName, at: 0)
        put(UInt32(lowRAM / 1024), at: 4)
        put(UInt32(truncatingIfNeeded: upperRAM / 1024), at: 8)
        put(bootDevice, at: 12)
        put(UInt32(base + cmdlineOffset), at: 16)
        put(UInt32(modules.count), at: 20)
        put(UInt32(base + modulesOffset), at: 24)
        put(UInt32(UInt64(map.count) * mapEntrySize), at: 44)
        put(UInt32(base + mapOffset), at: 48)
        put(UInt32(base + nameOffset), at: 64)

        do {
            let at = { (offset: UInt64) in GuestAddress(base + offset) }
            try memory.fill(0, at: at(0), count: size)
            let code = SegmentState.flat32(selector: BootGDT.codeSelector, code: true)
            let data = SegmentState.flat32(selector: BootGDT.dataSelector, code: false)
            try memory.write(UInt64(0), at: at(0))
            try memory.write(code.descriptor, at: at(8))
            try memory.write(data.descriptor, at: at(16))
            try memory.write(bytes: info, at: at(infoOffset))
            for (i, e) in map.enumerated() {
                let entry = mapOffset + UInt64(i) * mapEntrySize
                try memory.write(UInt32(mapEntrySize - 4), at: at(entry))  // size excludes itself
                try memory.write(e.base, at: at(entry + 4))
                try memory.write(e.length, at: at(entry + 12))
                try memory.write(e.type.rawValue, at: at(entry + 20))
            }
            for (i, m) in modules.enumerated() {
                let entry = modulesOffset + UInt64(i) * moduleEntrySize
                try memory.write(m.start, at: at(entry))
                try memory.write(m.end, at: at(entry + 4))
                try memory.write(UInt32(base + stringOffsets[i]), at: at(entry + 8))
                try memory.write(UInt32(0), at: at(entry + 12))
                try memory.write(bytes: Array(m.string.utf8) + [0], at: at(stringOffsets[i]))
            }
            try memory.write(bytes: Array(bootLoaderName.utf8) + [0], at: at(nameOffset))
            try memory.write(bytes: cmdline + [0], at: at(cmdlineOffset))
        } catch {
            throw BootError("cannot write the multiboot information: \(error)")
        }
        return Placement(blockAddress: base, infoAddress: base + infoOffset,
                         gdt: TableRegister(base: base, limit: UInt16(BootGDT.size - 1)))
    }

    /// The lowest 4 KiB-aligned address >= 0x1000 where `size` bytes fit below
    /// `limit` without touching any of `avoiding`.
    static func findFreeBlock(size: UInt64, avoiding: [GuestRange], limit: UInt64) throws(BootError) -> UInt64 {
        var candidate = MachineMap.bootDataStart
        while true {
            guard candidate + size <= limit else {
                throw BootError("no room below 640 KiB for the multiboot information (\(size) bytes; is the command line too long, or does the kernel fill low memory?)")
            }
            guard let block = GuestRange(start: GuestAddress(candidate), length: size),
                let clash = avoiding.first(where: { $0.overlaps(block) })
            else { return candidate }
            candidate = (clash.end.rawValue + 0xFFF) & ~0xFFF
        }
    }
}
