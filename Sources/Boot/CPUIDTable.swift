// CPUIDTable.swift: what the CPUID instruction reports to each vCPU.
//
// KVM_GET_SUPPORTED_CPUID lists every leaf KVM can virtualise on this host;
// a VMM passes it to KVM_SET_CPUID2 after making it describe *this* vCPU in
// *this* machine:
//   - its APIC id: leaf 0x1 EBX[31:24], leaves 0xB/0x1F EDX (x2APIC id), AMD 0x8000_001E EAX;
//   - the topology: one package of N cores, one thread each (leaf 0x1 EBX[23:16] and HTT,
//     leaves 0xB/0x1F levels, Intel leaf 0x4 EAX[31:26], AMD 0x8000_0008 ECX);
//   - features hidden by policy (the CPUID policy below).
// Without KVM_SET_CPUID2 a vCPU reports no long-mode support at all, and a
// 64-bit guest cannot even enable it (SWIFT-ON-KVM.md, pitfall 13). Intel SDM
// vol. 2A "CPUID"; AMD APM vol. 3, appendix E.

import CKVM

/// One CPUID feature bit.
public struct CPUIDFeature: Hashable, Sendable, CustomStringConvertible {
    public enum Register: String, Sendable, CaseIterable { case eax, ebx, ecx, edx }
    public let leaf: UInt32
    public let subleaf: UInt32
    public let register: Register
    public let bit: UInt32
    /// The /proc/cpuinfo name, when it has one.
    public let name: String?

    public init(leaf: UInt32, subleaf: UInt32 = 0, register: Register, bit: UInt32, name: String? = nil) {
        self.leaf = leaf
        self.subleaf = subleaf
        self.register = register
        self.bit = bit
        self.name = name
    }

    public var description: String {
        name ?? "0x\(String(leaf, radix: 16))\(subleaf != 0 ? ".\(subleaf)" : ""):\(register.rawValue):\(bit)"
    }

    /// Features known by name (the /proc/cpuinfo flag names).
    public static let known: [CPUIDFeature] = [
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 13, name: "cx16"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 26, name: "xsave"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 27, name: "osxsave"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 28, name: "avx"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 21, name: "x2apic"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 24, name: "tsc_deadline_timer"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 30, name: "rdrand"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 31, name: "hypervisor"),
        CPUIDFeature(leaf: 0x1, register: .ecx, bit: 3, name: "monitor"),
        CPUIDFeature(leaf: 0x1, register: .edx, bit: 28, name: "ht"),
        CPUIDFeature(leaf: 0x7, register: .ebx, bit: 5, name: "avx2"),
        CPUIDFeature(leaf: 0x7, register: .ebx, bit: 16, name: "avx512f"),
        CPUIDFeature(leaf: 0x7, register: .ebx, bit: 18, name: "rdseed"),
        CPUIDFeature(leaf: 0x7, register: .ecx, bit: 22, name: "rdpid"),
        CPUIDFeature(leaf: 0x8000_0001, register: .edx, bit: 26, name: "pdpe1gb"),
        CPUIDFeature(leaf: 0x8000_0001, register: .edx, bit: 27, name: "rdtscp"),
    ]

    /// Parses "cx16" (a known name) or "LEAF[.SUBLEAF]:REG:BIT" such as "0x1:ecx:13".
    public static func parse(_ text: String) -> CPUIDFeature? {
        let t = text.lowercased()
        if let k = known.first(where: { $0.name == t }) { return k }
        let parts = t.split(separator: ":")
        guard parts.count == 3, let register = Register(rawValue: String(parts[1])), let bit = UInt32(parts[2]), bit < 32 else { return nil }
        let leafParts = parts[0].split(separator: ".")
        guard leafParts.count <= 2, let leaf = parseNumber(leafParts[0]) else { return nil }
        let subleaf = leafParts.count == 2 ? parseNumber(leafParts[1]) : 0
        guard let subleaf else { return nil }
        return CPUIDFeature(leaf: leaf, subleaf: subleaf, register: register, bit: bit)
    }

    private static func parseNumber(_ s: Substring) -> UInt32? {
        s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
    }
}

/// Which features to hide from the guest.
public struct CPUIDPolicy: Equatable, Sendable {
    public var hidden: Set<CPUIDFeature> = []

    public init(hidden: Set<CPUIDFeature> = []) { self.hidden = hidden }

    /// What KVM's instruction emulator cannot execute, for hosts where guest
    /// kernel code runs in it (PVM): `cmpxchg16b` (cx16) stops Linux early.
    /// (`xrstor` stops it a little later, but PVM keeps XSAVE visible whatever
    /// KVM_SET_CPUID2 says, so for Linux the VMM adds `noxsave` to the
    /// command line instead; measured, docs/pvm.md.)
    public static let emulatorUnsupported: Set<CPUIDFeature> = Set(CPUIDFeature.known.filter { $0.name == "cx16" })
}

/// Builds per-vCPU CPUID tables from KVM's supported list.
public enum CPUIDTable {
    /// The supported entries, made to describe vCPU `apicID` of `cpuCount`
    /// (one package, one thread per core), with `policy`'s features hidden.
    public static func forVCPU(supported: [kvm_cpuid_entry2], apicID: UInt32, cpuCount: Int = 1,
                               policy: CPUIDPolicy = CPUIDPolicy()) -> [kvm_cpuid_entry2] {
        let count = UInt32(max(cpuCount, 1))
        // Bits of the APIC id that number cores: ceil(log2(count)).
        var coreBits: UInt32 = 0
        while (1 << coreBits) < count { coreBits += 1 }
        return supported.map { entry in
            var e = entry
            switch e.function {
            case 0x1:
                e.ebx = (e.ebx & 0x0000_FFFF) | ((apicID & 0xFF) << 24) | ((count & 0xFF) << 16)
                if count > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(1 << 28) }  // HTT: the count field is valid
            case 0x4:
                // Intel: EAX[31:26] = cores per package - 1 (only for valid cache subleafs).
                if e.eax & 0x1F != 0 { e.eax = (e.eax & 0x03FF_FFFF) | ((count - 1) << 26) }
            case 0xB, 0x1F:
                // Level 0: SMT (1 thread per core); level 1: core (all vCPUs); then invalid.
                switch e.index {
                case 0: e.eax = 0; e.ebx = 1; e.ecx = 0 | (1 << 8)
                case 1: e.eax = coreBits; e.ebx = count; e.ecx = 1 | (2 << 8)
                default: e.eax = 0; e.ebx = 0; e.ecx = e.index
                }
                e.edx = apicID
            case 0x8000_0008:
                // AMD: ECX[7:0] = number of cores - 1, ECX[15:12] = APIC id bits for the core.
                e.ecx = (e.ecx & ~0xF0FF) | (coreBits << 12) | ((count - 1) & 0xFF)
            case 0x8000_001E:
                // AMD: extended APIC id; EBX[7:0] core id, [15:8] threads per core - 1; ECX node 0.
                e.eax = apicID
                e.ebx = (e.ebx & ~0xFFFF) | (apicID & 0xFF)
                e.ecx = 0
            default:
                break
            }
            for f in policy.hidden where f.leaf == e.function && (f.subleaf == e.index || e.flags & UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX) == 0 && f.subleaf == 0) {
                let mask = ~(UInt32(1) << f.bit)
                switch f.register {
                case .eax: e.eax &= mask
                case .ebx: e.ebx &= mask
                case .ecx: e.ecx &= mask
                case .edx: e.edx &= mask
                }
            }
            return e
        }
    }

    /// Leaf 1 EAX and EDX (signature and features), for the MP table.
    public static func signature(_ supported: [kvm_cpuid_entry2]) -> (eax: UInt32, edx: UInt32) {
        let leaf1 = supported.first { $0.function == 1 }
        return (leaf1?.eax ?? 0, leaf1?.edx ?? 0)
    }
}
