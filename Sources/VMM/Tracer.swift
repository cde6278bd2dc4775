// Tracer.swift: `skvm run --trace`, one line per event, for watching a guest
// talk to its devices.
//
// Tracing is decided once, at start: each vCPU loop holds the options as a
// constant, and with tracing off the hot path pays one test of an empty set.
// Lines are written with one write(2) each, so lines from several vCPU
// threads never interleave mid-line.

#if canImport(Glibc)
import Glibc
#endif

/// What to trace.
public struct TraceOptions: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Every exit, by reason (IO and MMIO exits get their own lines when those are traced).
    public static let exits = TraceOptions(rawValue: 1)
    /// Port I/O: port, direction, size, data, the device.
    public static let pio = TraceOptions(rawValue: 2)
    /// MMIO: address, direction, size, data, the device.
    public static let mmio = TraceOptions(rawValue: 4)
    /// Virtio: each device's status handshake, notifications, chains popped, used elements, interrupts.
    public static let virtio = TraceOptions(rawValue: 8)

    /// Parses "exits,pio,mmio,virtio" or "all".
    public static func parse(_ text: String) -> TraceOptions? {
        var o: TraceOptions = []
        for word in text.split(separator: ",") {
            switch word {
            case "exits": o.insert(.exits)
            case "pio": o.insert(.pio)
            case "mmio": o.insert(.mmio)
            case "virtio": o.insert(.virtio)
            case "all": o.formUnion([.exits, .pio, .mmio, .virtio])
            default: return nil
            }
        }
        return o.isEmpty ? nil : o
    }
}

/// Where trace lines go.
public final class Tracer: Sendable {
    public let options: TraceOptions
    private let fd: Int32
    private let ownsFD: Bool

    /// Traces `options` to stderr, or to `path` (created or truncated).
    public init(options: TraceOptions, path: String?) throws(ConfigError) {
        self.options = options
        if let path {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ConfigError("--trace-file: cannot open '\(path)': \(String(cString: strerror(errno)))") }
            self.fd = fd
            ownsFD = true
        } else {
            fd = STDERR_FILENO
            ownsFD = false
        }
    }

    deinit { if ownsFD { close(fd) } }

    /// Writes `line` and a newline in one write(2).
    public func emit(_ line: String) {
        writeAll(fd, Array((line + "\n").utf8))
    }

    /// "0x48" for 1 byte, "0x0048" for 2, with the width's leading zeros.
    static func data(_ value: UInt64, size: Int) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, size * 2 - digits.count)) + digits
    }
}
