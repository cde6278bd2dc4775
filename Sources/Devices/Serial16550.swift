// Serial16550.swift: the 16550A UART, as on COM1 (ports 0x3F8-0x3FF, IRQ 4).
//
// The register model follows the National Semiconductor PC16550D datasheet
// (and QEMU's hw/char/serial.c, which guests are written against). Eight
// byte-wide registers; LCR bit 7 (DLAB) swaps the first two for the baud-rate
// divisor latch:
//
//   offset  read                   write
//   0       RBR receive buffer     THR transmit holding   (DLAB=1: DLL)
//   1       IER interrupt enable   IER                    (DLAB=1: DLM)
//   2       IIR interrupt ident.   FCR FIFO control
//   3       LCR line control       LCR
//   4       MCR modem control      MCR
//   5       LSR line status        (factory test)
//   6       MSR modem status       (read only)
//   7       SCR scratch            SCR
//
// Transmission is instantaneous: a byte written to THR goes straight to the
// output, so the transmitter is always empty (LSR THRE|TEMT). The receive
// FIFO holds at most 64 bytes; vm-superio caps it for the same reason (a
// CVE-2020-27173-style unbounded buffer is a host DoS). The input side asks
// `inputSpace` before offering bytes, so nothing is dropped.

import Synchronization

/// A 16550A UART.
public final class Serial16550: BusDevice {
    public let name: String

    // Register bits (PC16550D datasheet, table 2).
    static let ierReceivedData: UInt8 = 0x01        // ERBFI
    static let ierTransmitterEmpty: UInt8 = 0x02    // ETBEI
    static let ierModemStatus: UInt8 = 0x08         // EDSSI
    static let iirNoInterrupt: UInt8 = 0x01
    static let iirTransmitterEmpty: UInt8 = 0x02
    static let iirReceivedData: UInt8 = 0x04
    static let iirFIFOEnabled: UInt8 = 0xC0
    static let lcrDLAB: UInt8 = 0x80
    static let mcrLoopback: UInt8 = 0x10
    static let lsrDataReady: UInt8 = 0x01
    static let lsrTHREmpty: UInt8 = 0x20
    static let lsrTransmitterEmpty: UInt8 = 0x40
    /// Carrier detect, data set ready, clear to send: a cable with someone on the other end.
    static let msrConnected: UInt8 = 0xB0

    /// Receive FIFO depth of the 16550A.
    public static let fifoCapacity = 64

    private struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0x03                // 8N1, what firmware leaves
        var mcr: UInt8 = 0x08                // OUT2
        var scr: UInt8 = 0
        var fcr: UInt8 = 0
        var divisor: UInt16 = 12             // 9600 baud
        var transmitInterruptPending = false // THRE interrupt latched until IIR read or THR write
        var rx = RingBuffer(capacity: Serial16550.fifoCapacity)
        var lineHigh = false
    }

    private let state = Mutex(State())
    private let interrupt: any InterruptLine
    private let output: any SerialOutput

    public init(name: String = "serial", interrupt: any InterruptLine, output: any SerialOutput) {
        self.name = name
        self.interrupt = interrupt
        self.output = output
    }

    // MARK: Bus access

    public func read(offset: UInt64, size: Int) -> UInt64 {
        // The registers are byte-wide; a wider access reads the first one, as on ISA.
        guard offset < 8 else { return allOnes(size) }
        return UInt64(state.withLock { s in
            let v = readRegister(&s, Int(offset))
            updateInterrupt(&s)
            return v
        })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < 8 else { return }
        state.withLock { s in
            writeRegister(&s, Int(offset), UInt8(truncatingIfNeeded: value))
            updateInterrupt(&s)
        }
    }

    // MARK: Input from the host side

    /// How many more bytes `receive` can accept now.
    public var inputSpace: Int { state.withLock { Self.fifoCapacity - $0.rx.count } }

    /// Puts `byte` in the receive FIFO as if it arrived on the line. Returns
    /// false (and drops nothing: the caller keeps the byte) when the FIFO is
    /// full, or when the UART is in loopback mode and ignores the line.
    @discardableResult
    public func receive(_ byte: UInt8) -> Bool {
        state.withLock { s in
            guard s.mcr & Self.mcrLoopback == 0, s.rx.push(byte) else { return false }
            updateInterrupt(&s)
            return true
        }
    }

    // MARK: Registers

    private func readRegister(_ s: inout State, _ r: Int) -> UInt8 {
        let dlab = s.lcr & Self.lcrDLAB != 0
        switch r {
        case 0:
            if dlab { return UInt8(truncatingIfNeeded: s.divisor) }
            return s.rx.pop() ?? 0
        case 1:
            if dlab { return UInt8(truncatingIfNeeded: s.divisor >> 8) }
            return s.ier
        case 2:
            let iir = identification(s)
            // Reading IIR while it reports THRE is what acknowledges that interrupt.
            if iir & 0x0F == Self.iirTransmitterEmpty { s.transmitInterruptPending = false }
            return iir | (s.fcr & 0x01 != 0 ? Self.iirFIFOEnabled : 0)
        case 3: return s.lcr
        case 4: return s.mcr
        case 5:
            return (s.rx.isEmpty ? 0 : Self.lsrDataReady) | Self.lsrTHREmpty | Self.lsrTransmitterEmpty
        case 6: return modemStatus(s)
        default: return s.scr
        }
    }

    private func writeRegister(_ s: inout State, _ r: Int, _ v: UInt8) {
        let dlab = s.lcr & Self.lcrDLAB != 0
        switch r {
        case 0:
            if dlab { s.divisor = (s.divisor & 0xFF00) | UInt16(v); return }
            if s.mcr & Self.mcrLoopback != 0 {
                _ = s.rx.push(v)  // loopback: the byte comes straight back; a full FIFO overruns
            } else {
                output.write(v)
            }
            // The (instantaneous) transmitter is empty again at once.
            s.transmitInterruptPending = true
        case 1:
            if dlab { s.divisor = (s.divisor & 0x00FF) | (UInt16(v) << 8); return }
            let enablingTHRE = v & Self.ierTransmitterEmpty != 0 && s.ier & Self.ierTransmitterEmpty == 0
            s.ier = v & 0x0F
            // Enabling the THRE interrupt while THR is empty raises it at once (datasheet 8.6.2).
            if enablingTHRE { s.transmitInterruptPending = true }
        case 2:
            // FCR: bit 0 enables the FIFOs, bit 1 clears the receive FIFO.
            if v & 0x02 != 0 { s.rx.removeAll() }
            s.fcr = v & 0xC9
        case 3: s.lcr = v
        case 4: s.mcr = v & 0x1F
        case 5, 6: break  // LSR and MSR are read-only
        default: s.scr = v
        }
    }

    /// IIR's low nibble: the highest-priority pending interrupt (datasheet table 4).
    private func identification(_ s: State) -> UInt8 {
        if s.ier & Self.ierReceivedData != 0 && !s.rx.isEmpty { return Self.iirReceivedData }
        if s.ier & Self.ierTransmitterEmpty != 0 && s.transmitInterruptPending { return Self.iirTransmitterEmpty }
        return Self.iirNoInterrupt
    }

    /// MSR. In loopback, the modem inputs are wired to the MCR outputs
    /// (DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD): Linux's 8250 driver tests this.
    private func modemStatus(_ s: State) -> UInt8 {
        guard s.mcr & Self.mcrLoopback != 0 else { return Self.msrConnected }
        let m = s.mcr
        return ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
    }

    /// Drives the IRQ line to match IIR (QEMU does not gate it with OUT2 either).
    private func updateInterrupt(_ s: inout State) {
        let pending = identification(s) != Self.iirNoInterrupt
        if pending != s.lineHigh {
            s.lineHigh = pending
            interrupt.setLevel(pending)
        }
    }
}

/// A fixed-capacity FIFO of bytes; allocates once.
struct RingBuffer {
    private var storage: [UInt8]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) { storage = [UInt8](repeating: 0, count: capacity) }

    var isEmpty: Bool { count == 0 }

    /// Appends `byte`; false when full.
    mutating func push(_ byte: UInt8) -> Bool {
        guard count < storage.count else { return false }
        storage[(head + count) % storage.count] = byte
        count += 1
        return true
    }

    mutating func pop() -> UInt8? {
        guard count > 0 else { return nil }
        let b = storage[head]
        head = (head + 1) % storage.count
        count -= 1
        return b
    }

    mutating func removeAll() {
        head = 0
        count = 0
    }
}
