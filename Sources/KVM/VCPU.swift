// VCPU.swift: a vCPU fd (api.rst §4, "vcpu ioctls").
//
// A vCPU is a register file plus a `kvm_run` page. The VMM sets the registers
// once for boot, then calls KVM_RUN in a loop from one thread; each return is
// an "exit" the VMM handles before running again.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// One virtual CPU.
public final class VCPU: Sendable {
    /// The vCPU id given to KVM_CREATE_VCPU (also its initial APIC id).
    public let id: UInt32
    /// The shared `kvm_run` page.
    public let runPage: RunPage
    private let fd: OwnedFileDescriptor

    init(id: UInt32, fd: OwnedFileDescriptor, run: RunPage) {
        self.id = id
        self.fd = fd
        self.runPage = run
    }

    private var context: String { "vCPU \(id)" }

    /// KVM_RUN: runs the guest until the next exit. Returns false when the call
    /// was interrupted by a signal or `immediate_exit` (EINTR) or asked to retry
    /// (EAGAIN): the caller checks why it was woken and decides.
    @inline(__always)
    public func run() throws(KVMError) -> Bool {
        let r = ckvm_ioctl(fd.rawValue, CKVM_RUN, 0)
        if r >= 0 { return true }
        if r == -EINTR || r == -EAGAIN { return false }
        throw KVMError(operation: "KVM_RUN", errno: -r, context: context)
    }

    /// KVM_GET_TSC_KHZ: the guest's TSC frequency, to turn guest `rdtsc` deltas into time.
    public func tscKHz() throws(KVMError) -> UInt64 {
        UInt64(try check("KVM_GET_TSC_KHZ", context: context) { ckvm_ioctl(fd.rawValue, CKVM_GET_TSC_KHZ, 0) })
    }

    /// The raw vCPU fd, for a C run loop (the benchmark's floor). The fd stays
    /// owned by this object: never close it.
    public var rawFileDescriptor: Int32 { fd.rawValue }

    /// KVM_GET_REGS.
    public func registers() throws(KVMError) -> kvm_regs {
        var regs = kvm_regs()
        _ = try check("KVM_GET_REGS", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_REGS, &regs) }
        return regs
    }

    /// KVM_SET_REGS.
    public func setRegisters(_ regs: kvm_regs) throws(KVMError) {
        var regs = regs
        _ = try check("KVM_SET_REGS", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_REGS, &regs) }
    }

    /// KVM_GET_SREGS: segment, control and descriptor-table registers.
    public func specialRegisters() throws(KVMError) -> kvm_sregs {
        var sregs = kvm_sregs()
        _ = try check("KVM_GET_SREGS", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_SREGS, &sregs) }
        return sregs
    }

    /// KVM_SET_SREGS.
    public func setSpecialRegisters(_ sregs: kvm_sregs) throws(KVMError) {
        var sregs = sregs
        _ = try check("KVM_SET_SREGS", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_SREGS, &sregs) }
    }

    /// KVM_GET_FPU.
    public func fpu() throws(KVMError) -> kvm_fpu {
        var f = kvm_fpu()
        _ = try check("KVM_GET_FPU", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_FPU, &f) }
        return f
    }

    /// KVM_SET_FPU.
    public func setFPU(_ f: kvm_fpu) throws(KVMError) {
        var f = f
        _ = try check("KVM_SET_FPU", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_FPU, &f) }
    }

    /// KVM_SET_CPUID2: what CPUID reports inside the guest.
    public func setCPUID(_ entries: [kvm_cpuid_entry2]) throws(KVMError) {
        var block = FlexibleArray(entries)
        let fd = self.fd.rawValue
        _ = try check("KVM_SET_CPUID2", context: context) {
            block.withPointer { p in ckvm_ioctl_ptr(fd, CKVM_SET_CPUID2, p) }
        }
    }

    /// KVM_SET_MSRS: sets each (index, value). Fails unless KVM accepted all of them.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        var block = FlexibleArray(msrs.map { kvm_msr_entry(index: $0.index, reserved: 0, data: $0.value) })
        let fd = self.fd.rawValue
        let n = try check("KVM_SET_MSRS", context: context) {
            block.withPointer { p in ckvm_ioctl_ptr(fd, CKVM_SET_MSRS, p) }
        }
        // KVM_SET_MSRS returns how many it set, stopping at the first it rejects.
        if Int(n) < msrs.count {
            throw KVMError(operation: "KVM_SET_MSRS", errno: EINVAL,
                           context: "\(context): MSR \(String(msrs[Int(n)].index, radix: 16)) rejected")
        }
    }

    /// KVM_GET_MSRS: reads each index; nil for one KVM does not know.
    public func msrs(_ indices: [UInt32]) throws(KVMError) -> [UInt64?] {
        var block = FlexibleArray(indices.map { kvm_msr_entry(index: $0, reserved: 0, data: 0) })
        let fd = self.fd.rawValue
        let n = try check("KVM_GET_MSRS", context: context) {
            block.withPointer { p in ckvm_ioctl_ptr(fd, CKVM_GET_MSRS, p) }
        }
        return block.entries.enumerated().map { i, e in i < Int(n) ? e.data : nil }
    }

    /// KVM_GET_LAPIC: the local APIC's 1 KiB register page.
    public func lapic() throws(KVMError) -> kvm_lapic_state {
        var s = kvm_lapic_state()
        _ = try check("KVM_GET_LAPIC", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_LAPIC, &s) }
        return s
    }

    /// KVM_SET_LAPIC.
    public func setLAPIC(_ s: kvm_lapic_state) throws(KVMError) {
        var s = s
        _ = try check("KVM_SET_LAPIC", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_LAPIC, &s) }
    }

    /// KVM_SET_MP_STATE: e.g. KVM_MP_STATE_RUNNABLE or _INIT_RECEIVED (wait for SIPI).
    public func setMPState(_ state: UInt32) throws(KVMError) {
        var s = kvm_mp_state(mp_state: state)
        _ = try check("KVM_SET_MP_STATE", context: context) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_MP_STATE, &s) }
    }
}
