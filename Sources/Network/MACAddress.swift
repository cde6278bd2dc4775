// MACAddress.swift: Ethernet addresses for --net, parsed and defaulted.

/// A 48-bit Ethernet (MAC) address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    /// Parses "52:54:00:12:34:56" (also with '-'); a multicast address (bit 0
    /// of the first byte set) is refused: no NIC may use one.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).count == 6
            ? text.split(separator: ":", omittingEmptySubsequences: false)
            : text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var b: [UInt8] = []
        for p in parts {
            guard p.count == 2, let v = UInt8(p, radix: 16) else { return nil }
            b.append(v)
        }
        guard b[0] & 1 == 0 else { return nil }
        bytes = b
    }

    /// A stable, locally administered unicast address for a NIC: QEMU's
    /// 52:54:00 prefix (0x52 has the locally-administered bit set and the
    /// multicast bit clear), then three bytes of an FNV-1a hash of `seed`
    /// (the tap's name and the NIC's index), so the same command line gives
    /// the guest the same MAC every time and two NICs differ.
    public static func stable(seed: String) -> MACAddress {
        var h: UInt32 = 0x811C_9DC5
        for c in seed.utf8 {
            h ^= UInt32(c)
            h = h &* 0x0100_0193
        }
        return MACAddress(bytes: [0x52, 0x54, 0x00, UInt8(truncatingIfNeeded: h >> 16), UInt8(truncatingIfNeeded: h >> 8), UInt8(truncatingIfNeeded: h)])!
    }

    public var description: String {
        bytes.map { b in
            let s = String(b, radix: 16)
            return s.count == 1 ? "0" + s : s
        }.joined(separator: ":")
    }
}
