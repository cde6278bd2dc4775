// VirtualMachine.swift: a VM fd (api.rst §4, "vm ioctls").
//
// A VM starts with no memory and no vCPUs. The VMM adds memory slots (guest
// physical ranges backed by its own mmapped memory), the in-kernel interrupt
// controllers, and vCPUs.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Memory

/// One virtual machine.
public final class VirtualMachine: Sendable {
    private let fd: OwnedFileDescriptor
    private let runSize: Int

    /// The VM fd, for the ioctls defined in other files of this module.
    var rawFileDescriptor: Int32 { fd.rawValue }

    init(fd: OwnedFileDescriptor, runSize: Int) {
        self.fd = fd
        self.runSize = runSize
    }

    /// KVM_SET_USER_MEMORY_REGION: backs guest RAM `region` with its host mapping
    /// in memory slot `slot`. Taking a `GuestRegion` (which only `GuestMemory`
    /// creates, from its own live mappings) makes kvm-ioctls' unsafe contract
    /// ("the host range must stay mapped") a property of the type.
    public func setUserMemoryRegion(slot: UInt32, region: GuestRegion, memory: GuestMemory) throws(KVMError) {
        var r = kvm_userspace_memory_region(
            slot: slot, flags: 0, guest_phys_addr: region.range.start.rawValue,
            memory_size: region.range.length, userspace_addr: region.userspaceAddress)
        _ = try check("KVM_SET_USER_MEMORY_REGION", context: "slot \(slot) \(region.range)") {
            withExtendedLifetime(memory) { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_USER_MEMORY_REGION, &r) }
        }
    }

    /// KVM_SET_TSS_ADDR: three pages of guest-physical space that Intel VT-x
    /// needs for real-mode emulation. Must not overlap RAM or devices.
    public func setTSSAddress(_ address: GuestAddress) throws(KVMError) {
        _ = try check("KVM_SET_TSS_ADDR") { ckvm_ioctl(fd.rawValue, CKVM_SET_TSS_ADDR, UInt(address.rawValue)) }
    }

    /// KVM_SET_IDENTITY_MAP_ADDR: one page for VT-x's real-mode identity page table.
    public func setIdentityMapAddress(_ address: GuestAddress) throws(KVMError) {
        var a = address.rawValue
        _ = try check("KVM_SET_IDENTITY_MAP_ADDR") { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_IDENTITY_MAP_ADDR, &a) }
    }

    /// KVM_CREATE_IRQCHIP: the in-kernel PIC pair, IOAPIC and per-vCPU LAPICs.
    public func createIRQChip() throws(KVMError) {
        _ = try check("KVM_CREATE_IRQCHIP") { ckvm_ioctl(fd.rawValue, CKVM_CREATE_IRQCHIP, 0) }
    }

    /// KVM_CREATE_PIT2: the in-kernel i8254 timer (ports 0x40-0x43, and 0x61).
    public func createPIT2() throws(KVMError) {
        var config = kvm_pit_config()
        _ = try check("KVM_CREATE_PIT2") { ckvm_ioctl_ptr(fd.rawValue, CKVM_CREATE_PIT2, &config) }
    }

    /// KVM_IRQ_LINE: drives interrupt line `irq` of the in-kernel PIC/IOAPIC high or low.
    public func setIRQLine(_ irq: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = irq
        line.level = level ? 1 : 0
        _ = try check("KVM_IRQ_LINE", context: "IRQ \(irq)") { ckvm_ioctl_ptr(fd.rawValue, CKVM_IRQ_LINE, &line) }
    }

    /// KVM_IOEVENTFD: guest writes of `length` bytes (1, 2, 4 or 8; 0 for any
    /// width, MMIO only) to `address` in the port (`pio`) or MMIO space signal
    /// `eventFD` inside the kernel instead of exiting to userspace. With
    /// `datamatch`, only writes of that value do (api.rst, "KVM_IOEVENTFD").
    public func registerIOEventFD(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64? = nil) throws(KVMError) {
        try ioeventfd(eventFD, address: address, length: length, pio: pio, datamatch: datamatch, deassign: false)
    }

    /// KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN: removes a registration
    /// made with the same address, length, eventfd and datamatch.
    public func unregisterIOEventFD(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64? = nil) throws(KVMError) {
        try ioeventfd(eventFD, address: address, length: length, pio: pio, datamatch: datamatch, deassign: true)
    }

    private func ioeventfd(_ eventFD: Int32, address: UInt64, length: UInt32, pio: Bool, datamatch: UInt64?, deassign: Bool) throws(KVMError) {
        var e = kvm_ioeventfd()
        e.addr = address
        e.len = length
        e.fd = eventFD
        e.datamatch = datamatch ?? 0
        e.flags = (deassign ? UInt32(1 << kvm_ioeventfd_flag_nr_deassign) : 0)
            | (pio ? UInt32(1 << kvm_ioeventfd_flag_nr_pio) : 0)
            | (datamatch != nil ? UInt32(1 << kvm_ioeventfd_flag_nr_datamatch) : 0)
        let what = "\(deassign ? "deassign " : "")\(pio ? "port" : "MMIO") 0x\(String(address, radix: 16))"
        _ = try check("KVM_IOEVENTFD", context: what) { ckvm_ioctl_ptr(fd.rawValue, CKVM_IOEVENTFD, &e) }
    }

    /// Programs the in-kernel 8259 pair as a PC BIOS leaves it: master vectors
    /// from 0x08, slave from 0x70, every line masked (KVM_GET/SET_IRQCHIP on
    /// chips 0 and 1). Kernels that use the PIC program it themselves; test
    /// kernels written for QEMU (whose SeaBIOS did this) may not.
    public func initializePICsAsBIOS() throws(KVMError) {
        for (chip, base) in [(UInt32(KVM_IRQCHIP_PIC_MASTER), UInt8(0x08)), (UInt32(KVM_IRQCHIP_PIC_SLAVE), UInt8(0x70))] {
            var state = kvm_irqchip()
            state.chip_id = chip
            _ = try check("KVM_GET_IRQCHIP", context: "PIC \(chip)") { ckvm_ioctl_ptr(fd.rawValue, CKVM_GET_IRQCHIP, &state) }
            state.chip.pic.irq_base = base
            state.chip.pic.imr = 0xFF
            state.chip.pic.init4 = 1       // ICW4 was given (8086 mode)
            state.chip.pic.init_state = 0  // initialisation finished
            _ = try check("KVM_SET_IRQCHIP", context: "PIC \(chip)") { ckvm_ioctl_ptr(fd.rawValue, CKVM_SET_IRQCHIP, &state) }
        }
    }

    /// KVM_CHECK_EXTENSION on the VM fd (some answers, like max vCPUs, are per VM).
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, ckvm_ioctl(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// KVM_CREATE_VCPU: vCPU `id` (its initial APIC id), with its `kvm_run` page mapped.
    public func createVCPU(id: UInt32) throws(KVMError) -> VCPU {
        let vcpufd = try check("KVM_CREATE_VCPU", context: "vCPU \(id)") {
            ckvm_ioctl(fd.rawValue, CKVM_CREATE_VCPU, UInt(id))
        }
        let owned = OwnedFileDescriptor(vcpufd)
        let run = try RunPage(vcpuFD: vcpufd, size: runSize, vcpu: id)
        return VCPU(id: id, fd: owned, run: run)
    }
}
