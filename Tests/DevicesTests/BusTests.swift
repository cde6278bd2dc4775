// BusTests.swift: the address-range map from addresses to devices
// (STYLE.md §3.8, after Firecracker's bus.rs): disjoint, non-empty,
// non-wrapping ranges; a lookup finds the range containing the address.

import Devices
import Testing

/// A device that only has a name: the bus never calls it.
private final class NamedDevice: BusDevice {
    let name: String
    init(_ name: String) { self.name = name }
    func read(offset: UInt64, size: Int) -> UInt64 { 0 }
    func write(offset: UInt64, size: Int, value: UInt64) {}
}

@Suite("Bus")
struct BusTests {
    /// The name of the device whose range holds `address`, and its base.
    private func lookup(_ bus: Bus, _ address: UInt64) -> String? {
        bus.entry(containing: address).map { "\($0.device.name)@\(String($0.base, radix: 16))" }
    }

    @Test("a lookup hits the first and last address of a range, and misses either side")
    func rangeEdges() throws {
        var bus = Bus()
        try bus.insert(NamedDevice("uart"), base: 0x3F8, length: 8)
        #expect(lookup(bus, 0x3F7) == nil)
        #expect(lookup(bus, 0x3F8) == "uart@3f8")
        #expect(lookup(bus, 0x3FC) == "uart@3f8")
        #expect(lookup(bus, 0x3FF) == "uart@3f8")
        #expect(lookup(bus, 0x400) == nil)
        #expect(lookup(bus, 0) == nil)
        #expect(lookup(bus, UInt64.max) == nil)
        let e = try #require(bus.entry(containing: 0x3FA))
        #expect(e.base == 0x3F8 && e.length == 8)
    }

    @Test("an empty bus finds nothing")
    func emptyBus() {
        let bus = Bus()
        #expect(bus.entry(containing: 0) == nil)
        #expect(bus.entry(containing: UInt64.max) == nil)
        #expect(bus.entries.isEmpty)
    }

    @Test("gaps between ranges, and adjacent ranges, resolve to the right device")
    func gapsAndAdjacency() throws {
        var bus = Bus()
        try bus.insert(NamedDevice("b"), base: 0x20, length: 0x10)
        try bus.insert(NamedDevice("a"), base: 0x10, length: 0x10)  // adjacent below b
        try bus.insert(NamedDevice("c"), base: 0x40, length: 1)     // a gap above b
        #expect(lookup(bus, 0x0F) == nil)
        #expect(lookup(bus, 0x10) == "a@10")
        #expect(lookup(bus, 0x1F) == "a@10")
        #expect(lookup(bus, 0x20) == "b@20")
        #expect(lookup(bus, 0x2F) == "b@20")
        #expect(lookup(bus, 0x30) == nil)
        #expect(lookup(bus, 0x3F) == nil)
        #expect(lookup(bus, 0x40) == "c@40")
        #expect(lookup(bus, 0x41) == nil)
        #expect(bus.entries.map(\.base) == [0x10, 0x20, 0x40])  // kept sorted
    }

    @Test("zero-length ranges are refused")
    func zeroLength() {
        var bus = Bus()
        #expect(throws: BusError.zeroLength(base: 0x60)) {
            try bus.insert(NamedDevice("x"), base: 0x60, length: 0)
        }
        #expect(bus.entries.isEmpty)
    }

    @Test("ranges wrapping past 2^64 are refused; one ending exactly at 2^64 - 1 is fine")
    func overflowAtTop() throws {
        var bus = Bus()
        #expect(throws: BusError.overflow(base: UInt64.max, length: 2)) {
            try bus.insert(NamedDevice("x"), base: UInt64.max, length: 2)
        }
        #expect(throws: BusError.overflow(base: 2, length: UInt64.max)) {
            try bus.insert(NamedDevice("x"), base: 2, length: UInt64.max)
        }
        #expect(bus.entries.isEmpty)
        try bus.insert(NamedDevice("top"), base: UInt64.max, length: 1)
        try bus.insert(NamedDevice("rest"), base: 0, length: UInt64.max)  // [0, 2^64 - 1)
        #expect(lookup(bus, UInt64.max) == "top@ffffffffffffffff")
        #expect(lookup(bus, UInt64.max - 1) == "rest@0")
        #expect(lookup(bus, 0) == "rest@0")

        // [1, 2^64): length 2^64 - 1 ending on the last address is a valid range.
        var other = Bus()
        try other.insert(NamedDevice("all-but-0"), base: 1, length: UInt64.max)
        #expect(lookup(other, UInt64.max) == "all-but-0@1")
        #expect(lookup(other, 0) == nil)
    }

    @Test(
        "overlaps on either side, inside and around an existing range are refused",
        arguments: [
            (0x08, 0x09),  // last byte hits the first of [0x10, 0x20)
            (0x1F, 0x04),  // first byte is the last of [0x10, 0x20)
            (0x14, 0x01),  // inside
            (0x10, 0x10),  // identical
            (0x00, 0x100), // around
        ] as [(UInt64, UInt64)])
    func overlap(_ base: UInt64, _ length: UInt64) throws {
        var bus = Bus()
        try bus.insert(NamedDevice("existing"), base: 0x10, length: 0x10)
        #expect(throws: BusError.overlap(base: base, length: length, existing: "existing at 0x10")) {
            try bus.insert(NamedDevice("new"), base: base, length: length)
        }
        #expect(bus.entries.count == 1)
    }

    @Test("ranges just touching an existing one are accepted on both sides")
    func touching() throws {
        var bus = Bus()
        try bus.insert(NamedDevice("mid"), base: 0x10, length: 0x10)
        try bus.insert(NamedDevice("below"), base: 0x08, length: 0x08)
        try bus.insert(NamedDevice("above"), base: 0x20, length: 0x08)
        #expect(bus.entries.map(\.device.name) == ["below", "mid", "above"])
    }

    @Test("many ranges inserted in scrambled order: every address resolves correctly")
    func manyRanges() throws {
        var bus = Bus()
        // 64 ranges of length 3 at multiples of 8: [8i, 8i+3); inserted in a scrambled order.
        let order = (0..<64).map { ($0 * 37) % 64 }
        for i in order {
            try bus.insert(NamedDevice("d\(i)"), base: UInt64(i) * 8, length: 3)
        }
        #expect(bus.entries.map(\.base) == (0..<64).map { UInt64($0) * 8 })
        for address in UInt64(0)..<(64 * 8 + 8) {
            let i = address / 8
            let expected = i < 64 && address % 8 < 3 ? "d\(i)@\(String(i * 8, radix: 16))" : nil
            #expect(lookup(bus, address) == expected, "address \(address)")
        }
    }

    @Test("error descriptions")
    func descriptions() {
        #expect(BusError.zeroLength(base: 0x60).description == "bus range at 0x60 has length 0")
        #expect(BusError.overflow(base: 0xFF, length: 0x10).description == "bus range 0xff + 0x10 overflows")
        #expect(BusError.overlap(base: 0x3F8, length: 8, existing: "serial at 0x3f8").description
            == "bus range [0x3f8, +0x8) overlaps serial at 0x3f8")
    }
}
