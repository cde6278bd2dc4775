// Serial16550Tests.swift: the 16550A UART's registers, FIFO and interrupt line.
//
// National Semiconductor PC16550D datasheet: table 2 (register map, DLAB),
// 8.4 LSR (bit 0 data ready, bit 5 THRE, bit 6 TEMT), 8.5/table 4 IIR
// (0x01 none pending, 0x04 received data, 0x02 THR empty, bits 7:6 set when
// FIFOs are enabled; reading IIR clears a THRE interrupt), 8.6 IER (ERBFI,
// ETBEI), FCR (bit 0 FIFO enable, bit 1 clear receive FIFO), 8.7 MCR bit 4
// loopback with the modem outputs wired to the inputs (DTR->DSR, RTS->CTS,
// OUT1->RI, OUT2->DCD), 8.10 the scratch register.

import Devices
import Testing
import TestSupport

/// Register offsets (datasheet table 2).
private enum Register {
    static let rbr: UInt64 = 0, thr: UInt64 = 0, dll: UInt64 = 0
    static let ier: UInt64 = 1, dlm: UInt64 = 1
    static let iir: UInt64 = 2, fcr: UInt64 = 2
    static let lcr: UInt64 = 3, mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
}

/// A UART wired to recorders.
private struct Harness {
    let irq = RecordingInterruptLine()
    let output = RecordingSerialOutput()
    let uart: Serial16550

    init() { uart = Serial16550(name: "COM1", interrupt: irq, output: output) }

    func read(_ register: UInt64) -> UInt8 { UInt8(uart.read(offset: register, size: 1)) }
    func write(_ register: UInt64, _ value: UInt8) { uart.write(offset: register, size: 1, value: UInt64(value)) }
}

@Suite("Serial16550: transmit and status")
struct SerialTransmitTests {
    @Test("THR writes reach the output in order")
    func transmit() {
        let h = Harness()
        for b in Array("Hi\n".utf8) { h.write(Register.thr, b) }
        #expect(h.output.bytes == [0x48, 0x69, 0x0A])
        #expect(h.irq.levels.isEmpty)  // no interrupt enabled: the line never moves
    }

    @Test("reset state: LSR 0x60 (THRE|TEMT), IIR 0x01, IER 0, LCR 0x03, MCR 0x08, MSR 0xB0")
    func idleRegisters() {
        let h = Harness()
        #expect(h.read(Register.lsr) == 0x60)
        #expect(h.read(Register.iir) == 0x01)
        #expect(h.read(Register.ier) == 0x00)
        #expect(h.read(Register.lcr) == 0x03)
        #expect(h.read(Register.mcr) == 0x08)
        #expect(h.read(Register.msr) == 0xB0)
        #expect(h.read(Register.rbr) == 0x00)  // empty FIFO
        #expect(h.uart.name == "COM1")
        #expect(h.uart.inputSpace == 64)
    }

    @Test("the scratch register keeps what is written")
    func scratch() {
        let h = Harness()
        h.write(Register.scr, 0xA5)
        #expect(h.read(Register.scr) == 0xA5)
        h.write(Register.scr, 0x00)
        #expect(h.read(Register.scr) == 0x00)
        #expect(h.output.bytes.isEmpty)
    }

    @Test("LSR and MSR ignore writes")
    func readOnlyRegisters() {
        let h = Harness()
        h.write(Register.lsr, 0x00)
        h.write(Register.msr, 0x00)
        #expect(h.read(Register.lsr) == 0x60)
        #expect(h.read(Register.msr) == 0xB0)
    }

    @Test("offsets past the eight registers read all ones and ignore writes")
    func beyondRegisters() {
        let h = Harness()
        #expect(h.uart.read(offset: 8, size: 1) == 0xFF)
        #expect(h.uart.read(offset: 8, size: 2) == 0xFFFF)
        h.uart.write(offset: 8, size: 1, value: 0x41)
        #expect(h.output.bytes.isEmpty)
    }

    @Test("with DLAB set, offsets 0 and 1 are the divisor latch: no output, IER unchanged")
    func divisorLatch() {
        let h = Harness()
        h.write(Register.ier, 0x05)                   // ERBFI | ELSI
        h.write(Register.lcr, 0x83)                   // DLAB | 8N1
        #expect(h.read(Register.dll) == 0x0C)         // reset divisor 12: 9600 baud
        #expect(h.read(Register.dlm) == 0x00)
        h.write(Register.dll, 0x01)                   // 115200 baud
        h.write(Register.dlm, 0x02)
        #expect(h.read(Register.dll) == 0x01)
        #expect(h.read(Register.dlm) == 0x02)
        #expect(h.read(Register.lcr) == 0x83)
        h.write(Register.lcr, 0x03)
        #expect(h.output.bytes.isEmpty)
        #expect(h.read(Register.ier) == 0x05)
        // The latch is kept while DLAB is clear.
        h.write(Register.lcr, 0x80)
        #expect(h.read(Register.dll) == 0x01)
        #expect(h.read(Register.dlm) == 0x02)
        #expect(h.irq.levels.isEmpty)
    }

    @Test("IER keeps only its four defined bits")
    func ierMask() {
        let h = Harness()
        h.write(Register.ier, 0xF8)
        #expect(h.read(Register.ier) == 0x08)
    }

    @Test("FCR bit 0 enables the FIFOs: IIR bits 7:6 read 11")
    func fifoEnabledBits() {
        let h = Harness()
        h.write(Register.fcr, 0x01)
        #expect(h.read(Register.iir) == 0xC1)
        h.write(Register.fcr, 0x00)
        #expect(h.read(Register.iir) == 0x01)
    }
}

@Suite("Serial16550: interrupts")
struct SerialInterruptTests {
    @Test("THRE: raised when ETBEI is enabled, cleared by reading IIR, raised again by a THR write")
    func transmitterEmpty() {
        let h = Harness()
        h.write(Register.ier, 0x02)
        #expect(h.irq.levels == [true])
        #expect(h.read(Register.iir) == 0x02)
        #expect(h.irq.levels == [true, false])
        #expect(h.read(Register.iir) == 0x01)    // acknowledged: nothing pending
        h.write(Register.thr, 0x41)
        #expect(h.irq.levels == [true, false, true])
        #expect(h.read(Register.iir) == 0x02)
        #expect(h.irq.levels == [true, false, true, false])
        #expect(h.output.bytes == [0x41])
    }

    @Test("the line changes level only on real changes: no redundant toggles")
    func noRedundantToggles() {
        let h = Harness()
        h.write(Register.ier, 0x02)
        h.write(Register.thr, 0x41)              // THRE still pending: no new edge
        h.write(Register.thr, 0x42)
        _ = h.read(Register.lsr)
        _ = h.read(Register.scr)
        h.write(Register.ier, 0x03)              // ETBEI already set: no re-raise
        #expect(h.irq.levels == [true])
        _ = h.read(Register.iir)
        _ = h.read(Register.iir)
        _ = h.read(Register.lsr)
        #expect(h.irq.levels == [true, false])
    }

    @Test("disabling ETBEI lowers the line; re-enabling it raises THRE again")
    func toggleETBEI() {
        let h = Harness()
        h.write(Register.ier, 0x02)
        h.write(Register.ier, 0x00)
        #expect(h.irq.levels == [true, false])
        #expect(h.read(Register.iir) == 0x01)
        h.write(Register.ier, 0x02)
        #expect(h.irq.levels == [true, false, true])
    }

    @Test("received data: raised with ERBFI when a byte arrives, cleared when RBR is read")
    func receivedData() {
        let h = Harness()
        h.write(Register.ier, 0x01)
        #expect(h.irq.levels.isEmpty)
        #expect(h.uart.receive(0x61))
        #expect(h.irq.levels == [true])
        #expect(h.read(Register.iir) == 0x04)
        #expect(h.read(Register.lsr) == 0x61)    // DR | THRE | TEMT
        #expect(h.read(Register.rbr) == 0x61)
        #expect(h.irq.levels == [true, false])
        #expect(h.read(Register.lsr) == 0x60)
        #expect(h.read(Register.iir) == 0x01)
    }

    @Test("received data stays pending until the FIFO is empty")
    func receivedDataUntilEmpty() {
        let h = Harness()
        h.write(Register.ier, 0x01)
        h.uart.receive(0x31)
        h.uart.receive(0x32)
        #expect(h.read(Register.rbr) == 0x31)
        #expect(h.irq.levels == [true])
        #expect(h.read(Register.rbr) == 0x32)
        #expect(h.irq.levels == [true, false])
    }

    @Test("received data outranks THRE in IIR (datasheet table 4)")
    func priority() {
        let h = Harness()
        h.write(Register.ier, 0x03)
        h.uart.receive(0x7A)
        #expect(h.read(Register.iir) == 0x04)
        #expect(h.irq.levels == [true])          // still pending: THRE is not acknowledged by this read
        _ = h.read(Register.rbr)
        #expect(h.read(Register.iir) == 0x02)
        #expect(h.read(Register.iir) == 0x01)
        #expect(h.irq.levels == [true, false])
    }

    @Test("without ERBFI a received byte sets DR but raises nothing")
    func receiveWithoutInterrupt() {
        let h = Harness()
        h.uart.receive(0x55)
        #expect(h.irq.levels.isEmpty)
        #expect(h.read(Register.lsr) == 0x61)
        #expect(h.read(Register.iir) == 0x01)
    }
}

@Suite("Serial16550: receive FIFO")
struct SerialFIFOTests {
    @Test("receive refuses a 65th byte and accepts again after a read; order is kept")
    func capacity() {
        let h = Harness()
        for i in 0..<64 { #expect(h.uart.receive(UInt8(i))) }
        #expect(h.uart.inputSpace == 0)
        #expect(!h.uart.receive(0xEE))
        #expect(h.read(Register.rbr) == 0)
        #expect(h.uart.inputSpace == 1)
        #expect(h.uart.receive(0xEE))
        #expect(!h.uart.receive(0xEF))
        var drained: [UInt8] = []
        while h.read(Register.lsr) & 0x01 != 0 { drained.append(h.read(Register.rbr)) }
        #expect(drained == (1..<64).map { UInt8($0) } + [0xEE])
        #expect(h.uart.inputSpace == 64)
    }

    @Test("FCR bit 1 clears the receive FIFO and drops the RDA interrupt")
    func clearReceiveFIFO() {
        let h = Harness()
        h.write(Register.ier, 0x01)
        h.uart.receive(1)
        h.uart.receive(2)
        #expect(h.uart.inputSpace == 62)
        h.write(Register.fcr, 0x03)
        #expect(h.uart.inputSpace == 64)
        #expect(h.read(Register.lsr) == 0x60)
        #expect(h.irq.levels == [true, false])
        #expect(h.read(Register.iir) == 0xC1)
        h.uart.receive(3)
        #expect(h.read(Register.rbr) == 3)
    }

    @Test("with DLAB set, reading offset 0 returns DLL and leaves the FIFO alone")
    func dlabReadKeepsFIFO() {
        let h = Harness()
        h.uart.receive(0x77)
        h.write(Register.lcr, 0x83)
        #expect(h.read(Register.dll) == 0x0C)
        h.write(Register.lcr, 0x03)
        #expect(h.read(Register.lsr) == 0x61)
        #expect(h.read(Register.rbr) == 0x77)
    }

    @Test("FCR without bit 1 keeps the FIFO")
    func fcrKeepsFIFO() {
        let h = Harness()
        h.uart.receive(9)
        h.write(Register.fcr, 0x01)
        #expect(h.read(Register.rbr) == 9)
    }
}

@Suite("Serial16550: loopback (MCR bit 4)")
struct SerialLoopbackTests {
    @Test("a THR byte comes back in RBR and nothing is output")
    func loopback() {
        let h = Harness()
        h.write(Register.mcr, 0x10)
        h.write(Register.thr, 0x5A)
        #expect(h.output.bytes.isEmpty)
        #expect(h.read(Register.lsr) == 0x61)
        #expect(h.read(Register.rbr) == 0x5A)
        #expect(h.read(Register.lsr) == 0x60)
        h.write(Register.mcr, 0x00)
        h.write(Register.thr, 0x5B)
        #expect(h.output.bytes == [0x5B])
    }

    @Test("the line is ignored in loopback: receive refuses")
    func receiveRefusedInLoopback() {
        let h = Harness()
        h.write(Register.mcr, 0x10)
        #expect(!h.uart.receive(0x41))
        #expect(h.read(Register.lsr) == 0x60)
    }

    @Test("a looped-back byte raises RDA with ERBFI")
    func loopbackInterrupt() {
        let h = Harness()
        h.write(Register.mcr, 0x10)
        h.write(Register.ier, 0x01)
        h.write(Register.thr, 0x42)
        #expect(h.irq.levels == [true])
        #expect(h.read(Register.iir) == 0x04)
        _ = h.read(Register.rbr)
        #expect(h.irq.levels == [true, false])
    }

    @Test(
        "MSR mirrors MCR: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD",
        arguments: [(0x10, 0x00), (0x11, 0x20), (0x12, 0x10), (0x14, 0x40), (0x18, 0x80), (0x1F, 0xF0)] as [(UInt8, UInt8)])
    func modemStatus(_ mcr: UInt8, _ msr: UInt8) {
        let h = Harness()
        h.write(Register.mcr, mcr)
        #expect(h.read(Register.msr) == msr)
        #expect(h.read(Register.mcr) == mcr)
    }

    @Test("MCR keeps its five defined bits; leaving loopback restores MSR 0xB0")
    func mcrMask() {
        let h = Harness()
        h.write(Register.mcr, 0xFF)
        #expect(h.read(Register.mcr) == 0x1F)
        h.write(Register.mcr, 0x0B)
        #expect(h.read(Register.msr) == 0xB0)
    }
}
