// LinuxLoaderTests.swift: LinuxLoader.load into real guest memory, for
// synthetic bzImages and ELF vmlinux files (and the real Debian kernel when
// guests/build/linux has it).
//
// Documentation/arch/x86/boot.rst, "64-bit Boot Protocol": the kernel is
// entered at load address + 0x200 in long mode with paging on and the kernel,
// zero page and command line identity-mapped; a GDT with __BOOT_CS (0x10,
// flat 64-bit code) and __BOOT_DS (0x18, flat data); RSI = the boot_params
// address; interrupts off. "The kernel command line" section: the command
// line is NUL-terminated, at most cmdline_size bytes without the NUL, and lies
// below 0xA0000. initrd_addr_max is the highest address the initrd may occupy.
// Intel SDM vol. 3A, 4.5 "4-Level Paging": PML4E/PDPTE bits 0 (P) and 1 (R/W)
// plus the next table's address; a PDE with bit 7 (PS) maps a 2 MiB page.
//
// skvm's layout (MachineMap): GDT 0x500, zero page 0x7000, stack 0x8FF0,
// page tables 0x9000-0xEFFF, command line 0x20000, MP table 0x9FC00.

@testable import Boot
import Memory
import Testing
import TestSupport

private let kib: UInt64 = 1 << 10
private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

private let payload = patternBytes(count: 0x3000, seed: 7)
private let initrd = patternBytes(count: 10_000, seed: 0x31)

/// A valid bzImage: 12 KiB of payload, loaded at 16 MiB, init_size 1 MiB.
private func standardBzImage() -> BzImageBuilder { BzImageBuilder(payload: payload) }

/// Guest RAM laid out as the machine lays it out (RAM above 3 GiB moves to
/// 4 GiB), with [0, 1 MiB) pre-filled with 0xAA so that every byte the loader
/// writes there is visible.
private func guestMemory(_ size: UInt64) throws -> GuestMemory {
    let m = try GuestMemory(layout: MachineMap.ramLayout(size: size))
    try m.fill(0xAA, at: GuestAddress(0), count: min(size, mib))
    return m
}

private func range(_ start: UInt64, _ length: UInt64) throws -> GuestRange {
    try #require(GuestRange(start: GuestAddress(start), length: length))
}

private func zeroPage(_ memory: GuestMemory) throws -> [UInt8] {
    try memory.readBytes(at: GuestAddress(0x7000), count: 4096)
}

/// Expectations on the boot CPU state every Linux load produces.
private func expectLongModeState(_ cpu: BootCPUState, rip: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(cpu.rip == rip, sourceLocation: sourceLocation)
    #expect(cpu.cs == SegmentState(selector: 0x10, base: 0, limit: 0xFFFF_FFFF, type: 0xB, db: false, l: true, g: true),
            sourceLocation: sourceLocation)
    #expect(cpu.cs.l && !cpu.cs.db && cpu.cs.present && cpu.cs.s && cpu.cs.dpl == 0, sourceLocation: sourceLocation)
    #expect(cpu.data == SegmentState(selector: 0x18, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true),
            sourceLocation: sourceLocation)
    #expect(cpu.cr0 == 0x8000_0011, "PE | ET | PG", sourceLocation: sourceLocation)
    #expect(cpu.cr0 == BootCPUState.cr0ProtectionEnable | BootCPUState.cr0ExtensionType | BootCPUState.cr0Paging,
            sourceLocation: sourceLocation)
    #expect(cpu.cr3 == 0x9000, sourceLocation: sourceLocation)
    #expect(cpu.cr4 == 0x20, "PAE", sourceLocation: sourceLocation)
    #expect(cpu.efer == 0x500, "LME | LMA", sourceLocation: sourceLocation)
    #expect(cpu.rsi == 0x7000, sourceLocation: sourceLocation)
    #expect(cpu.rsp == 0x8FF0, sourceLocation: sourceLocation)
    #expect(cpu.rflags == 0x2, "IF clear", sourceLocation: sourceLocation)
    #expect(cpu.rax == 0 && cpu.rbx == 0, sourceLocation: sourceLocation)
    #expect(cpu.gdt == TableRegister(base: 0x500, limit: 31), sourceLocation: sourceLocation)
    #expect(cpu.idt == TableRegister(base: 0, limit: 0), sourceLocation: sourceLocation)
}

@Suite("LinuxLoader: bzImage")
struct LinuxLoaderBzImageTests {
    @Test("the payload lands at pref_address and is entered at +0x200 in long mode")
    func payloadAndCPUState() throws {
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: initrd, commandLine: "console=ttyS0", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x100_0000), count: payload.count) == payload)
        expectLongModeState(loaded.cpu, rip: 0x100_0200)
        let initrdAddress = (64 * mib - 10_000) & ~0xFFF
        #expect(loaded.ranges == [try range(0x100_0000, mib), try range(initrdAddress, 10_000)])
        #expect(loaded.summary == "Linux bzImage, boot protocol 2.15, 12 KiB at 0x1000000")
    }

    @Test("a different pref_address moves the payload and the entry point with it")
    func otherPreferredAddress() throws {
        var b = standardBzImage()
        b.preferredAddress = 0x20_0000
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x20_0000), count: payload.count) == payload)
        #expect(loaded.cpu.rip == 0x20_0200)
        #expect(loaded.ranges == [try range(0x20_0000, mib)])
    }

    @Test("pref_address 0: the default load address, 16 MiB")
    func zeroPreferredAddress() throws {
        var b = standardBzImage()
        b.preferredAddress = 0
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        #expect(loaded.cpu.rip == 0x100_0200)
        #expect(try memory.readBytes(at: GuestAddress(0x100_0000), count: payload.count) == payload)
    }

    @Test("a payload larger than init_size occupies its own size")
    func payloadLargerThanInitSize() throws {
        var b = standardBzImage()
        b.initSize = 0x1000
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        #expect(loaded.ranges == [try range(0x100_0000, 0x3000)])
    }

    @Test("the zero page at 0x7000: the copied header plus the loader's fields, and nothing else")
    func zeroPageInMemory() throws {
        var b = standardBzImage()
        b.fill = 0xCC
        let image = b.build()
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: image, initrd: initrd, commandLine: "console=ttyS0", memory: memory)
        let page = try zeroPage(memory)

        var expected = [UInt8](repeating: 0, count: 4096)
        expected[0x1F1..<0x26C] = image[0x1F1..<0x26C]
        expected.storeLittleEndian(UInt16(0xFFFF), at: 0x1FA)            // vid_mode
        expected[0x210] = 0xFF                                           // type_of_loader
        expected.storeLittleEndian(UInt32((64 * mib - 10_000) & ~0xFFF), at: 0x218)  // ramdisk_image
        expected.storeLittleEndian(UInt32(10_000), at: 0x21C)            // ramdisk_size
        expected.storeLittleEndian(UInt32(0x2_0000), at: 0x228)          // cmd_line_ptr
        let map = MachineMap.memoryMap(size: 64 * mib)
        expected[0x1E8] = UInt8(map.count)
        for (i, e) in map.enumerated() {
            expected.storeLittleEndian(e.base, at: 0x2D0 + 20 * i)
            expected.storeLittleEndian(e.length, at: 0x2D0 + 20 * i + 8)
            expected.storeLittleEndian(e.type.rawValue, at: 0x2D0 + 20 * i + 16)
        }
        #expect(page == expected)
        #expect(page.le32(0x202) == 0x5372_6448)
        #expect(page.le16(0x206) == 0x020F)
        #expect(page[0x1E8] == 3)
    }

    @Test("without an initrd, ramdisk_image and ramdisk_size are 0")
    func noInitrd() throws {
        var b = standardBzImage()
        b.fill = 0xCC
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        let page = try zeroPage(memory)
        #expect(page.le32(0x218) == 0)
        #expect(page.le32(0x21C) == 0)
        #expect(loaded.ranges.count == 1)
    }

    @Test("the command line at 0x20000, NUL-terminated, its pointer in the zero page")
    func commandLine() throws {
        let memory = try guestMemory(64 * mib)
        let text = "console=ttyS0 reboot=k panic=-1 root=/dev/vda init=/sbin/init é"
        _ = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: text, memory: memory)
        let utf8 = Array(text.utf8)
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: utf8.count + 2) == utf8 + [0, 0xAA])
        #expect(try zeroPage(memory).le32(0x228) == 0x2_0000)
    }

    @Test("an empty command line is a lone NUL")
    func emptyCommandLine() throws {
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: "", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: 2) == [0, 0xAA])
    }

    @Test("a command line of exactly cmdline_size bytes is accepted whole")
    func commandLineAtLimit() throws {
        var b = standardBzImage()
        b.commandLineSize = 16
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "0123456789abcdef", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: 17) == Array("0123456789abcdef".utf8) + [0])
    }

    @Test("a command line one byte over cmdline_size is refused, not cut")
    func commandLineOverLimit() throws {
        var b = standardBzImage()
        b.commandLineSize = 16
        let memory = try guestMemory(64 * mib)
        expectBootError(containing: "accepts at most 16") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "0123456789abcdefg", memory: memory)
        }
        // Nothing of it was written.
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: 17) == [UInt8](repeating: 0xAA, count: 17))
    }

    @Test("cmdline_size counts UTF-8 bytes, not characters")
    func commandLineBytesNotCharacters() throws {
        var b = standardBzImage()
        b.commandLineSize = 8
        let memory = try guestMemory(64 * mib)
        // 5 characters, 10 bytes.
        expectBootError(containing: "10 bytes") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "ééééé", memory: memory)
        }
    }

    @Test("cmdline_size 0: only the empty command line")
    func zeroCommandLineSize() throws {
        var b = standardBzImage()
        b.commandLineSize = 0
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        expectBootError(containing: "at most 0") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "x", memory: memory)
        }
    }

    @Test("a NUL inside the command line is refused", arguments: ["a\0b", "\0", "console=ttyS0\0"])
    func commandLineWithNUL(_ text: String) throws {
        let memory = try guestMemory(64 * mib)
        expectBootError(containing: "NUL") {
            try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: text, memory: memory)
        }
    }

    @Test("BUG? a command line that runs past 0xA0000 (boot.rst) over the MP table's place is refused")
    func commandLinePastBaseMemory() throws {
        // A hostile header allows any length; the command line starts at 0x20000,
        // and boot.rst puts its end below 0xA0000. skvm's MP table is written at
        // 0x9FC00 after the load, so a longer line would be silently cut there.
        var b = standardBzImage()
        b.commandLineSize = 0xFFFF_FFFF
        let memory = try guestMemory(64 * mib)
        let text = String(repeating: "x", count: 0x8_0000)  // [0x20000, 0xA0001) with the NUL
        let error = #expect(throws: BootError.self) {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: text, memory: memory)
        }
        if error == nil {
            // What happened instead: the line overlaps [0x9FC00, 0xA0000), where the MP table goes.
            #expect(try memory.read(UInt8.self, at: GuestAddress(0x9_FC00)) == UInt8(ascii: "x"))
        }
    }

    @Test("the initrd sits page-aligned at the top of RAM, its bytes intact", arguments: [64 * mib, 256 * mib, 3 * gib])
    func initrdAtTopOfRAM(_ size: UInt64) throws {
        var b = standardBzImage()
        b.initrdAddressMax = 0xFFFF_FFFF  // RAM is the only limit
        let memory = try guestMemory(size)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: initrd, commandLine: "", memory: memory)
        let address = (size - 10_000) & ~0xFFF
        #expect(address % 4096 == 0)
        #expect(address + 10_000 <= size)
        #expect(size - (address + 10_000) < 4096)
        #expect(try memory.readBytes(at: GuestAddress(address), count: initrd.count) == initrd)
        let page = try zeroPage(memory)
        #expect(UInt64(page.le32(0x218)) == address)
        #expect(page.le32(0x21C) == 10_000)
        #expect(loaded.ranges.last == (try range(address, 10_000)))
    }

    @Test("above 3 GiB of RAM the initrd stays below the MMIO hole (and below initrd_addr_max)")
    func initrdBelowHole() throws {
        var b = standardBzImage()
        b.initrdAddressMax = 0xFFFF_FFFF
        let memory = try guestMemory(4 * gib)
        _ = try LinuxLoader.load(kernel: b.build(), initrd: initrd, commandLine: "", memory: memory)
        let address = (3 * gib - 10_000) & ~0xFFF
        #expect(try memory.readBytes(at: GuestAddress(address), count: initrd.count) == initrd)
        let page = try zeroPage(memory)
        #expect(UInt64(page.le32(0x218)) == address)
        #expect(page[0x1E8] == 4)
        #expect(page.le64(0x2D0 + 60) == 4 * gib)
        #expect(page.le64(0x2D0 + 68) == gib)
    }

    @Test("initrd_addr_max below the end of RAM: the initrd ends at or below it",
          arguments: [0x27F_FFFF, 0x27F_F7FF, 0x37FF_FFFF, 0x7FFF_FFFF] as [UInt32])
    func initrdBelowAddressMax(_ max: UInt32) throws {
        var b = standardBzImage()
        b.initrdAddressMax = max
        let memory = try guestMemory(3 * gib)
        _ = try LinuxLoader.load(kernel: b.build(), initrd: initrd, commandLine: "", memory: memory)
        let address = (UInt64(max) + 1 - 10_000) & ~0xFFF
        let page = try zeroPage(memory)
        #expect(UInt64(page.le32(0x218)) == address)
        #expect(UInt64(page.le32(0x218)) + 10_000 - 1 <= UInt64(max))
        #expect(try memory.readBytes(at: GuestAddress(address), count: initrd.count) == initrd)
    }

    @Test("an initrd of exactly the room between the kernel's end and the top of RAM fits")
    func initrdExactFit() throws {
        // Kernel [16 MiB, 17 MiB); RAM 20 MiB: 3 MiB of room.
        let memory = try guestMemory(20 * mib)
        let big = patternBytes(count: Int(3 * mib), seed: 9)
        let loaded = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: big, commandLine: "", memory: memory)
        #expect(loaded.ranges.last == (try range(17 * mib, 3 * mib)))
        #expect(try memory.readBytes(at: GuestAddress(17 * mib), count: big.count) == big)
        // One byte more does not fit.
        expectBootError(containing: "needs at least") {
            try LinuxLoader.load(kernel: standardBzImage().build(), initrd: big + [1], commandLine: "", memory: memory)
        }
    }

    @Test("an initrd that does not fit in RAM: 'needs at least' names an amount that works")
    func initrdTooBig() throws {
        // Kernel [16 MiB, 32 MiB) (init_size 16 MiB); an 8 MiB + 1 byte initrd
        // needs 32 MiB + 8 MiB + 4 KiB, so 41 MiB of RAM.
        var b = standardBzImage()
        b.initSize = 16 * 1024 * 1024
        let big = patternBytes(count: Int(8 * mib) + 1, seed: 5)
        let small = try guestMemory(40 * mib)
        expectBootError(containing: "needs at least 41 MiB") {
            try LinuxLoader.load(kernel: b.build(), initrd: big, commandLine: "", memory: small)
        }
        let enough = try guestMemory(41 * mib)
        let loaded = try LinuxLoader.load(kernel: b.build(), initrd: big, commandLine: "", memory: enough)
        #expect(loaded.ranges.last == (try range((41 * mib - 8 * mib - 1) & ~0xFFF, 8 * mib + 1)))
        #expect(loaded.ranges.last!.start.rawValue >= 32 * mib)
    }

    @Test("an initrd larger than all of RAM: refused, not a crash")
    func initrdLargerThanRAM() throws {
        let memory = try guestMemory(32 * mib)
        let huge = [UInt8](repeating: 1, count: Int(33 * mib))
        expectBootError(containing: "needs at least") {
            try LinuxLoader.load(kernel: standardBzImage().build(), initrd: huge, commandLine: "", memory: memory)
        }
    }

    @Test("initrd_addr_max below the kernel's end: refused")
    func initrdAddressMaxBelowKernel() throws {
        var b = standardBzImage()
        b.initrdAddressMax = 0xFF_FFFF  // 16 MiB - 1: the kernel starts at 16 MiB
        let memory = try guestMemory(64 * mib)
        expectBootError(containing: "does not fit") {
            try LinuxLoader.load(kernel: b.build(), initrd: initrd, commandLine: "", memory: memory)
        }
    }

    @Test("BUG? an initrd too big for initrd_addr_max (RAM is ample) is not blamed on --memory")
    func initrdAddressMaxMessage() throws {
        // 1 GiB of RAM; initrd_addr_max 64 MiB - 1; kernel [16 MiB, 17 MiB);
        // a 48 MiB initrd cannot go below 64 MiB whatever --memory is.
        var b = standardBzImage()
        b.initrdAddressMax = 0x3FF_FFFF
        let memory = try guestMemory(1 * gib)
        let big = [UInt8](repeating: 2, count: Int(48 * mib))
        let error = expectBootError(containing: "does not fit") {
            try LinuxLoader.load(kernel: b.build(), initrd: big, commandLine: "", memory: memory)
        }
        // More memory cannot help: the message should name initrd_addr_max rather
        // than ask for more --memory than the guest already has.
        #expect(error?.message.contains("of --memory") == false, "message was: \(error?.message ?? "")")
    }

    @Test("BUG? an empty initrd file: loaded as an empty initrd, not a guest-memory error")
    func emptyInitrd() throws {
        let memory = try guestMemory(64 * mib)
        do {
            _ = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: [], commandLine: "", memory: memory)
            #expect(try zeroPage(memory).le32(0x21C) == 0)
        } catch {
            Issue.record("an empty initrd failed to load: \(error)")
        }
    }

    @Test("init_size that does not fit in RAM: 'needs at least' load + init_size, rounded up to 1 MiB")
    func initSizeTooBig() throws {
        var b = standardBzImage()
        b.initSize = 20 * 1024 * 1024 + 1  // [16 MiB, 36 MiB + 1)
        let memory = try guestMemory(32 * mib)
        expectBootError(containing: "needs at least 37 MiB") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        }
        // Nothing was written for the refused kernel.
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x100_0000)) == 0)
        // With the amount named, it loads.
        _ = try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: try guestMemory(37 * mib))
    }

    @Test("init_size 0xFFFFFFFF and a pref_address near 2^64: refused, not a crash or a wrap",
          arguments: [(0x100_0000, 0xFFFF_FFFF), (0xFFFF_FFFF_FFFF_F000, 0x1000), (0x1_0000_0000, 0x1000)] as [(UInt64, UInt32)])
    func hostileFootprint(_ pref: UInt64, _ initSize: UInt32) throws {
        var b = standardBzImage()
        b.preferredAddress = pref
        b.initSize = initSize
        let memory = try guestMemory(64 * mib)
        expectBootError(containing: "needs at least") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        }
    }

    @Test("BUG? a pref_address below 1 MiB is refused rather than overwritten by the boot data")
    func preferredAddressInBootData() throws {
        // The payload would occupy [0x8000, 0xB000): the boot stack, the PML4
        // (0x9000) and the PDPT (0xA000). The ELF path refuses segments below
        // 1 MiB ("overlaps the boot data"); the bzImage path should too.
        var b = standardBzImage()
        b.preferredAddress = 0x8000
        b.initSize = 0x3000
        let memory = try guestMemory(64 * mib)
        let result = Result { () throws(BootError) in
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        }
        switch result {
        case .success:
            Issue.record("loaded a kernel at 0x8000, inside the boot data")
            // What happened instead: the boot data was written over the kernel.
            #expect(try memory.readBytes(at: GuestAddress(0x8000), count: payload.count) == payload)
        case .failure(let error):
            #expect(error.message.contains("boot data"), "message was: \(error.message)")
        }
    }

    @Test("a bzImage with a bad header: the header's error comes through load")
    func headerErrorsPropagate() throws {
        var b = standardBzImage()
        b.xloadflags = 0
        let memory = try guestMemory(64 * mib)
        expectBootError(containing: "32-bit") {
            try LinuxLoader.load(kernel: b.build(), initrd: nil, commandLine: "", memory: memory)
        }
    }

    @Test("neither a bzImage nor an ELF file")
    func notAKernel() throws {
        let memory = try guestMemory(64 * mib)
        for image in [[], [UInt8](repeating: 0, count: 0x1000), patternBytes(count: 0x1000)] {
            expectBootError(containing: "not a Linux kernel") {
                try LinuxLoader.load(kernel: image, initrd: nil, commandLine: "", memory: memory)
            }
        }
    }
}

@Suite("LinuxLoader: page tables and GDT")
struct LinuxLoaderTablesTests {
    @Test("0x9000: PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs, 2048 2 MiB identity pages up to 0xFFE00000")
    func pageTables() throws {
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: "", memory: memory)
        let tables = try memory.readBytes(at: GuestAddress(0x9000), count: 6 * 4096)
        #expect(tables.le64(0) == 0xA003)
        for i in 1..<512 { #expect(tables.le64(8 * i) == 0, "PML4[\(i)]") }
        for gibIndex in 0..<4 {
            #expect(tables.le64(0x1000 + 8 * gibIndex) == 0xB003 + UInt64(gibIndex) * 0x1000)
        }
        #expect(tables[(0x1000 + 32)..<0x2000].allSatisfy { $0 == 0 })
        var mismatches = 0
        for pd in 0..<4 {
            for e in 0..<512 {
                let physical = UInt64(pd) << 30 | UInt64(e) << 21
                if tables.le64(0x2000 + pd * 0x1000 + 8 * e) != physical | 0x83 { mismatches += 1 }
            }
        }
        #expect(mismatches == 0)
        #expect(tables.le64(0x2000) == 0x83)
        #expect(tables.le64(0x2008) == 0x20_0083)
        #expect(tables.le64(6 * 4096 - 8) == 0xFFE0_0083)
        // The byte after the tables is untouched.
        #expect(try memory.read(UInt8.self, at: GuestAddress(0xF000)) == 0xAA)
    }

    @Test("IdentityPageTables.build at another base points at that base's pages")
    func pageTablesElsewhere() {
        let tables = IdentityPageTables.build(at: 0x10_0000)
        #expect(tables.count == 6 * 4096)
        #expect(tables.le64(0) == 0x10_1003)
        #expect(tables.le64(0x1000) == 0x10_2003)
        #expect(tables.le64(0x1018) == 0x10_5003)
        #expect(tables.le64(0x5000 + 8 * 511) == 0xFFE0_0083)
    }

    @Test("0x500: null, null, 64-bit code 0x00AF9B000000FFFF, data 0x00CF93000000FFFF")
    func gdt() throws {
        let memory = try guestMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: "", memory: memory)
        let gdt = try memory.readBytes(at: GuestAddress(0x500), count: 33)
        #expect(gdt.le64(0) == 0)
        #expect(gdt.le64(8) == 0)
        #expect(gdt.le64(16) == 0x00AF_9B00_0000_FFFF)
        #expect(gdt.le64(24) == 0x00CF_9300_0000_FFFF)
        #expect(gdt[32] == 0xAA)
        // The selectors index the descriptors the CPU state describes.
        #expect(gdt.le64(Int(loaded.cpu.cs.selector)) == loaded.cpu.cs.descriptor)
        #expect(gdt.le64(Int(loaded.cpu.data.selector)) == loaded.cpu.data.descriptor)
    }

    @Test("the boot data stays in its places: [0x1000, 0x7000) and the MP table's page are not written")
    func untouchedLowMemory() throws {
        let memory = try guestMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: standardBzImage().build(), initrd: nil, commandLine: "x", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0), count: 0x500).allSatisfy { $0 == 0xAA })
        #expect(try memory.readBytes(at: GuestAddress(0x520), count: 0x7000 - 0x520).allSatisfy { $0 == 0xAA })
        #expect(try memory.readBytes(at: GuestAddress(0x9_FC00), count: 0x400).allSatisfy { $0 == 0xAA })
    }
}

/// An ELF64 vmlinux: text at 16 MiB (0x200 bytes), data at 16 MiB + 8 KiB
/// (0x100 bytes and 0xF00 bytes of bss), entered at 16 MiB + 0x40.
private func standardELF() -> ELFBuilder {
    ELFBuilder(
        .elf64, entry: 0x100_0040,
        segments: [
            ELFSegmentSpec(address: 0x100_0000, data: patternBytes(count: 0x200, seed: 3)),
            ELFSegmentSpec(address: 0x100_2000, data: patternBytes(count: 0x100, seed: 0x90), memorySize: 0x1000),
        ])
}

/// guestMemory with [16 MiB, 16 MiB + 16 KiB) also pre-filled with 0xAA.
private func elfMemory(_ size: UInt64) throws -> GuestMemory {
    let m = try guestMemory(size)
    try m.fill(0xAA, at: GuestAddress(0x100_0000), count: 0x4000)
    return m
}

@Suite("LinuxLoader: ELF vmlinux")
struct LinuxLoaderELFTests {
    @Test("segments at p_paddr, bss zeroed, gaps untouched, entered at e_entry in long mode")
    func segments() throws {
        let memory = try elfMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: standardELF().build().bytes, initrd: nil, commandLine: "quiet", memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x100_0000), count: 0x200) == patternBytes(count: 0x200, seed: 3))
        #expect(try memory.readBytes(at: GuestAddress(0x100_0200), count: 0x1E00).allSatisfy { $0 == 0xAA })
        #expect(try memory.readBytes(at: GuestAddress(0x100_2000), count: 0x100) == patternBytes(count: 0x100, seed: 0x90))
        #expect(try memory.readBytes(at: GuestAddress(0x100_2100), count: 0xF00).allSatisfy { $0 == 0 })
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x100_3000)) == 0xAA)
        expectLongModeState(loaded.cpu, rip: 0x100_0040)
        #expect(loaded.ranges == [try range(0x100_0000, 0x200), try range(0x100_2000, 0x1000)])
        #expect(loaded.summary == "Linux ELF vmlinux, 2 segments, entry 0x1000040")
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: 6) == Array("quiet".utf8) + [0])
    }

    @Test("the zero page: the ELF defaults plus the loader's fields")
    func zeroPageForELF() throws {
        let memory = try elfMemory(64 * mib)
        _ = try LinuxLoader.load(kernel: standardELF().build().bytes, initrd: initrd, commandLine: "", memory: memory)
        var expected = ZeroPage.forELFKernel()
        let address = UInt32((64 * mib - 10_000) & ~0xFFF)
        expected.configure(commandLineAddress: 0x2_0000, initrd: (address, 10_000), e820: MachineMap.memoryMap(size: 64 * mib))
        let page = try zeroPage(memory)
        #expect(page == expected.bytes)
        #expect(page.le16(0x1FE) == 0xAA55)
        #expect(page.le32(0x202) == 0x5372_6448)
        #expect(page.le16(0x206) == 0x020C)
        #expect(page.le32(0x238) == 2047)
        #expect(page.le32(0x218) == address)
        #expect(try memory.readBytes(at: GuestAddress(UInt64(address)), count: initrd.count) == initrd)
    }

    @Test("an ELF kernel's initrd stays below 2 GiB, its implied initrd_addr_max")
    func elfInitrdBelowTwoGiB() throws {
        let memory = try elfMemory(3 * gib)
        _ = try LinuxLoader.load(kernel: standardELF().build().bytes, initrd: initrd, commandLine: "", memory: memory)
        let address = (2 * gib - 10_000) & ~0xFFF
        #expect(UInt64(try zeroPage(memory).le32(0x218)) == address)
        #expect(try memory.readBytes(at: GuestAddress(address), count: initrd.count) == initrd)
    }

    @Test("an ELF kernel's command line limit is 2047 bytes")
    func elfCommandLineLimit() throws {
        let memory = try elfMemory(64 * mib)
        let ok = String(repeating: "a", count: 2047)
        _ = try LinuxLoader.load(kernel: standardELF().build().bytes, initrd: nil, commandLine: ok, memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000 + 2046), count: 2) == [UInt8(ascii: "a"), 0])
        expectBootError(containing: "at most 2047") {
            try LinuxLoader.load(kernel: standardELF().build().bytes, initrd: nil, commandLine: ok + "a", memory: memory)
        }
    }

    @Test("a higher-half vmlinux: loaded at p_paddr; a physical e_entry is used as is, a virtual one translated",
          arguments: [(0x100_0000, 0x100_0000), (0xFFFF_FFFF_8100_0100, 0x100_0100)] as [(UInt64, UInt64)])
    func higherHalf(_ entry: UInt64, _ rip: UInt64) throws {
        let elf = ELFBuilder(.elf64, entry: entry, segments: [
            ELFSegmentSpec(virtualAddress: 0xFFFF_FFFF_8100_0000, physicalAddress: 0x100_0000, data: patternBytes(count: 0x400, seed: 4))
        ])
        let memory = try elfMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        #expect(loaded.cpu.rip == rip)
        #expect(try memory.readBytes(at: GuestAddress(0x100_0000), count: 0x400) == patternBytes(count: 0x400, seed: 4))
    }

    @Test("a segment at exactly 1 MiB is fine")
    func segmentAtOneMiB() throws {
        let elf = ELFBuilder(.elf64, entry: 0x10_0000, segments: [ELFSegmentSpec(address: 0x10_0000, data: [0xF4])])
        let memory = try elfMemory(64 * mib)
        let loaded = try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        #expect(loaded.cpu.rip == 0x10_0000)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x10_0000)) == 0xF4)
    }

    @Test("a segment starting below 1 MiB overlaps the boot data", arguments: [0, 0x7000, 0xF_F000, 0xF_FFFF] as [UInt64])
    func segmentBelowOneMiB(_ address: UInt64) throws {
        let elf = ELFBuilder(.elf64, entry: 0x100_0000, segments: [
            ELFSegmentSpec(address: 0x100_0000, data: [0x90]),
            ELFSegmentSpec(address: address, data: patternBytes(count: 0x10)),
        ])
        let memory = try elfMemory(64 * mib)
        expectBootError(containing: "overlaps the boot data") {
            try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        }
        // Nothing below 1 MiB was written.
        #expect(try memory.readBytes(at: GuestAddress(0), count: Int(mib)).allSatisfy { $0 == 0xAA })
    }

    @Test("a segment past the end of RAM: 'needs at least'")
    func segmentPastRAM() throws {
        let elf = ELFBuilder(.elf64, entry: 0x100_0000, segments: [
            ELFSegmentSpec(address: 0x100_0000, data: [0x90], memorySize: 63 * mib + 1)
        ])
        let memory = try elfMemory(64 * mib)
        expectBootError(containing: "needs at least 80 MiB") {
            try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        }
    }

    @Test("ELF32 (i386 or x86-64 machine) and ELF64 for i386 are refused",
          arguments: [(ELFBuilder.Class.elf32, 3), (.elf32, 62), (.elf64, 3)] as [(ELFBuilder.Class, UInt16)])
    func notX86_64(_ cls: ELFBuilder.Class, _ machine: UInt16) throws {
        var elf = ELFBuilder(cls, entry: 0x100_0000, segments: [ELFSegmentSpec(address: 0x100_0000, data: [0x90])])
        elf.machine = machine
        let memory = try elfMemory(64 * mib)
        expectBootError(containing: "not x86-64") {
            try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        }
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x100_0000)) == 0xAA)
    }

    @Test("a malformed ELF's own error comes through")
    func malformedELF() throws {
        var elf = standardELF()
        elf.type = 1  // ET_REL
        let memory = try elfMemory(64 * mib)
        expectBootError(containing: "not an executable") {
            try LinuxLoader.load(kernel: elf.build().bytes, initrd: nil, commandLine: "", memory: memory)
        }
    }
}

@Suite("LinuxLoader: format detection")
struct LinuxLoaderDetectionTests {
    @Test("isBzImage and isELFKernel on bzImages, ELF files and junk")
    func detection() {
        let bz = standardBzImage().build()
        #expect(LinuxLoader.isBzImage(bz))
        #expect(!LinuxLoader.isELFKernel(bz))

        let vmlinux = standardELF().build().bytes
        #expect(LinuxLoader.isELFKernel(vmlinux))
        #expect(!LinuxLoader.isBzImage(vmlinux))

        let multiboot = ELFBuilder(.elf32, entry: 0x10_0000, segments: [ELFSegmentSpec(address: 0x10_0000, data: [0x90])],
                                   multibootHeader: multibootHeader(flags: 0x3)).build().bytes
        #expect(!LinuxLoader.isELFKernel(multiboot))
        #expect(!LinuxLoader.isBzImage(multiboot))

        var i386 = standardELF()
        i386.machine = 3
        #expect(!LinuxLoader.isELFKernel(i386.build().bytes))

        // Truncated or damaged ELF files are not kernels.
        #expect(!LinuxLoader.isELFKernel(Array(vmlinux.prefix(40))))
        #expect(!LinuxLoader.isELFKernel([0x7F, 0x45, 0x4C, 0x46]))
        var relocatable = standardELF()
        relocatable.type = 1
        #expect(!LinuxLoader.isELFKernel(relocatable.build().bytes))

        // The header magic alone makes a bzImage to isBzImage; one byte short does not.
        #expect(LinuxLoader.isBzImage(Array(bz.prefix(0x206))))
        #expect(!LinuxLoader.isBzImage(Array(bz.prefix(0x205))))
        var noMagic = bz
        noMagic[0x205] = 0
        #expect(!LinuxLoader.isBzImage(noMagic))
        // A bzImage with a bad header is still a bzImage (load then says what is wrong).
        var old = standardBzImage()
        old.version = 0x0200
        #expect(LinuxLoader.isBzImage(old.build()))

        for junk in [[], [0x7F], [UInt8](repeating: 0, count: 0x1000), patternBytes(count: 0x1000)] as [[UInt8]] {
            #expect(!LinuxLoader.isBzImage(junk))
            #expect(!LinuxLoader.isELFKernel(junk))
        }
    }

    @Test("the real Debian bzImage and vmlinux are recognised",
          .enabled(if: linuxGuestAssetExists("bzImage") && linuxGuestAssetExists("vmlinux"), "guests/build/linux is absent (make guests builds it)"))
    func realKernels() throws {
        let bz = try #require(linuxGuestAsset("bzImage"))
        #expect(LinuxLoader.isBzImage(bz) && !LinuxLoader.isELFKernel(bz))
        let vmlinux = try #require(linuxGuestAsset("vmlinux"))
        #expect(LinuxLoader.isELFKernel(vmlinux) && !LinuxLoader.isBzImage(vmlinux))
    }
}

@Suite("LinuxLoader: the real Debian kernel")
struct LinuxLoaderRealKernelTests {
    @Test("bzImage and initrd into 256 MiB",
          .enabled(if: linuxGuestAssetExists("bzImage") && linuxGuestAssetExists("initrd.img"), "guests/build/linux is absent (make guests builds it)"))
    func bzImageWithInitrd() throws {
        let image = try #require(linuxGuestAsset("bzImage"))
        let rd = try #require(linuxGuestAsset("initrd.img"))
        let header = try LinuxSetupHeader(image)
        let memory = try guestMemory(256 * mib)
        let loaded = try LinuxLoader.load(kernel: image, initrd: rd, commandLine: "console=ttyS0", memory: memory)
        expectLongModeState(loaded.cpu, rip: 0x100_0200)
        let kernelBytes = Array(image[header.kernelOffset...])
        #expect(try memory.readBytes(at: GuestAddress(0x100_0000), count: kernelBytes.count) == kernelBytes)
        let address = (256 * mib - UInt64(rd.count)) & ~0xFFF
        #expect(try memory.readBytes(at: GuestAddress(address), count: rd.count) == rd)
        let page = try zeroPage(memory)
        #expect(UInt64(page.le32(0x218)) == address)
        #expect(page.le32(0x21C) == UInt32(rd.count))
        #expect(Array(page[0x1F1..<0x210]) == Array(image[0x1F1..<0x210]))
        #expect(loaded.ranges == [try range(0x100_0000, max(UInt64(header.initSize), UInt64(kernelBytes.count))),
                                  try range(address, UInt64(rd.count))])
    }

    @Test("the ELF vmlinux into 128 MiB: 4 segments at their physical addresses, entry 0x1000000",
          .enabled(if: linuxGuestAssetExists("vmlinux"), "guests/build/linux/vmlinux is absent (make guests builds it)"))
    func vmlinux() throws {
        let image = try #require(linuxGuestAsset("vmlinux"))
        let elf = try ELFImage(image)
        let memory = try guestMemory(128 * mib)
        let loaded = try LinuxLoader.load(kernel: image, initrd: nil, commandLine: "", memory: memory)
        expectLongModeState(loaded.cpu, rip: 0x100_0000)
        #expect(loaded.ranges.count == elf.segments.count)
        for s in elf.segments {
            let n = Int(min(s.fileSize, 0x1000))
            #expect(try memory.readBytes(at: GuestAddress(s.physicalAddress), count: n)
                    == Array(image[Int(s.fileOffset)..<(Int(s.fileOffset) + n)]))
        }
    }
}
