// VirtioMMIO.swift: the virtio-mmio transport, version 2 (virtio 1.2 §4.2
// "Virtio Over MMIO").
//
// A virtio device as a block of 32-bit registers in one 0x200-byte window
// (§4.2.2, table "MMIO Device Register Layout"), followed by the device's
// configuration space, with one dedicated interrupt line (§4.2.3.4):
//
//   0x000 R  MagicValue 0x74726976 ("virt")  0x050 W  QueueNotify
//   0x004 R  Version 2 (modern)              0x060 R  InterruptStatus
//   0x008 R  DeviceID (§5 device type)       0x064 W  InterruptACK
//   0x00c R  VendorID                        0x070 RW Status
//   0x010 R  DeviceFeatures                  0x080 W  QueueDescLow/High (+4)
//   0x014 W  DeviceFeaturesSel               0x090 W  QueueDriverLow/High (+4)
//   0x020 W  DriverFeatures                  0x0a0 W  QueueDeviceLow/High (+4)
//   0x024 W  DriverFeaturesSel               0x0ac W  SHMSel
//   0x030 W  QueueSel                        0x0b0 R  SHMLenLow/High (+4)
//   0x034 R  QueueNumMax                     0x0b8 R  SHMBaseLow/High (+4)
//   0x038 W  QueueNum                        0x0c0 RW QueueReset
//   0x044 RW QueueReady                      0x0fc R  ConfigGeneration
//                                            0x100+   device configuration
//
// The registers are 32 bits wide and the driver MUST access them with
// aligned 32-bit accesses (§4.2.2.2); any other access to 0x000-0x0ff is
// ignored (a read returns 0), as are writes to read-only registers. Reads of
// write-only registers return 0. The configuration space takes 8-, 16- and
// 32-bit accesses (64-bit fields are read as two 32-bit halves, checked with
// ConfigGeneration). Offsets past the window read 0 and ignore writes.
//
// Feature negotiation, the queue registers' rules, DRIVER_OK (Virtqueues
// built and validated, DEVICE_NEEDS_RESET on failure) and reset are shared
// with virtio-pci, line for line, through VirtioTransportCore
// (TransportCore.swift). What is MMIO's own:
//  - QueueReady accepts 0 (§4.2.2.2: "To stop using the queue the driver MUST
//    write zero (0x0) to this QueueReady"), before DRIVER_OK; once the device
//    runs, its queues belong to it (no VIRTIO_F_RING_RESET) and 0 is ignored.
//  - Status is 32 bits wide: a value with bits above the low byte set is
//    ignored (it is non-zero, so it must not reset; it is no status either).
//  - No shared memory regions: SHMLen and SHMBase read as -1 (§4.2.2).
//  - QueueNotify carries the queue index (§4.2.3.3; in its low 16 bits only
//    with VIRTIO_F_NOTIFICATION_DATA); the machine may catch it with one
//    ioeventfd per queue at base + 0x050 (4 bytes, datamatch = the index) and
//    call `notify(queue:)`.
//  - Interrupts: InterruptStatus bit 0 (used buffer) and bit 1 (configuration
//    change) are set by the device until the driver writes them to
//    InterruptACK (§4.2.2.1); the line is high exactly while InterruptStatus
//    is non-zero (level-triggered, like a legacy PCI INTx).
//  - ConfigGeneration counts configuration change notifications, the
//    transport's (a failed DRIVER_OK) and the device model's, so a 64-bit
//    field read as two halves is retried when the configuration changed in
//    between (§2.5, §4.2.2.1).
//
// Threading, as virtio-pci: one lock (`state`) serialises the transport and
// every call into the device model, from vCPU threads (register accesses)
// and the I/O thread (`notify(queue:)`). InterruptStatus, ConfigGeneration
// and the line live in a separate small object with its own lock, a leaf
// (nothing else is taken under it; the order is always transport, then
// interrupt), so a device can signal while the transport lock is held.
// Where the line is driven:
//  - lowered by InterruptACK: outside the transport lock. InterruptStatus
//    reads and ACK writes take only the small lock, so the guest's interrupt
//    handler never waits behind a block request on the I/O thread.
//  - raised by the device's used-buffer or configuration signal: under the
//    transport lock, because every device call runs under it (as with
//    virtio-pci's MSI-X triggers).
//  - raised by a failed DRIVER_OK, lowered by a reset (Status 0): under the
//    transport lock on purpose, so no signal of the old session can land
//    after the reset cleared InterruptStatus.
// That is safe because InterruptLine.setLevel (KVM_IRQ_LINE, an ioctl)
// never calls back into the transport. The level is set while the small
// lock is held, so concurrent signals and ACKs cannot leave the line high
// with InterruptStatus 0 (an interrupt storm) or low with an event pending
// (a lost interrupt).

import Devices
import Memory
import Synchronization
import VirtioQueue

/// A virtio device on a virtio-mmio window (version 2).
public final class VirtioMMIODevice: BusDevice, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `device` is touched only under `state`'s lock;
    // everything else is immutable or has its own lock.
    public let name: String

    /// The window the machine maps: registers 0x000-0x0ff, configuration 0x100-0x1ff.
    public static let windowSize: UInt64 = 0x200
    /// MagicValue: "virt" in little-endian ASCII.
    public static let magicValue: UInt32 = 0x7472_6976
    /// Version 2: the modern (non-legacy) register layout.
    public static let version: UInt32 = 2
    /// VendorID: the virtio subsystem vendor ID skvm's virtio-pci functions report too.
    public static let vendorID: UInt32 = 0x1AF4
    /// QueueNotify's offset: where the machine places a queue's ioeventfd (4 bytes, datamatch = queue index).
    public static let queueNotifyOffset: UInt64 = 0x050
    /// Where the device's configuration space starts.
    public static let configOffset: UInt64 = 0x100

    /// InterruptStatus bits (§4.2.2).
    public static let interruptUsedBuffer: UInt32 = 1
    public static let interruptConfigChange: UInt32 = 2

    // Register offsets (§4.2.2).
    enum Register {
        static let magicValue: UInt64 = 0x000, version: UInt64 = 0x004, deviceID: UInt64 = 0x008, vendorID: UInt64 = 0x00C
        static let deviceFeatures: UInt64 = 0x010, deviceFeaturesSel: UInt64 = 0x014
        static let driverFeatures: UInt64 = 0x020, driverFeaturesSel: UInt64 = 0x024
        static let queueSel: UInt64 = 0x030, queueNumMax: UInt64 = 0x034, queueNum: UInt64 = 0x038
        static let queueReady: UInt64 = 0x044, queueNotify: UInt64 = 0x050
        static let interruptStatus: UInt64 = 0x060, interruptACK: UInt64 = 0x064, status: UInt64 = 0x070
        static let queueDescLow: UInt64 = 0x080, queueDescHigh: UInt64 = 0x084
        static let queueDriverLow: UInt64 = 0x090, queueDriverHigh: UInt64 = 0x094
        static let queueDeviceLow: UInt64 = 0x0A0, queueDeviceHigh: UInt64 = 0x0A4
        static let shmSel: UInt64 = 0x0AC
        static let shmLenLow: UInt64 = 0x0B0, shmLenHigh: UInt64 = 0x0B4, shmBaseLow: UInt64 = 0x0B8, shmBaseHigh: UInt64 = 0x0BC
        static let queueReset: UInt64 = 0x0C0
        static let configGeneration: UInt64 = 0x0FC
    }

    private let device: any VirtioDevice
    private let memory: GuestMemory
    private let deviceID: UInt32
    private let signals: VirtioMMIOInterrupt
    private let state: Mutex<VirtioTransportCore>

    /// The number of queues (the ioeventfds the machine may register: datamatch 0..<queueCount).
    public let queueCount: Int

    /// A transport for `device` over guest `memory`, interrupting on `interrupt`.
    public init(name: String, device: any VirtioDevice, memory: GuestMemory, interrupt: any InterruptLine) {
        self.name = name
        self.device = device
        self.memory = memory
        deviceID = device.deviceType.rawValue
        let maxSizes = device.queueMaxSizes
        queueCount = maxSizes.count
        signals = VirtioMMIOInterrupt(line: interrupt)
        state = Mutex(VirtioTransportCore(maxSizes: maxSizes))
    }

    // MARK: BusDevice

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset < Self.windowSize else { return 0 }
        if offset >= Self.configOffset {
            guard size == 1 || size == 2 || size == 4 else { return 0 }
            let at = Int(offset - Self.configOffset)
            return state.withLock { _ in device.readConfig(offset: at, size: size) }
        }
        guard size == 4, offset % 4 == 0 else { return 0 }  // §4.2.2.2: 32-bit aligned accesses only
        switch offset {
        case Register.magicValue: return UInt64(Self.magicValue)
        case Register.version: return UInt64(Self.version)
        case Register.deviceID: return UInt64(deviceID)
        case Register.vendorID: return UInt64(Self.vendorID)
        case Register.interruptStatus: return UInt64(signals.status)
        case Register.configGeneration: return UInt64(signals.configGeneration)
        case Register.shmLenLow, Register.shmLenHigh, Register.shmBaseLow, Register.shmBaseHigh:
            return 0xFFFF_FFFF  // no shared memory region: length and base read as -1
        case Register.deviceFeatures, Register.queueNumMax, Register.queueReady, Register.status:
            return state.withLock { readRegister(&$0, offset) }
        default: return 0  // write-only registers, QueueReset (no VIRTIO_F_RING_RESET), reserved offsets
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < Self.windowSize else { return }
        if offset >= Self.configOffset {
            guard size == 1 || size == 2 || size == 4 else { return }
            let at = Int(offset - Self.configOffset)
            state.withLock { _ in device.writeConfig(offset: at, size: size, value: value) }
            return
        }
        guard size == 4, offset % 4 == 0 else { return }  // §4.2.2.2
        let v = UInt32(truncatingIfNeeded: value)
        switch offset {
        case Register.queueNotify:
            // Reaches userspace only when no ioeventfd caught it. The value is the
            // queue index; with VIRTIO_F_NOTIFICATION_DATA, only its low 16 bits (§4.2.3.3).
            state.withLock { s in
                let queue = s.driverFeatures.contains(.notificationData) ? Int(v & 0xFFFF) : Int(v)
                guard s.acceptsNotification(queue: queue) else { return }
                s.trace?("notify queue \(queue) (QueueNotify write, no ioeventfd)")
                device.queueNotified(queue)
            }
        case Register.interruptACK:
            signals.acknowledge(v)
        default:
            state.withLock { writeRegister(&$0, offset, v) }
        }
    }

    /// A driver notified `queue` (from the I/O thread's ioeventfd, or a QueueNotify write).
    public func notify(queue: Int) {
        state.withLock { s in
            guard s.acceptsNotification(queue: queue) else { return }
            s.trace?("notify queue \(queue)")
            device.queueNotified(queue)
        }
    }

    /// Turns on `--trace virtio` for this device.
    public func setTrace(_ trace: VirtioTrace) { state.withLock { $0.trace = trace } }

    /// The device has work for `queue` that no driver notification announced
    /// (frames on its tap, requests finished on the I/O pool); `why` is for the trace.
    public func wake(queue: Int, why: String) {
        state.withLock { s in
            guard s.acceptsNotification(queue: queue) else { return }
            s.trace?("queue \(queue): \(why)")
            device.queueNotified(queue)
        }
    }

    // MARK: Registers (§4.2.2)

    private func readRegister(_ s: inout VirtioTransportCore, _ offset: UInt64) -> UInt64 {
        switch offset {
        case Register.deviceFeatures: return UInt64(s.deviceFeatureWord(of: device))
        case Register.queueNumMax: return UInt64(s.selectedQueue.map { s.maxSizes[$0] } ?? 0)  // 0: no such queue
        case Register.queueReady: return UInt64(s.selectedQueue.map { s.queues[$0].enabled ? 1 : 0 } ?? 0)
        case Register.status: return UInt64(s.status | (signals.needsReset ? DeviceStatus.deviceNeedsReset.rawValue : 0))
        default: return 0
        }
    }

    private func writeRegister(_ s: inout VirtioTransportCore, _ offset: UInt64, _ v: UInt32) {
        switch offset {
        case Register.deviceFeaturesSel: s.deviceFeatureSelect = v
        case Register.driverFeatures: s.writeDriverFeatureWord(v)  // fixed after FEATURES_OK
        case Register.driverFeaturesSel: s.driverFeatureSelect = v
        case Register.queueSel: s.queueSelect = v
        case Register.queueNum: s.setQueueSize(v)  // a power of two no larger than QueueNumMax, before QueueReady
        case Register.queueReady:
            if v == 1 {
                s.enableSelectedQueue()
            } else if v == 0, !s.active, let q = s.selectedQueue {
                s.queues[q].enabled = false  // the driver gave the queue up before DRIVER_OK
            }
        case Register.queueDescLow, Register.queueDescHigh:
            s.setQueueAddressWord(.descriptorTable, high: offset == Register.queueDescHigh, to: v)
        case Register.queueDriverLow, Register.queueDriverHigh:
            s.setQueueAddressWord(.availRing, high: offset == Register.queueDriverHigh, to: v)
        case Register.queueDeviceLow, Register.queueDeviceHigh:
            s.setQueueAddressWord(.usedRing, high: offset == Register.queueDeviceHigh, to: v)
        case Register.status:
            guard v <= 0xFF else { return }  // reserved bits: neither a status nor a reset
            switch s.writeStatus(UInt8(v), device: device, memory: memory, interrupt: signals) {
            case .stored: break
            case .reset: signals.reset()  // under the transport lock: see the top of the file
            case .activationFailed: signals.signalNeedsReset()
            }
        default: break  // read-only registers, SHMSel (no regions), QueueReset (not offered), reserved offsets
        }
    }
}

/// InterruptStatus, ConfigGeneration and the interrupt line of one
/// virtio-mmio device (§4.2.2 InterruptStatus/InterruptACK, §4.2.3.4).
final class VirtioMMIOInterrupt: InterruptSignal {
    private struct State {
        var status: UInt32 = 0
        var configGeneration: UInt32 = 0
        var needsReset = false
        /// The level last driven (the line starts low).
        var lineHigh = false
    }

    private let line: any InterruptLine
    private let state = Mutex(State())

    init(line: any InterruptLine) { self.line = line }

    var status: UInt32 { state.withLock { $0.status } }
    var configGeneration: UInt32 { state.withLock { $0.configGeneration } }
    /// DEVICE_NEEDS_RESET, as the device (or a failed DRIVER_OK) reported it; cleared by a reset.
    var needsReset: Bool { state.withLock { $0.needsReset } }

    func signalUsedBuffer(queueIndex: Int) {
        // One bit for every queue: the driver checks them all (§4.2.3.4.1).
        update { $0.status |= VirtioMMIODevice.interruptUsedBuffer }
    }

    func signalConfigChange() {
        update {
            $0.status |= VirtioMMIODevice.interruptConfigChange
            $0.configGeneration &+= 1
        }
    }

    func signalNeedsReset() {
        update {
            $0.needsReset = true
            $0.status |= VirtioMMIODevice.interruptConfigChange
            $0.configGeneration &+= 1
        }
    }

    /// InterruptACK: clears the written bits (undefined bits have nothing to clear).
    func acknowledge(_ bits: UInt32) { update { $0.status &= ~bits } }

    /// Device reset: no events pending, the line low, the generation back to 0 (§4.2.2.1).
    func reset() { update { $0 = State(lineHigh: $0.lineHigh) } }

    /// Applies `change`, then drives the line to (InterruptStatus != 0) if
    /// that differs from its level, all under the lock: status and line move
    /// together, whatever the order of concurrent signals and ACKs.
    private func update(_ change: (inout State) -> Void) {
        state.withLock { s in
            change(&s)
            let high = s.status != 0
            if high != s.lineHigh {
                s.lineHigh = high
                line.setLevel(high)
            }
        }
    }
}
