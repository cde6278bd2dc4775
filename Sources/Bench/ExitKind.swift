// ExitKind.swift: the kinds of VM exit `skvm bench exits` measures.
//
// Each kind is a loop in guests/exit-bench whose body causes one exit of that
// kind per iteration (docs/benchmarking-exits.md explains what each exercises).
// Who handles it decides what it costs:
//   - skvm:      KVM returns to userspace; skvm's run loop and a device answer;
//   - ioeventfd: KVM matches the write against an ioeventfd and signals it in
//                the kernel, then re-enters the guest (no userspace exit);
//   - kernel:    KVM handles the instruction itself (cpuid, MSRs, hlt, hypercalls);
//   - none:      no exit at all (the loop's own cost, a sanity line).

/// One kind of exit.
public enum ExitKind: String, CaseIterable, Sendable, Codable {
    case noop
    case pioOut = "pio-out"
    case pioIn = "pio-in"
    case mmioWrite = "mmio-write"
    case mmioRead = "mmio-read"
    case ioeventfdPIO = "ioeventfd-pio"
    case ioeventfdPIODatamatch = "ioeventfd-pio-datamatch"
    case ioeventfdMMIO = "ioeventfd-mmio"
    case cpuid
    case rdmsr
    case wrmsr
    case hlt
    case vmcall

    public enum Handler: String, Sendable, Codable {
        case skvm, ioeventfd, kernel, none
    }

    /// Who handles the exit.
    public var handler: Handler {
        switch self {
        case .noop: return .none
        case .pioOut, .pioIn, .mmioWrite, .mmioRead: return .skvm
        case .ioeventfdPIO, .ioeventfdPIODatamatch, .ioeventfdMMIO: return .ioeventfd
        case .cpuid, .rdmsr, .wrmsr, .hlt, .vmcall: return .kernel
        }
    }

    /// Privilege levels the guest can run the kind at: rdmsr, wrmsr and hlt are
    /// privileged instructions (#GP at CPL3).
    public var cpls: [Int] {
        switch self {
        case .rdmsr, .wrmsr, .hlt: return [0]
        default: return [0, 3]
        }
    }

    /// The instruction in the loop, for tables and docs.
    public var instruction: String {
        switch self {
        case .noop: return "nop"
        case .pioOut: return "out 0x5f0, al"
        case .pioIn: return "in al, 0x5f0"
        case .mmioWrite: return "mov [0xd0000000], eax"
        case .mmioRead: return "mov eax, [0xd0000000]"
        case .ioeventfdPIO: return "out 0x5f4, al"
        case .ioeventfdPIODatamatch: return "out 0x5f6, ax (0x5a5a)"
        case .ioeventfdMMIO: return "mov [0xd0001000], eax"
        case .cpuid: return "cpuid (leaf 0)"
        case .rdmsr: return "rdmsr IA32_PAT"
        case .wrmsr: return "wrmsr IA32_PAT"
        case .hlt: return "sti; hlt (APIC timer)"
        case .vmcall: return "vmcall/vmmcall"
        }
    }

    /// Default iterations per run: a hlt waits for a timer tick (KVM's minimum
    /// period is 200 µs), so it gets fewer.
    public var defaultIterations: Int { self == .hlt ? 2_000 : 20_000 }

    /// Why this kind cannot run here at `cpl`, or nil.
    public func skipReason(cpl: Int, onPVM: Bool) -> String? {
        if self == .vmcall && cpl == 0 && onPVM {
            return "on PVM hosts a hypercall at CPL0 spins inside KVM and never returns (measured; QEMU hangs the same way)"
        }
        return nil
    }
}

/// The guest's benchmark ports and addresses (guests/README.md, "exit-bench").
public enum BenchPorts {
    /// Userspace PIO target (reads return 0).
    public static let target: UInt16 = 0x5F0
    /// ioeventfd targets: 1 byte, any value; 2 bytes, datamatch 0x5A5A.
    public static let ioeventfd: UInt16 = 0x5F4
    public static let ioeventfdDatamatch: UInt16 = 0x5F6
    public static let datamatchValue: UInt64 = 0x5A5A
    /// Report ports: a batch's cycles (low half, then high half), the total iterations.
    public static let sampleLow: UInt16 = 0x5F8
    public static let sampleHigh: UInt16 = 0x5FC
    public static let total: UInt16 = 0x5E8
    /// The block of ports the benchmark device answers.
    public static let deviceBase: UInt16 = 0x5E0
    public static let deviceLength: UInt64 = 0x20
    /// Userspace MMIO target page, and the ioeventfd MMIO address after it.
    public static let targetMMIO: UInt64 = 0xD000_0000
    public static let ioeventfdMMIO: UInt64 = 0xD000_1000
}
