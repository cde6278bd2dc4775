// CPUState.swift: the register state a kernel is entered with, as plain values.
//
// Loaders decide *what* the CPU looks like at the kernel's first instruction
// (mode, segments, entry point, the registers a boot protocol passes
// arguments in); the VMM *applies* it with KVM_SET_SREGS/KVM_SET_REGS. Keeping
// the two apart (as kvm-hello-world and linux-loader do) lets the tests check
// the state with no /dev/kvm.

/// A segment register including its hidden (descriptor-cache) part, as KVM's
/// `struct kvm_segment` holds it (Intel SDM vol. 3, 3.4.5 "Segment Descriptors").
public struct SegmentState: Equatable, Sendable {
    public var selector: UInt16
    public var base: UInt64
    /// The limit in bytes (already scaled by the granularity bit).
    public var limit: UInt32
    /// Descriptor type: 0xB = execute/read code, accessed; 0x3 = read/write data, accessed.
    public var type: UInt8
    public var present: Bool = true
    public var dpl: UInt8 = 0
    /// D/B: 32-bit default operand size.
    public var db: Bool
    /// S: code or data (not a system descriptor).
    public var s: Bool = true
    /// L: 64-bit code.
    public var l: Bool = false
    /// G: limit counted in 4 KiB units.
    public var g: Bool

    public init(selector: UInt16, base: UInt64, limit: UInt32, type: UInt8, db: Bool, l: Bool = false, g: Bool) {
        self.selector = selector
        self.base = base
        self.limit = limit
        self.type = type
        self.db = db
        self.l = l
        self.g = g
    }

    /// A real-mode segment: base = selector * 16, 64 KiB limit.
    public static func realMode(selector: UInt16, code: Bool) -> SegmentState {
        SegmentState(selector: selector, base: UInt64(selector) << 4, limit: 0xFFFF, type: code ? 0xB : 0x3, db: false, g: false)
    }

    /// A flat 4 GiB 32-bit segment.
    public static func flat32(selector: UInt16, code: Bool) -> SegmentState {
        SegmentState(selector: selector, base: 0, limit: 0xFFFF_FFFF, type: code ? 0xB : 0x3, db: true, g: true)
    }

    /// The 8-byte GDT descriptor that loads into this state (SDM vol. 3, figure 3-8).
    public var descriptor: UInt64 {
        let rawLimit = g ? limit >> 12 : limit
        var d: UInt64 = UInt64(rawLimit & 0xFFFF)
        d |= (base & 0xFF_FFFF) << 16
        d |= UInt64(type & 0xF) << 40
        d |= (s ? 1 : 0) << 44
        d |= UInt64(dpl & 3) << 45
        d |= (present ? 1 : 0) << 47
        d |= UInt64((rawLimit >> 16) & 0xF) << 48
        d |= (l ? 1 : 0) << 53
        d |= (db ? 1 : 0) << 54
        d |= (g ? 1 : 0) << 55
        d |= ((base >> 24) & 0xFF) << 56
        return d
    }
}

/// A descriptor-table register (GDTR or IDTR).
public struct TableRegister: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64, limit: UInt16) {
        self.base = base
        self.limit = limit
    }
}

/// Everything the VMM sets on the boot vCPU before its first KVM_RUN.
public struct BootCPUState: Equatable, Sendable {
    public var rip: UInt64
    public var rsp: UInt64 = 0
    /// Bit 1 is reserved and always set; IF clear: interrupts off at entry.
    public var rflags: UInt64 = 0x2
    public var rax: UInt64 = 0
    public var rbx: UInt64 = 0
    public var rsi: UInt64 = 0
    public var cs: SegmentState
    /// DS, ES, FS, GS and SS all get this.
    public var data: SegmentState
    /// nil: leave KVM's reset value.
    public var gdt: TableRegister? = nil
    public var idt: TableRegister? = nil
    public var cr0: UInt64
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var efer: UInt64 = 0

    /// CR0.PE: protected mode.
    public static let cr0ProtectionEnable: UInt64 = 1 << 0
    /// CR0.ET: hard-wired to 1 on every CPU since the 486.
    public static let cr0ExtensionType: UInt64 = 1 << 4
    /// CR0.PG: paging.
    public static let cr0Paging: UInt64 = 1 << 31
    /// CR4.PAE: physical address extension, required for long mode.
    public static let cr4PAE: UInt64 = 1 << 5
    /// EFER.LME (long mode enable) and EFER.LMA (long mode active).
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    public init(rip: UInt64, cs: SegmentState, data: SegmentState, cr0: UInt64) {
        self.rip = rip
        self.cs = cs
        self.data = data
        self.cr0 = cr0
    }
}
