// TerminalTests.swift: skvm on a real terminal (a pty from util-linux `script`):
// raw mode (bytes reach the guest without Enter; Ctrl-C goes to the guest, not
// to skvm as SIGINT), and the terminal's settings restored on the way out.

import Foundation
import Testing

@Suite("Terminal", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"),
       .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/script"), "util-linux script(1) is not installed"))
struct TerminalTests {
    /// Runs skvm on the echo guest inside a pty, typing `keys` after the guest is up;
    /// returns the pty's output and whether `stty -g` was the same before and after.
    static func onTerminal(_ keys: [UInt8]) throws -> (output: String, status: Int32, restored: Bool) {
        _ = try requireGuest("echo.elf")
        let script = """
            before=$(stty -g); "\(Harness.skvm)" run --quiet --kernel guests/build/echo.elf; rc=$?; after=$(stty -g)
            echo "RC=$rc"; [ "$before" = "$after" ] && echo RESTORED=yes || echo RESTORED=no
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        p.arguments = ["-qec", script, "/dev/null"]
        p.currentDirectoryURL = Harness.root
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        let box = DataBox()
        output.fileHandleForReading.readabilityHandler = { box.append($0.availableData) }
        try p.run()
        _ = Harness.waitFor({ String(decoding: box.data, as: UTF8.self).contains("echo: ready") }, timeout: 60)
        try input.fileHandleForWriting.write(contentsOf: Data(keys))
        _ = Harness.waitFor({ !p.isRunning }, timeout: 60)
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        box.append(output.fileHandleForReading.readDataToEndOfFile())
        // A terminal ends lines with "\r\n", which Swift treats as one Character.
        let text = String(decoding: box.data, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
        let rc = text.split(separator: "\n").first { $0.hasPrefix("RC=") }.flatMap { Int32($0.dropFirst(3).trimmingCharacters(in: .whitespacesAndNewlines)) } ?? -1
        return (text, rc, text.contains("RESTORED=yes"))
    }

    @Test("Raw mode: typed bytes reach the guest without Enter, and the terminal is restored")
    func rawInput() throws {
        let t = try Self.onTerminal(Array("ab".utf8) + [UInt8(ascii: "q")])
        #expect(t.output.contains("echo: got 2 bytes"), "output: \(t.output)")
        #expect(t.status == 5)
        #expect(t.restored)
    }

    @Test("Ctrl-C goes to the guest as a byte, not to skvm as SIGINT")
    func ctrlC() throws {
        let t = try Self.onTerminal([0x03, UInt8(ascii: "q")])
        #expect(t.output.contains("echo: got 1 bytes"), "output: \(t.output)")
        #expect(t.status == 3)
        #expect(t.restored)
    }

    @Test("Ctrl-A x quits from a terminal with status 0 and the terminal restored")
    func ctrlAX() throws {
        let t = try Self.onTerminal([0x01, UInt8(ascii: "x")])
        #expect(t.status == 0)
        #expect(t.restored)
    }
}
