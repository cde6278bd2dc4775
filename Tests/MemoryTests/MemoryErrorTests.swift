// MemoryErrorTests.swift: the messages users see for memory errors, and
// formatBytes, which writes the sizes in them.

import Memory
import Testing

@Suite("MemoryError and formatBytes")
struct MemoryErrorTests {
    @Test("descriptions name the access in hexadecimal")
    func descriptions() {
        #expect(MemoryError.outOfRange(address: 0x10_0000, size: 4).description
            == "guest memory access [0x100000, +0x4) is outside guest RAM")
        #expect(MemoryError.overflow(address: UInt64.max, size: 2).description
            == "guest memory access at 0xffffffffffffffff of 0x2 bytes overflows the address space")
        #expect(MemoryError.invalidLayout("no RAM regions").description == "invalid guest memory layout: no RAM regions")
    }

    @Test(
        "formatBytes picks the largest exact unit, else one decimal",
        arguments: [
            (0, "0 bytes"), (1, "1 byte"), (100, "100 bytes"), (1024, "1 KiB"), (1025, "1.0 KiB"),
            (1536, "1.5 KiB"), (1536 << 10, "1536 KiB"), (512 << 20, "512 MiB"), (4 << 30, "4 GiB"),
            (3 << 40, "3 TiB"), ((1 << 30) + (1 << 29), "1536 MiB"),
        ] as [(UInt64, String)])
    func formatBytesExamples(_ n: UInt64, _ expected: String) {
        #expect(formatBytes(n) == expected)
    }

    // formatBytes computes n * 10 / size for sizes that are not a whole number of
    // units; for n > UInt64.max / 10 the multiplication traps. Run in a child
    // process (an exit test) so that the trap fails this test, not the whole run.
    @Test("formatBytes handles the largest sizes without trapping")
    func formatBytesHuge() async {
        await #expect(processExitsWith: .success) {
            precondition(formatBytes(UInt64.max) == "16777215.9 TiB")
            precondition(formatBytes(UInt64.max - 1023) == "18014398509481983 KiB")
            precondition(formatBytes(0x1999_9999_9999_9A00) == "1677721.6 TiB")
        }
    }
}
