// CPUIDTableTests.swift: per-vCPU CPUID tables built from KVM's supported list.
//
// Intel SDM vol. 2A, "CPUID": leaf 1 EBX[31:24] initial APIC id, EBX[23:16]
// addressable logical processors (valid when EDX.HTT, bit 28, is set); leaf 4
// EAX[31:26] cores per package - 1 (for subleaves whose cache type, EAX[4:0],
// is not 0); leaves 0xB/0x1F: per level EAX[4:0] the APIC-id shift to the next
// level, EBX[15:0] processors at this level, ECX[7:0] the level number and
// ECX[15:8] its type (1 SMT, 2 core, 0 invalid), EDX the x2APIC id.
// AMD APM vol. 3, appendix E: 0x8000_0008 ECX[7:0] cores - 1 and ECX[15:12]
// the APIC-id core bits; 0x8000_001E EAX the extended APIC id.
//
// kvm_cpuid_entry2 values are built by hand (no /dev/kvm needed).

import Boot
import CKVM
import Testing

private let significantIndex = UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)

private func entry(_ function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0,
                   ecx: UInt32 = 0, edx: UInt32 = 0) -> kvm_cpuid_entry2 {
    var e = kvm_cpuid_entry2()
    e.function = function
    e.index = index
    e.flags = flags
    e.eax = eax
    e.ebx = ebx
    e.ecx = ecx
    e.edx = edx
    return e
}

/// [function, index, flags, eax, ebx, ecx, edx]: comparable, and readable in a failure.
private func fields(_ e: kvm_cpuid_entry2) -> [UInt32] { [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] }

/// A plausible KVM_GET_SUPPORTED_CPUID list (values from an Intel host), with
/// HTT set and other values in every field skvm rewrites.
private let supported: [kvm_cpuid_entry2] = [
    entry(0x0, eax: 0x1F, ebx: 0x756E_6547, ecx: 0x6C65_746E, edx: 0x4965_6E69),
    entry(0x1, eax: 0x0009_06EA, ebx: 0xFF10_0800, ecx: 0xF7FA_3223, edx: 0x1F8B_FBFF),
    entry(0x4, index: 0, flags: significantIndex, eax: 0xFC00_4121, ebx: 0x01C0_003F, ecx: 0x3F),
    entry(0x4, index: 4, flags: significantIndex, eax: 0xFC00_0000),  // cache type 0: no more caches
    entry(0x7, index: 0, flags: significantIndex, eax: 1, ebx: 0x029C_67AF, ecx: 0x0040_0004),
    entry(0x7, index: 1, flags: significantIndex, eax: 0x0000_0030, ebx: 0x20),
    entry(0xB, index: 0, flags: significantIndex, eax: 1, ebx: 2, ecx: 0x100, edx: 0xDEAD),
    entry(0xB, index: 1, flags: significantIndex, eax: 4, ebx: 8, ecx: 0x201, edx: 0xBEEF),
    entry(0xB, index: 2, flags: significantIndex, eax: 9, ebx: 9, ecx: 0x302, edx: 0xBEEF),
    entry(0x1F, index: 0, flags: significantIndex, eax: 1, ebx: 2, ecx: 0x100, edx: 0x77),
    entry(0x8000_0001, ebx: 0xFF00_0000, edx: 0x2C10_0800),
    entry(0x8000_0008, eax: 0x3030, ecx: 0xFFFF_F0FF),
    entry(0x8000_001E, eax: 0x55, ebx: 0xABCD_0102, ecx: 0x0000_0103),
]

@Suite("CPUIDTable.forVCPU")
struct CPUIDTableTests {
    @Test("one vCPU: its APIC id in leaf 1 EBX[31:24] and the x2APIC leaves' EDX; a one-core topology",
          arguments: [0, 1, 7, 255] as [UInt32])
    func singleVCPU(_ apicID: UInt32) {
        let out = CPUIDTable.forVCPU(supported: supported, apicID: apicID)
        let si = significantIndex
        #expect(out.count == supported.count)
        #expect(fields(out[0]) == fields(supported[0]))
        // EBX: APIC id, 1 logical processor, [15:0] kept; EDX.HTT cleared.
        #expect(fields(out[1]) == [0x1, 0, 0, 0x0009_06EA, (apicID << 24) | 0x0001_0800, 0xF7FA_3223, 0x0F8B_FBFF])
        #expect(fields(out[2]) == [0x4, 0, si, 0x0000_4121, 0x01C0_003F, 0x3F, 0])
        #expect(fields(out[3]) == fields(supported[3]))
        #expect(fields(out[4]) == fields(supported[4]))
        #expect(fields(out[5]) == fields(supported[5]))
        #expect(fields(out[6]) == [0xB, 0, si, 0, 1, 0x100, apicID])   // SMT: 1 thread
        #expect(fields(out[7]) == [0xB, 1, si, 0, 1, 0x201, apicID])   // core: 1 core
        #expect(fields(out[8]) == [0xB, 2, si, 0, 0, 2, apicID])       // invalid level, ECX[7:0] = index
        #expect(fields(out[9]) == [0x1F, 0, si, 0, 1, 0x100, apicID])
        #expect(fields(out[10]) == fields(supported[10]))  // 0x80000001's EBX is not an APIC id
        #expect(fields(out[11]) == [0x8000_0008, 0, 0, 0x3030, 0, 0xFFFF_0000, 0])
        #expect(fields(out[12]) == [0x8000_001E, 0, 0, apicID, 0xABCD_0000 | apicID, 0, 0])
    }

    @Test("four vCPUs: HTT set, 4 logical processors, 2 APIC-id bits for the core level")
    func fourVCPUs() {
        let out = CPUIDTable.forVCPU(supported: supported, apicID: 2, cpuCount: 4)
        let si = significantIndex
        #expect(fields(out[1]) == [0x1, 0, 0, 0x0009_06EA, 0x0204_0800, 0xF7FA_3223, 0x1F8B_FBFF])
        #expect(fields(out[2]) == [0x4, 0, si, 0x0C00_4121, 0x01C0_003F, 0x3F, 0])
        #expect(fields(out[3]) == fields(supported[3]))
        #expect(fields(out[6]) == [0xB, 0, si, 0, 1, 0x100, 2])
        #expect(fields(out[7]) == [0xB, 1, si, 2, 4, 0x201, 2])
        #expect(fields(out[8]) == [0xB, 2, si, 0, 0, 2, 2])
        #expect(fields(out[11]) == [0x8000_0008, 0, 0, 0x3030, 0, 0xFFFF_2003, 0])
        #expect(fields(out[12]) == [0x8000_001E, 0, 0, 2, 0xABCD_0002, 0, 0])
    }

    @Test("the core-level shift is ceil(log2(cpuCount))",
          arguments: [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (64, 6)] as [(Int, UInt32)])
    func coreShift(_ cpuCount: Int, _ shift: UInt32) {
        let out = CPUIDTable.forVCPU(supported: supported, apicID: 0, cpuCount: cpuCount)
        #expect(out[7].eax == shift)
        #expect(out[7].ebx == UInt32(cpuCount))
        #expect(out[1].ebx >> 16 & 0xFF == UInt32(cpuCount))
    }

    @Test("an APIC id above 255 keeps its low 8 bits in leaf 1 and all of it in the x2APIC leaves")
    func wideAPICID() {
        let out = CPUIDTable.forVCPU(supported: supported, apicID: 0x102)
        #expect(out[1].ebx == 0x0201_0800)
        #expect(out[6].edx == 0x102)
        #expect(out[12].eax == 0x102)
    }

    @Test("hidden features are cleared in their leaf and subleaf only")
    func policy() throws {
        let cx16 = try #require(CPUIDFeature.parse("cx16"))
        let avx2 = try #require(CPUIDFeature.parse("0x7:ebx:5"))
        let subleaf1 = try #require(CPUIDFeature.parse("0x7.1:eax:4"))
        let out = CPUIDTable.forVCPU(supported: supported, apicID: 0, policy: CPUIDPolicy(hidden: [cx16, avx2, subleaf1]))
        #expect(out[1].ecx == 0xF7FA_1223)      // bit 13 cleared
        #expect(out[4].ebx == 0x029C_678F)      // leaf 7.0 bit 5 cleared
        #expect(out[5].ebx == 0x20)             // leaf 7.1 EBX untouched (same bit number, other subleaf)
        #expect(out[5].eax == 0x20)             // leaf 7.1 EAX bit 4 cleared
        #expect(out[0].ebx == supported[0].ebx)
    }

    // Measured on a PVM host: hiding cx16 through KVM_SET_CPUID2 keeps Linux off
    // cmpxchg16b; PVM keeps XSAVE visible whatever the table says, so xsave is
    // handled with `noxsave` on the kernel command line instead (Machine.linuxCommandLine).
    @Test("the emulator policy hides cx16 only, and only bit 13 of leaf 1 ECX")
    func emulatorPolicy() {
        let out = CPUIDTable.forVCPU(supported: supported, apicID: 0, policy: CPUIDPolicy(hidden: CPUIDPolicy.emulatorUnsupported))
        #expect(out[1].ecx == 0xF7FA_3223 & ~(UInt32(1) << 13))
        #expect(Set(CPUIDPolicy.emulatorUnsupported.compactMap(\.name)) == ["cx16"])
    }

    @Test("an empty list stays empty; signature() reads leaf 1")
    func emptyAndSignature() {
        #expect(CPUIDTable.forVCPU(supported: [], apicID: 3).isEmpty)
        #expect(CPUIDTable.signature(supported) == (0x0009_06EA, 0x1F8B_FBFF))
        #expect(CPUIDTable.signature([]) == (0, 0))
    }
}

@Suite("CPUIDFeature.parse")
struct CPUIDFeatureParseTests {
    @Test("known names, case-insensitive")
    func knownNames() throws {
        let f = try #require(CPUIDFeature.parse("CX16"))
        #expect(f.leaf == 1 && f.subleaf == 0 && f.register == .ecx && f.bit == 13)
        #expect(f.description == "cx16")
    }

    @Test("LEAF[.SUBLEAF]:REG:BIT, hex or decimal")
    func numeric() throws {
        let f = try #require(CPUIDFeature.parse("0x7.1:eax:4"))
        #expect(f.leaf == 7 && f.subleaf == 1 && f.register == .eax && f.bit == 4 && f.name == nil)
        #expect(f.description == "0x7.1:eax:4")
        let g = try #require(CPUIDFeature.parse("2147483649:edx:27"))
        #expect(g.leaf == 0x8000_0001 && g.subleaf == 0 && g.register == .edx && g.bit == 27)
        #expect(g.description == "0x80000001:edx:27")
    }

    @Test("malformed features are refused", arguments: ["", "nosuchflag", "0x1:ecx", "0x1:ecx:32", "0x1:xmm:3", "0xZZ:eax:1", "0x1.2.3:eax:1", "0x1:ecx:-1"])
    func malformed(_ text: String) {
        #expect(CPUIDFeature.parse(text) == nil)
    }
}
