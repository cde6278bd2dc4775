// FlatBinaryTests.swift: the flat real-mode loader. The file's bytes go to
// 0x1000 and the CPU starts in real mode at CS:IP = 0000:1000 with SP = 0x1000
// and every segment base 0 with a 64 KiB limit (Intel SDM vol. 3, 20.1 "Real-
// Address Mode Operation": base = selector * 16; CR0.PE clear).

import Boot
import Memory
import Testing
import TestSupport

@Suite("FlatBinaryLoader")
struct FlatBinaryTests {
    @Test("an empty file is refused")
    func empty() throws {
        let memory = try makeGuestMemory(size: 1 << 20)
        #expect(throws: BootError("the flat binary is empty")) {
            try FlatBinaryLoader.load([], memory: memory)
        }
    }

    @Test("a file larger than the space between 0x1000 and 0x9FC00 is refused")
    func tooLarge() throws {
        #expect(FlatBinaryLoader.maximumSize == 0x9_EC00)
        let memory = try makeGuestMemory(size: 1 << 20)
        let size = FlatBinaryLoader.maximumSize + 1
        #expect(throws: BootError("the flat binary is \(size) bytes; at most 650240 fit between 0x1000 and 0x9fc00")) {
            try FlatBinaryLoader.load([UInt8](repeating: 0x90, count: size), memory: memory)
        }
    }

    @Test("a file of exactly maximumSize bytes fits")
    func exactlyMaximum() throws {
        let memory = try makeGuestMemory(size: 1 << 20)
        let bytes = patternBytes(count: FlatBinaryLoader.maximumSize, seed: 7)
        let loaded = try FlatBinaryLoader.load(bytes, memory: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x1000), count: bytes.count) == bytes)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x9_FC00)) == 0)
        #expect(loaded.ranges == [try #require(GuestRange(start: GuestAddress(0x1000), length: 0x9_EC00))])
    }

    @Test("a file that does not fit in a small guest's RAM is refused")
    func doesNotFitInRAM() throws {
        let memory = try makeGuestMemory(size: 0x1_0000)
        #expect(throws: BootError("the flat binary (65536 bytes at 0x1000) does not fit in guest RAM (64 KiB)")) {
            try FlatBinaryLoader.load([UInt8](repeating: 0xF4, count: 0x1_0000), memory: memory)
        }
    }

    @Test("a normal file: bytes at 0x1000, real-mode CPU state entering there")
    func normal() throws {
        let memory = try makeGuestMemory(size: 1 << 20)
        try memory.fill(0xAA, at: GuestAddress(0), count: 0x3000)
        let program: [UInt8] = [0xB0, 0x41, 0xE6, 0xE9, 0xF4]  // mov al, 'A'; out 0xe9, al; hlt
        let loaded = try FlatBinaryLoader.load(program, memory: memory)

        #expect(try memory.readBytes(at: GuestAddress(0x1000), count: 5) == program)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0xFFF)) == 0xAA)
        #expect(try memory.read(UInt8.self, at: GuestAddress(0x1005)) == 0xAA)
        #expect(loaded.ranges == [try #require(GuestRange(start: GuestAddress(0x1000), length: 5))])
        #expect(loaded.summary == "flat real-mode binary, 5 bytes at 0x1000")

        let cpu = loaded.cpu
        #expect(cpu.rip == 0x1000)
        #expect(cpu.rsp == 0x1000)
        #expect(cpu.rflags == 0x2)
        #expect(cpu.rax == 0 && cpu.rbx == 0 && cpu.rsi == 0)
        #expect(cpu.cs == SegmentState(selector: 0, base: 0, limit: 0xFFFF, type: 0xB, db: false, g: false))
        #expect(cpu.data == SegmentState(selector: 0, base: 0, limit: 0xFFFF, type: 0x3, db: false, g: false))
        #expect(cpu.cr0 == 0x10)  // ET only: PE clear, real mode
        #expect(cpu.cr0 & BootCPUState.cr0ProtectionEnable == 0)
        #expect(cpu.gdt == nil && cpu.idt == nil)
        #expect(cpu.cr3 == 0 && cpu.cr4 == 0 && cpu.efer == 0)
    }
}
