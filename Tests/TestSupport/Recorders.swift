// Recorders.swift: test doubles for the effects devices inject.
//
// Devices are pure state machines whose effects come in through small
// protocols (Sources/Devices/Interrupts.swift). These recorders stand in for
// KVM_IRQ_LINE, the terminal and the VMM's stop controller, and keep every
// call so that a test can assert the exact sequence, not just the last state.
// All three are thread-safe (a `Mutex` each), as the protocols require Sendable.

import Devices
import Synchronization

/// An interrupt line that records every level change a device drives.
public final class RecordingInterruptLine: InterruptLine {
    private let recorded = Mutex<[Bool]>([])

    public init() {}

    /// Records `high` (true: asserted, false: deasserted).
    public func setLevel(_ high: Bool) {
        recorded.withLock { $0.append(high) }
    }

    /// Every level set so far, oldest first.
    public var levels: [Bool] { recorded.withLock { $0 } }

    /// The line's current level: the last one set, or low if none was.
    public var isHigh: Bool { recorded.withLock { $0.last ?? false } }

    /// Forgets the recorded levels.
    public func clear() { recorded.withLock { $0.removeAll() } }
}

/// A serial output that collects the transmitted bytes.
public final class RecordingSerialOutput: SerialOutput {
    private let collected = Mutex<[UInt8]>([])

    public init() {}

    /// Appends `byte` to `bytes`.
    public func write(_ byte: UInt8) {
        collected.withLock { $0.append(byte) }
    }

    /// Every byte written so far, in order.
    public var bytes: [UInt8] { collected.withLock { $0 } }

    /// The bytes written so far decoded as UTF-8.
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A machine control that collects the stop requests devices make.
public final class RecordingMachineControl: MachineControl {
    private let collected = Mutex<[GuestStopRequest]>([])

    public init() {}

    /// Appends `request` to `requests`.
    public func requestStop(_ request: GuestStopRequest) {
        collected.withLock { $0.append(request) }
    }

    /// Every request made so far, oldest first.
    public var requests: [GuestStopRequest] { collected.withLock { $0 } }
}
