// RunPage.swift: the `struct kvm_run` page that KVM shares with each vCPU thread.
//
// After KVM_RUN returns, this page says why the guest stopped (exit_reason)
// and carries the details: for port I/O the port, size, direction and the data
// bytes (at `data_offset` inside this same page); for MMIO the address and up
// to 8 data bytes. The VMM answers by writing the data of an IN or MMIO read
// back here before the next KVM_RUN. This is the one file of the KVM module
// that does pointer arithmetic; every accessor reads a field in place (never
// `pointee` as a whole: that copies 2 KiB; SWIFT-ON-KVM.md, pitfall 4).

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// A vCPU's mmapped `kvm_run` structure.
public final class RunPage: @unchecked Sendable {
    // SAFETY: `run` points to `size` bytes mapped from the vCPU fd for the
    // lifetime of this object. Only the owning vCPU thread reads or writes it,
    // except `requestImmediateExit`, a single byte store the kernel reads on
    // entry to KVM_RUN (api.rst, "immediate_exit"), which is its intended use.
    private let run: UnsafeMutablePointer<kvm_run>
    private let size: Int

    init(vcpuFD: Int32, size: Int, vcpu: UInt32) throws(KVMError) {
        guard size >= MemoryLayout<kvm_run>.size else {
            throw KVMError(operation: "KVM_GET_VCPU_MMAP_SIZE", errno: EINVAL, context: "size \(size) is smaller than kvm_run")
        }
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFD, 0)
        guard let p, p != MAP_FAILED else {
            throw KVMError(operation: "mmap(kvm_run)", errno: errno, context: "vCPU \(vcpu)")
        }
        self.run = p.bindMemory(to: kvm_run.self, capacity: 1)
        self.size = size
    }

    deinit { munmap(run, size) }

    /// Calls `body` with the raw `kvm_run` pointer, for a C run loop (the
    /// benchmark's floor). Valid only during the call.
    public func withUnsafeRunPointer<R>(_ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawPointer(run))
    }

    // MARK: Common fields

    /// Why KVM_RUN returned (one of KVM_EXIT_*).
    @inline(__always) public var exitReason: UInt32 { run.pointee.exit_reason }

    /// Makes the next (or current) KVM_RUN return at once with EINTR.
    @inline(__always) public func requestImmediateExit(_ on: Bool = true) { run.pointee.immediate_exit = on ? 1 : 0 }

    // MARK: KVM_EXIT_IO

    /// KVM_EXIT_IO_IN (0) or KVM_EXIT_IO_OUT (1).
    @inline(__always) public var ioIsWrite: Bool { run.pointee.io.direction == UInt8(KVM_EXIT_IO_OUT) }
    @inline(__always) public var ioPort: UInt16 { run.pointee.io.port }
    /// Access width in bytes (1, 2 or 4).
    @inline(__always) public var ioSize: Int { Int(run.pointee.io.size) }
    /// Number of repetitions (>1 for `rep ins`/`rep outs`).
    @inline(__always) public var ioCount: Int { Int(run.pointee.io.count) }

    /// True when the `count` items of `size` bytes at `data_offset` lie inside
    /// the mapped page. KVM fills these fields, so a failure means a kernel bug,
    /// but a check is one compare and keeps every access below provably in bounds.
    @inline(__always) public var ioDataInBounds: Bool {
        let offset = Int(run.pointee.io.data_offset)
        let bytes = ioSize * ioCount
        return ioSize >= 1 && ioSize <= 4 && offset <= size && bytes <= size - offset
    }

    /// Item `index` of an OUT's data, zero-extended. Call only when `ioDataInBounds`.
    @inline(__always) public func ioData(_ index: Int) -> UInt32 {
        let base = UnsafeRawPointer(run).advanced(by: Int(run.pointee.io.data_offset) + index * ioSize)
        switch ioSize {
        case 1: return UInt32(base.load(as: UInt8.self))
        case 2: return UInt32(base.loadUnaligned(as: UInt16.self))
        default: return base.loadUnaligned(as: UInt32.self)
        }
    }

    /// Sets item `index` of an IN's data (truncated to the access width). Call only when `ioDataInBounds`.
    @inline(__always) public func setIOData(_ index: Int, _ value: UInt32) {
        let base = UnsafeMutableRawPointer(run).advanced(by: Int(run.pointee.io.data_offset) + index * ioSize)
        switch ioSize {
        case 1: base.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
        case 2: base.storeBytes(of: UInt16(truncatingIfNeeded: value), as: UInt16.self)
        default: base.storeBytes(of: value, as: UInt32.self)
        }
    }

    // MARK: KVM_EXIT_MMIO

    @inline(__always) public var mmioAddress: UInt64 { run.pointee.mmio.phys_addr }
    /// Access width in bytes (1 to 8).
    @inline(__always) public var mmioLength: Int { Int(run.pointee.mmio.len) }
    @inline(__always) public var mmioIsWrite: Bool { run.pointee.mmio.is_write != 0 }

    /// The bytes of an MMIO write as a little-endian integer (at most 8 bytes).
    @inline(__always) public var mmioData: UInt64 {
        let n = min(mmioLength, 8)
        return withUnsafeBytes(of: run.pointee.mmio.data) { raw in
            var v: UInt64 = 0
            for i in 0..<n { v |= UInt64(raw[i]) << (8 * UInt64(i)) }
            return v
        }
    }

    /// Answers an MMIO read with `value` (little-endian, `mmioLength` bytes).
    @inline(__always) public func setMMIOData(_ value: UInt64) {
        var bytes = value.littleEndian
        withUnsafeBytes(of: &bytes) { src in
            withUnsafeMutableBytes(of: &run.pointee.mmio.data) { dst in
                dst.copyMemory(from: src)
            }
        }
    }

    // MARK: Failures

    /// KVM_EXIT_FAIL_ENTRY: the hardware's reason code.
    public var failEntryReason: UInt64 { run.pointee.fail_entry.hardware_entry_failure_reason }
    /// KVM_EXIT_UNKNOWN: the hardware's exit reason.
    public var hardwareExitReason: UInt64 { run.pointee.hw.hardware_exit_reason }

    /// KVM_EXIT_INTERNAL_ERROR: suberror (KVM_INTERNAL_ERROR_*) and the extra data words.
    public var internalError: (suberror: UInt32, data: [UInt64]) {
        let e = run.pointee.internal
        let n = min(Int(e.ndata), 16)
        let data = withUnsafeBytes(of: e.data) { raw in
            (0..<n).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) }
        }
        return (e.suberror, data)
    }

    /// For an emulation failure that carries them, the instruction bytes KVM could not emulate.
    public var emulationFailureInstruction: [UInt8]? {
        let f = run.pointee.emulation_failure
        guard f.suberror == UInt32(KVM_INTERNAL_ERROR_EMULATION),
            f.ndata >= 3,  // flags + the 16 bytes of insn_size/insn_bytes
            f.flags & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0
        else { return nil }
        let count = min(Int(f.insn_size), 15)
        return withUnsafeBytes(of: f.insn_bytes) { Array($0.prefix(count)) }
    }

    /// KVM_EXIT_SYSTEM_EVENT: KVM_SYSTEM_EVENT_SHUTDOWN, _RESET, _CRASH, ...
    public var systemEventType: UInt32 { run.pointee.system_event.type }
}
