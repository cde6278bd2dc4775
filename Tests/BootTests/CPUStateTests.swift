// CPUStateTests.swift: segment descriptors and per-vCPU CPUID tables.
//
// Descriptor encoding checked against Intel SDM vol. 3A, 3.4.5 "Segment
// Descriptors", figure 3-8: bits 0-15 limit[15:0], 16-39 base[23:0], 40-43
// type, 44 S, 45-46 DPL, 47 P, 48-51 limit[19:16], 52 AVL, 53 L, 54 D/B, 55 G,
// 56-63 base[31:24]; and table 3-1 "Code- and Data-Segment Types": 0xB is
// execute/read, accessed; 0x3 is read/write, accessed. So a flat 32-bit ring-0
// code descriptor has access byte 0x9B (P=1, DPL=0, S=1, type 1011) and flags
// nibble 0xC (G=1, D/B=1), limit 0xFFFFF: 0x00CF9B000000FFFF; data 0x00CF93000000FFFF.
// The same encodings are Linux's GDT_ENTRY_INIT(0xc09b, 0, 0xfffff) and
// (0xc093, 0, 0xfffff) for __BOOT_CS/__BOOT_DS.
//
// CPUID: Intel SDM vol. 2A, CPUID: leaf 1 EBX[31:24] is the initial APIC id;
// leaves 0xB and 0x1F report the x2APIC id in EDX.

@testable import Boot
import CKVM
import Testing

@Suite("SegmentState.descriptor")
struct SegmentDescriptorTests {
    @Test("flat 32-bit code and data descriptors")
    func flat32() {
        #expect(SegmentState.flat32(selector: 0x08, code: true).descriptor == 0x00CF_9B00_0000_FFFF)
        #expect(SegmentState.flat32(selector: 0x10, code: false).descriptor == 0x00CF_9300_0000_FFFF)
    }

    @Test("64-bit code: L set, D/B clear (Linux's __KERNEL_CS, 0x00AF9B000000FFFF)")
    func longModeCode() {
        let cs = SegmentState(selector: 0x08, base: 0, limit: 0xFFFF_FFFF, type: 0xB, db: false, l: true, g: true)
        #expect(cs.descriptor == 0x00AF_9B00_0000_FFFF)
    }

    @Test("real-mode segments: byte granularity, 64 KiB limit, base = selector * 16")
    func realMode() {
        let cs = SegmentState.realMode(selector: 0xF000, code: true)
        #expect(cs.base == 0xF_0000)
        #expect(cs.limit == 0xFFFF)
        #expect(cs.descriptor == 0x0000_9B0F_0000_FFFF)
        #expect(SegmentState.realMode(selector: 0, code: false).descriptor == 0x0000_9300_0000_FFFF)
    }

    @Test("every base and limit bit lands in its field; DPL and P")
    func fieldPlacement() {
        var s = SegmentState(selector: 0x2B, base: 0x1234_5678, limit: 0xA_BCDE, type: 0x3, db: false, g: false)
        #expect(s.descriptor == 0x120A_9334_5678_BCDE)
        s.dpl = 3
        #expect(s.descriptor == 0x120A_F334_5678_BCDE)
        s.present = false
        #expect(s.descriptor == 0x120A_7334_5678_BCDE)
        s.s = false
        #expect(s.descriptor == 0x120A_6334_5678_BCDE)
        // A base above 4 GiB cannot be encoded in a code/data descriptor: only bits 0-31 are kept.
        let high = SegmentState(selector: 0, base: 0xFF_1234_5678, limit: 0, type: 0x3, db: false, g: false)
        #expect(high.descriptor == 0x1200_9334_5678_0000)
    }

    @Test("with G set the limit is stored in 4 KiB units")
    func granularity() {
        let s = SegmentState(selector: 0, base: 0, limit: 0x00FF_FFFF, type: 0xB, db: true, g: true)
        #expect(s.descriptor == 0x00C0_9B00_0000_0FFF)
    }
}
