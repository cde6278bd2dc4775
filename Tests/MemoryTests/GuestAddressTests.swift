// GuestAddressTests.swift: GuestAddress and GuestRange arithmetic at the
// edges of the 64-bit address space (STYLE.md §3.1: no `+`, every step
// through `adding(_:)`, nil on overflow).

import Memory
import Testing

@Suite("GuestAddress")
struct GuestAddressTests {
    @Test("adding reports overflow past 2^64 - 1 as nil")
    func addingOverflow() {
        #expect(GuestAddress(0x1000).adding(0x234) == GuestAddress(0x1234))
        #expect(GuestAddress(UInt64.max - 1).adding(1) == GuestAddress(UInt64.max))
        #expect(GuestAddress(UInt64.max).adding(0) == GuestAddress(UInt64.max))
        #expect(GuestAddress(UInt64.max).adding(1) == nil)
        #expect(GuestAddress(1).adding(UInt64.max) == nil)
        #expect(GuestAddress(0).adding(UInt64.max) == GuestAddress(UInt64.max))
    }

    @Test("offset(from:) is the distance up from the base, nil below it")
    func offsetFromBase() {
        #expect(GuestAddress(0x1234).offset(from: GuestAddress(0x1000)) == 0x234)
        #expect(GuestAddress(0x1000).offset(from: GuestAddress(0x1000)) == 0)
        #expect(GuestAddress(0xFFF).offset(from: GuestAddress(0x1000)) == nil)
        #expect(GuestAddress(UInt64.max).offset(from: GuestAddress(0)) == UInt64.max)
    }

    @Test("ordering and description")
    func orderingAndDescription() {
        #expect(GuestAddress(1) < GuestAddress(2))
        #expect(!(GuestAddress(2) < GuestAddress(2)))
        #expect(GuestAddress(0xABCDEF).description == "0xabcdef")
        #expect(GuestAddress(0).description == "0x0")
        #expect(hex(UInt64.max) == "0xffffffffffffffff")
    }
}

@Suite("GuestRange")
struct GuestRangeTests {
    private func range(_ start: UInt64, _ length: UInt64) throws -> GuestRange {
        try #require(GuestRange(start: GuestAddress(start), length: length))
    }

    @Test("init refuses ranges whose end would pass 2^64")
    func initOverflow() throws {
        #expect(GuestRange(start: GuestAddress(UInt64.max), length: 1) == nil)
        #expect(GuestRange(start: GuestAddress(1), length: UInt64.max) == nil)
        let last = try range(UInt64.max - 1, 1)
        #expect(last.end == GuestAddress(UInt64.max))
        let empty = try range(UInt64.max, 0)
        #expect(empty.end == GuestAddress(UInt64.max))
        let all = try range(0, UInt64.max)
        #expect(all.end == GuestAddress(UInt64.max))
    }

    @Test("end and description show the half-open interval")
    func endAndDescription() throws {
        let r = try range(0x1000, 0x1000)
        #expect(r.end == GuestAddress(0x2000))
        #expect(r.description == "[0x1000, 0x2000)")
    }

    @Test(
        "overlaps: half-open, symmetric, never for empty ranges",
        arguments: [
            // (a.start, a.length, b.start, b.length, overlaps)
            (0x1000, 0x1000, 0x2000, 0x1000, false),  // adjacent above
            (0x2000, 0x1000, 0x1000, 0x1000, false),  // adjacent below
            (0x1000, 0x1000, 0x1FFF, 0x1000, true),   // last byte shared
            (0x1000, 0x1000, 0x0001, 0x1000, true),   // first byte shared
            (0x1000, 0x1000, 0x1800, 0x0001, true),   // one byte inside
            (0x1000, 0x1000, 0x0000, 0x4000, true),   // b contains a
            (0x1000, 0x1000, 0x1000, 0x1000, true),   // identical
            (0x1000, 0x1000, 0x1800, 0x0000, false),  // empty inside
            (0x1000, 0x0000, 0x0000, 0x4000, false),  // a empty
            (0x0000, 0x1000, 0x5000, 0x1000, false),  // disjoint
        ] as [(UInt64, UInt64, UInt64, UInt64, Bool)])
    func overlaps(_ aStart: UInt64, _ aLength: UInt64, _ bStart: UInt64, _ bLength: UInt64, _ expected: Bool) throws {
        let a = try range(aStart, aLength)
        let b = try range(bStart, bLength)
        #expect(a.overlaps(b) == expected)
        #expect(b.overlaps(a) == expected)
    }

    @Test("overlaps at the very top of the address space")
    func overlapsAtTop() throws {
        // The highest representable range ends at 2^64 - 1 (its end must fit in 64 bits).
        let top = try range(UInt64.max - 0x1000, 0x1000)
        #expect(top.overlaps(try range(UInt64.max - 1, 1)))
        #expect(!top.overlaps(try range(UInt64.max - 0x2000, 0x1000)))
        #expect(!top.overlaps(try range(UInt64.max, 0)))
    }

    @Test(
        "contains: every byte of the other range inside",
        arguments: [
            (0x1000, 0x1000, true),   // itself
            (0x1000, 0x0001, true),   // first byte
            (0x1FFF, 0x0001, true),   // last byte
            (0x1FFF, 0x0002, false),  // one past the end
            (0x0FFF, 0x0002, false),  // one before the start
            (0x2000, 0x0001, false),  // the end address itself
            (0x0000, 0x4000, false),  // a superset
        ] as [(UInt64, UInt64, Bool)])
    func contains(_ start: UInt64, _ length: UInt64, _ expected: Bool) throws {
        let outer = try range(0x1000, 0x1000)
        #expect(outer.contains(try range(start, length)) == expected)
    }
}
