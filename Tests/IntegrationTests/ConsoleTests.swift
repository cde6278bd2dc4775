// ConsoleTests.swift: the serial console's input path, its Ctrl-A escapes,
// host signals, and the ways a guest can end badly.

import Foundation
import Testing

@Suite("Console, signals and faults", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct ConsoleTests {
    @Test("Bytes on stdin reach the guest's UART; the echo guest counts them")
    func inputReachesGuest() throws {
        _ = try requireGuest("echo.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf"], input: Data("ping q".utf8))
        #expect(r.stdout == "echo: ready\nping \necho: got 5 bytes\n")
        #expect(r.status == (5 << 1) | 1)
    }

    @Test("A long input is delivered whole: the 64-byte FIFO applies back-pressure, nothing is dropped")
    func longInputNotDropped() throws {
        _ = try requireGuest("echo.elf")
        let text = String(repeating: "0123456789abcdef", count: 40)  // 640 bytes, ten FIFOs' worth
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf"], input: Data((text + "q").utf8))
        #expect(r.stdout == "echo: ready\n\(text)\necho: got 640 bytes\n")
        #expect(r.status == (640 << 1 | 1) & 0xFF, "the shell sees the low 8 bits of (640 << 1) | 1")
    }

    @Test("Ctrl-A x quits with status 0")
    func ctrlAX() throws {
        _ = try requireGuest("echo.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf"], input: Data([0x61, 0x62, 0x01, 0x78]))
        #expect(r.status == 0)
        #expect(r.stderr.contains("stopped from the console (Ctrl-A x)"))
    }

    @Test("Ctrl-A Ctrl-A sends one Ctrl-A to the guest")
    func ctrlACtrlA() throws {
        _ = try requireGuest("echo.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf"], input: Data([0x61, 0x01, 0x01, 0x62, 0x71]))
        #expect(r.stdout == "echo: ready\na\u{01}b\necho: got 3 bytes\n")
        #expect(r.status == 7)
    }

    @Test("SIGTERM and SIGINT stop every vCPU and exit 128 + signal", arguments: [(SIGTERM, Int32(143)), (SIGINT, Int32(130))])
    func signals(_ signal: Int32, _ status: Int32) throws {
        _ = try requireGuest("echo.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--cpus", "2"], keepInputOpen: true) { p in
            p.waitForOutput("echo: ready")  // the guest started and waits for input
            kill(p.processIdentifier, signal)
        }
        #expect(r.status == status)
        #expect(r.stdout.hasPrefix("echo: ready"))
        #expect(r.stderr.contains("stopped by signal \(signal)"))
    }

    @Test("A triple fault ends the VM with status 6 and a diagnosis naming RIP, CPL and mode")
    func tripleFault() throws {
        _ = try requireGuest("triple-fault.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/triple-fault.elf", "--quiet"])
        #expect(r.stdout == "triple-fault: loading an empty IDT and dividing by zero\n")
        #expect(r.status == 6)
        #expect(r.stderr.hasPrefix("skvm: guest triple-faulted (KVM_EXIT_SHUTDOWN): vCPU 0 at RIP 0x"))
        #expect(r.stderr.contains("CPL 0, 32-bit protected mode"))
    }

    @Test("Unclaimed ports and MMIO read all ones, ignore writes, and are logged once each")
    func unhandledAccesses() throws {
        _ = try requireGuest("unhandled-io.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/unhandled-io.elf", "--stats"])
        #expect(r.status == 1, "the guest checked every read: \(r.stdout)")
        #expect(r.stdout.contains("unhandled-io: all 6 reads returned all ones"))
        let warnings = r.stderrLines.filter { $0.contains("unhandled") }
        #expect(warnings.count == 4, "one line per (address, direction): \(warnings)")
        #expect(r.stderr.contains("unhandled 4-byte read from MMIO address 0xc0001000 returned all ones (logged once)"))
        #expect(r.stderr.contains("0xc0001000"))
    }
}

@Suite("Tracing", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct TraceTests {
    @Test("--trace pio --trace-file: one line per port access, with the device")
    func pioTrace() throws {
        _ = try requireGuest("hello-real.bin")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-trace-\(getpid()).txt").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try Harness.run(["run", "--flat", "--quiet", "--kernel", "guests/build/hello-real.bin", "--trace", "pio", "--trace-file", file])
        #expect(r.status == 0)
        #expect(r.stdout == "Hello from real mode!\n")
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 45)
        #expect(lines[0] == "vcpu 0: pio in  0x03fd 1 byte  0x60 <- serial (COM1)")
        #expect(lines[1] == "vcpu 0: pio out 0x03f8 1 byte  0x48 -> serial (COM1)")  // 'H'
        #expect(lines.last == "vcpu 0: pio out 0x0064 1 byte  0xfe -> i8042")
    }

    @Test("--trace exits,mmio: the fault's exit and unclaimed MMIO with its all-ones answer")
    func exitsAndMMIO() throws {
        _ = try requireGuest("unhandled-io.elf")
        _ = try requireGuest("triple-fault.elf")
        let mmio = try Harness.run(["run", "--quiet", "--kernel", "guests/build/unhandled-io.elf", "--trace", "mmio"])
        #expect(mmio.stderr.contains("vcpu 0: mmio read  0xc0001000 4 bytes 0xffffffff <- (none)"))
        #expect(mmio.stderr.contains("vcpu 0: mmio write 0xc0001000 4 bytes 0x00000000 -> (none)"))
        let fault = try Harness.run(["run", "--quiet", "--kernel", "guests/build/triple-fault.elf", "--trace", "exits"])
        #expect(fault.status == 6)
        #expect(fault.stderr.contains("vcpu 0: exit SHUTDOWN"))
        #expect(fault.stderr.contains("vcpu 0: exit IO"))
    }

    @Test("a bad --trace is one line, status 2")
    func badTrace() throws {
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--trace", "everything"]),
                                         containing: "--trace 'everything' is not a list")
    }
}
