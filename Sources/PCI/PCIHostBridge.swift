// PCIHostBridge.swift: PCI configuration mechanism #1 on ports 0xCF8-0xCFF,
// and the routing of BAR accesses to devices.
//
// PCI Local Bus Specification 3.0, §3.2.2.3.2 "Software Generation of
// Configuration Transactions". CONFIG_ADDRESS at 0xCF8 is a 32-bit register:
//
//   bit 31      enable: 0xCFC-0xCFF reach configuration space only when set
//   bits 30:24  reserved (AMD uses 27:24 for registers 0x100-0xFFF; Linux's
//               PCI_CONF1_ADDRESS puts them there, and skvm answers such
//               extended registers with all ones, having only 256 bytes)
//   bits 23:16  bus number        bits 15:11  device (slot) number
//   bits 10:8   function number   bits 7:2    register (dword) number
//   bits 1:0    zero
//
// "Only DWORD accesses to CONFIG_ADDRESS latch it" (the host bridge passes
// byte and word accesses to 0xCF8-0xCFB through as ordinary I/O cycles, which
// is how Linux's pci_check_type1 can write a byte to 0xCFB without disturbing
// it). CONFIG_DATA at 0xCFC-0xCFF then carries a 1-, 2- or 4-byte access to the
// addressed register; the port's low two bits pick the byte lanes.
//
// skvm has one bus (0). Its host bridge is device 0, function 0; the machine
// puts devices in slots 1-31, each single-function. A configuration read of
// anything else ends in a master abort, which the host bridge completes with
// all ones (0xFFFF is the invalid vendor ID that tells software nothing is
// there); the write is dropped. kvmtool's pci.c and QEMU's pci_host.c behave
// the same way.
//
// BAR routing. The guest can move a BAR whenever it likes, and a `Bus` is
// fixed once the vCPUs run. So the machine either re-inserts ranges when a
// `PCIBarListener` hears of a move, or (simpler) covers the whole PCI window
// once with a `PCIBarWindow`, which asks the bridge where each access goes.

import Devices
import Synchronization

/// A CONFIG_ADDRESS value (configuration mechanism #1).
public struct PCIConfigAddress: Equatable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// The address of `register` (a byte offset; bits 1:0 are dropped) of bus:device.function.
    public init(bus: UInt8, device: Int, function: Int, offset: Int, enabled: Bool = true) {
        rawValue = (enabled ? 0x8000_0000 : 0) | UInt32(bus) << 16 | UInt32(device & 0x1F) << 11
            | UInt32(function & 0x7) << 8 | UInt32(offset & 0xFC)
    }

    /// Bit 31: configuration space accesses enabled.
    public var isEnabled: Bool { rawValue & 0x8000_0000 != 0 }
    /// Bits 27:24: AMD's extension for registers 0x100-0xFFF (0 for conventional space).
    public var extendedRegister: Int { Int(rawValue >> 24) & 0xF }
    /// Bits 23:16.
    public var bus: Int { Int(rawValue >> 16) & 0xFF }
    /// Bits 15:11.
    public var device: Int { Int(rawValue >> 11) & 0x1F }
    /// Bits 10:8.
    public var function: Int { Int(rawValue >> 8) & 0x7 }
    /// Bits 7:2: the dword register number.
    public var register: Int { Int(rawValue >> 2) & 0x3F }
}

/// Hears when a BAR starts, stops or moves decoding (the machine updates its
/// MMIO/PIO buses and its KVM ioeventfds).
public protocol PCIBarListener: Sendable {
    /// BAR `index` of the device in `slot` stopped decoding at `from` and now
    /// decodes at `to` (either may be nil). Called on the vCPU thread whose
    /// configuration write caused it (or the thread calling `register`), with
    /// the bridge's configuration lock held: calls arrive in order. It may call
    /// `barMappings()`, `barMapping(slot:index:)` and `resolve(...)`, but not
    /// `register`, `device(slot:)` or the ports (that lock is not reentrant).
    func barMoved(slot: Int, index: Int, from: PCIBarMapping?, to: PCIBarMapping?)
}

/// The host bridge: ports 0xCF8-0xCFF, bus 0, slot 0 for itself, slots 1-31 for devices.
public final class PCIHostBridge: BusDevice {
    public let name = "pci-host-bridge"
    /// CONFIG_ADDRESS; CONFIG_DATA is at +4. Register the bridge at this port
    /// with `portCount` ports.
    public static let configAddressPort: UInt64 = 0xCF8
    /// 0xCF8-0xCFF.
    public static let portCount: UInt64 = 8
    /// Slots 1...31 are for devices.
    public static let deviceSlots = 1...31

    /// The bridge's own function at 00:00.0.
    public let hostFunction: PCIFunction

    /// State the configuration ports change.
    private struct ConfigState {
        var address = PCIConfigAddress(rawValue: 0)
        var devices: [(any PCIDevice)?] = Array(repeating: nil, count: 32)
        /// Where each slot's BARs decoded after the last write, to detect moves.
        var mappings: [[PCIBarMapping?]] = Array(repeating: Array(repeating: nil, count: 6), count: 32)
    }

    /// One decoding BAR, for `resolve`.
    private struct Route {
        var slot: Int
        var mapping: PCIBarMapping
        var handler: (any BusDevice)?
    }

    private let config = Mutex(ConfigState())
    /// Lock order: `config`, then `routes`. `resolve` (every BAR access) takes only `routes`.
    private let routes = Mutex([Route]())
    private let listener: (any PCIBarListener)?

    /// A bridge with only its own function; `listener` hears every BAR change.
    public init(listener: (any PCIBarListener)? = nil) {
        self.listener = listener
        // No MSI-X table, so there is nothing to check the space against.
        let configuration = PCIConfiguration(unchecked: PCIConfigurationSpace.hostBridge())
        hostFunction = PCIFunction(name: "host-bridge", configuration: configuration)
        config.withLock { $0.devices[0] = hostFunction }
    }

    /// Puts `device` in `slot` (1...31) as function 0. Its BARs that already
    /// decode (as `PCIBarAllocator.assign` leaves them) are reported to the
    /// listener and the device as moves from nil, so that one code path in
    /// the machine installs and moves BARs.
    public func register(_ device: any PCIDevice, slot: Int) throws(PCIError) {
        guard Self.deviceSlots.contains(slot) else { throw .invalidSlot(slot) }
        try config.withLock { (s) throws(PCIError) in
            guard s.devices[slot] == nil else { throw .slotInUse(slot) }
            s.devices[slot] = device
            refreshMappings(&s, slot: slot)
        }
    }

    /// The device in `slot`, if any (slot 0 is the host function).
    public func device(slot: Int) -> (any PCIDevice)? {
        guard slot >= 0, slot < 32 else { return nil }
        return config.withLock { $0.devices[slot] }
    }

    /// Every BAR that decodes now, by slot: what the machine maps.
    public func barMappings() -> [(slot: Int, mapping: PCIBarMapping)] {
        routes.withLock { $0.map { ($0.slot, $0.mapping) } }
    }

    /// Where BAR `index` of the device in `slot` decodes now, or nil.
    public func barMapping(slot: Int, index: Int) -> PCIBarMapping? {
        routes.withLock { r in r.first { $0.slot == slot && $0.mapping.index == index }?.mapping }
    }

    /// The handler and BAR-relative offset for an access of `size` bytes at
    /// `address` in `space`, or nil if no decoding BAR holds all of it. If the
    /// guest made two BARs overlap, the lower slot's wins (hardware leaves it undefined).
    public func resolve(space: PCIAddressSpace, address: UInt64, size: Int) -> (device: any BusDevice, offset: UInt64)? {
        routes.withLock { r in
            for route in r where route.mapping.space == space && route.mapping.contains(address, length: UInt64(size)) {
                guard let h = route.handler else { return nil }
                return (h, address - route.mapping.address)
            }
            return nil
        }
    }

    // MARK: Ports 0xCF8-0xCFF

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0 where size == 4:
            return UInt64(config.withLock { $0.address.rawValue })
        case 4...7:
            return readData(byte: Int(offset - 4), size: size)
        default:
            // Byte or word accesses to 0xCF8-0xCFB are not CONFIG_ADDRESS; nothing answers.
            return allOnes(size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0 where size == 4:
            // Bits 1:0 are hardwired to zero.
            let latched = PCIConfigAddress(rawValue: UInt32(truncatingIfNeeded: value) & ~3)
            config.withLock { $0.address = latched }
        case 4...7:
            writeData(byte: Int(offset - 4), size: size, value: UInt32(truncatingIfNeeded: value))
        default:
            break
        }
    }

    /// Whether an access of `size` at byte `byte` of CONFIG_DATA is one a
    /// configuration cycle can carry: 1, 2 or 4 naturally aligned bytes.
    private static func validData(byte: Int, size: Int) -> Bool {
        (size == 1 || size == 2 || size == 4) && byte % size == 0 && byte + size <= 4
    }

    /// The addressed slot and register, or nil for a master abort.
    private static func target(_ s: ConfigState) -> (slot: Int, device: any PCIDevice, register: Int)? {
        let a = s.address
        guard a.isEnabled, a.bus == 0, a.function == 0, a.extendedRegister == 0 else { return nil }
        guard let device = s.devices[a.device] else { return nil }
        return (a.device, device, a.register)
    }

    private func readData(byte: Int, size: Int) -> UInt64 {
        guard Self.validData(byte: byte, size: size) else { return allOnes(size) }
        return config.withLock { s in
            guard let t = Self.target(s) else { return allOnes(size) }
            let dword = UInt64(t.device.readConfiguration(register: t.register))
            return (dword >> (8 * UInt64(byte))) & allOnes(size)
        }
    }

    private func writeData(byte: Int, size: Int, value: UInt32) {
        guard Self.validData(byte: byte, size: size) else { return }
        config.withLock { s in
            guard let t = Self.target(s) else { return }
            let enables = UInt8(truncatingIfNeeded: ((1 << size) - 1) << byte)
            t.device.writeConfiguration(register: t.register, value: value << (8 * UInt32(byte)), byteEnables: enables)
            // Only the command register (1) and the BARs (4-9) change where BARs decode.
            if t.register == 1 || (4...9).contains(t.register) { refreshMappings(&s, slot: t.slot) }
        }
    }

    /// Re-reads `slot`'s BAR mappings, reports changes and updates the routes.
    private func refreshMappings(_ s: inout ConfigState, slot: Int) {
        guard let device = s.devices[slot] else { return }
        let after = device.configuration.barMappings()
        let before = s.mappings[slot]
        guard after != before else { return }
        s.mappings[slot] = after
        routes.withLock { r in
            r.removeAll { $0.slot == slot }
            for m in after.compactMap({ $0 }) {
                r.append(Route(slot: slot, mapping: m, handler: device.barHandler(index: m.index)))
            }
            r.sort { ($0.slot, $0.mapping.index) < ($1.slot, $1.mapping.index) }
        }
        for i in 0..<6 where after[i] != before[i] {
            device.barMoved(index: i, from: before[i], to: after[i])
            listener?.barMoved(slot: slot, index: i, from: before[i], to: after[i])
        }
    }
}

/// One bus range covering a window of memory (or I/O) space where BARs live,
/// forwarding each access to whichever BAR decodes it now. Insert it once on
/// the MMIO bus over the PCI memory window (and, for I/O BARs, on the PIO bus
/// over the I/O window); BAR moves inside the window then need no bus changes.
/// Accesses no BAR decodes read all ones.
public final class PCIBarWindow: BusDevice {
    public let name: String
    /// The bridge that knows the BARs.
    public let bridge: PCIHostBridge
    /// Which space the window is in.
    public let space: PCIAddressSpace
    /// The window's first address; the bus gives offsets from here.
    public let base: UInt64

    public init(name: String = "pci-window", bridge: PCIHostBridge, space: PCIAddressSpace, base: UInt64) {
        self.name = name
        self.bridge = bridge
        self.space = space
        self.base = base
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (device, inner) = target(offset: offset, size: size) else { return allOnes(size) }
        return device.read(offset: inner, size: size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (device, inner) = target(offset: offset, size: size) else { return }
        device.write(offset: inner, size: size, value: value)
    }

    private func target(offset: UInt64, size: Int) -> (any BusDevice, UInt64)? {
        let (address, overflow) = base.addingReportingOverflow(offset)
        guard !overflow, size > 0 else { return nil }
        return bridge.resolve(space: space, address: address, size: size)
    }
}
