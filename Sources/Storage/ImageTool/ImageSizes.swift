// ImageSizes.swift: sizes as `skvm img` reads and prints them, like qemu-img.

#if canImport(Glibc)
import Glibc
#endif

public enum ImageSize {
    /// Parses "10G", "512M", "64k", "1T", "4096" (bytes; suffixes K, M, G,
    /// T, P, E are powers of 1024, either case, optionally followed by "iB"
    /// or "B"). nil when malformed or above 2^63.
    public static func parse(_ text: String) -> UInt64? {
        var digits = Substring(text)
        var multiplier: UInt64 = 1
        for suffix in ["iB", "B"] where digits.hasSuffix(suffix) && digits.count > suffix.count {
            digits = digits.dropLast(suffix.count)
            break
        }
        if let last = digits.last, !last.isNumber {
            let units: [Character: UInt64] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60, "b": 1]
            guard let m = units[Character(last.lowercased())] else { return nil }
            multiplier = m
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, let n = UInt64(digits) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: multiplier)
        guard !overflow, v <= UInt64(Int64.max) else { return nil }
        return v
    }

    /// qemu-img's human size: three significant digits, binary units
    /// ("8 MiB", "196 KiB", "0.977 KiB", "2 TiB").
    public static func human(_ bytes: UInt64) -> String {
        let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
        var i = 0
        // The unit changes at 1000 of the smaller one, as qemu's size_to_str.
        while i < suffixes.count - 1 && Double(bytes) >= 1000 * Double(UInt64(1) << UInt64(10 * i)) { i += 1 }
        let value = Double(bytes) / Double(UInt64(1) << UInt64(10 * i))
        return format3g(value) + " " + suffixes[i] + "B"
    }

    /// printf("%0.3g", value).
    static func format3g(_ value: Double) -> String {
        var buffer = [CChar](repeating: 0, count: 32)
        _ = withVaList([value]) { vsnprintf(&buffer, 32, "%0.3g", $0) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
