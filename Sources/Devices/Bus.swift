// Bus.swift: which device answers an address.
//
// x86 has two address spaces a guest reaches devices through: 64 Ki I/O ports
// (`in`/`out`) and memory-mapped I/O (loads and stores to addresses that are
// not RAM). When KVM cannot handle an access in the kernel it exits to us with
// the address; a Bus maps that address to the device that owns the range and
// the offset inside it, as Firecracker's `vstate/bus.rs` and kvmtool's
// `kvm__register_pio` do. Ranges are disjoint; a device sees offsets only.
//
// The bus is built before the first vCPU runs and never changes afterwards,
// so lookups need no lock.

/// A device on a bus: it sees accesses as (offset inside its range, width, value).
///
/// Widths are 1, 2, 4 or 8 bytes; values are little-endian integers zero-extended
/// to 64 bits. A device answers every read, with all ones for registers it
/// does not have, as real hardware on an ISA or PCI bus does.
public protocol BusDevice: AnyObject, Sendable {
    /// A short name for statistics and traces, e.g. "serial (COM1)".
    var name: String { get }
    /// Reads `size` bytes at `offset`.
    func read(offset: UInt64, size: Int) -> UInt64
    /// Writes the low `size` bytes of `value` at `offset`.
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// Why a range could not be added to a bus.
public enum BusError: Error, Equatable, CustomStringConvertible {
    case zeroLength(base: UInt64)
    case overflow(base: UInt64, length: UInt64)
    case overlap(base: UInt64, length: UInt64, existing: String)

    public var description: String {
        switch self {
        case .zeroLength(let b): return "bus range at 0x\(String(b, radix: 16)) has length 0"
        case .overflow(let b, let l): return "bus range 0x\(String(b, radix: 16)) + 0x\(String(l, radix: 16)) overflows"
        case .overlap(let b, let l, let e):
            return "bus range [0x\(String(b, radix: 16)), +0x\(String(l, radix: 16))) overlaps \(e)"
        }
    }
}

/// An address-range map from addresses to devices.
public struct Bus: Sendable {
    /// One registered range.
    public struct Entry: Sendable {
        public let base: UInt64
        public let length: UInt64
        public let device: any BusDevice
        /// The last address inside the range (base + length - 1; no overflow by construction).
        var last: UInt64 { base + (length - 1) }
    }

    /// Sorted by base, disjoint.
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Adds `device` at [base, base + length). Throws on empty, wrapping or overlapping ranges.
    public mutating func insert(_ device: any BusDevice, base: UInt64, length: UInt64) throws(BusError) {
        guard length > 0 else { throw .zeroLength(base: base) }
        guard base.addingReportingOverflow(length - 1).overflow == false else {
            throw .overflow(base: base, length: length)
        }
        let last = base + (length - 1)
        for e in entries where base <= e.last && e.base <= last {
            throw .overlap(base: base, length: length, existing: "\(e.device.name) at 0x\(String(e.base, radix: 16))")
        }
        let index = entries.firstIndex { $0.base > base } ?? entries.endIndex
        entries.insert(Entry(base: base, length: length, device: device), at: index)
    }

    /// The entry whose range contains `address`, or nil.
    @inline(__always)
    public func entry(containing address: UInt64) -> Entry? {
        // Binary search for the last entry with base <= address.
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].base <= address { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let e = entries[low - 1]
        return address <= e.last ? e : nil
    }
}
