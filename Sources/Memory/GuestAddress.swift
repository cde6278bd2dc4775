// GuestAddress.swift: guest-physical addresses as a type of their own.
//
// Following rust-vmm's vm-memory, a GuestAddress has no `+` or `-`: every
// step that could wrap around 2^64 goes through `adding(_:)`, which returns
// nil on overflow. A guest controls many of the numbers that become addresses
// (descriptor addresses, multiboot fields, DMA targets), and one unchecked
// addition is all it takes to reach memory that is not the guest's.

/// A guest-physical address.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// `self + n`, or nil when the sum does not fit in 64 bits.
    public func adding(_ n: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(n)
        return overflow ? nil : GuestAddress(sum)
    }

    /// The distance from `base` up to `self`, or nil when `self` is below `base`.
    public func offset(from base: GuestAddress) -> UInt64? {
        rawValue >= base.rawValue ? rawValue - base.rawValue : nil
    }

    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.rawValue < b.rawValue }

    public var description: String { hex(rawValue) }
}

/// A half-open range of guest-physical addresses, [start, start + length).
public struct GuestRange: Hashable, Sendable, CustomStringConvertible {
    public let start: GuestAddress
    public let length: UInt64

    /// A range, or nil when `start + length` overflows.
    public init?(start: GuestAddress, length: UInt64) {
        guard start.adding(length) != nil else { return nil }
        self.start = start
        self.length = length
    }

    /// The first address past the range.
    public var end: GuestAddress { GuestAddress(start.rawValue + length) }  // checked in init

    public func contains(_ other: GuestRange) -> Bool {
        other.start >= start && other.end <= end
    }

    public func overlaps(_ other: GuestRange) -> Bool {
        length > 0 && other.length > 0 && start < other.end && other.start < end
    }

    public var description: String { "[\(start), \(end))" }
}

/// `0x` followed by the value in lower-case hexadecimal.
public func hex<T: BinaryInteger>(_ value: T) -> String {
    "0x" + String(value, radix: 16)
}
