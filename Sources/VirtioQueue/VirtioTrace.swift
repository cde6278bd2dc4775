// VirtioTrace.swift: `skvm run --trace virtio`, what a virtio device and its
// driver say to each other, one line per event.
//
// The transport reports the handshake (device status, negotiated features,
// each queue's layout at DRIVER_OK, resets) and every notification; each
// Virtqueue reports the chains it pops (head, buffers, bytes), the used
// elements it returns, and whether the driver asked for an interrupt. With
// tracing off there is no VirtioTrace at all: each site tests an optional.

/// Where a device's trace lines go, prefixed with its name ("virtio-blk 0").
public struct VirtioTrace: Sendable {
    public let name: String
    private let sink: @Sendable (String) -> Void

    public init(name: String, sink: @escaping @Sendable (String) -> Void) {
        self.name = name
        self.sink = sink
    }

    /// Emits "NAME: message".
    public func callAsFunction(_ message: String) { sink("virtio: \(name): \(message)") }

    /// The trace for queue `index` of this device ("virtio-blk 0 q0").
    public func queue(_ index: Int) -> VirtioTrace { VirtioTrace(name: "\(name) q\(index)", sink: sink) }
}
