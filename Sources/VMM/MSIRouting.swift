// MSIRouting.swift: MSI-X vectors of PCI devices delivered through KVM.
//
// Each vector gets a GSI (from 24 up, past the IOAPIC's pins) and an
// eventfd bound to it with KVM_IRQFD once, at start. When the guest programs
// or unmasks a vector, the GSI's route becomes an MSI with the vector's
// address and data (KVM_SET_GSI_ROUTING; the call replaces the whole table,
// so the irqchip routes for the legacy pins are always included). Delivering
// a vector is then a write to its eventfd, from any thread, with no exit.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import PCI
import Synchronization

/// The VM's GSI routing table: the default irqchip routes plus every MSI route.
final class GSIRoutingTable: Sendable {
    private let vm: VirtualMachine
    private let diagnostics: Diagnostics
    private let state = Mutex<(nextGSI: UInt32, msi: [UInt32: GSIRoute])>((24, [:]))

    init(vm: VirtualMachine, diagnostics: Diagnostics) {
        self.vm = vm
        self.diagnostics = diagnostics
    }

    /// A fresh GSI for an MSI vector.
    func allocate() -> UInt32 {
        state.withLock { s in defer { s.nextGSI += 1 }; return s.nextGSI }
    }

    /// Sets (or, with nil, removes) the MSI route of `gsi` and reprograms KVM.
    func setRoute(gsi: UInt32, address: UInt64?, data: UInt32) {
        state.withLock { s in
            if let address { s.msi[gsi] = .msi(gsi: gsi, address: address, data: data) } else { s.msi[gsi] = nil }
            let routes = GSIRoute.defaultRoutes + s.msi.keys.sorted().compactMap { s.msi[$0] }
            do { try vm.setGSIRouting(routes) } catch { diagnostics.warn("MSI routing: \(error)") }
        }
    }
}

/// One PCI function's MSI-X vectors as GSIs and irqfds.
final class KVMMSIRouter: MSIXRouter {
    private let table: GSIRoutingTable
    private let vectors: [(gsi: UInt32, eventFD: Int32)]

    init(vectors count: Int, vm: VirtualMachine, table: GSIRoutingTable) throws(KVMError) {
        self.table = table
        var vectors: [(UInt32, Int32)] = []
        for _ in 0..<count {
            let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            guard fd >= 0 else { throw KVMError(operation: "eventfd", errno: errno) }
            let gsi = table.allocate()
            do { try vm.registerIRQFD(fd, gsi: gsi) } catch {
                close(fd)
                throw error
            }
            vectors.append((gsi, fd))
        }
        self.vectors = vectors
    }

    deinit { for v in vectors { close(v.eventFD) } }

    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) {
        guard vector >= 0, vector < vectors.count else { return }
        table.setRoute(gsi: vectors[vector].gsi, address: masked ? nil : address, data: data)
    }

    func trigger(vector: Int) {
        guard vector >= 0, vector < vectors.count else { return }
        var one: UInt64 = 1
        _ = write(vectors[vector].eventFD, &one, 8)
    }
}
