// RecordingInterruptSignal.swift: a test double for a virtio transport's
// notifications (virtio 1.2 §2.3), the `InterruptSignal` a device is given.
// Thread-safe (a Mutex), as the protocol requires Sendable.

import Synchronization
import VirtioQueue

/// An `InterruptSignal` that records every notification a device sends.
public final class RecordingInterruptSignal: InterruptSignal {
    /// One notification.
    public enum Event: Equatable, Sendable {
        /// A used buffer notification for this queue.
        case usedBuffer(queueIndex: Int)
        /// A configuration change notification.
        case configChange
    }

    private let recorded = Mutex<[Event]>([])

    public init() {}

    public func signalUsedBuffer(queueIndex: Int) {
        recorded.withLock { $0.append(.usedBuffer(queueIndex: queueIndex)) }
    }

    public func signalConfigChange() {
        recorded.withLock { $0.append(.configChange) }
    }

    /// Every notification so far, oldest first.
    public var events: [Event] { recorded.withLock { $0 } }

    /// Forgets the recorded notifications.
    public func clear() { recorded.withLock { $0.removeAll() } }
}
