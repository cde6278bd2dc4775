// InterruptRouting.swift: where a GSI goes, and eventfds that raise one.
//
// With the in-kernel irqchip, KVM numbers interrupt sources as GSIs (global
// system interrupts). KVM_SET_GSI_ROUTING replaces the whole table that says,
// for each GSI, which irqchip pin it drives or which MSI message it sends
// (api.rst, "KVM_SET_GSI_ROUTING"); the default table maps GSIs 0-15 to both
// PICs and the IOAPIC and 16-23 to the IOAPIC, so a VMM that adds MSI routes
// must write those entries again. KVM_IRQFD ties an eventfd to a GSI: a
// write to the eventfd, from any thread, injects the interrupt inside the
// kernel, with no vCPU exit and no ioctl. virtio devices signal used buffers
// this way.

import CKVM

/// One entry of the GSI routing table.
public enum GSIRoute: Equatable, Sendable {
    /// Drive pin `pin` of an in-kernel irqchip (KVM_IRQCHIP_PIC_MASTER 0, _SLAVE 1, _IOAPIC 2).
    case irqchip(gsi: UInt32, chip: UInt32, pin: UInt32)
    /// Send an MSI: the message address and data a device's MSI-X table entry holds.
    case msi(gsi: UInt32, address: UInt64, data: UInt32)

    public var gsi: UInt32 {
        switch self {
        case .irqchip(let g, _, _), .msi(let g, _, _): return g
        }
    }

    /// KVM's default x86 table (arch/x86/kvm/irq_comm.c): GSIs 0-15 to the
    /// PIC pins (master 0-7, slave 8-15) and to IOAPIC pins 0-15; 16-23 to the IOAPIC.
    public static var defaultRoutes: [GSIRoute] {
        var routes: [GSIRoute] = []
        for gsi in UInt32(0)..<16 {
            routes.append(.irqchip(gsi: gsi, chip: gsi < 8 ? UInt32(KVM_IRQCHIP_PIC_MASTER) : UInt32(KVM_IRQCHIP_PIC_SLAVE), pin: gsi % 8))
        }
        for gsi in UInt32(0)..<24 { routes.append(.irqchip(gsi: gsi, chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: gsi)) }
        return routes
    }

    var entry: kvm_irq_routing_entry {
        var e = kvm_irq_routing_entry()
        e.gsi = gsi
        switch self {
        case .irqchip(_, let chip, let pin):
            e.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
            e.u.irqchip.irqchip = chip
            e.u.irqchip.pin = pin
        case .msi(_, let address, let data):
            e.type = UInt32(KVM_IRQ_ROUTING_MSI)
            e.u.msi.address_lo = UInt32(truncatingIfNeeded: address)
            e.u.msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
            e.u.msi.data = data
        }
        return e
    }
}

extension VirtualMachine {
    /// KVM_SET_GSI_ROUTING: replaces the whole routing table with `routes`.
    public func setGSIRouting(_ routes: [GSIRoute]) throws(KVMError) {
        var block = FlexibleArray(routes.map(\.entry))
        let fd = rawFileDescriptor
        _ = try check("KVM_SET_GSI_ROUTING", context: "\(routes.count) routes") {
            block.withPointer { p in ckvm_ioctl_ptr(fd, CKVM_SET_GSI_ROUTING, p) }
        }
    }

    /// KVM_IRQFD: a write to `eventFD` raises `gsi` (edge: one interrupt per write).
    public func registerIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD)
        request.gsi = gsi
        let fd = rawFileDescriptor
        _ = try check("KVM_IRQFD", context: "GSI \(gsi)") { ckvm_ioctl_ptr(fd, CKVM_IRQFD, &request) }
    }

    /// KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN: `eventFD` no longer raises `gsi`.
    public func unregisterIRQFD(_ eventFD: Int32, gsi: UInt32) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD)
        request.gsi = gsi
        request.flags = UInt32(KVM_IRQFD_FLAG_DEASSIGN)
        let fd = rawFileDescriptor
        _ = try check("KVM_IRQFD", context: "deassign GSI \(gsi)") { ckvm_ioctl_ptr(fd, CKVM_IRQFD, &request) }
    }
}
