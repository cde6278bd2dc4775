// QueueNotifiable.swift: what the I/O thread calls when a queue's ioeventfd fires.
//
// Both transports take queue notifications the same way: the machine
// registers one ioeventfd per queue (virtio-pci: at the queue's notify
// address; virtio-mmio: on QueueNotify with the queue index as datamatch),
// KVM signals it without leaving the kernel, and the I/O thread calls
// `notify(queue:)`. The transport then checks the queue is live and hands
// it to the device model.

import VirtioQueue

/// A transport whose queues the I/O thread can notify.
public protocol QueueNotifiable: AnyObject, Sendable {
    /// The device's name, for messages.
    var name: String { get }
    /// A driver notified `queue`; ignored unless the queue is enabled and the device running.
    func notify(queue: Int)
    /// The device has work for `queue` of its own accord (its tap is readable,
    /// its I/O pool finished requests); `why` is for `--trace virtio`.
    func wake(queue: Int, why: String)
    /// Turns on `--trace virtio` for this device.
    func setTrace(_ trace: VirtioTrace)
}

extension VirtioPCIDevice: QueueNotifiable {}
extension VirtioMMIODevice: QueueNotifiable {}
