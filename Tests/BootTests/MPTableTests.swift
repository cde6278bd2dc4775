// MPTableTests.swift: the Intel MultiProcessor Specification 1.4 tables.
//
// MP spec 1.4, chapter 4:
// - 4.1 the floating pointer, 16 bytes: "_MP_", the physical address of the
//   configuration table (u32), length in 16-byte units (1), spec revision
//   (4 = 1.4), checksum (all 16 bytes sum to 0 mod 256), feature bytes 1-5
//   (byte 1 = 0: a configuration table is present).
// - 4.2 the configuration table header, 44 bytes: "PCMP", base table length
//   (u16, header + entries), revision, checksum (the base table sums to 0),
//   OEM id (8), product id (12), OEM table pointer (u32) and size (u16), entry
//   count (u16, offset 34), local APIC address (u32, offset 36), extended
//   table length (u16) and checksum, reserved.
// - Entries: processor (type 0, 20 bytes: APIC id, APIC version, flags EN=1
//   BP=2, CPU signature, feature flags, 8 reserved), bus (1, 8: id, 6-byte
//   type "ISA   "), IOAPIC (2, 8: id, version, flags EN, address), I/O
//   interrupt (3, 8: type, flags u16, source bus, source IRQ, IOAPIC id, pin),
//   local interrupt (4, 8: type, flags, source bus, source IRQ, LAPIC id with
//   0xFF = all, LINTIN#). Interrupt types: 0 INT, 1 NMI, 2 SMI, 3 ExtINT.

@testable import Boot
import Testing
import TestSupport

private let signature: UInt32 = 0x0008_06F8
private let features: UInt32 = 0x178B_FBFF

/// One configuration-table entry, as walked by a parser.
private struct Entry {
    let offset: Int
    let bytes: [UInt8]
    var type: UInt8 { bytes[0] }
}

/// Walks the base table's entries as Linux's smp_read_mpc does: by type, 20
/// bytes for processors and 8 for everything else. Stops at the base length
/// or at an unknown type.
private func entries(_ table: [UInt8], length: Int) -> [Entry] {
    var result: [Entry] = []
    var at = 44
    while at < length {
        let size: Int
        switch table[at] {
        case 0: size = 20
        case 1, 2, 3, 4: size = 8
        default: return result
        }
        guard at + size <= length else { return result }
        result.append(Entry(offset: at, bytes: Array(table[at..<(at + size)])))
        at += size
    }
    return result
}

private func sum(_ bytes: some Collection<UInt8>) -> UInt8 { bytes.reduce(0, &+) }

@Suite("MPTable")
struct MPTableTests {
    @Test("the floating pointer: _MP_, table at address + 16, length 1, revision 4, checksum 0, no default configuration",
          arguments: [1, 2, 4, 254])
    func floatingPointer(_ cpus: Int) {
        let bytes = MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features)
        let pointer = Array(bytes.prefix(16))
        #expect(Array(pointer[0..<4]) == Array("_MP_".utf8))
        #expect(pointer.le32(4) == 0x9_FC10)
        #expect(pointer[8] == 1)
        #expect(pointer[9] == 4)
        #expect(sum(pointer) == 0)
        #expect(pointer[11..<16].allSatisfy { $0 == 0 })
        // The table follows the pointer immediately.
        #expect(Array(bytes[16..<20]) == Array("PCMP".utf8))
    }

    @Test("the pointer follows the address it is built for", arguments: [0x9_FC00, 0xF_0000, 0xE_1230] as [UInt64])
    func pointerAddress(_ address: UInt64) {
        let bytes = MPTable.build(at: address, cpus: 2, signature: signature, features: features)
        #expect(UInt64(bytes.le32(4)) == address + 16)
        #expect(sum(bytes.prefix(16)) == 0)
    }

    @Test("the table header: PCMP, length = all bytes after the pointer, revision 4, count = cpus + 20, checksum 0",
          arguments: [1, 2, 4, 254])
    func header(_ cpus: Int) {
        let bytes = MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features)
        let table = Array(bytes.dropFirst(16))
        let length = Int(table.le16(4))
        #expect(length == table.count)
        #expect(length == 44 + 20 * cpus + 8 + 8 + 16 * 8 + 2 * 8)
        #expect(table[6] == 4)
        #expect(sum(table.prefix(length)) == 0)
        #expect(Array(table[8..<16]) == Array("SKVM    ".utf8))
        #expect(Array(table[16..<28]) == Array("SKVMCPU     ".utf8))
        #expect(table.le32(28) == 0)       // no OEM table
        #expect(table.le16(32) == 0)
        #expect(Int(table.le16(34)) == cpus + 20)
        #expect(table.le32(36) == 0xFEE0_0000)
        #expect(table.le16(40) == 0)       // no extended table
        #expect(table[42] == 0)
        #expect(table[43] == 0)
        // Walking the entries by type lands exactly on the base length.
        let walked = entries(table, length: length)
        #expect(walked.count == cpus + 20)
        #expect(walked.last.map { $0.offset + $0.bytes.count } == length)
    }

    @Test("entry order: processors, then the bus, the IOAPIC, 16 interrupts, 2 local interrupts", arguments: [1, 4])
    func entryOrder(_ cpus: Int) {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features).dropFirst(16))
        let types = entries(table, length: table.count).map(\.type)
        #expect(types == [UInt8](repeating: 0, count: cpus) + [1, 2] + [UInt8](repeating: 3, count: 16) + [4, 4])
    }

    @Test("processor entries: APIC id i, version 0x14, enabled, BP only on 0, the given signature and features",
          arguments: [1, 2, 4, 254])
    func processors(_ cpus: Int) {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features).dropFirst(16))
        let processors = entries(table, length: table.count).filter { $0.type == 0 }
        #expect(processors.count == cpus)
        for (i, p) in processors.enumerated() {
            var expected: [UInt8] = [0, UInt8(i), 0x14, i == 0 ? 0x03 : 0x01]
            expected.appendLittleEndian(signature)
            expected.appendLittleEndian(features)
            expected += [UInt8](repeating: 0, count: 8)
            #expect(p.bytes == expected, "processor \(i)")
        }
    }

    @Test("a different signature and features are copied as given")
    func otherCPUID() {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: 1, signature: 0x1234_5678, features: 0x9ABC_DEF0).dropFirst(16))
        #expect(table.le32(44 + 4) == 0x1234_5678)
        #expect(table.le32(44 + 8) == 0x9ABC_DEF0)
        #expect(sum(table) == 0)
    }

    @Test("the ISA bus and the IOAPIC: id = cpus, version 0x11, enabled, at 0xFEC00000", arguments: [1, 2, 4, 254])
    func busAndIOAPIC(_ cpus: Int) {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features).dropFirst(16))
        let all = entries(table, length: table.count)
        let bus = all.filter { $0.type == 1 }
        #expect(bus.map(\.bytes) == [[1, 0] + Array("ISA   ".utf8)])
        let ioapic = all.filter { $0.type == 2 }
        #expect(ioapic.map(\.bytes) == [[2, UInt8(cpus), 0x11, 0x01, 0x00, 0x00, 0xC0, 0xFE]])
    }

    @Test("interrupt entries: ISA IRQ i (bus 0) to IOAPIC pin i, type INT, conforming", arguments: [1, 2, 4, 254])
    func ioInterrupts(_ cpus: Int) {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features).dropFirst(16))
        let interrupts = entries(table, length: table.count).filter { $0.type == 3 }
        #expect(interrupts.map(\.bytes) == (0..<16).map { irq in [3, 0, 0, 0, 0, UInt8(irq), UInt8(cpus), UInt8(irq)] })
    }

    @Test("local interrupts: LINT0 ExtINT (3) and LINT1 NMI (1), to every local APIC (0xFF)", arguments: [1, 2, 4, 254])
    func localInterrupts(_ cpus: Int) {
        let table = Array(MPTable.build(at: 0x9_FC00, cpus: cpus, signature: signature, features: features).dropFirst(16))
        let local = entries(table, length: table.count).filter { $0.type == 4 }
        #expect(local.map(\.bytes) == [
            [4, 3, 0, 0, 0, 0, 0xFF, 0],
            [4, 1, 0, 0, 0, 0, 0xFF, 1],
        ])
    }

    @Test("at most 254 CPUs: ids 0-253 and the IOAPIC at 254 stay below the broadcast id 0xFF")
    func maximumCPUs() {
        #expect(MPTable.maximumCPUs == 254)
        let bytes = MPTable.build(at: 0x9_FC00, cpus: MPTable.maximumCPUs, signature: signature, features: features)
        let table = Array(bytes.dropFirst(16))
        let all = entries(table, length: table.count)
        let ids = all.filter { $0.type == 0 }.map { $0.bytes[1] }
        #expect(ids == (0..<254).map { UInt8($0) })
        #expect(all.first { $0.type == 2 }?.bytes[1] == 254)
        #expect(!ids.contains(0xFF))
        #expect(bytes.count == 16 + 44 + 254 * 20 + 160)
        #expect(table.le16(4) == 5284)
    }

    @Test("device pins above 15 (virtio-mmio) follow the ISA interrupts as level-triggered, active-high entries")
    func levelTriggeredPins() {
        let bytes = MPTable.build(at: 0x9_FC00, cpus: 2, signature: signature, features: features, levelTriggeredPins: [16, 17])
        let table = Array(bytes.dropFirst(16))
        let length = Int(table.le16(4))
        #expect(length == table.count)
        #expect(sum(table.prefix(length)) == 0)
        #expect(Int(table.le16(34)) == 2 + 22)
        let io = entries(table, length: length).filter { $0.type == 3 }
        #expect(io.count == 18)
        // Type 3, INT, flags 0x000D (active high, level), ISA bus 0, source IRQ = pin, IOAPIC id 2 (after the CPUs).
        #expect(io.suffix(2).map(\.bytes) == [[3, 0, 0x0D, 0, 0, 16, 2, 16], [3, 0, 0x0D, 0, 0, 17, 2, 17]])
        let types = entries(table, length: length).map(\.type)
        #expect(types.suffix(2) == [4, 4])
    }

    @Test("the checksum byte makes any byte string sum to zero")
    func checksumFunction() {
        for bytes in [[], [0], [1], [0xFF, 0xFF], patternBytes(count: 1000)] as [[UInt8]] {
            #expect(sum(bytes + [MPTable.checksum(bytes)]) == 0)
        }
    }
}
