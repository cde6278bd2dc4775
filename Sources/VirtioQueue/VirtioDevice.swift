// VirtioDevice.swift: what a virtio device model offers its transport.
//
// virtio 1.2 §2 "Basic Facilities of a Virtio Device" (status, features,
// notifications, reset, configuration space), §3.1 "Device Initialization",
// §5 (device IDs). STYLE.md §3.7: a transport (virtio-pci, virtio-mmio) owns
// the registers; a device model owns its configuration space and what its
// queues mean; they meet only through these protocols, so a device is
// testable with a VirtqueueDriver and a recorder. Protocols only, no code.

import Memory

/// A virtio device ID (virtio 1.2 §5, "Device Types").
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// 1: network card.
    public static let net = VirtioDeviceType(rawValue: 1)
    /// 2: block device.
    public static let block = VirtioDeviceType(rawValue: 2)
    /// 3: console.
    public static let console = VirtioDeviceType(rawValue: 3)
    /// 4: entropy source.
    public static let entropy = VirtioDeviceType(rawValue: 4)
    /// 5: memory balloon (traditional).
    public static let balloon = VirtioDeviceType(rawValue: 5)
    /// 8: SCSI host.
    public static let scsi = VirtioDeviceType(rawValue: 8)
    /// 16: GPU.
    public static let gpu = VirtioDeviceType(rawValue: 16)
    /// 18: input.
    public static let input = VirtioDeviceType(rawValue: 18)
    /// 19: socket (vsock).
    public static let vsock = VirtioDeviceType(rawValue: 19)
    /// 26: file system (virtio-fs).
    public static let fs = VirtioDeviceType(rawValue: 26)

    public var description: String {
        let names: [UInt32: String] = [
            1: "net", 2: "block", 3: "console", 4: "entropy", 5: "balloon", 8: "scsi",
            16: "gpu", 18: "input", 19: "vsock", 26: "fs",
        ]
        return names[rawValue] ?? "type \(rawValue)"
    }
}

/// How a device notifies the driver (virtio 1.2 §2.3), implemented by the
/// transport (an MSI-X vector's irqfd; virtio-mmio's InterruptStatus and
/// line). Called from the device's thread, hence `Sendable`.
public protocol InterruptSignal: Sendable {
    /// A used buffer notification for queue `queueIndex`; send it when
    /// `Virtqueue.needsNotification()` returns true.
    func signalUsedBuffer(queueIndex: Int)

    /// A configuration change notification: the configuration space changed,
    /// or the device set DEVICE_NEEDS_RESET.
    func signalConfigChange()

    /// The device cannot go on until the driver resets it (§2.1.2): the
    /// transport shows DEVICE_NEEDS_RESET in the device status and sends a
    /// configuration change notification.
    func signalNeedsReset()
}

extension InterruptSignal {
    /// For signals that have no status register of their own: just the notification.
    public func signalNeedsReset() { signalConfigChange() }
}

/// A virtio device model as its transport drives it (virtio 1.2 §3.1): the
/// constants (`deviceType`, `offeredFeatures`, `queueMaxSizes`, `configSize`)
/// and `readConfig`/`writeConfig` at any time; `activate` at DRIVER_OK with
/// the queues the transport built and validated (a queue that fails
/// validation: DEVICE_NEEDS_RESET instead); `reset()` when the driver writes
/// status 0 (§2.4). Queue notifications (ioeventfds) reach the device through
/// whatever "process queue n" entry point it exposes to the VMM.
public protocol VirtioDevice: AnyObject {
    /// The device ID the transport reports (virtio-pci device ID 0x1040 + type).
    var deviceType: VirtioDeviceType { get }

    /// The offered features (`.version1` always, for a modern device).
    var offeredFeatures: FeatureSet { get }

    /// Each queue's QueueNumMax (a power of 2, at most 32768); the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }

    /// The configuration space's length; accesses never go beyond it.
    var configSize: Int { get }

    /// Reads `size` bytes (1, 2, 4 or 8) at `offset`, little-endian in the low bytes.
    func readConfig(offset: Int, size: Int) -> UInt64

    /// Writes the low `size` bytes of `value` at `offset` (read-only fields ignore it).
    func writeConfig(offset: Int, size: Int, value: UInt64)

    /// Starts the device (DRIVER_OK) with its queues, index-aligned with
    /// `queueMaxSizes` (nil: not enabled by the driver), the negotiated
    /// `features`, guest RAM and the notification sink. Throws when it cannot
    /// start; the transport then sets DEVICE_NEEDS_RESET.
    func activate(queues: [Virtqueue?], features: FeatureSet, memory: GuestMemory, interrupt: any InterruptSignal) throws

    /// The driver notified queue `index` (§2.7.13: an "available buffer
    /// notification"): process what it made available. Called on the I/O
    /// thread, after `activate`.
    func queueNotified(_ index: Int)

    /// Back to the initial state (§2.4): queues and features dropped, backend kept.
    func reset()
}
