// InterruptRoutingTests.swift: KVM accepts skvm's GSI routing tables and irqfds
// (the structures behind virtio's MSI-X interrupts), on a real VM.

import CKVM
import Foundation
import Glibc
import Testing
@testable import KVM

let kvmForTests: Bool = {
    let fd = open(ProcessInfo.processInfo.environment["SKVM_KVM_DEVICE"] ?? "/dev/kvm", O_RDWR)
    if fd >= 0 { close(fd) }
    return fd >= 0 || ProcessInfo.processInfo.environment["SKVM_REQUIRE_KVM"] == "1"
}()

@Suite("GSI routing and irqfd", .enabled(if: kvmForTests, "no usable /dev/kvm"))
struct InterruptRoutingTests {
    @Test("the default table has 40 entries: 16 PIC pins and 24 IOAPIC pins")
    func defaults() {
        let routes = GSIRoute.defaultRoutes
        #expect(routes.count == 40)
        #expect(routes[0] == .irqchip(gsi: 0, chip: UInt32(KVM_IRQCHIP_PIC_MASTER), pin: 0))
        #expect(routes[9] == .irqchip(gsi: 9, chip: UInt32(KVM_IRQCHIP_PIC_SLAVE), pin: 1))
        #expect(routes[39] == .irqchip(gsi: 23, chip: UInt32(KVM_IRQCHIP_IOAPIC), pin: 23))
        let msi = GSIRoute.msi(gsi: 24, address: 0x1_FEE0_1000, data: 0x4041).entry
        #expect(msi.type == UInt32(KVM_IRQ_ROUTING_MSI))
        #expect(msi.u.msi.address_lo == 0xFEE0_1000)
        #expect(msi.u.msi.address_hi == 1)
        #expect(msi.u.msi.data == 0x4041)
    }

    @Test("KVM takes the default table plus MSI routes, and irqfds on them")
    func onRealKVM() throws {
        let kvm = try KVMSystem(path: ProcessInfo.processInfo.environment["SKVM_KVM_DEVICE"] ?? "/dev/kvm")
        let vm = try kvm.createVM()
        try vm.createIRQChip()
        try vm.setGSIRouting(GSIRoute.defaultRoutes + [.msi(gsi: 24, address: 0xFEE0_0000, data: 0x41), .msi(gsi: 25, address: 0xFEE0_0000, data: 0x42)])
        let efd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        try #require(efd >= 0)
        defer { close(efd) }
        try vm.registerIRQFD(efd, gsi: 24)
        var one: UInt64 = 1
        #expect(write(efd, &one, 8) == 8)  // injects the MSI (no vCPU runs: it is simply pending)
        try vm.unregisterIRQFD(efd, gsi: 24)
        // Registering the same eventfd twice on one GSI is refused by KVM (EBUSY).
        try vm.registerIRQFD(efd, gsi: 25)
        #expect(throws: KVMError.self) { try vm.registerIRQFD(efd, gsi: 25) }
    }
}
