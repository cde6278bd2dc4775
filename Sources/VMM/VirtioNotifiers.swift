// VirtioNotifiers.swift: queue notifications that never exit to userspace.
//
// A virtio-pci driver notifies queue q by writing to BAR 0 + notify offset
// + q * multiplier. For each queue skvm registers an ioeventfd on that
// address (KVM_IOEVENTFD): KVM matches the write inside the kernel, signals
// the eventfd and resumes the guest at once. The I/O thread polls the
// eventfds and runs the device. When the guest moves the BAR (or turns
// memory decoding off), the PCI host bridge reports it here and the
// ioeventfds follow.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import PCI
import Synchronization
import Virtio

/// The notify ioeventfds of every virtio-pci function, keyed by PCI slot.
final class VirtioNotifiers: PCIBarListener {
    struct Function {
        let device: VirtioPCIDevice
        let eventFDs: [Int32]
        var mappedAt: UInt64? = nil
    }

    private let vm: VirtualMachine
    private let diagnostics: Diagnostics
    private let functions = Mutex<[Int: Function]>([:])

    init(vm: VirtualMachine, diagnostics: Diagnostics) {
        self.vm = vm
        self.diagnostics = diagnostics
    }

    deinit { functions.withLock { for f in $0.values { for fd in f.eventFDs { close(fd) } } } }

    /// Adds `device` (in `slot`) with one eventfd per queue. Call before registering it on the bridge.
    func add(_ device: VirtioPCIDevice, slot: Int, queues: Int) throws(KVMError) {
        var fds: [Int32] = []
        for _ in 0..<queues {
            let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            guard fd >= 0 else {
                for f in fds { close(f) }
                throw KVMError(operation: "eventfd", errno: errno)
            }
            fds.append(fd)
        }
        functions.withLock { $0[slot] = Function(device: device, eventFDs: fds) }
    }

    /// What the I/O thread polls: each eventfd with the device and queue it stands for.
    var pollTargets: [(eventFD: Int32, device: VirtioPCIDevice, queue: Int)] {
        functions.withLock { fs in
            fs.keys.sorted().flatMap { slot in fs[slot].map { f in f.eventFDs.enumerated().map { ($0.element, f.device, $0.offset) } } ?? [] }
        }
    }

    func barMoved(slot: Int, index: Int, from: PCIBarMapping?, to: PCIBarMapping?) {
        guard index == 0 else { return }
        functions.withLock { fs in
            guard var f = fs[slot] else { return }
            if let old = f.mappedAt {
                for (q, fd) in f.eventFDs.enumerated() {
                    try? vm.unregisterIOEventFD(fd, address: notifyAddress(old, q), length: 2, pio: false)
                }
                f.mappedAt = nil
            }
            if let to {
                do {
                    for (q, fd) in f.eventFDs.enumerated() {
                        try vm.registerIOEventFD(fd, address: notifyAddress(to.address, q), length: 2, pio: false)
                    }
                    f.mappedAt = to.address
                } catch {
                    // Notifications then arrive as MMIO exits, which the transport also handles.
                    diagnostics.warn("\(f.device.name): cannot register notify ioeventfds: \(error)")
                }
            }
            fs[slot] = f
        }
    }

    private func notifyAddress(_ bar: UInt64, _ queue: Int) -> UInt64 {
        bar + VirtioPCIDevice.notifyOffset + UInt64(queue) * VirtioPCIDevice.notifyMultiplier
    }
}
