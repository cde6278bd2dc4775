// ExitStatisticsTests.swift: the fixed-capacity exit counters behind
// `--stats`, and the table they print. KVM_EXIT_* numbers are the kernel's
// (include/uapi/linux/kvm.h).

import CKVM
import Testing
@testable import VMM

@Suite("AddressCounter")
struct AddressCounterTests {
    @Test("increment returns the running count per (address, direction)")
    func counts() {
        var c = AddressCounter(capacity: 16)
        #expect(c.increment(0x3F8, isWrite: true) == 1)
        #expect(c.increment(0x3F8, isWrite: true) == 2)
        #expect(c.increment(0x3F8, isWrite: false) == 1)   // a read is a different key
        #expect(c.increment(0x3F8, isWrite: true, by: 10) == 12)
        #expect(c.increment(0, isWrite: false) == 1)
        #expect(c.increment(UInt64.max, isWrite: true, by: 3) == 3)
        #expect(c.overflow == 0)
        #expect(c.sorted == [
            .init(address: 0x3F8, isWrite: true, count: 12),
            .init(address: UInt64.max, isWrite: true, count: 3),
            .init(address: 0, isWrite: false, count: 1),
            .init(address: 0x3F8, isWrite: false, count: 1),
        ])
    }

    @Test("sorted: most frequent first, ties by address")
    func sortedOrder() {
        var c = AddressCounter(capacity: 64)
        for (address, n) in [(0x70, 5), (0x60, 5), (0x3F8, 9), (0x64, 1), (0xF4, 5)] as [(UInt64, UInt64)] {
            c.increment(address, isWrite: true, by: n)
        }
        #expect(c.sorted.map(\.address) == [0x3F8, 0x60, 0x70, 0xF4, 0x64])
        #expect(c.sorted.map(\.count) == [9, 5, 5, 5, 1])
    }

    @Test("when full, new keys go to overflow; known keys still count")
    func overflowAccounting() {
        var c = AddressCounter(capacity: 3)  // rounded up to 4 slots
        for a in UInt64(0)..<4 { #expect(c.increment(a * 0x1000, isWrite: false) == 1) }
        #expect(c.increment(0x9000, isWrite: false) == 0)
        #expect(c.increment(0xA000, isWrite: true, by: 7) == 0)
        #expect(c.overflow == 8)
        #expect(c.increment(0x2000, isWrite: false) == 2)
        #expect(c.sorted.count == 4)
        #expect(c.sorted.first == .init(address: 0x2000, isWrite: false, count: 2))
    }

    @Test("page-aligned MMIO addresses, many of them: every one is kept with its count")
    func manyAlignedAddresses() {
        var c = AddressCounter(capacity: 1024)
        for i in UInt64(0)..<1000 { c.increment(0xD000_0000 + i * 0x1000, isWrite: i % 2 == 0, by: i + 1) }
        #expect(c.overflow == 0)
        let s = c.sorted
        #expect(s.count == 1000)
        #expect(s.first == .init(address: 0xD000_0000 + 999 * 0x1000, isWrite: false, count: 1000))
        #expect(s.last == .init(address: 0xD000_0000, isWrite: true, count: 1))
    }

    @Test("merge adds counts key by key, and overflow too")
    func merge() {
        var a = AddressCounter(capacity: 4)
        a.increment(0x60, isWrite: true, by: 2)
        a.increment(0x64, isWrite: false)
        var b = AddressCounter(capacity: 4)
        b.increment(0x60, isWrite: true, by: 5)
        b.increment(0x70, isWrite: true)
        for x in UInt64(0)..<4 { b.increment(0x1000 + x, isWrite: false) }  // 2 fit, 2 overflow
        #expect(b.overflow == 2)
        a.merge(b)
        // a: 0x60w=7, 0x64r=1, 0x70w=1, then one of b's four fits; the other three overflow.
        #expect(a.sorted.prefix(1) == [.init(address: 0x60, isWrite: true, count: 7)])
        #expect(a.sorted.count == 4)
        #expect(a.overflow == 2 + 1)
        let total = a.sorted.reduce(0) { $0 + $1.count } + a.overflow
        #expect(total == 2 + 1 + 5 + 1 + 4)
    }
}

@Suite("ExitStatistics")
struct ExitStatisticsTests {
    private func sample() -> ExitStatistics {
        var s = ExitStatistics()
        for _ in 0..<3 { s.count(reason: UInt32(KVM_EXIT_IO)) }
        s.count(reason: UInt32(KVM_EXIT_HLT))
        s.count(reason: UInt32(KVM_EXIT_MMIO))
        s.pio.increment(0x3F8, isWrite: true, by: 2)
        s.pio.increment(0x64, isWrite: false)
        s.mmio.increment(0xFEE0_0300, isWrite: true)
        return s
    }

    /// The table's lines, each split into its whitespace-separated words.
    private func rows(_ table: String) -> [[String]] {
        table.split(separator: "\n", omittingEmptySubsequences: false).map { $0.split(separator: " ").map(String.init) }
    }

    @Test("counts by reason, total, and the reasons >= 63 share the last slot")
    func counting() {
        var s = sample()
        #expect(s.byReason[2] == 3 && s.byReason[5] == 1 && s.byReason[6] == 1)
        #expect(s.total == 5)
        s.count(reason: 63)
        s.count(reason: 1000)
        #expect(s.byReason[63] == 2)
        #expect(s.byReason.count == 64)
        #expect(s.total == 7)
    }

    @Test("merge adds every counter")
    func merge() {
        var a = sample()
        a.merge(sample())
        #expect(a.total == 10)
        #expect(a.byReason[2] == 6)
        #expect(a.pio.sorted.first == .init(address: 0x3F8, isWrite: true, count: 4))
        #expect(a.mmio.sorted == [.init(address: 0xFEE0_0300, isWrite: true, count: 2)])
    }

    @Test("the table lists reason names, the total, and port and MMIO rows with device names")
    func table() {
        let text = sample().table(
            pioNames: { $0 == 0x3F8 ? "serial" : $0 == 0x64 ? "i8042" : "?" },
            mmioNames: { $0 >= 0xFEE0_0000 ? "lapic" : "?" })
        let r = rows(text)
        #expect(r == [
            ["exit", "reason", "count"],
            ["IO", "3"],
            ["HLT", "1"],
            ["MMIO", "1"],
            ["total", "5"],
            [],
            ["port", "dir", "count", "device"],
            ["0x03f8", "out", "2", "serial"],
            ["0x0064", "in", "1", "i8042"],
            [],
            ["mmio", "address", "dir", "count", "device"],
            ["0xfee00300", "write", "1", "lapic"],
            [],
        ])
    }

    @Test("every count ends in the same column as its table header's \"count\"")
    func columnsAlign() throws {
        var s = sample()
        s.mmio.increment(0xFEC0_0000, isWrite: false)  // a "read" row as well as a "write" row
        let lines = s.table(pioNames: { _ in "dev" }, mmioNames: { _ in "dev" }).split(separator: "\n").map(String.init)
        /// The column just past the `n`th word of `line`.
        func endOfWord(_ n: Int, in line: String) -> Int? {
            var words = 0, inWord = false
            for (i, ch) in line.enumerated() {
                if ch == " " {
                    if inWord { words += 1; if words == n + 1 { return i } }
                    inWord = false
                } else {
                    inWord = true
                }
            }
            return inWord && words == n ? line.count : nil
        }
        // (header line, index of "count" in it, rows, index of the count in them)
        let tables: [(Int, Int, [Int], Int)] = [(0, 2, [1, 2, 3, 4], 1), (5, 2, [6, 7], 2), (8, 3, [9, 10], 2)]
        for (header, headerWord, rows, rowWord) in tables {
            let column = try #require(endOfWord(headerWord, in: lines[header]))
            for row in rows {
                #expect(endOfWord(rowWord, in: lines[row]) == column, "\(lines[header])\n\(lines[row])")
            }
        }
    }

    @Test("the table reports keys that did not fit")
    func tableOverflow() {
        var s = ExitStatistics()
        s.count(reason: UInt32(KVM_EXIT_IO))
        s.pio = AddressCounter(capacity: 1)
        s.pio.increment(0x80, isWrite: true)
        s.pio.increment(0x81, isWrite: true, by: 4)
        let text = s.table(pioNames: { _ in "x" }, mmioNames: { _ in "y" })
        #expect(text.contains("(4 more at ports not listed)\n"))
        #expect(!text.contains("mmio address"))
    }

    @Test("an empty table has only the header and a zero total")
    func emptyTable() {
        let r = rows(ExitStatistics().table(pioNames: { _ in "" }, mmioNames: { _ in "" }))
        #expect(r == [["exit", "reason", "count"], ["total", "0"], []])
    }

    @Test("exit reason names", arguments: [(2, "IO"), (5, "HLT"), (6, "MMIO"), (8, "SHUTDOWN"), (9, "FAIL_ENTRY"), (17, "INTERNAL_ERROR"), (24, "SYSTEM_EVENT"), (0, "UNKNOWN"), (99, "exit 99")] as [(UInt32, String)])
    func reasonNames(_ reason: UInt32, _ name: String) {
        #expect(exitReasonName(reason) == name)
    }
}
