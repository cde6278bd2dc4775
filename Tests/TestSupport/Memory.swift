// Memory.swift: guest memory for tests (an anonymous mmap, no VM).

import Memory

/// Guest RAM of `size` bytes in one region starting at guest address 0.
///
/// `size` must be a non-zero multiple of 4 KiB. The mapping is anonymous and
/// `MAP_NORESERVE`, so even large sizes cost only the pages a test touches.
public func makeGuestMemory(size: UInt64) throws(MemoryError) -> GuestMemory {
    guard let range = GuestRange(start: GuestAddress(0), length: size) else {
        throw .invalidLayout("size \(size) does not fit the address space")
    }
    return try GuestMemory(layout: [range], backing: .anonymous)
}

extension Array where Element == UInt8 {
    /// Appends `value` as `MemoryLayout<T>.size` little-endian bytes.
    public mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size {
            append(UInt8(truncatingIfNeeded: value >> (8 * i)))
        }
    }

    /// Overwrites `MemoryLayout<T>.size` bytes at `offset` with `value`, little-endian.
    /// The array must already be long enough.
    public mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size {
            self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }

    /// The little-endian `T` at `offset` (the array must hold it).
    public func loadLittleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }
}
