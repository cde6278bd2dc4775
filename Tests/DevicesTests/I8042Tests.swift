// I8042Tests.swift: the PS/2 controller at 0x60 (offset 0, data) and 0x64
// (offset 4, status/command), and the CPU reset line it drives.
//
// IBM PS/2 Technical Reference, "Keyboard/Auxiliary Device Controller"
// (summarised on OSDev "8042 PS/2 Controller"): status bit 0 output buffer
// full, bit 2 system flag, bit 3 command/data; command 0x20 reads the
// configuration byte, 0x60 writes it, 0xAA self-test answers 0x55, 0xD1 writes
// the output port (bit 0: the active-low reset line), 0xF0-0xFF pulse output
// lines whose mask bit is clear (0xFE: bit 0, reset).

import Devices
import Testing
import TestSupport

@Suite("I8042")
struct I8042Tests {
    private let control = RecordingMachineControl()
    private var device: I8042 { I8042(control: control) }

    @Test("command 0xFE on port 0x64 pulses the reset line")
    func resetCommand() {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: 0xFE)
        #expect(control.requests == [.reset])
    }

    @Test("pulse commands reset only when mask bit 0 is clear", arguments: [(0xF0, true), (0xFA, true), (0xFF, false), (0xF1, false)] as [(UInt64, Bool)])
    func pulseCommands(_ command: UInt64, _ resets: Bool) {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: command)
        #expect(control.requests == (resets ? [.reset] : []))
    }

    @Test("0xD1 then an output-port byte with bit 0 clear resets; with bit 0 set it does not")
    func outputPort() {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: 0xD1)
        kbc.write(offset: 0, size: 1, value: 0xDF)  // A20 on, reset line high: no reset
        #expect(control.requests == [])
        kbc.write(offset: 4, size: 1, value: 0xD1)
        kbc.write(offset: 0, size: 1, value: 0xDE)  // bit 0 clear: reset asserted
        #expect(control.requests == [.reset])
    }

    @Test("self-test 0xAA answers 0x55; OBF is set until the reply is read")
    func selfTest() {
        let kbc = device
        #expect(kbc.read(offset: 4, size: 1) == 0x04)  // idle: system flag only
        kbc.write(offset: 4, size: 1, value: 0xAA)
        #expect(kbc.read(offset: 4, size: 1) == 0x0D)  // OBF | system | command-last
        #expect(kbc.read(offset: 0, size: 1) == 0x55)
        #expect(kbc.read(offset: 4, size: 1) == 0x0C)  // OBF clear
        #expect(kbc.read(offset: 0, size: 1) == 0x00)  // nothing more to read
        #expect(control.requests.isEmpty)
    }

    @Test("0x20 reads the command byte; 0x60 then a data byte writes it")
    func commandByte() {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: 0x20)
        #expect(kbc.read(offset: 0, size: 1) == 0x45)  // the reset value
        kbc.write(offset: 4, size: 1, value: 0x60)
        kbc.write(offset: 0, size: 1, value: 0x47)
        #expect(kbc.read(offset: 4, size: 1) == 0x04)  // data written last, nothing to read
        kbc.write(offset: 4, size: 1, value: 0x20)
        #expect(kbc.read(offset: 0, size: 1) == 0x47)
        #expect(control.requests.isEmpty)
    }

    @Test("port enable/disable commands update the command byte")
    func portCommands() {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: 0xAD)  // disable keyboard: bit 4
        kbc.write(offset: 4, size: 1, value: 0xA7)  // disable aux: bit 5
        kbc.write(offset: 4, size: 1, value: 0x20)
        #expect(kbc.read(offset: 0, size: 1) == 0x75)
        kbc.write(offset: 4, size: 1, value: 0xAE)
        kbc.write(offset: 4, size: 1, value: 0xA8)
        kbc.write(offset: 4, size: 1, value: 0x20)
        #expect(kbc.read(offset: 0, size: 1) == 0x45)
    }

    @Test("a byte for the absent keyboard is answered with 0xFE (timeout)")
    func absentKeyboard() {
        let kbc = device
        kbc.write(offset: 0, size: 1, value: 0xFF)  // keyboard reset command
        #expect(kbc.read(offset: 4, size: 1) == 0x05)  // OBF | system, data written last
        #expect(kbc.read(offset: 0, size: 1) == 0xFE)
    }

    @Test("replies queue at most two bytes")
    func replyQueue() {
        let kbc = device
        kbc.write(offset: 4, size: 1, value: 0xAA)
        kbc.write(offset: 4, size: 1, value: 0xAB)
        kbc.write(offset: 4, size: 1, value: 0xD0)
        #expect(kbc.read(offset: 0, size: 1) == 0x55)
        #expect(kbc.read(offset: 0, size: 1) == 0x00)
        #expect(kbc.read(offset: 4, size: 1) & 0x01 == 0)
    }

    @Test("offsets 1-3 read all ones and ignore writes", arguments: [1, 2, 3] as [UInt64])
    func otherOffsets(_ offset: UInt64) {
        let kbc = device
        #expect(kbc.read(offset: offset, size: 1) == 0xFF)
        #expect(kbc.read(offset: offset, size: 2) == 0xFFFF)
        kbc.write(offset: offset, size: 1, value: 0xFE)
        #expect(control.requests.isEmpty)
        #expect(kbc.read(offset: 4, size: 1) == 0x04)
    }
}
