// ConsoleEscapeTests.swift: the console's Ctrl-A escape, as in QEMU's
// -nographic mux: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A, any other
// escape is swallowed.

import Testing
import VMM

@Suite("ConsoleEscape")
struct ConsoleEscapeTests {
    private func run(_ bytes: [UInt8]) -> [ConsoleEscape.Action] {
        var escape = ConsoleEscape()
        return bytes.map { escape.process($0) }
    }

    @Test("plain bytes pass through, including Ctrl-C and NUL")
    func plain() {
        #expect(run([0x41, 0x0A, 0x03, 0x00, 0xFF]) == [.send(0x41), .send(0x0A), .send(0x03), .send(0x00), .send(0xFF)])
    }

    @Test("Ctrl-A x and Ctrl-A X quit", arguments: [UInt8(ascii: "x"), UInt8(ascii: "X")])
    func quit(_ key: UInt8) {
        #expect(run([0x01, key]) == [.none, .quit])
    }

    @Test("Ctrl-A Ctrl-A sends one Ctrl-A")
    func literalCtrlA() {
        #expect(run([0x01, 0x01]) == [.none, .send(0x01)])
        #expect(run([0x01, 0x01, 0x01, 0x01]) == [.none, .send(0x01), .none, .send(0x01)])
    }

    @Test("Ctrl-A then any other byte is swallowed, and the next byte is plain again")
    func swallowed() {
        #expect(run([0x01, UInt8(ascii: "c"), UInt8(ascii: "x")]) == [.none, .none, .send(UInt8(ascii: "x"))])
        #expect(run([0x01, 0x03, 0x41]) == [.none, .none, .send(0x41)])
    }

    @Test("x without a preceding Ctrl-A is an ordinary byte")
    func plainX() {
        #expect(run([UInt8(ascii: "x")]) == [.send(UInt8(ascii: "x"))])
        #expect(ConsoleEscape.escapeKey == 0x01)
    }
}
