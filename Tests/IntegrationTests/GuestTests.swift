// GuestTests.swift: every test kernel in guests/, run through the built skvm,
// with its exact serial output and exit status.

import Foundation
import Testing

@Suite("Test kernels", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm (set SKVM_REQUIRE_KVM=1 to fail instead)"))
struct GuestTests {
    @Test("Real mode: a flat binary prints and resets")
    func helloReal() throws {
        _ = try requireGuest("hello-real.bin")
        let r = try Harness.run(["run", "--flat", "--kernel", "guests/build/hello-real.bin"])
        #expect(r.stdout == "Hello from real mode!\n")
        #expect(r.status == 0)
        #expect(r.stderr.contains("guest reset the machine"))
    }

    @Test("Multiboot: command line, memory and memory map as the spec says")
    func multibootHello() throws {
        _ = try requireGuest("multiboot-hello.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/multiboot-hello.elf", "--append", "hello world"])
        #expect(r.stdout == """
            multiboot-hello: magic 0x2BADB002 OK
            cmdline: "guests/build/multiboot-hello.elf hello world"
            mem_lower: 639 KiB
            mem_upper: 130048 KiB
            boot loader: "skvm"
            memory map:
              base=0x0000000000000000 length=0x000000000009FC00 type=1
              base=0x000000000009FC00 length=0x0000000000060400 type=2
              base=0x0000000000100000 length=0x0000000007F00000 type=1
            multiboot-hello: done, resetting via i8042

            """)
        #expect(r.status == 0)
    }

    @Test("Multiboot with 5 GiB: RAM above 4 GiB after the hole")
    func multibootAboveFourGiB() throws {
        _ = try requireGuest("multiboot-hello.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/multiboot-hello.elf", "--memory", "5G"])
        #expect(r.stdout.contains("cmdline: \"guests/build/multiboot-hello.elf \"\n"))  // QEMU's "%s %s": the space stays
        #expect(r.stdout.contains("mem_upper: 3144704 KiB\n"))
        #expect(r.stdout.contains("  base=0x0000000000100000 length=0x00000000BFF00000 type=1\n"))
        #expect(r.stdout.contains("  base=0x0000000100000000 length=0x0000000080000000 type=1\n"))
        #expect(r.status == 0)
    }

    @Test("Long mode: the guest switches itself to 64-bit mode")
    func longMode() throws {
        _ = try requireGuest("long-mode.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/long-mode.elf"])
        #expect(r.stdout == """
            long-mode: multiboot OK, switching to long mode
            Hello from 64-bit long mode!
            long-mode: EFER.LME=1 EFER.LMA=1
            long-mode: 20! = 2432902008176640000 = 0x21C3677C82B40000
            long-mode: done, resetting via i8042

            """)
        #expect(r.status == 0)
    }

    @Test("Debug-exit: a 32-bit write of 25 to port 0xf4 exits with (25 << 1) | 1")
    func debugExit() throws {
        _ = try requireGuest("debug-exit.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/debug-exit.elf"])
        #expect(r.stdout == """
            debug-exit: 25 primes below 100
            debug-exit: writing 25 to port 0xF4 with a 32-bit OUT, expect exit status 51

            """)
        #expect(r.status == 51)
        #expect(r.stderr.contains("guest wrote 25 (0x19) to the debug-exit port"))
    }

    @Test("CPL3: user-mode code does port I/O with IOPL 3 and computes natively")
    func cpl3() throws {
        _ = try requireGuest("cpl3.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/cpl3.elf"])
        #expect(r.stdout == """
            cpl3: multiboot OK, switching to long mode
            cpl3: in 64-bit long mode at CPL 0, loading GDT, TSS and an empty IDT
            cpl3: hello from user mode, CPL = 3
            cpl3: xorshift64 x 10000000 = 0x2A2EDEEF160A3819
            cpl3: result OK, exiting via port 0xF4 with v = 0

            """)
        #expect(r.status == 1)
    }

    @Test("--stats prints exit counts per reason and per port")
    func stats() throws {
        _ = try requireGuest("hello-real.bin")
        let r = try Harness.run(["run", "--flat", "--stats", "--kernel", "guests/build/hello-real.bin"])
        #expect(r.status == 0)
        // 22 characters printed, each one LSR poll and one THR write; then the reset.
        #expect(r.stderr.contains("0x03f8    out        22  serial (COM1)"))
        #expect(r.stderr.contains("0x03fd    in         22  serial (COM1)"))
        #expect(r.stderr.contains("0x0064    out         1  i8042"))
        #expect(r.stderr.contains("IO                         45"))
    }

    @Test("--quiet leaves only the guest's output")
    func quiet() throws {
        _ = try requireGuest("hello-real.bin")
        let r = try Harness.run(["run", "--flat", "--quiet", "--kernel", "guests/build/hello-real.bin"])
        #expect(r.stdout == "Hello from real mode!\n")
        #expect(r.stderr == "")
        #expect(r.status == 0)
    }

    @Test("Timer: PIT -> PIC -> LAPIC interrupts arrive with no userspace exits for them")
    func timer() throws {
        _ = try requireGuest("timer.elf")
        let r = try Harness.run(["run", "--kernel", "guests/build/timer.elf", "--stats"])
        #expect(r.stdout == """
            timer: PIC at vector 0x20, PIT channel 0 at 100 Hz, waiting for 10 ticks
            timer: 10 ticks arrived through PIT -> PIC -> LAPIC LINT0 -> IDT vector 0x20

            """)
        #expect(r.status == 1)
        // The PIT and PIC are KVM's: their ports never reach skvm.
        #expect(!r.stderr.contains("0x0040") && !r.stderr.contains("0x0020 "))
    }
}
