// ByteReader.swift: bounds-checked little-endian reads from a file's bytes.
//
// Kernel images come from users and may be truncated or malicious; every
// field read goes through here, so no header can make skvm read past the file.

/// Little-endian integer reads from a byte array, returning nil past the end.
struct ByteReader {
    let bytes: [UInt8]

    func u8(_ offset: Int) -> UInt8? {
        offset >= 0 && offset < bytes.count ? bytes[offset] : nil
    }

    func u16(_ offset: Int) -> UInt16? { uint(offset, 2).map { UInt16($0) } }
    func u32(_ offset: Int) -> UInt32? { uint(offset, 4).map { UInt32($0) } }
    func u64(_ offset: Int) -> UInt64? { uint(offset, 8) }

    /// `size` bytes at `offset` as a little-endian integer.
    private func uint(_ offset: Int, _ size: Int) -> UInt64? {
        guard offset >= 0, offset <= bytes.count - size else { return nil }
        var v: UInt64 = 0
        for i in 0..<size { v |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return v
    }
}
