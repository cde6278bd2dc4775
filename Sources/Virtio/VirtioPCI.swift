// VirtioPCI.swift: the modern virtio-pci transport (virtio 1.2 §4.1).
//
// A virtio device appears as PCI function 1AF4:1040+type (revision 1:
// modern only). Its registers live in one 64-bit memory BAR, found through
// vendor-specific PCI capabilities (§4.1.4):
//
//   BAR 0 offset  0x0000  common configuration (§4.1.4.3): feature words,
//                         device status, queue select and the selected
//                         queue's size, MSI-X vector, enable and addresses
//                 0x0800  MSI-X table (one vector for config changes, one per queue)
//                 0x0C00  MSI-X pending bits
//                 0x1000  ISR status (§4.1.4.5): read-to-clear
//                 0x2000  the device's own configuration (§5.x.4)
//                 0x3000  notifications (§4.1.4.4): queue q at 0x3000 + q * 4
//
// A driver's write to a queue's notify address is caught by an ioeventfd
// (registered by the machine when the BAR is mapped), so it costs no exit
// to userspace: the I/O thread calls `notify(queue:)`. Used buffers are
// signalled through the queue's MSI-X vector (an irqfd in the machine).
//
// Feature negotiation, the queue registers' rules, DRIVER_OK and reset are
// VirtioTransportCore's (TransportCore.swift), shared with virtio-mmio; this
// file decodes the PCI layout and owns the MSI-X vectors and the ISR.
//
// Threading: one lock (`state`) serialises the transport and every call
// into the device model, from vCPU threads (register accesses) and the I/O
// thread (notifications). Interrupt delivery uses a separate small object
// with its own lock, so a device can signal while the transport lock is held.

import Devices
import Memory
import PCI
import Synchronization
import VirtioQueue

/// A virtio device on PCI.
public final class VirtioPCIDevice: PCIDevice, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `device` is touched only under `state`'s lock;
    // `barDevice` is set once at the end of init, before the object is shared.
    public let name: String
    public let configuration: PCIConfiguration
    /// The MSI-X table (for the machine's interrupt routing).
    public let msix: MSIXTable

    // BAR 0 layout.
    public static let barSize: UInt64 = 0x4000
    static let commonOffset: UInt64 = 0x0000, commonLength: UInt64 = 0x40
    static let msixTableOffset: UInt64 = 0x0800
    static let msixPBAOffset: UInt64 = 0x0C00
    static let isrOffset: UInt64 = 0x1000
    static let deviceOffset: UInt64 = 0x2000
    public static let notifyOffset: UInt64 = 0x3000
    /// notify_off_multiplier: queue q's notify address is notifyOffset + q * this.
    public static let notifyMultiplier: UInt64 = 4
    /// "No vector" for config_msix_vector and queue_msix_vector (§4.1.4.3).
    static let noVector: UInt16 = 0xFFFF

    // virtio_pci_cap cfg_type values (§4.1.4).
    static let capCommon: UInt8 = 1, capNotify: UInt8 = 2, capISR: UInt8 = 3, capDevice: UInt8 = 4

    private let device: any VirtioDevice
    private let memory: GuestMemory
    private let signals: VirtioInterrupt
    private let state: Mutex<TransportState>
    private let queueCount: Int

    struct TransportState {
        /// Features, status, queue select and the queues' registers (shared with virtio-mmio).
        var core: VirtioTransportCore
        var configVector: UInt16 = VirtioPCIDevice.noVector
        /// queue_msix_vector per queue.
        var queueVectors: [UInt16]

        init(maxSizes: [UInt16]) {
            core = VirtioTransportCore(maxSizes: maxSizes)
            queueVectors = [UInt16](repeating: VirtioPCIDevice.noVector, count: maxSizes.count)
        }
    }

    /// A transport for `device`, interrupting through an MSI-X table whose
    /// deliveries go to `router`.
    public init(name: String, device: any VirtioDevice, memory: GuestMemory, router: any MSIXRouter) throws(PCIError) {
        self.name = name
        self.device = device
        self.memory = memory
        queueCount = device.queueMaxSizes.count
        let vectors = queueCount + 1
        let table = try MSIXTable(name: "\(name) MSI-X", vectorCount: vectors, router: router)
        msix = table
        signals = VirtioInterrupt(table: table, queues: queueCount)

        var space = PCIConfigurationSpace(
            vendorID: 0x1AF4, deviceID: 0x1040 + UInt16(device.deviceType.rawValue),
            classCode: Self.classCode(device.deviceType), revisionID: 1,
            subsystemVendorID: 0x1AF4, subsystemID: 0x0040, interruptPin: 0)
        try space.setBAR(0, .memory64(size: Self.barSize, prefetchable: false))
        func cap(_ type: UInt8, _ offset: UInt64, _ length: UInt64, extra: [UInt8] = []) -> [UInt8] {
            // struct virtio_pci_cap after cap_vndr/cap_next/cap_len: cfg_type, bar, id, padding[2], offset, length.
            [type, 0, 0, 0, 0] + le(UInt64(offset), 4) + le(length, 4) + extra
        }
        _ = try space.addVendorSpecificCapability(cap(Self.capCommon, Self.commonOffset, Self.commonLength))
        _ = try space.addVendorSpecificCapability(cap(Self.capNotify, Self.notifyOffset, UInt64(max(queueCount, 1)) * Self.notifyMultiplier,
                                                      extra: le(Self.notifyMultiplier, 4)))
        _ = try space.addVendorSpecificCapability(cap(Self.capISR, Self.isrOffset, 4))
        _ = try space.addVendorSpecificCapability(cap(Self.capDevice, Self.deviceOffset, UInt64(max(device.configSize, 4))))
        _ = try space.addMSIXCapability(try MSIXCapability(vectorCount: vectors, tableBAR: 0, tableOffset: UInt32(Self.msixTableOffset),
                                                           pbaBAR: 0, pbaOffset: UInt32(Self.msixPBAOffset)))
        configuration = try PCIConfiguration(space, msix: table)
        state = Mutex(TransportState(maxSizes: device.queueMaxSizes))
        barDevice = makeBarDevice()
    }

    static func classCode(_ type: VirtioDeviceType) -> PCIClassCode {
        switch type {
        case .block: return PCIClassCode(baseClass: 0x01, subclass: 0x80)   // mass storage, other
        case .net: return PCIClassCode(baseClass: 0x02, subclass: 0x00)     // Ethernet
        default: return PCIClassCode(baseClass: 0xFF, subclass: 0x00)
        }
    }

    // MARK: BAR 0

    /// The bus device that answers BAR 0 (the machine maps it where the BAR points).
    public func barHandler(index: Int) -> (any BusDevice)? {
        guard index == 0 else { return nil }
        return barDevice
    }

    private var barDevice: PCIBarRegionMap? = nil

    private func makeBarDevice() -> PCIBarRegionMap? {
        try? PCIBarRegionMap(name: "\(name) BAR0", regions: [
            .init(offset: Self.commonOffset, length: Self.commonLength, device: Region(self, .common)),
            .init(offset: Self.msixTableOffset, length: msix.tableLength, device: msix),
            .init(offset: Self.msixPBAOffset, length: msix.pbaLength, device: msix.pendingBitArray),
            .init(offset: Self.isrOffset, length: 4, device: Region(self, .isr)),
            .init(offset: Self.deviceOffset, length: 0x1000, device: Region(self, .device)),
            .init(offset: Self.notifyOffset, length: 0x1000, device: Region(self, .notify)),
        ])
    }

    /// One register block of BAR 0, forwarding to the transport.
    final class Region: BusDevice, @unchecked Sendable {
        // SAFETY (@unchecked Sendable): holds only immutable references.
        enum Kind { case common, isr, device, notify }
        unowned let transport: VirtioPCIDevice
        let kind: Kind
        var name: String { "\(transport.name) \(kind)" }
        init(_ t: VirtioPCIDevice, _ k: Kind) { transport = t; kind = k }
        func read(offset: UInt64, size: Int) -> UInt64 { transport.read(kind, offset: offset, size: size) }
        func write(offset: UInt64, size: Int, value: UInt64) { transport.write(kind, offset: offset, size: size, value: value) }
    }

    func read(_ kind: Region.Kind, offset: UInt64, size: Int) -> UInt64 {
        switch kind {
        case .common: return state.withLock { readCommon(&$0, offset: Int(offset), size: size) }
        case .isr: return UInt64(signals.takeISR())
        case .device: return state.withLock { _ in device.readConfig(offset: Int(offset), size: size) }
        case .notify: return 0
        }
    }

    func write(_ kind: Region.Kind, offset: UInt64, size: Int, value: UInt64) {
        switch kind {
        case .common: state.withLock { writeCommon(&$0, offset: Int(offset), size: size, value: value) }
        case .isr: break
        case .device: state.withLock { _ in device.writeConfig(offset: Int(offset), size: size, value: value) }
        case .notify:
            // Reaches userspace only when no ioeventfd caught it (before the BAR was mapped).
            let queue = Int(offset / Self.notifyMultiplier)
            notify(queue: queue)
        }
    }

    /// A driver notified `queue` (from the I/O thread's ioeventfd, or a notify-region write).
    public func notify(queue: Int) {
        state.withLock { s in
            guard s.core.acceptsNotification(queue: queue) else { return }
            s.core.trace?("notify queue \(queue)")
            device.queueNotified(queue)
        }
    }

    /// Turns on `--trace virtio` for this device.
    public func setTrace(_ trace: VirtioTrace) { state.withLock { $0.core.trace = trace } }

    /// The device has work for `queue` that no driver notification announced
    /// (frames on its tap, requests finished on the I/O pool); `why` is for the trace.
    public func wake(queue: Int, why: String) {
        state.withLock { s in
            guard s.core.acceptsNotification(queue: queue) else { return }
            s.core.trace?("queue \(queue): \(why)")
            device.queueNotified(queue)
        }
    }

    // MARK: Common configuration (§4.1.4.3)

    private func readCommon(_ s: inout TransportState, offset: Int, size: Int) -> UInt64 {
        let q = s.core.selectedQueue
        let value: UInt64
        switch (offset, size) {
        case (0x00, 4): value = UInt64(s.core.deviceFeatureSelect)
        case (0x04, 4): value = UInt64(s.core.deviceFeatureWord(of: device))
        case (0x08, 4): value = UInt64(s.core.driverFeatureSelect)
        case (0x0C, 4): value = UInt64(s.core.driverFeatureWord)
        case (0x10, 2): value = UInt64(s.configVector)
        case (0x12, 2): value = UInt64(s.core.queues.count)
        case (0x14, 1): value = UInt64(s.core.status | (signals.needsReset ? DeviceStatus.deviceNeedsReset.rawValue : 0))
        case (0x15, 1): value = UInt64(s.core.configGeneration)
        case (0x16, 2): value = UInt64(s.core.queueSelect)
        case (0x18, 2): value = UInt64(q.map { s.core.queues[$0].size } ?? 0)
        case (0x1A, 2): value = UInt64(q.map { s.queueVectors[$0] } ?? Self.noVector)
        case (0x1C, 2): value = UInt64(q.map { s.core.queues[$0].enabled ? 1 : 0 } ?? 0)
        case (0x1E, 2): value = UInt64(q ?? 0)  // queue_notify_off: queue q notifies at q * multiplier
        case (0x20, 4), (0x24, 4), (0x28, 4), (0x2C, 4), (0x30, 4), (0x34, 4):
            guard q != nil else { return 0 }
            value = UInt64(s.core.queueAddressWord(Self.queuePart(offset), high: offset % 8 != 0))
        case (0x38, 2): value = UInt64(q ?? 0)  // queue_notify_data
        default: value = 0
        }
        return value
    }

    /// The ring address at common-configuration offset 0x20-0x37 (desc, driver, device; low then high word).
    private static func queuePart(_ offset: Int) -> VirtqueuePart {
        switch (offset - 0x20) / 8 {
        case 0: return .descriptorTable
        case 1: return .availRing
        default: return .usedRing
        }
    }

    private func writeCommon(_ s: inout TransportState, offset: Int, size: Int, value: UInt64) {
        let v32 = UInt32(truncatingIfNeeded: value), v16 = UInt16(truncatingIfNeeded: value)
        // Queue registers may only change before the queue is enabled (§4.1.4.3.2): VirtioTransportCore checks.
        switch (offset, size) {
        case (0x00, 4): s.core.deviceFeatureSelect = v32
        case (0x08, 4): s.core.driverFeatureSelect = v32
        case (0x0C, 4): s.core.writeDriverFeatureWord(v32)  // fixed after FEATURES_OK
        case (0x10, 2):
            s.configVector = v16 == Self.noVector || Int(v16) < msix.vectorCount ? v16 : Self.noVector
            signals.setConfigVector(s.configVector)
        case (0x14, 1): writeStatus(&s, UInt8(truncatingIfNeeded: value))
        case (0x16, 2): s.core.queueSelect = UInt32(v16)
        case (0x18, 2):
            // A power of two no larger than the maximum; anything else is ignored (§4.1.4.3.2).
            s.core.setQueueSize(UInt32(v16))
        case (0x1A, 2):
            guard let q = s.core.selectedQueue else { return }
            s.queueVectors[q] = v16 == Self.noVector || Int(v16) < msix.vectorCount ? v16 : Self.noVector
            signals.setQueueVector(q, s.queueVectors[q])
        case (0x1C, 2):
            guard v16 == 1 else { return }  // 0 is not a valid write (§4.1.4.3.2)
            s.core.enableSelectedQueue()
        case (0x20, 4), (0x24, 4), (0x28, 4), (0x2C, 4), (0x30, 4), (0x34, 4):
            s.core.setQueueAddressWord(Self.queuePart(offset), high: offset % 8 != 0, to: v32)
        default: break  // read-only registers and wrong widths
        }
    }

    /// device_status: the shared rules (0 resets; FEATURES_OK is kept only for
    /// an acceptable feature set; DRIVER_OK starts the device: §3.1.1, §2.1.2),
    /// then what is PCI's own: a reset also forgets the MSI-X vectors and the
    /// ISR; a failed DRIVER_OK is reported through the signals.
    private func writeStatus(_ s: inout TransportState, _ value: UInt8) {
        switch s.core.writeStatus(value, device: device, memory: memory, interrupt: signals) {
        case .stored: break
        case .reset:
            s.configVector = Self.noVector
            s.queueVectors = [UInt16](repeating: Self.noVector, count: s.queueVectors.count)
            signals.reset()
        case .activationFailed:
            signals.signalNeedsReset()
        }
    }
}

/// Interrupts for one virtio-pci device: each queue's and the config
/// vector, and the ISR register for drivers without MSI-X.
final class VirtioInterrupt: InterruptSignal {
    private let table: MSIXTable
    private let state: Mutex<(queueVectors: [UInt16], configVector: UInt16, isr: UInt8)>
    private let needsResetFlag = Atomic<Bool>(false)

    init(table: MSIXTable, queues: Int) {
        self.table = table
        state = Mutex(([UInt16](repeating: VirtioPCIDevice.noVector, count: queues), VirtioPCIDevice.noVector, 0))
    }

    /// DEVICE_NEEDS_RESET, as the device reported it (cleared by a reset).
    var needsReset: Bool { needsResetFlag.load(ordering: .acquiring) }

    func signalNeedsReset() {
        needsResetFlag.store(true, ordering: .releasing)
        signalConfigChange()
    }

    func setQueueVector(_ q: Int, _ v: UInt16) { state.withLock { if q < $0.queueVectors.count { $0.queueVectors[q] = v } } }
    func setConfigVector(_ v: UInt16) { state.withLock { $0.configVector = v } }
    func reset() {
        state.withLock { $0 = ([UInt16](repeating: VirtioPCIDevice.noVector, count: $0.queueVectors.count), VirtioPCIDevice.noVector, 0) }
        needsResetFlag.store(false, ordering: .releasing)
    }

    /// Reading ISR returns its bits and clears them (§4.1.4.5).
    func takeISR() -> UInt8 { state.withLock { s in defer { s.isr = 0 }; return s.isr } }

    func signalUsedBuffer(queueIndex: Int) {
        let vector = state.withLock { s -> UInt16 in
            s.isr |= 1
            return queueIndex < s.queueVectors.count ? s.queueVectors[queueIndex] : VirtioPCIDevice.noVector
        }
        if vector != VirtioPCIDevice.noVector { _ = table.trigger(vector: Int(vector)) }
    }

    func signalConfigChange() {
        let vector = state.withLock { s -> UInt16 in
            s.isr |= 2
            return s.configVector
        }
        if vector != VirtioPCIDevice.noVector { _ = table.trigger(vector: Int(vector)) }
    }
}

private func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
