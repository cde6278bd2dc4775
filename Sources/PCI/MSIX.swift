// MSIX.swift: the MSI-X table and pending bit array, and how vectors reach KVM.
//
// PCI Local Bus Specification 3.0, §6.8.2.6-§6.8.2.10 (and PCI Express Base
// Specification §7.7.2, which keeps the same layout). The table lives in a
// memory BAR; entry n is 16 bytes at table offset 16 * n:
//
//   +0   message address (low 32 bits; bits 1:0 are zero, DWORD-aligned)
//   +4   message upper address
//   +8   message data
//   +12  vector control: bit 0 = mask (set after reset), bits 31:1 reserved
//
// The pending bit array (PBA) holds one bit per vector, in QWORDs; it is
// read-only. Software accesses both with aligned DWORD or QWORD transactions;
// anything else is undefined, and skvm reads all ones and ignores the write.
//
// A vector is masked when its mask bit is set, or the function mask (message
// control bit 14) is set. "If a masked vector has its Pending bit set, and the
// associated underlying interrupt events are somehow satisfied ... the function
// must clear the Pending bit"; and when a pending vector becomes unmasked "the
// function must send the corresponding message and clear the Pending bit"
// (§6.8.2.9). While MSI-X is disabled (message control bit 15 clear) the
// function sends no MSI-X messages at all, and it sends none while command
// bit 2 (bus master) is clear, since a message is a memory write.
//
// The machine delivers messages through the `MSIXRouter` it injects: a KVM MSI
// route (KVM_SET_GSI_ROUTING) plus an irqfd per vector, as in Cloud
// Hypervisor's pci/src/msix.rs.

import Devices
import Synchronization

/// What the machine does with MSI-X vectors: program KVM and fire irqfds.
///
/// Threading. `update` is called from vCPU threads: a guest MMIO write to the
/// table, or a configuration write to message control, changes an entry's
/// effective routing. `trigger` is called from whichever thread raises the
/// interrupt, normally the I/O thread completing a request, and from a vCPU
/// thread when an unmask releases a pending vector. One table calls its router
/// with its lock held, so calls for one device never overlap and arrive in the
/// order the state changed; calls for different devices can run concurrently.
/// A router must not call back into the table that called it.
public protocol MSIXRouter: Sendable {
    /// Vector `vector` of this table now has this address and data, and is
    /// masked (by its own mask bit, the function mask, or MSI-X being
    /// disabled) or not. Called only when one of the three changes. A router
    /// may skip programming masked vectors: no `trigger` comes for them.
    /// Every vector starts masked with address 0 and data 0.
    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool)
    /// Deliver vector `vector`'s message now (write 1 to its irqfd). Called
    /// only for vectors the last `update` reported unmasked.
    func trigger(vector: Int)
}

/// One table entry as the guest programmed it.
public struct MSIXTableEntry: Equatable, Sendable {
    /// Message address bits 31:0 (bits 1:0 always zero).
    public var addressLow: UInt32 = 0
    /// Message address bits 63:32.
    public var addressHigh: UInt32 = 0
    /// Message data.
    public var data: UInt32 = 0
    /// Vector control: bit 0 is the mask bit, which is set after reset (§6.8.2.9).
    public var vectorControl: UInt32 = 1

    public init() {}

    /// The full 64-bit message address.
    public var address: UInt64 { UInt64(addressHigh) << 32 | UInt64(addressLow) }
    /// Whether the entry's own mask bit is set.
    public var isMasked: Bool { vectorControl & 1 != 0 }
}

/// What became of an interrupt a device raised on a vector.
public enum MSIXDelivery: Equatable, Sendable {
    /// The message went to the router.
    case delivered
    /// The vector is masked; its pending bit is set and it fires when unmasked.
    case pending
    /// MSI-X is disabled: nothing was sent (a device may fall back to INTx).
    case msixDisabled
    /// Bus mastering is off: the function cannot send a message, so it is lost.
    case busMasterDisabled
    /// No such vector (virtio's VIRTIO_MSI_NO_VECTOR, 0xFFFF, lands here).
    case invalidVector
}

/// The state the table and the PBA views share.
private struct MSIXState {
    var entries: [MSIXTableEntry]
    /// Pending bits, 64 vectors per word (the PBA's layout).
    var pending: [UInt64]
    /// Message control bit 15.
    var enabled = false
    /// Message control bit 14.
    var functionMasked = false
    /// Command register bit 2.
    var busMaster = false

    func isPending(_ v: Int) -> Bool { pending[v / 64] & (1 << UInt64(v % 64)) != 0 }
    mutating func setPending(_ v: Int, _ on: Bool) {
        if on { pending[v / 64] |= 1 << UInt64(v % 64) } else { pending[v / 64] &= ~(1 << UInt64(v % 64)) }
    }
    /// Masked for delivery and routing: by the vector, the function, or disablement.
    func effectivelyMasked(_ v: Int) -> Bool { !enabled || functionMasked || entries[v].isMasked }
    /// What the router knows about vector `v`.
    func route(_ v: Int) -> Route { Route(address: entries[v].address, data: entries[v].data, masked: effectivelyMasked(v)) }
}

private struct Route: Equatable {
    var address: UInt64
    var data: UInt32
    var masked: Bool
}

/// The lock and the router, shared by the table and the PBA view.
private final class MSIXCore: Sendable {
    let state: Mutex<MSIXState>
    let router: any MSIXRouter
    let vectorCount: Int

    init(vectorCount: Int, router: any MSIXRouter) {
        self.vectorCount = vectorCount
        self.router = router
        state = Mutex(MSIXState(
            entries: Array(repeating: MSIXTableEntry(), count: vectorCount),
            pending: Array(repeating: 0, count: (vectorCount + 63) / 64)))
    }

    /// Applies `change` to the vectors in `affected` (all when nil), then tells
    /// the router about every vector whose route changed, and delivers every
    /// pending vector that became deliverable. All under the lock, so the
    /// router sees changes in order.
    func modify(affecting affected: Range<Int>?, _ change: (inout MSIXState) -> Void) {
        let range = affected ?? 0..<vectorCount
        state.withLock { s in
            let before = range.map { s.route($0) }
            change(&s)
            for (i, v) in range.enumerated() {
                let after = s.route(v)
                if after != before[i] {
                    router.update(vector: v, address: after.address, data: after.data, masked: after.masked)
                }
                // §6.8.2.9: an unmasked vector with its pending bit set sends its message.
                if !after.masked, s.busMaster, s.isPending(v) {
                    s.setPending(v, false)
                    router.trigger(vector: v)
                }
            }
        }
    }
}

/// An MSI-X table: `vectorCount` entries, a `BusDevice` for the table's
/// region of a BAR (offset 0 = entry 0), and `pendingBitArray`, a `BusDevice`
/// for the PBA's region.
public final class MSIXTable: BusDevice {
    public let name: String
    /// The number of vectors.
    public let vectorCount: Int
    /// The PBA, to place at the capability's PBA offset in its BAR.
    public let pendingBitArray: MSIXPendingBitArray
    private let core: MSIXCore

    /// A table of `vectorCount` (1...2048) vectors, all masked, MSI-X disabled.
    public init(name: String = "msix-table", vectorCount: Int, router: any MSIXRouter) throws(PCIError) {
        guard vectorCount >= 1, vectorCount <= MSIXCapability.maximumVectorCount else {
            throw .invalidMSIX("\(vectorCount) vectors (1...\(MSIXCapability.maximumVectorCount) allowed)")
        }
        self.name = name
        self.vectorCount = vectorCount
        core = MSIXCore(vectorCount: vectorCount, router: router)
        pendingBitArray = MSIXPendingBitArray(name: name + " PBA", core: core)
    }

    /// The table's length in bytes (16 per vector).
    public var tableLength: UInt64 { UInt64(vectorCount) * MSIXCapability.entrySize }
    /// The PBA's length in bytes (one QWORD per 64 vectors).
    public var pbaLength: UInt64 { UInt64((vectorCount + 63) / 64) * 8 }

    // MARK: The device side

    /// Raises vector `vector`: delivers it, or sets its pending bit if masked.
    /// Safe from any thread (the I/O thread, normally).
    @discardableResult
    public func trigger(vector: Int) -> MSIXDelivery {
        guard vector >= 0, vector < vectorCount else { return .invalidVector }
        return core.state.withLock { s in
            guard s.enabled else { return .msixDisabled }
            if s.effectivelyMasked(vector) {
                s.setPending(vector, true)
                return .pending
            }
            guard s.busMaster else { return .busMasterDisabled }
            core.router.trigger(vector: vector)
            return .delivered
        }
    }

    /// Clears vector `vector`'s pending bit without sending it: the device
    /// has no more reason to interrupt (§6.8.2.9 permits this).
    public func clearPending(vector: Int) {
        guard vector >= 0, vector < vectorCount else { return }
        core.state.withLock { $0.setPending(vector, false) }
    }

    /// A copy of entry `vector`, or nil.
    public func entry(_ vector: Int) -> MSIXTableEntry? {
        guard vector >= 0, vector < vectorCount else { return nil }
        return core.state.withLock { $0.entries[vector] }
    }

    /// Whether vector `vector`'s pending bit is set.
    public func isPending(_ vector: Int) -> Bool {
        guard vector >= 0, vector < vectorCount else { return false }
        return core.state.withLock { $0.isPending(vector) }
    }

    /// Whether MSI-X is enabled (message control bit 15).
    public var isEnabled: Bool { core.state.withLock { $0.enabled } }
    /// Whether the function mask (message control bit 14) is set.
    public var isFunctionMasked: Bool { core.state.withLock { $0.functionMasked } }

    /// Follows the configuration space: message control's enable and function
    /// mask, and the command register's bus master bit. `PCIConfiguration`
    /// calls this after every configuration write.
    func setControl(enabled: Bool, functionMasked: Bool, busMaster: Bool) {
        let changed = core.state.withLock {
            $0.enabled != enabled || $0.functionMasked != functionMasked || $0.busMaster != busMaster
        }
        guard changed else { return }
        core.modify(affecting: nil) { s in
            s.enabled = enabled
            s.functionMasked = functionMasked
            s.busMaster = busMaster
        }
    }

    // MARK: The guest side (BusDevice over the table region)

    /// Reads an aligned DWORD or QWORD of the table; anything else reads all ones.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (vector, field) = locate(offset: offset, size: size) else { return allOnes(size) }
        return core.state.withLock { s in
            let e = s.entries[vector]
            let dwords = [e.addressLow, e.addressHigh, e.data, e.vectorControl]
            if size == 4 { return UInt64(dwords[field]) }
            return UInt64(dwords[field]) | UInt64(dwords[field + 1]) << 32
        }
    }

    /// Writes an aligned DWORD or QWORD of the table; anything else is ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (vector, field) = locate(offset: offset, size: size) else { return }
        core.modify(affecting: vector..<(vector + 1)) { s in
            var e = s.entries[vector]
            let fields = size == 4 ? [field] : [field, field + 1]
            for (i, f) in fields.enumerated() {
                let v = UInt32(truncatingIfNeeded: value >> (32 * UInt64(i)))
                switch f {
                case 0: e.addressLow = v & ~3  // DWORD-aligned message address
                case 1: e.addressHigh = v
                case 2: e.data = v
                default: e.vectorControl = v & 1  // bits 31:1 reserved
                }
            }
            s.entries[vector] = e
        }
    }

    /// The vector and DWORD field (0-3) of an aligned 4- or 8-byte access inside the table.
    private func locate(offset: UInt64, size: Int) -> (Int, Int)? {
        guard size == 4 || size == 8, offset % UInt64(size) == 0, offset < tableLength else { return nil }
        return (Int(offset / MSIXCapability.entrySize), Int(offset % MSIXCapability.entrySize) / 4)
    }
}

/// The pending bit array as a `BusDevice` (offset 0 = bits 63:0). Read-only.
public final class MSIXPendingBitArray: BusDevice {
    public let name: String
    private let core: MSIXCore

    fileprivate init(name: String, core: MSIXCore) {
        self.name = name
        self.core = core
    }

    /// Reads an aligned DWORD or QWORD of pending bits; anything else reads all ones.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        let words = UInt64((core.vectorCount + 63) / 64)
        guard size == 4 || size == 8, offset % UInt64(size) == 0, offset < words * 8 else { return allOnes(size) }
        return core.state.withLock { s in
            let word = s.pending[Int(offset / 8)]
            if size == 8 { return word }
            return offset % 8 == 0 ? word & 0xFFFF_FFFF : word >> 32
        }
    }

    /// The PBA is read-only (§6.8.2.10: "software should never write"); writes are ignored.
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}
