// MemoryError.swift: everything that can go wrong with guest memory.

/// An error from creating or accessing guest memory.
public enum MemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The access [address, address + size) is not entirely inside guest RAM.
    case outOfRange(address: UInt64, size: UInt64)
    /// address + size overflows 64 bits.
    case overflow(address: UInt64, size: UInt64)
    /// The regions asked for are empty, unaligned or overlapping.
    case invalidLayout(String)
    /// The host could not map `size` bytes (mmap's errno).
    case mapFailed(size: UInt64, errno: Int32, hugetlb: Bool)

    public var description: String {
        switch self {
        case .outOfRange(let a, let s):
            return "guest memory access [\(hex(a)), +\(hex(s))) is outside guest RAM"
        case .overflow(let a, let s):
            return "guest memory access at \(hex(a)) of \(hex(s)) bytes overflows the address space"
        case .invalidLayout(let why):
            return "invalid guest memory layout: \(why)"
        case .mapFailed(let size, let e, let huge):
            let what = huge ? "hugetlb memory" : "memory"
            return "cannot map \(formatBytes(size)) of \(what) for the guest: \(errnoString(e))"
        }
    }
}

/// `strerror(e)` as a Swift string.
public func errnoString(_ e: Int32) -> String {
    guard let s = strerror(e) else { return "errno \(e)" }
    return String(cString: s)
}

/// A byte count the way a person reads it: "512 MiB", "4 GiB", "1536 KiB", "100 bytes".
public func formatBytes(_ n: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
    for (size, name) in units where n >= size && n % size == 0 {
        return "\(n / size) \(name)"
    }
    for (size, name) in units where n >= size {
        // Whole units, then one decimal from the remainder: n * 10 could overflow.
        return "\(n / size).\((n % size) * 10 / size) \(name)"
    }
    return n == 1 ? "1 byte" : "\(n) bytes"
}

#if canImport(Glibc)
import Glibc
#endif
