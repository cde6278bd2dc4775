// TransportCore.swift: what every virtio transport does the same way,
// whatever bus it sits on (virtio 1.2 §2.1 "Device Status Field", §2.2
// "Feature Bits", §2.4 "Device Reset", §3.1.1 "Driver Requirements: Device
// Initialization", and the queue registers common to §4.1.4.3 (virtio-pci's
// common configuration) and §4.2.2 (virtio-mmio's register block)).
//
// virtio-pci and virtio-mmio show the driver the same state through different
// register layouts: two 32-bit feature words picked by a select register, a
// queue select and the selected queue's size, enable bit and three ring
// addresses, and the device status. This struct is that state and every rule
// about it: feature words fixed once FEATURES_OK is set, FEATURES_OK refused
// for unoffered bits or without VERSION_1, a queue size that is a power of two
// no larger than the device's maximum, queue registers frozen once the queue
// is enabled, DRIVER_OK building and validating the Virtqueues and activating
// the device (DEVICE_NEEDS_RESET when that fails), and status 0 resetting it
// all. A transport decodes its own registers, keeps this struct inside its
// one lock, and handles only what is its own (MSI-X vectors, ISR, or
// InterruptStatus and a line).
//
// Threading: a plain value; the transport calls it only under its lock, and
// the `device` passed in is called from here under that same lock.

import Memory
import VirtioQueue

/// One queue's driver-written state.
struct TransportQueue {
    /// queue_enable (PCI) / QueueReady (MMIO).
    var enabled = false
    /// Size and ring addresses as written; validated only at DRIVER_OK.
    var configuration: QueueConfiguration

    var size: UInt16 { configuration.size }

    /// A queue as a reset leaves it: disabled, at its maximum size, rings at 0.
    init(maxSize: UInt16) {
        configuration = QueueConfiguration(size: maxSize, descriptorTable: GuestAddress(0), availRing: GuestAddress(0), usedRing: GuestAddress(0))
    }
}

/// The bus-independent state of a virtio transport and its rules.
struct VirtioTransportCore {
    /// The device's QueueNumMax per queue (constant, read once).
    let maxSizes: [UInt16]
    var deviceFeatureSelect: UInt32 = 0
    var driverFeatureSelect: UInt32 = 0
    /// The features the driver wrote (checked when it sets FEATURES_OK).
    var driverFeatures: FeatureSet = []
    var status: UInt8 = 0
    /// config_generation; bumped when DRIVER_OK fails.
    var configGeneration: UInt8 = 0
    /// queue_select / QueueSel (virtio-pci's is 16 bits wide, virtio-mmio's 32).
    var queueSelect: UInt32 = 0
    var queues: [TransportQueue]
    /// DRIVER_OK was accepted and the device activated.
    var active = false
    /// `--trace virtio` (kept across resets).
    var trace: VirtioTrace? = nil

    init(maxSizes: [UInt16]) {
        self.maxSizes = maxSizes
        queues = maxSizes.map { TransportQueue(maxSize: $0) }
    }

    /// The selected queue's index, or nil when the select names no queue.
    var selectedQueue: Int? { queueSelect < UInt32(queues.count) ? Int(queueSelect) : nil }

    /// Queue registers may only change before the queue is enabled (§4.1.4.3.2, §4.2.2.2).
    var selectedQueueWritable: Bool { selectedQueue.map { !queues[$0].enabled } ?? false }

    // MARK: Features (§2.2)

    /// The offered feature word picked by the device feature select (0 beyond word 1).
    func deviceFeatureWord(of device: any VirtioDevice) -> UInt32 { device.offeredFeatures.word(deviceFeatureSelect) }

    /// The driver feature word picked by the driver feature select.
    var driverFeatureWord: UInt32 { driverFeatures.word(driverFeatureSelect) }

    /// Sets the selected driver feature word; ignored once FEATURES_OK is set.
    mutating func writeDriverFeatureWord(_ value: UInt32) {
        guard status & DeviceStatus.featuresOK.rawValue == 0 else { return }  // fixed after FEATURES_OK
        driverFeatures = driverFeatures.settingWord(driverFeatureSelect, to: value)
    }

    // MARK: The selected queue

    /// Sets the selected queue's size: a power of two no larger than the
    /// maximum, while the queue is not enabled; anything else is ignored.
    mutating func setQueueSize(_ value: UInt32) {
        guard let q = selectedQueue, selectedQueueWritable, value > 0, value & (value - 1) == 0, value <= UInt32(maxSizes[q]) else { return }
        queues[q].configuration.size = UInt16(truncatingIfNeeded: value)
    }

    /// Enables the selected queue (the driver may not disable one this way: §4.1.4.3.2).
    mutating func enableSelectedQueue() {
        guard let q = selectedQueue, selectedQueueWritable else { return }
        queues[q].enabled = true
    }

    /// The low or high 32 bits of one of the selected queue's ring addresses (0 with no queue selected).
    func queueAddressWord(_ part: VirtqueuePart, high: Bool) -> UInt32 {
        guard let q = selectedQueue else { return 0 }
        let address = Self.address(part, in: queues[q].configuration).rawValue
        return UInt32(truncatingIfNeeded: high ? address >> 32 : address)
    }

    /// Replaces the low or high 32 bits of one of the selected queue's ring
    /// addresses, while the queue is not enabled.
    mutating func setQueueAddressWord(_ part: VirtqueuePart, high: Bool, to value: UInt32) {
        guard let q = selectedQueue, selectedQueueWritable else { return }
        var c = queues[q].configuration
        let old = Self.address(part, in: c).rawValue
        let new = high ? (old & 0xFFFF_FFFF) | UInt64(value) << 32 : (old & ~0xFFFF_FFFF) | UInt64(value)
        switch part {
        case .descriptorTable: c.descriptorTable = GuestAddress(new)
        case .availRing: c.availRing = GuestAddress(new)
        case .usedRing: c.usedRing = GuestAddress(new)
        }
        queues[q].configuration = c
    }

    private static func address(_ part: VirtqueuePart, in c: QueueConfiguration) -> GuestAddress {
        switch part {
        case .descriptorTable: return c.descriptorTable
        case .availRing: return c.availRing
        case .usedRing: return c.usedRing
        }
    }

    /// Whether a notification for `queue` reaches the device: only once it is
    /// active, and only for a queue the driver enabled.
    func acceptsNotification(queue: Int) -> Bool {
        active && queue >= 0 && queue < queues.count && queues[queue].enabled
    }

    // MARK: Device status (§2.1, §2.4, §3.1.1)

    /// What a status write did, for the transport's own follow-up.
    enum StatusChange: Equatable {
        /// The value was stored (possibly without FEATURES_OK or DRIVER_OK, when refused).
        case stored
        /// Status 0: the device and this state were reset; the transport resets its own registers.
        case reset
        /// DRIVER_OK could not start the device: DEVICE_NEEDS_RESET is set and the
        /// generation bumped; the transport reports it (`signalNeedsReset`: a
        /// configuration change notification).
        case activationFailed
    }

    /// device_status / Status: 0 resets; FEATURES_OK is kept only for an
    /// acceptable feature set; DRIVER_OK starts the device with Virtqueues
    /// built from the enabled queues' registers.
    mutating func writeStatus(_ value: UInt8, device: any VirtioDevice, memory: GuestMemory, interrupt: any InterruptSignal) -> StatusChange {
        if value == 0 {
            device.reset()
            let trace = self.trace
            self = VirtioTransportCore(maxSizes: maxSizes)
            self.trace = trace
            trace?("status 0: reset")
            return .reset
        }
        var new = value
        var change = StatusChange.stored
        if new & DeviceStatus.featuresOK.rawValue != 0 && status & DeviceStatus.featuresOK.rawValue == 0 {
            // The driver may accept only what was offered, and must accept VERSION_1 (modern).
            let ok = driverFeatures.isSubset(of: device.offeredFeatures) && driverFeatures.contains(.version1)
            if !ok { new &= ~DeviceStatus.featuresOK.rawValue }
            trace?(ok ? "features negotiated: bits \(driverFeatures)" : "FEATURES_OK refused: driver features \(driverFeatures) not offered, or no VERSION_1")
        }
        if new & DeviceStatus.driverOK.rawValue != 0 && !active {
            guard new & DeviceStatus.featuresOK.rawValue != 0 else {
                status = new & ~DeviceStatus.driverOK.rawValue
                return .stored
            }
            var built: [Virtqueue?] = []
            do {
                for (i, q) in queues.enumerated() {
                    built.append(q.enabled ? try Virtqueue(memory: memory, configuration: q.configuration,
                                                           maxSize: maxSizes[i], features: driverFeatures) : nil)
                }
                if let trace {
                    for (i, q) in built.enumerated() {
                        guard let q else { continue }
                        built[i]?.trace = trace.queue(i)
                        let c = q.configuration
                        trace("queue \(i): size \(c.size), descriptors \(c.descriptorTable), avail \(c.availRing), used \(c.usedRing)")
                    }
                }
                try device.activate(queues: built, features: driverFeatures, memory: memory, interrupt: interrupt)
                active = true
                trace?("DRIVER_OK: running")
            } catch {
                // A queue the driver laid out badly: the device needs a reset (§2.1.2).
                trace?("DRIVER_OK failed (\(error)): DEVICE_NEEDS_RESET")
                new |= DeviceStatus.deviceNeedsReset.rawValue
                configGeneration &+= 1
                change = .activationFailed
            }
        }
        if new != status { trace?("status \(DeviceStatus(rawValue: new))") }
        status = new
        return change
    }
}
