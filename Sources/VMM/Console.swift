// Console.swift: the serial console on the host's terminal.
//
// The guest's COM1 output goes to stdout; stdin feeds COM1's receive FIFO.
// When stdin is a terminal it is put in raw mode (no line editing, no echo,
// Ctrl-C goes to the guest rather than killing skvm), and restored on every
// way out. As in QEMU, Ctrl-A is the escape key: Ctrl-A x quits, Ctrl-A
// Ctrl-A sends one Ctrl-A to the guest.

#if canImport(Glibc)
import Glibc
#endif
import Devices

/// Writes the guest's serial output to a host file descriptor (stdout).
public final class ConsoleOutput: SerialOutput {
    private let fd: Int32
    public init(fd: Int32 = STDOUT_FILENO) { self.fd = fd }

    public func write(_ byte: UInt8) {
        var b = byte
        // Unbuffered, so guest output interleaves correctly with skvm's stderr.
        while true {
            let n = Glibc.write(fd, &b, 1)
            if n == 1 || (n < 0 && errno != EINTR && errno != EAGAIN) { return }  // EPIPE etc: output is gone
        }
    }
}

/// The Ctrl-A escape state machine for console input.
public struct ConsoleEscape: Sendable {
    public enum Action: Equatable, Sendable {
        case send(UInt8)
        case quit
        case none
    }
    public static let escapeKey: UInt8 = 0x01  // Ctrl-A
    private var escaped = false

    public init() {}

    public mutating func process(_ byte: UInt8) -> Action {
        if escaped {
            escaped = false
            switch byte {
            case UInt8(ascii: "x"), UInt8(ascii: "X"): return .quit
            case Self.escapeKey: return .send(Self.escapeKey)
            default: return .none  // unknown escapes are swallowed, as in QEMU
            }
        }
        if byte == Self.escapeKey {
            escaped = true
            return .none
        }
        return .send(byte)
    }
}

/// Raw mode for the terminal on stdin, restorable exactly once.
public final class TerminalMode: @unchecked Sendable {
    // SAFETY: used from the main thread only (set up and restored there).
    private var saved: termios? = nil
    private let fd: Int32

    public init(fd: Int32 = STDIN_FILENO) { self.fd = fd }

    /// Switches to raw input if `fd` is a terminal. Output processing is kept
    /// as it was, so the guest's "\n" still starts a new line.
    public func enterRawMode() {
        guard isatty(fd) == 1 else { return }
        var t = termios()
        guard tcgetattr(fd, &t) == 0 else { return }
        saved = t
        var raw = t
        cfmakeraw(&raw)
        raw.c_oflag = t.c_oflag
        tcsetattr(fd, TCSANOW, &raw)
    }

    /// Restores the saved settings (idempotent).
    public func restore() {
        guard var t = saved else { return }
        tcsetattr(fd, TCSANOW, &t)
        saved = nil
    }
}
