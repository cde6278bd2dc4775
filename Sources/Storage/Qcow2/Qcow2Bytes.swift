// Qcow2Bytes.swift: big-endian fields in byte arrays.
//
// "All numbers in qcow2 are stored in Big Endian byte order" (qcow2.txt,
// General). Every caller has checked that [at, at + width) lies inside the
// array; an index past the end traps (a bug, never a read of wild memory).

extension Array where Element == UInt8 {
    /// The big-endian UInt16 at byte `at`.
    func be16(_ at: Int) -> UInt16 {
        UInt16(self[at]) << 8 | UInt16(self[at + 1])
    }

    /// The big-endian UInt32 at byte `at`.
    func be32(_ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(self[at + i]) }
        return v
    }

    /// The big-endian UInt64 at byte `at`.
    func be64(_ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(self[at + i]) }
        return v
    }

    /// Stores `value` big-endian at byte `at`.
    mutating func putBE16(_ value: UInt16, at: Int) {
        self[at] = UInt8(truncatingIfNeeded: value >> 8)
        self[at + 1] = UInt8(truncatingIfNeeded: value)
    }

    /// Stores `value` big-endian at byte `at`.
    mutating func putBE32(_ value: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * i)) }
    }

    /// Stores `value` big-endian at byte `at`.
    mutating func putBE64(_ value: UInt64, at: Int) {
        for i in 0..<8 { self[at + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * i)) }
    }
}

/// `value` rounded up to a multiple of `alignment` (a power of two), or nil on overflow.
func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
    let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
    return overflow ? nil : sum & ~(alignment - 1)
}

/// The names of the set bits in `bits`, e.g. "bits 5, 9".
func bitList(_ bits: UInt64) -> String {
    let set = (0..<64).filter { bits & (1 << UInt64($0)) != 0 }.map(String.init)
    return (set.count == 1 ? "bit " : "bits ") + set.joined(separator: ", ")
}

extension Array {
    /// `withUnsafeMutableBytes` for a body that throws `BlockError` (the
    /// standard one is `rethrows`, which erases the error type).
    mutating func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws(BlockError) -> R) throws(BlockError) -> R {
        let result: Result<R, BlockError> = withUnsafeMutableBytes { b in Result { () throws(BlockError) in try body(b) } }
        return try result.get()
    }

    /// `withUnsafeBytes` for a body that throws `BlockError`.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(BlockError) -> R) throws(BlockError) -> R {
        let result: Result<R, BlockError> = withUnsafeBytes { b in Result { () throws(BlockError) in try body(b) } }
        return try result.get()
    }
}
