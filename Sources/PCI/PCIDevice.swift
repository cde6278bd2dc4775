// PCIDevice.swift: what the host bridge needs from a PCI function.
//
// PCI Local Bus Specification 3.0, §3.2.2.3 (configuration transactions reach
// one function's configuration space) and §6.2.5 (BARs claim ranges of memory
// or I/O space). A device model exposes its configuration space, one bus
// handler per BAR, and hears when the guest moves a BAR. kvmtool keeps the
// same three things in `struct pci_device_header` (the header bytes,
// `cfg_ops`, `bar_active_fn`); Cloud Hypervisor in its `PciDevice` trait
// (`read_config_register`, `write_config_register`, `move_bar`).
//
// `PCIConfiguration` is the configuration space shared between the vCPU
// threads: a `PCIConfigurationSpace` value behind a lock, wired to the
// function's MSI-X table so that the guest's writes to message control and
// to the command register's bus-master bit take effect.

import Devices
import Synchronization

/// One PCI function as the host bridge sees it.
public protocol PCIDevice: AnyObject, Sendable {
    /// A short name for traces, e.g. "virtio-blk".
    var name: String { get }
    /// The function's configuration space.
    var configuration: PCIConfiguration { get }
    /// Reads configuration register `register` (offset / 4, 0...63). The
    /// default reads `configuration`; a device with registers that have side
    /// effects (virtio's VIRTIO_PCI_CAP_PCI_CFG window) overrides it.
    func readConfiguration(register: Int) -> UInt32
    /// Writes the bytes of `value` that `byteEnables` selects (bit n = byte n)
    /// into register `register`. The default writes `configuration`.
    func writeConfiguration(register: Int, value: UInt32, byteEnables: UInt8)
    /// The handler for accesses inside BAR `index`, given offsets from the
    /// BAR's base; nil when the BAR has no registers (reads all ones).
    func barHandler(index: Int) -> (any BusDevice)?
    /// BAR `index` stopped decoding at `from` and now decodes at `to` (nil:
    /// not decoding, e.g. memory space disabled while the driver sizes it).
    /// Called on the vCPU thread that wrote the configuration register, after
    /// the write, with the host bridge's configuration lock held.
    func barMoved(index: Int, from: PCIBarMapping?, to: PCIBarMapping?)
}

extension PCIDevice {
    public func readConfiguration(register: Int) -> UInt32 { configuration.read(register: register) }
    public func writeConfiguration(register: Int, value: UInt32, byteEnables: UInt8) {
        configuration.write(register: register, value: value, byteEnables: byteEnables)
    }
    public func barMoved(index: Int, from: PCIBarMapping?, to: PCIBarMapping?) {}
}

/// A function's configuration space behind a lock, linked to its MSI-X table.
public final class PCIConfiguration: Sendable {
    private let space: Mutex<PCIConfigurationSpace>
    /// The function's MSI-X table, if it has one.
    public let msix: MSIXTable?

    /// Wraps `space`. If `msix` is given, `space` must have an MSI-X capability
    /// with the same vector count; the table then follows message control and
    /// the bus-master bit from here on.
    public convenience init(_ space: PCIConfigurationSpace, msix: MSIXTable? = nil) throws(PCIError) {
        if let table = msix {
            guard let cap = space.msixCapability else {
                throw .invalidMSIX("an MSI-X table for a configuration space without the capability")
            }
            guard cap.vectorCount == table.vectorCount else {
                throw .invalidMSIX("the capability has \(cap.vectorCount) vectors, the table \(table.vectorCount)")
            }
        }
        self.init(unchecked: space, msix: msix)
    }

    /// Wraps `space` without checking it against `msix` (the caller knows they match).
    init(unchecked space: PCIConfigurationSpace, msix: MSIXTable? = nil) {
        self.space = Mutex(space)
        self.msix = msix
        syncMSIX(space)
    }

    /// Reads register `register`; past 63, all ones.
    public func read(register: Int) -> UInt32 { space.withLock { $0.read(register: register) } }

    /// Writes register `register` with byte enables, then lets MSI-X follow.
    public func write(register: Int, value: UInt32, byteEnables: UInt8) {
        space.withLock { s in
            s.write(register: register, value: value, byteEnables: byteEnables)
            // Lock order: configuration, then the MSI-X table (never the reverse).
            syncMSIX(s)
        }
    }

    /// Reads `size` (1, 2, 4) bytes at `offset`; unaligned or out of range: all ones.
    public func read(offset: Int, size: Int) -> UInt32 { space.withLock { $0.read(offset: offset, size: size) } }

    /// Writes `size` (1, 2, 4) bytes at `offset`; unaligned or out of range: ignored.
    public func write(offset: Int, size: Int, value: UInt32) {
        guard let (register, shift) = PCIConfigurationSpace.locate(offset: offset, size: size) else { return }
        let enables = UInt8(truncatingIfNeeded: ((1 << size) - 1) << (shift / 8))
        write(register: register, value: value << shift, byteEnables: enables)
    }

    /// Where each of the six BARs decodes now.
    public func barMappings() -> [PCIBarMapping?] { space.withLock { $0.barMappings() } }

    /// A copy of the whole space.
    public var snapshot: PCIConfigurationSpace { space.withLock { $0 } }

    /// Changes the space from the device side (status bits, say) under the lock.
    public func withSpace<R>(_ body: (inout PCIConfigurationSpace) -> R) -> R {
        space.withLock { s in
            let r = body(&s)
            syncMSIX(s)
            return r
        }
    }

    /// Pushes message control and bus master to the MSI-X table.
    private func syncMSIX(_ s: PCIConfigurationSpace) {
        guard let table = msix, let control = s.msixMessageControl else { return }
        table.setControl(
            enabled: control & 0x8000 != 0, functionMasked: control & 0x4000 != 0,
            busMaster: s.command.contains(.busMaster))
    }
}

/// A PCI function made of a configuration space and fixed BAR handlers:
/// enough for the host bridge's own function, for tests, and for any device
/// whose configuration registers have no side effects.
public final class PCIFunction: PCIDevice {
    public let name: String
    public let configuration: PCIConfiguration
    private let handlers: [(any BusDevice)?]
    private let onBarMoved: (@Sendable (Int, PCIBarMapping?, PCIBarMapping?) -> Void)?

    /// A function named `name` with `configuration`, answering BAR `i` with
    /// `barHandlers[i]`. `onBarMoved` hears BAR moves, if given.
    public init(
        name: String, configuration: PCIConfiguration, barHandlers: [Int: any BusDevice] = [:],
        onBarMoved: (@Sendable (Int, PCIBarMapping?, PCIBarMapping?) -> Void)? = nil
    ) {
        self.name = name
        self.configuration = configuration
        handlers = (0..<6).map { barHandlers[$0] }
        self.onBarMoved = onBarMoved
    }

    public func barHandler(index: Int) -> (any BusDevice)? {
        guard index >= 0, index < handlers.count else { return nil }
        return handlers[index]
    }

    public func barMoved(index: Int, from: PCIBarMapping?, to: PCIBarMapping?) {
        onBarMoved?(index, from, to)
    }
}

/// A BAR's contents as a set of disjoint regions, each handled by its own
/// device: virtio-pci puts its common, ISR, device and notify structures and
/// the MSI-X table and PBA in one BAR. Offsets are BAR-relative; an access
/// that misses every region, or runs past the end of one, reads all ones and
/// writes nothing.
public final class PCIBarRegionMap: BusDevice {
    public let name: String
    private let regions: Bus

    /// One region: `length` bytes at `offset` inside the BAR, handled by `device`
    /// (which sees offsets from the region's start).
    public struct Region: Sendable {
        public let offset: UInt64
        public let length: UInt64
        public let device: any BusDevice
        public init(offset: UInt64, length: UInt64, device: any BusDevice) {
            self.offset = offset
            self.length = length
            self.device = device
        }
    }

    /// Builds the map; throws if regions are empty, wrap or overlap.
    public init(name: String, regions: [Region]) throws(BusError) {
        self.name = name
        var bus = Bus()
        for r in regions { try bus.insert(r.device, base: r.offset, length: r.length) }
        self.regions = bus
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (e, inner) = locate(offset: offset, size: size) else { return allOnes(size) }
        return e.device.read(offset: inner, size: size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (e, inner) = locate(offset: offset, size: size) else { return }
        e.device.write(offset: inner, size: size, value: value)
    }

    /// The region holding all of [offset, offset + size), and the offset inside it.
    private func locate(offset: UInt64, size: Int) -> (Bus.Entry, UInt64)? {
        guard size > 0, let e = regions.entry(containing: offset) else { return nil }
        let inner = offset - e.base
        guard UInt64(size) <= e.length - inner else { return nil }
        return (e, inner)
    }
}
