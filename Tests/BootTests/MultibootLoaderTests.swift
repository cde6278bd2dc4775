// MultibootLoaderTests.swift: MultibootLoader.load with ELF and a.out-kludge
// kernels built in the test, and the information structure it leaves in
// guest memory.
//
// Multiboot Specification 0.6.96:
// - §3.1.3 the address fields (a.out kludge); otherwise ELF program headers
//   say where the kernel goes (System V ABI, PT_LOAD: copy p_filesz bytes,
//   zero up to p_memsz).
// - §3.2 the machine state at entry: EAX = 0x2BADB002, EBX = the physical
//   address of the information structure, CS a flat 4 GiB 32-bit code
//   segment, DS/ES/FS/GS/SS flat 4 GiB data segments, CR0.PE = 1, paging off.
// - §3.3 the information structure: flags; mem_lower/mem_upper in KiB (bit 0);
//   cmdline (bit 2); mmap_length/mmap_addr (bit 6), each entry preceded by
//   its size (20 for base, length, type); boot_loader_name (bit 9).
//
// Guest memory is pre-filled with 0xAA where it matters, so that "zeroed"
// and "untouched" can be told apart from fresh anonymous memory.

import Boot
import Memory
import Testing
import TestSupport

private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

/// The Multiboot information structure (§3.3), as read back from guest memory.
private struct InfoReadBack {
    let address: UInt64
    let raw: [UInt8]
    var flags: UInt32 { raw.loadLittleEndian(UInt32.self, at: 0) }
    var memLower: UInt32 { raw.loadLittleEndian(UInt32.self, at: 4) }
    var memUpper: UInt32 { raw.loadLittleEndian(UInt32.self, at: 8) }
    var cmdline: UInt32 { raw.loadLittleEndian(UInt32.self, at: 16) }
    var mmapLength: UInt32 { raw.loadLittleEndian(UInt32.self, at: 44) }
    var mmapAddress: UInt32 { raw.loadLittleEndian(UInt32.self, at: 48) }
    var bootLoaderName: UInt32 { raw.loadLittleEndian(UInt32.self, at: 64) }

    init(memory: GuestMemory, at address: UInt64) throws {
        self.address = address
        raw = try memory.readBytes(at: GuestAddress(address), count: 116)
    }

    /// A NUL-terminated string at a guest address the structure points to.
    static func string(_ memory: GuestMemory, at address: UInt32) throws -> String? {
        try memory.readCString(at: GuestAddress(UInt64(address)), maxLength: 4096).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The memory map, walked as a kernel walks it: each entry's size field
    /// says how far the next one is (§3.3, "size" precedes each entry).
    func memoryMap(_ memory: GuestMemory) throws -> [(size: UInt32, base: UInt64, length: UInt64, type: UInt32)] {
        var entries: [(UInt32, UInt64, UInt64, UInt32)] = []
        var at = UInt64(mmapAddress)
        let end = UInt64(mmapAddress) + UInt64(mmapLength)
        while at < end, entries.count < 16 {
            let size: UInt32 = try memory.read(at: GuestAddress(at))
            entries.append((size, try memory.read(at: GuestAddress(at + 4)), try memory.read(at: GuestAddress(at + 12)),
                            try memory.read(at: GuestAddress(at + 20))))
            at += UInt64(size) + 4
        }
        return entries
    }
}

/// A Multiboot ELF32 kernel: a 0x40-byte text segment at 1 MiB and a data
/// segment at 1 MiB + 4 KiB with 0x20 bytes of data and 0xFE0 bytes of bss.
private func standardKernel(_ elfClass: ELFBuilder.Class = .elf32) -> ELFBuilder {
    ELFBuilder(
        elfClass, entry: 0x10_0000,
        segments: [
            ELFSegmentSpec(address: 0x10_0000, data: patternBytes(count: 0x40, seed: 1)),
            ELFSegmentSpec(address: 0x10_1000, data: patternBytes(count: 0x20, seed: 0x80), memorySize: 0x1000),
        ],
        multibootHeader: multibootHeader(flags: 0x3))
}

/// Guest memory laid out as the machine lays it out, pre-filled with 0xAA
/// below 2 MiB (the boot data block and the kernel's pages).
private func machineMemory(size: UInt64) throws -> GuestMemory {
    let m = try GuestMemory(layout: MachineMap.ramLayout(size: size))
    try m.fill(0xAA, at: GuestAddress(0), count: min(size, 2 * mib))
    return m
}

@Suite("MultibootLoader: ELF kernels")
struct MultibootELFLoadTests {
    @Test("segments are copied to their physical addresses and bss is zeroed")
    func segmentsAndBSS() throws {
        let memory = try machineMemory(size: 16 * mib)
        let kernel = standardKernel().build().bytes
        let loaded = try MultibootLoader.load(kernel: kernel, path: "kernel.elf", append: "", memory: memory)

        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0x40) == patternBytes(count: 0x40, seed: 1))
        #expect(try memory.readBytes(at: GuestAddress(0x10_1000), count: 0x20) == patternBytes(count: 0x20, seed: 0x80))
        #expect(try memory.readBytes(at: GuestAddress(0x10_1020), count: 0xFE0) == [UInt8](repeating: 0, count: 0xFE0))
        // Nothing outside the segments is touched.
        #expect(try memory.read(UInt8.self, at: GuestAddress(0xF_FFFF)) == 0xAA)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0040), count: 0xFC0) == [UInt8](repeating: 0xAA, count: 0xFC0))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10_2000)) == 0xAA)

        #expect(loaded.ranges == [
            try #require(GuestRange(start: GuestAddress(0x10_0000), length: 0x40)),
            try #require(GuestRange(start: GuestAddress(0x10_1000), length: 0x1000)),
        ])
        #expect(loaded.summary == "multiboot ELF32, 2 segments, entry 0x100000")
    }

    @Test("the boot CPU state is §3.2's: EAX magic, EBX info, flat 32-bit segments, CR0.PE, a valid GDT")
    func cpuState() throws {
        let memory = try machineMemory(size: 16 * mib)
        let loaded = try MultibootLoader.load(kernel: standardKernel().build().bytes, path: "k", append: "", memory: memory)
        let cpu = loaded.cpu
        #expect(cpu.rip == 0x10_0000)
        #expect(cpu.rax == 0x2BAD_B002)
        #expect(cpu.rbx == 0x1020)  // the block is at 0x1000, the structure 32 bytes in
        #expect(cpu.rflags == 0x2)  // IF clear (§3.2), reserved bit 1 set
        #expect(cpu.rsp == 0)
        #expect(cpu.rsi == 0)
        #expect(cpu.cs == SegmentState(selector: 0x08, base: 0, limit: 0xFFFF_FFFF, type: 0xB, db: true, g: true))
        #expect(cpu.data == SegmentState(selector: 0x10, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true))
        #expect(cpu.cs.present && cpu.cs.s && !cpu.cs.l && cpu.cs.dpl == 0)
        #expect(cpu.cr0 == 0x11)  // PE | ET, PG clear
        #expect(cpu.cr3 == 0 && cpu.cr4 == 0 && cpu.efer == 0)
        #expect(cpu.gdt == TableRegister(base: 0x1000, limit: 23))
        #expect(cpu.idt == nil)

        // The GDT in guest memory holds the descriptors the selectors name.
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1000)) == 0)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1008)) == 0x00CF_9B00_0000_FFFF)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1010)) == 0x00CF_9300_0000_FFFF)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1008)) == cpu.cs.descriptor)
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1010)) == cpu.data.descriptor)
    }

    @Test("the information structure: flags 0,2,6,9, memory sizes, command line, memory map, loader name")
    func informationStructure() throws {
        let memory = try machineMemory(size: 16 * mib)
        let loaded = try MultibootLoader.load(
            kernel: standardKernel().build().bytes, path: "/boot/kernel.elf", append: "console=ttyS0 quiet", memory: memory)
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        // QEMU's flag set: memory, boot_device, cmdline, mods, mmap, loader name.
        #expect(info.flags == 0x24F)
        #expect(info.memLower == 639)
        #expect(info.memUpper == 15 * 1024)  // 16 MiB - 1 MiB, in KiB
        #expect(try InfoReadBack.string(memory, at: info.cmdline) == "/boot/kernel.elf console=ttyS0 quiet")
        #expect(try InfoReadBack.string(memory, at: info.bootLoaderName) == "skvm")
        #expect(info.mmapLength == 3 * 24)

        let map = try info.memoryMap(memory)
        #expect(map.count == 3)
        #expect(map.map(\.size) == [20, 20, 20])
        #expect(map.map(\.base) == [0, 0x9_FC00, 0x10_0000])
        #expect(map.map(\.length) == [0x9_FC00, 0x6_0400, 15 * mib])
        #expect(map.map(\.type) == [1, 2, 1])

        // Fields skvm does not fill are zero, not left-over memory (§3.3: only
        // the flagged ones are valid, but a kernel may still look at them).
        #expect(info.raw.loadLittleEndian(UInt32.self, at: 12) == 0x8000_FFFF)  // boot_device: no BIOS drive, as QEMU sets it
        #expect(info.raw.loadLittleEndian(UInt32.self, at: 20) == 0)     // mods_count: no modules
        #expect(info.raw[28..<44].allSatisfy { $0 == 0 })                // syms
        #expect(info.raw[52..<64].allSatisfy { $0 == 0 })                // drives, config_table
        #expect(info.raw[68..<116].allSatisfy { $0 == 0 })               // apm, vbe, framebuffer
        // Everything the structure points to lies in the block, below 640 KiB, clear of the kernel.
        for pointer in [info.cmdline, info.mmapAddress, info.bootLoaderName] {
            #expect(pointer > 0x1000 && pointer < 0x2000)
        }
    }

    @Test("with an empty append the command line is the path and a space, as QEMU builds it (\"%s %s\")")
    func commandLineWithoutAppend() throws {
        let memory = try machineMemory(size: 16 * mib)
        let loaded = try MultibootLoader.load(kernel: standardKernel().build().bytes, path: "path", append: "", memory: memory)
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        #expect(try InfoReadBack.string(memory, at: info.cmdline) == "path ")
    }

    @Test("a command line with a NUL byte is refused")
    func commandLineWithNUL() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("the command line contains a NUL byte")) {
            try MultibootLoader.load(kernel: standardKernel().build().bytes, path: "k", append: "a\0b", memory: memory)
        }
    }

    @Test("128 MiB: mem_upper = 127 MiB in KiB")
    func memUpper128MiB() throws {
        let memory = try machineMemory(size: 128 * mib)
        let loaded = try MultibootLoader.load(kernel: standardKernel().build().bytes, path: "k", append: "", memory: memory)
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        #expect(info.memLower == 639)
        #expect(info.memUpper == 130_048)
    }

    @Test("4 GiB: mem_upper stops at the MMIO hole; the map lists RAM at 4 GiB")
    func fourGiB() throws {
        let memory = try machineMemory(size: 4 * gib)
        let loaded = try MultibootLoader.load(kernel: standardKernel().build().bytes, path: "k", append: "", memory: memory)
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        #expect(info.memUpper == UInt32((3 * gib - mib) / 1024))
        #expect(info.mmapLength == 4 * 24)
        let map = try info.memoryMap(memory)
        #expect(map.map(\.base) == [0, 0x9_FC00, 0x10_0000, 4 * gib])
        #expect(map.map(\.length) == [0x9_FC00, 0x6_0400, 3 * gib - mib, gib])
        #expect(map.map(\.type) == [1, 2, 1, 1])
    }

    @Test(
        "the information block avoids a kernel loaded in low memory",
        arguments: [
            // (kernel memsz at 0x1000, expected block address)
            (0x1000, 0x2000), (0x1800, 0x3000), (0x2001, 0x4000),
        ] as [(UInt64, UInt64)])
    func blockAvoidsLowKernel(_ memorySize: UInt64, _ expectedBlock: UInt64) throws {
        let memory = try machineMemory(size: 16 * mib)
        let kernel = ELFBuilder(
            entry: 0x1000, segments: [ELFSegmentSpec(address: 0x1000, data: patternBytes(count: 0x100), memorySize: memorySize)],
            multibootHeader: multibootHeader(flags: 0)
        ).build().bytes
        let loaded = try MultibootLoader.load(kernel: kernel, path: "low", append: "", memory: memory)
        #expect(loaded.cpu.gdt?.base == expectedBlock)
        #expect(loaded.cpu.rbx == expectedBlock + 32)
        // The kernel is intact: its bytes and its zeroed bss.
        #expect(try memory.readBytes(at: GuestAddress(0x1000), count: 0x100) == patternBytes(count: 0x100))
        let bss = try memory.readBytes(at: GuestAddress(0x1100), count: Int(memorySize - 0x100))
        #expect(bss.allSatisfy { $0 == 0 })
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        #expect(info.flags == 0x24F)
        #expect(try InfoReadBack.string(memory, at: info.cmdline) == "low ")  // path, space, empty append
    }

    @Test("a kernel filling low memory leaves no room for the information block")
    func noRoomBelow640KiB() throws {
        let memory = try machineMemory(size: 16 * mib)
        let kernel = ELFBuilder(
            entry: 0x1000, segments: [ELFSegmentSpec(address: 0x1000, data: [0xF4], memorySize: 0x9_F000)],
            multibootHeader: multibootHeader(flags: 0)
        ).build().bytes
        let error = try #require(throws: BootError.self) {
            try MultibootLoader.load(kernel: kernel, path: "k", append: "", memory: memory)
        }
        #expect(error.message.hasPrefix("no room below 640 KiB for the multiboot information"))
    }

    @Test("a higher-half kernel is entered at the physical address of its virtual entry point")
    func higherHalfEntry() throws {
        let memory = try machineMemory(size: 16 * mib)
        let kernel = ELFBuilder(
            entry: 0xC010_0010,
            segments: [ELFSegmentSpec(virtualAddress: 0xC010_0000, physicalAddress: 0x10_0000, data: patternBytes(count: 0x40))],
            multibootHeader: multibootHeader(flags: 0x2)
        ).build().bytes
        let loaded = try MultibootLoader.load(kernel: kernel, path: "k", append: "", memory: memory)
        #expect(loaded.cpu.rip == 0x10_0010)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0x40) == patternBytes(count: 0x40))
    }

    @Test("an ELF64 kernel loads too, and is still entered in 32-bit protected mode")
    func elf64() throws {
        let memory = try machineMemory(size: 16 * mib)
        let loaded = try MultibootLoader.load(kernel: standardKernel(.elf64).build().bytes, path: "k64", append: "x", memory: memory)
        #expect(loaded.summary == "multiboot ELF64, 2 segments, entry 0x100000")
        #expect(loaded.cpu.rip == 0x10_0000)
        #expect(loaded.cpu.rax == 0x2BAD_B002)
        #expect(loaded.cpu.cs.db && !loaded.cpu.cs.l)
        #expect(loaded.cpu.efer == 0)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0x40) == patternBytes(count: 0x40, seed: 1))
        #expect(try memory.readBytes(at: GuestAddress(0x10_1020), count: 0xFE0) == [UInt8](repeating: 0, count: 0xFE0))
        let info = try InfoReadBack(memory: memory, at: loaded.cpu.rbx)
        #expect(try InfoReadBack.string(memory, at: info.cmdline) == "k64 x")
    }

    @Test("non-PT_LOAD program headers are skipped")
    func nonLoadSegmentsSkipped() throws {
        var builder = standardKernel()
        var note = ELFSegmentSpec(address: 0x20_0000, data: patternBytes(count: 8))
        note.type = 4  // PT_NOTE
        builder.segments.insert(note, at: 0)
        let memory = try machineMemory(size: 16 * mib)
        let loaded = try MultibootLoader.load(kernel: builder.build().bytes, path: "k", append: "", memory: memory)
        #expect(loaded.ranges.map(\.start) == [GuestAddress(0x10_0000), GuestAddress(0x10_1000)])
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x20_0000)) == 0)  // fresh memory, never written
    }
}

@Suite("MultibootLoader: hostile ELF kernels")
struct MultibootHostileELFTests {
    private func load(_ builder: ELFBuilder, memorySize: UInt64 = 16 * mib) throws -> LoadedKernel {
        let memory = try machineMemory(size: memorySize)
        return try MultibootLoader.load(kernel: builder.build().bytes, path: "k", append: "", memory: memory)
    }

    private func kernel(_ segments: [ELFSegmentSpec], entry: UInt64 = 0x10_0000, _ elfClass: ELFBuilder.Class = .elf32) -> ELFBuilder {
        ELFBuilder(elfClass, entry: entry, segments: segments, multibootHeader: multibootHeader(flags: 0x3))
    }

    @Test("no multiboot header in the first 8 KiB")
    func noHeader() throws {
        let memory = try machineMemory(size: 16 * mib)
        let elf = ELFBuilder(entry: 0x10_0000, segments: [ELFSegmentSpec(address: 0x10_0000, data: [0xF4])]).build().bytes
        #expect(throws: BootError("no multiboot header in the first 8 KiB")) {
            try MultibootLoader.load(kernel: elf, path: "k", append: "", memory: memory)
        }
    }

    @Test("a segment outside guest RAM")
    func segmentOutsideRAM() {
        #expect(throws: BootError("kernel segment [0x2000000, +0x40) lies outside guest RAM (16 MiB)")) {
            try load(kernel([ELFSegmentSpec(address: 0x200_0000, data: patternBytes(count: 0x40))], entry: 0x200_0000))
        }
    }

    @Test("a segment straddling the end of guest RAM")
    func segmentStraddlingEnd() {
        #expect(throws: BootError("kernel segment [0xfff000, +0x2000) lies outside guest RAM (16 MiB)")) {
            try load(kernel([ELFSegmentSpec(address: 0xFF_F000, data: [0xF4], memorySize: 0x2000)], entry: 0xFF_F000))
        }
    }

    @Test("a segment in the MMIO hole of a 4 GiB machine")
    func segmentInHole() {
        #expect(throws: BootError("kernel segment [0xc0000000, +0x1000) lies outside guest RAM (4 GiB)")) {
            try load(kernel([ELFSegmentSpec(address: 0xC000_0000, data: [0xF4], memorySize: 0x1000)], entry: 0xC000_0000),
                     memorySize: 4 * gib)
        }
    }

    @Test("a segment at or reaching above 4 GiB", arguments: [(0x1_0000_0000, 0x10), (0xFFFF_F000, 0x2000)] as [(UInt64, UInt64)])
    func segmentAbove4GiB(_ address: UInt64, _ memorySize: UInt64) {
        #expect(throws: BootError("kernel segment at \(hex(address)) reaches above 4 GiB, which 32-bit protected mode cannot address")) {
            try load(kernel([ELFSegmentSpec(address: address, data: [0xF4], memorySize: memorySize)], entry: 0x10_0000, .elf64),
                     memorySize: 8 * gib)
        }
    }

    @Test("an entry point outside guest RAM")
    func entryOutsideRAM() {
        #expect(throws: BootError("kernel entry point 0x5000000 lies outside guest RAM")) {
            try load(kernel([ELFSegmentSpec(address: 0x10_0000, data: [0xF4])], entry: 0x500_0000))
        }
    }

    @Test("p_filesz larger than p_memsz")
    func fileSizeAboveMemorySize() {
        var segment = ELFSegmentSpec(address: 0x10_0000, data: patternBytes(count: 0x40))
        segment.memorySize = 0x20
        #expect(throws: BootError("ELF segment 0 has p_filesz 64 larger than p_memsz 32")) {
            try load(kernel([segment]))
        }
    }

    @Test("a segment's file bytes past the end of the file", arguments: [(0x1_0000, nil), (nil, 0x1_0000)] as [(UInt64?, UInt64?)])
    func segmentPastEOF(_ offset: UInt64?, _ fileSize: UInt64?) {
        var segment = ELFSegmentSpec(address: 0x10_0000, data: patternBytes(count: 0x40), memorySize: 0x2_0000)
        segment.fileOffsetOverride = offset
        segment.fileSizeOverride = fileSize
        #expect(throws: BootError("ELF segment 0 lies past the end of the file (the file is truncated?)")) {
            try load(kernel([segment]))
        }
    }

    @Test("a truncated file: the last segment's bytes cut off")
    func truncatedFile() throws {
        let memory = try machineMemory(size: 16 * mib)
        let bytes = standardKernel().build().bytes.dropLast(1)
        #expect(throws: BootError("ELF segment 1 lies past the end of the file (the file is truncated?)")) {
            try MultibootLoader.load(kernel: Array(bytes), path: "k", append: "", memory: memory)
        }
    }

    @Test("program headers past the end of the file", arguments: [(ELFBuilder.Class.elf32, 0x1_0000), (.elf64, 0x1_0000), (.elf64, UInt64.max)] as [(ELFBuilder.Class, UInt64)])
    func programHeadersPastEOF(_ elfClass: ELFBuilder.Class, _ offset: UInt64) {
        var builder = standardKernel(elfClass)
        builder.programHeaderOffsetOverride = offset
        #expect(throws: BootError("ELF program headers lie past the end of the file")) {
            try load(builder)
        }
    }

    @Test("a program header count that runs past the end of the file")
    func programHeaderCountPastEOF() {
        var builder = standardKernel()
        builder.programHeaderCountOverride = 0xFFFF
        #expect(throws: BootError("ELF program headers lie past the end of the file")) {
            try load(builder)
        }
    }

    @Test("no program headers (e_phnum 0)")
    func noProgramHeaders() {
        var builder = standardKernel()
        builder.programHeaderCountOverride = 0
        #expect(throws: BootError("ELF file has no program headers")) {
            try load(builder)
        }
    }

    @Test("only empty or non-PT_LOAD segments")
    func noLoadableSegments() {
        var note = ELFSegmentSpec(address: 0x10_0000, data: [1, 2, 3, 4])
        note.type = 4
        let empty = ELFSegmentSpec(address: 0x10_0000, data: [], memorySize: 0)
        #expect(throws: BootError("ELF file has no loadable segments")) {
            try load(kernel([note, empty]))
        }
    }

    @Test("not an executable, not x86, not little-endian, unknown class")
    func wrongELFKind() throws {
        var dyn = standardKernel()
        dyn.type = 3
        #expect(throws: BootError("ELF file is not an executable (e_type 3)")) { try load(dyn) }
        var arm = standardKernel()
        arm.machine = 40
        #expect(throws: BootError("ELF file is not for x86 (e_machine 40)")) { try load(arm) }

        let memory = try machineMemory(size: 16 * mib)
        var bigEndian = standardKernel().build().bytes
        bigEndian[5] = 2
        #expect(throws: BootError("ELF file is not little-endian")) {
            try MultibootLoader.load(kernel: bigEndian, path: "k", append: "", memory: memory)
        }
        var badClass = standardKernel().build().bytes
        badClass[4] = 3
        #expect(throws: BootError("ELF class 3 is neither 32- nor 64-bit")) {
            try MultibootLoader.load(kernel: badClass, path: "k", append: "", memory: memory)
        }
    }

    @Test("a program header entry size too small for the class")
    func programHeaderEntryTooSmall() throws {
        var bytes = standardKernel().build().bytes
        bytes.storeLittleEndian(UInt16(16), at: 42)  // e_phentsize (ELF32)
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("ELF program header size 16 is too small")) {
            try MultibootLoader.load(kernel: bytes, path: "k", append: "", memory: memory)
        }
    }

    @Test("a segment wrapping around the 64-bit address space")
    func segmentWraps() {
        let segment = ELFSegmentSpec(address: UInt64.max - 0xF, data: [], memorySize: 0x20)
        #expect(throws: BootError("ELF segment 1 wraps around the address space")) {
            try load(kernel([ELFSegmentSpec(address: 0x10_0000, data: [0xF4]), segment], .elf64))
        }
    }

    @Test("a header-only file that is not ELF, without the address fields of flag 16")
    func notELFWithoutFlag16() throws {
        let memory = try machineMemory(size: 16 * mib)
        let bytes = multibootHeader(flags: 0x3) + [UInt8](repeating: 0x90, count: 100)
        #expect(throws: BootError("the multiboot header has no address fields (flag 16), and the file is not ELF")) {
            try MultibootLoader.load(kernel: bytes, path: "k", append: "", memory: memory)
        }
    }
}

@Suite("MultibootLoader: a.out-kludge kernels (§3.1.3)")
struct MultibootAOutLoadTests {
    /// A 0x100-byte image whose header sits at file offset 0x40 and says the
    /// file's first byte goes to `load`.
    private func image(load: UInt32 = 0x10_0000, headerAddress: UInt32? = nil, loadEnd: UInt32, bssEnd: UInt32,
                       entry: UInt32 = 0x10_0080) -> [UInt8] {
        var bytes = patternBytes(count: 0x100, seed: 3)
        let header = multibootHeader(
            flags: multibootAddressFieldsFlag | 0x2,
            addresses: MultibootAddressFields(
                headerAddress: headerAddress ?? (load + 0x40), loadAddress: load, loadEndAddress: loadEnd,
                bssEndAddress: bssEnd, entryAddress: entry))
        bytes.replaceSubrange(0x40..<(0x40 + header.count), with: header)
        return bytes
    }

    @Test("the whole file is loaded at load_addr when load_end_addr and bss_end_addr are 0")
    func wholeFile() throws {
        let memory = try machineMemory(size: 16 * mib)
        let bytes = image(loadEnd: 0, bssEnd: 0)
        let loaded = try MultibootLoader.load(kernel: bytes, path: "aout", append: "", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0x100) == bytes)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10_0100)) == 0xAA)
        #expect(loaded.cpu.rip == 0x10_0080)
        #expect(loaded.cpu.rax == 0x2BAD_B002)
        #expect(loaded.cpu.rbx == 0x1020)
        #expect(loaded.ranges == [try #require(GuestRange(start: GuestAddress(0x10_0000), length: 0x100))])
        #expect(loaded.summary == "multiboot a.out-kludge image, 1 segment, entry 0x100080")
    }

    @Test("load_end_addr limits the bytes copied; bss up to bss_end_addr is zeroed")
    func loadEndAndBSS() throws {
        let memory = try machineMemory(size: 16 * mib)
        let bytes = image(loadEnd: 0x10_0080, bssEnd: 0x10_0200)
        let loaded = try MultibootLoader.load(kernel: bytes, path: "aout", append: "", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0x80) == Array(bytes[0..<0x80]))
        #expect(try memory.readBytes(at: GuestAddress(0x10_0080), count: 0x180) == [UInt8](repeating: 0, count: 0x180))
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10_0200)) == 0xAA)
        #expect(loaded.ranges == [try #require(GuestRange(start: GuestAddress(0x10_0000), length: 0x200))])
    }

    @Test("a header later in the file than load_addr's start: the file's bytes before it are loaded too")
    func headerOffsetMapsToLoadAddress() throws {
        let memory = try machineMemory(size: 16 * mib)
        // header_addr - load_addr == 0x20, so the image starts 0x20 bytes before the header, at file offset 0x20.
        let bytes = image(headerAddress: 0x10_0020, loadEnd: 0, bssEnd: 0, entry: 0x10_0000)
        _ = try MultibootLoader.load(kernel: bytes, path: "aout", append: "", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x10_0000), count: 0xE0) == Array(bytes[0x20...]))
    }

    @Test("load_end_addr past the end of the file")
    func loadEndPastEOF() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("multiboot load_end_addr 0x100101 lies past the end of the file")) {
            try MultibootLoader.load(kernel: image(loadEnd: 0x10_0101, bssEnd: 0), path: "k", append: "", memory: memory)
        }
        #expect(throws: BootError("multiboot load_end_addr 0xff000 lies past the end of the file")) {
            try MultibootLoader.load(kernel: image(loadEnd: 0xF_F000, bssEnd: 0), path: "k", append: "", memory: memory)
        }
    }

    @Test("bss_end_addr below the end of the loaded image")
    func bssEndBelowLoadEnd() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("multiboot bss_end_addr 0x10007f is below the end of the loaded image")) {
            try MultibootLoader.load(kernel: image(loadEnd: 0x10_0080, bssEnd: 0x10_007F), path: "k", append: "", memory: memory)
        }
        // With load_end_addr 0 the loaded image is the rest of the file.
        #expect(throws: BootError("multiboot bss_end_addr 0x1000ff is below the end of the loaded image")) {
            try MultibootLoader.load(kernel: image(loadEnd: 0, bssEnd: 0x10_00FF), path: "k", append: "", memory: memory)
        }
    }

    @Test("header_addr below load_addr")
    func headerBelowLoad() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("multiboot header_addr 0xff000 is below load_addr 0x100000")) {
            try MultibootLoader.load(kernel: image(headerAddress: 0xF_F000, loadEnd: 0, bssEnd: 0), path: "k", append: "", memory: memory)
        }
    }

    @Test("load_addr that would start before the file does")
    func loadBeforeFile() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("multiboot load_addr 0x100000 would start before the file does")) {
            try MultibootLoader.load(kernel: image(headerAddress: 0x10_0041, loadEnd: 0, bssEnd: 0), path: "k", append: "", memory: memory)
        }
    }

    @Test("an a.out image outside guest RAM, or entered outside it")
    func outsideRAM() throws {
        let memory = try machineMemory(size: 16 * mib)
        #expect(throws: BootError("kernel segment [0x2000000, +0x100) lies outside guest RAM (16 MiB)")) {
            try MultibootLoader.load(kernel: image(load: 0x200_0000, loadEnd: 0, bssEnd: 0, entry: 0x200_0000),
                                     path: "k", append: "", memory: memory)
        }
        #expect(throws: BootError("kernel entry point 0x2000000 lies outside guest RAM")) {
            try MultibootLoader.load(kernel: image(loadEnd: 0, bssEnd: 0, entry: 0x200_0000), path: "k", append: "", memory: memory)
        }
        // 32-bit fields, but load_addr + the file's 0x100 bytes passes 4 GiB.
        #expect(throws: BootError("kernel segment at 0xffffff80 reaches above 4 GiB, which 32-bit protected mode cannot address")) {
            try MultibootLoader.load(kernel: image(load: 0xFFFF_FF80, loadEnd: 0, bssEnd: 0, entry: 0x10_0000),
                                     path: "k", append: "", memory: memory)
        }
    }
}

@Suite("Multiboot modules")
struct MultibootModuleTests {
    /// A minimal multiboot ELF32 kernel at 1 MiB asking for page-aligned modules (flag 0).
    static func kernelImage() -> [UInt8] {
        ELFBuilder(.elf32, entry: 0x10_0000, segments: [ELFSegmentSpec(address: 0x10_0000, data: [0x90, 0xF4], memorySize: 0x1234)],
                   multibootHeader: multibootHeader(flags: 0x1)).build().bytes
    }

    @Test("modules are loaded page aligned after the kernel and listed with their strings (§3.3)")
    func modules() throws {
        let memory = try makeGuestMemory(size: 16 << 20)
        let a = [UInt8](repeating: 0xAB, count: 5000), b: [UInt8] = Array("two\n".utf8)
        let loaded = try MultibootLoader.load(kernel: Self.kernelImage(), path: "k.elf", append: "x",
                                              modules: [.init(bytes: a, string: "mod-a.bin one two"), .init(bytes: b, string: "mod-b.txt")],
                                              memory: memory)
        let info = GuestAddress(loaded.cpu.rbx)
        let flags: UInt32 = try memory.read(at: info)
        #expect(flags & 0x8 != 0)
        #expect(try memory.read(UInt32.self, at: try #require(info.adding(20))) == 2)
        let list = GuestAddress(UInt64(try memory.read(UInt32.self, at: try #require(info.adding(24)))))
        var previousEnd: UInt32 = 0x10_1234
        for (i, (bytes, string)) in [(a, "mod-a.bin one two"), (b, "mod-b.txt")].enumerated() {
            let entry = try #require(list.adding(UInt64(i) * 16))
            let start: UInt32 = try memory.read(at: entry)
            let end: UInt32 = try memory.read(at: try #require(entry.adding(4)))
            let stringAddress: UInt32 = try memory.read(at: try #require(entry.adding(8)))
            #expect(start % 4096 == 0, "module \(i) is page aligned")
            #expect(start >= previousEnd, "module \(i) starts after the kernel and the module before it")
            #expect(end - start == UInt32(bytes.count))
            #expect(try memory.readBytes(at: GuestAddress(UInt64(start)), count: bytes.count) == bytes)
            #expect(try memory.readCString(at: GuestAddress(UInt64(stringAddress)), maxLength: 100) == Array(string.utf8))
            previousEnd = end
        }
    }

    @Test("a module that does not fit in guest RAM is refused")
    func moduleTooLarge() throws {
        let memory = try makeGuestMemory(size: 2 << 20)
        #expect(throws: BootError.self) {
            _ = try MultibootLoader.load(kernel: Self.kernelImage(), path: "k", append: "",
                                         modules: [.init(bytes: [UInt8](repeating: 1, count: 3 << 20), string: "big")], memory: memory)
        }
    }
}
