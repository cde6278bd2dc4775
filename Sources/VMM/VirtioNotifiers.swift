// VirtioNotifiers.swift: queue notifications that never exit to userspace.
//
// A virtio-pci driver notifies queue q by writing to BAR 0 + notify offset
// + q * multiplier. For each queue skvm registers an ioeventfd on that
// address (KVM_IOEVENTFD): KVM matches the write inside the kernel, signals
// the eventfd and resumes the guest at once. The I/O thread polls the
// eventfds and runs the device. When the guest moves the BAR (or turns
// memory decoding off), the PCI host bridge reports it here and the
// ioeventfds follow.
//
// A virtio-mmio device has one QueueNotify register for all its queues, and
// the driver writes the queue index there (virtio 1.2 §4.2.3.3). Its window
// never moves, so its ioeventfds are registered once: one per queue on
// base + 0x050, 4 bytes, with the index as datamatch.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM
import PCI
import Synchronization
import Virtio

/// The notify ioeventfds of every virtio-pci function (keyed by PCI slot) and virtio-mmio device.
final class VirtioNotifiers: PCIBarListener {
    struct Function {
        let device: VirtioPCIDevice
        let eventFDs: [Int32]
        var mappedAt: UInt64? = nil
    }

    private let vm: VirtualMachine
    private let diagnostics: Diagnostics
    private let functions = Mutex<[Int: Function]>([:])
    /// virtio-mmio devices, in window order, with their eventfds (registered for good).
    private let mmioDevices = Mutex<[(device: VirtioMMIODevice, eventFDs: [Int32])]>([])

    init(vm: VirtualMachine, diagnostics: Diagnostics) {
        self.vm = vm
        self.diagnostics = diagnostics
    }

    deinit {
        functions.withLock { for f in $0.values { for fd in f.eventFDs { close(fd) } } }
        mmioDevices.withLock { for d in $0 { for fd in d.eventFDs { close(fd) } } }
    }

    /// Adds `device` (in `slot`) with one eventfd per queue. Call before registering it on the bridge.
    func add(_ device: VirtioPCIDevice, slot: Int, queues: Int) throws(KVMError) {
        let fds = try Self.makeEventFDs(queues)
        functions.withLock { $0[slot] = Function(device: device, eventFDs: fds) }
    }

    /// Adds a virtio-mmio `device` whose window is at `base`: one eventfd per
    /// queue, registered now on QueueNotify with the queue index as datamatch.
    func add(_ device: VirtioMMIODevice, base: UInt64) throws(KVMError) {
        let fds = try Self.makeEventFDs(device.queueCount)
        let address = base + VirtioMMIODevice.queueNotifyOffset
        for (q, fd) in fds.enumerated() {
            do {
                try vm.registerIOEventFD(fd, address: address, length: 4, pio: false, datamatch: UInt64(q))
            } catch {
                for (i, f) in fds.enumerated() {
                    if i < q { try? vm.unregisterIOEventFD(f, address: address, length: 4, pio: false, datamatch: UInt64(i)) }
                    close(f)
                }
                throw error
            }
        }
        mmioDevices.withLock { $0.append((device, fds)) }
    }

    private static func makeEventFDs(_ count: Int) throws(KVMError) -> [Int32] {
        var fds: [Int32] = []
        for _ in 0..<count {
            let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            guard fd >= 0 else {
                for f in fds { close(f) }
                throw KVMError(operation: "eventfd", errno: errno)
            }
            fds.append(fd)
        }
        return fds
    }

    /// What the I/O thread polls: each eventfd with the device and queue it
    /// stands for (PCI functions in slot order, then virtio-mmio devices).
    var pollTargets: [(eventFD: Int32, device: any QueueNotifiable, queue: Int)] {
        let pci = functions.withLock { fs in
            fs.keys.sorted().flatMap { slot in
                fs[slot].map { f in f.eventFDs.enumerated().map { (eventFD: $0.element, device: f.device as any QueueNotifiable, queue: $0.offset) } } ?? []
            }
        }
        let mmio = mmioDevices.withLock { ds in
            ds.flatMap { d in d.eventFDs.enumerated().map { (eventFD: $0.element, device: d.device as any QueueNotifiable, queue: $0.offset) } }
        }
        return pci + mmio
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
