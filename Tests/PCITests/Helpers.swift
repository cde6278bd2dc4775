// Helpers.swift: recorders and small devices the PCI tests share.

import Devices
import PCI
import Synchronization

/// An MSI-X router that records every call, in order.
final class RecordingRouter: MSIXRouter {
    enum Call: Equatable, CustomStringConvertible {
        case update(vector: Int, address: UInt64, data: UInt32, masked: Bool)
        case trigger(vector: Int)
        var description: String {
            switch self {
            case .update(let v, let a, let d, let m):
                return "update(\(v), 0x\(String(a, radix: 16)), 0x\(String(d, radix: 16)), masked: \(m))"
            case .trigger(let v): return "trigger(\(v))"
            }
        }
    }
    private let log = Mutex<[Call]>([])

    func update(vector: Int, address: UInt64, data: UInt32, masked: Bool) {
        log.withLock { $0.append(.update(vector: vector, address: address, data: data, masked: masked)) }
    }
    func trigger(vector: Int) { log.withLock { $0.append(.trigger(vector: vector)) } }

    /// The calls so far, then forgets them.
    func take() -> [Call] { log.withLock { l in defer { l.removeAll() }; return l } }
}

/// A BAR listener that records every move.
final class RecordingListener: PCIBarListener {
    struct Move: Equatable {
        var slot: Int
        var index: Int
        var from: PCIBarMapping?
        var to: PCIBarMapping?
    }
    private let log = Mutex<[Move]>([])
    func barMoved(slot: Int, index: Int, from: PCIBarMapping?, to: PCIBarMapping?) {
        log.withLock { $0.append(Move(slot: slot, index: index, from: from, to: to)) }
    }
    func take() -> [Move] { log.withLock { l in defer { l.removeAll() }; return l } }
}

/// A BAR's registers: reads return a tag plus the offset, writes are recorded.
final class ProbeDevice: BusDevice {
    struct Access: Equatable {
        var offset: UInt64
        var size: Int
        var value: UInt64
    }
    let name: String
    let tag: UInt64
    private let writes = Mutex<[Access]>([])
    init(_ name: String, tag: UInt64) {
        self.name = name
        self.tag = tag
    }
    func read(offset: UInt64, size: Int) -> UInt64 { tag + offset }
    func write(offset: UInt64, size: Int, value: UInt64) {
        writes.withLock { $0.append(Access(offset: offset, size: size, value: value)) }
    }
    func takeWrites() -> [Access] { writes.withLock { w in defer { w.removeAll() }; return w } }
}

/// A guest driving configuration mechanism #1 through the bridge's ports,
/// as `outl`/`inl` to 0xCF8/0xCFC would (offsets are from 0xCF8).
struct ConfigPorts {
    let bridge: PCIHostBridge

    func select(bus: UInt8 = 0, device: Int, function: Int = 0, offset: Int, enabled: Bool = true) {
        let a = PCIConfigAddress(bus: bus, device: device, function: function, offset: offset, enabled: enabled)
        bridge.write(offset: 0, size: 4, value: UInt64(a.rawValue))
    }
    /// Reads `size` bytes at configuration offset `offset` of 00:device.function.
    func read(device: Int, function: Int = 0, offset: Int, size: Int = 4) -> UInt64 {
        select(device: device, function: function, offset: offset)
        return bridge.read(offset: 4 + UInt64(offset & 3), size: size)
    }
    func write(device: Int, function: Int = 0, offset: Int, size: Int = 4, value: UInt64) {
        select(device: device, function: function, offset: offset)
        bridge.write(offset: 4 + UInt64(offset & 3), size: size, value: value)
    }
}

/// A plain endpoint: vendor 0x1AF4 device 0x1042 (virtio-blk, modern), class 01/00.
func endpointSpace() -> PCIConfigurationSpace {
    PCIConfigurationSpace(
        vendorID: 0x1AF4, deviceID: 0x1042, classCode: .scsiStorage, revisionID: 1,
        subsystemVendorID: 0x1AF4, subsystemID: 0x0002, interruptPin: 1)
}
