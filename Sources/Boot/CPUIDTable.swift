// CPUIDTable.swift: what the CPUID instruction reports to each vCPU.
//
// KVM_GET_SUPPORTED_CPUID lists every leaf KVM can virtualise on this host;
// a VMM passes it to KVM_SET_CPUID2 after making it describe *this* vCPU:
// its APIC id (leaf 0x1 EBX[31:24], leaf 0xB/0x1F EDX: the x2APIC id).
// Without KVM_SET_CPUID2 a vCPU reports no long-mode support at all, and a
// 64-bit guest cannot even enable it (SWIFT-ON-KVM.md, pitfall 13).

import CKVM

/// Builds per-vCPU CPUID tables from KVM's supported list.
public enum CPUIDTable {
    /// The supported entries, patched for the vCPU whose APIC id is `apicID`.
    public static func forVCPU(supported: [kvm_cpuid_entry2], apicID: UInt32) -> [kvm_cpuid_entry2] {
        supported.map { entry in
            var e = entry
            switch e.function {
            case 0x1:
                e.ebx = (e.ebx & 0x00FF_FFFF) | ((apicID & 0xFF) << 24)
            case 0xB, 0x1F:
                e.edx = apicID
            default:
                break
            }
            return e
        }
    }
}
