// CapabilityTests.swift: the capability list (PCI Local Bus Specification 3.0,
// §6.7) as virtio-pci builds it: vendor-specific capabilities (virtio 1.2
// §4.1.4) and MSI-X (§6.8.2), walked from 0x34 as a driver walks them.

import PCI
import Testing

@Suite("PCI capability list")
struct CapabilityTests {
    /// A virtio-pci-like function: one 64-bit BAR, four virtio capabilities, MSI-X for 9 vectors.
    static func virtioLikeSpace() throws -> PCIConfigurationSpace {
        var s = endpointSpace()
        try s.setBAR(0, .memory64(size: 0x4000))
        // cfg_type, bar, id, padding[2], offset (LE32), length (LE32).
        func cap(_ type: UInt8, offset: UInt32, length: UInt32) -> [UInt8] {
            [type, 0, 0, 0, 0] + (0..<4).map { UInt8(truncatingIfNeeded: offset >> (8 * $0)) }
                + (0..<4).map { UInt8(truncatingIfNeeded: length >> (8 * $0)) }
        }
        try s.addVendorSpecificCapability(cap(1, offset: 0x0000, length: 0x38))                   // common
        try s.addVendorSpecificCapability(cap(2, offset: 0x3000, length: 0x1000) + [4, 0, 0, 0])  // notify + multiplier
        try s.addVendorSpecificCapability(cap(3, offset: 0x1000, length: 0x4))                    // ISR
        try s.addVendorSpecificCapability(cap(4, offset: 0x2000, length: 0x100))                  // device
        let msix = try MSIXCapability(vectorCount: 9, tableBAR: 0, tableOffset: 0x3800, pbaBAR: 0, pbaOffset: 0x3C00)
        try s.addMSIXCapability(msix)
        return s
    }

    @Test("the list starts at 0x34, links each capability to the next and ends with 0")
    func walk() throws {
        let s = try Self.virtioLikeSpace()
        #expect(s.status & PCIConfigurationSpace.statusCapabilityList != 0)
        #expect(s.read(offset: 0x34, size: 1) == 0x40)
        // Vendor caps are 3 + 13 = 16 bytes, the notify cap 20, MSI-X 12; each dword-aligned.
        #expect(s.capabilityOffsets() == [0x40, 0x50, 0x64, 0x74, 0x84])
        #expect(s.read(offset: 0x40, size: 2) == 0x5009)
        #expect(s.read(offset: 0x50, size: 2) == 0x6409)
        #expect(s.read(offset: 0x64, size: 2) == 0x7409)
        #expect(s.read(offset: 0x74, size: 2) == 0x8409)
        #expect(s.read(offset: 0x84, size: 2) == 0x0011)  // MSI-X, next = 0: the end
        #expect(s.msixCapabilityOffset == 0x84)
        // The vendor length byte and the virtio fields.
        #expect(s.read(offset: 0x42, size: 1) == 16)
        #expect(s.read(offset: 0x52, size: 1) == 20)
        #expect(s.read(offset: 0x53, size: 1) == 2)
        #expect(s.read(offset: 0x58, size: 4) == 0x3000)
        #expect(s.read(offset: 0x60, size: 4) == 4)
        #expect(s.read(offset: 0x88, size: 4) == 0x3800)  // table offset | BIR 0
        #expect(s.read(offset: 0x8C, size: 4) == 0x3C00)  // PBA offset | BIR 0
    }

    @Test("MSI-X message control: table size N - 1 is read-only, only enable and function mask are writable")
    func msixMessageControl() throws {
        var s = try Self.virtioLikeSpace()
        #expect(s.read(offset: 0x86, size: 2) == 0x0008)
        s.write(offset: 0x86, size: 2, value: 0xFFFF)
        #expect(s.read(offset: 0x86, size: 2) == 0xC008)
        #expect(s.msixMessageControl == 0xC008)
        s.write(offset: 0x84, size: 4, value: 0x0000_0000)
        #expect(s.read(offset: 0x84, size: 4) == 0x0008_0011)
        s.write(offset: 0x87, size: 1, value: 0x80)
        #expect(s.read(offset: 0x86, size: 2) == 0x8008)
        // The table and PBA registers are read-only.
        s.write(offset: 0x88, size: 4, value: 0xFFFF_FFFF)
        s.write(offset: 0x8C, size: 4, value: 0)
        #expect(s.read(offset: 0x88, size: 4) == 0x3800 && s.read(offset: 0x8C, size: 4) == 0x3C00)
        // So are the ID and next bytes, and the vendor capabilities.
        s.write(offset: 0x40, size: 4, value: 0)
        s.write(offset: 0x58, size: 4, value: 0)
        #expect(s.read(offset: 0x40, size: 4) == 0x0110_5009 && s.read(offset: 0x58, size: 4) == 0x3000)
    }

    @Test("a writable mask makes chosen capability bits writable, and nothing else")
    func writableMask() throws {
        var s = endpointSpace()
        let at = try s.addVendorSpecificCapability([0xAA, 0xBB, 0xCC, 0xDD], writableMask: [0x00, 0xFF, 0x0F, 0x00])
        #expect(at == 0x40)
        s.write(offset: 0x40, size: 4, value: 0xFFFF_FFFF)
        s.write(offset: 0x44, size: 4, value: 0x0000_0000)
        #expect(s.read(offset: 0x40, size: 4) == 0xAA07_0009)
        #expect(s.read(offset: 0x44, size: 4) == 0x00DD_C000)
        s.write(offset: 0x44, size: 4, value: 0xFFFF_FFFF)
        #expect(s.read(offset: 0x44, size: 4) == 0x00DD_CFFF)
        #expect(throws: PCIError.invalidCapability("writable mask of 1 bytes for 2 bytes of data")) {
            try s.addVendorSpecificCapability([1, 2], writableMask: [0])
        }
    }

    @Test("capabilities fill 0x40-0xFF exactly, and one more byte does not fit")
    func capabilitySpace() throws {
        var s = endpointSpace()
        // 0x40 + 3 * 64 = 0x100: three 64-byte capabilities fill the space.
        for _ in 0..<3 { try s.addCapability(id: 0x09, body: Array(repeating: 0, count: 62)) }
        #expect(s.capabilityOffsets() == [0x40, 0x80, 0xC0])
        #expect(throws: PCIError.capabilitySpaceFull(length: 2)) { try s.addCapability(id: 0x09, body: []) }
        var t = endpointSpace()
        #expect(throws: PCIError.capabilitySpaceFull(length: 195)) {
            try t.addVendorSpecificCapability(Array(repeating: 0, count: 192))
        }
        try t.addVendorSpecificCapability(Array(repeating: 0, count: 189))  // 192 bytes: exactly fits
        #expect(t.capabilityOffsets() == [0x40])
        #expect(t.read(offset: 0x42, size: 1) == 192)
    }

    @Test("MSI-X descriptions the specification forbids are refused")
    func invalidMSIX() throws {
        #expect(throws: PCIError.self) { try MSIXCapability(vectorCount: 0, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800) }
        #expect(throws: PCIError.self) { try MSIXCapability(vectorCount: 2049, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800) }
        #expect(throws: PCIError.self) { try MSIXCapability(vectorCount: 4, tableBAR: 6, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800) }
        #expect(throws: PCIError.self) { try MSIXCapability(vectorCount: 4, tableBAR: 0, tableOffset: 4, pbaBAR: 0, pbaOffset: 0x800) }
        let big = try MSIXCapability(vectorCount: 2048, tableBAR: 1, tableOffset: 0, pbaBAR: 1, pbaOffset: 0x8000)
        #expect(big.tableLength == 0x8000 && big.pbaLength == 256)
        var s = endpointSpace()
        // No BAR yet, then an I/O BAR, then a BAR too small.
        #expect(throws: PCIError.invalidMSIX("the table's BIR 1 names no memory BAR")) { try s.addMSIXCapability(big) }
        try s.setBAR(1, .io(size: 256))
        #expect(throws: PCIError.invalidMSIX("the table's BIR 1 names no memory BAR")) { try s.addMSIXCapability(big) }
        var t = endpointSpace()
        try t.setBAR(1, .memory32(size: 0x8000))
        #expect(throws: PCIError.invalidMSIX("the PBA does not fit in BAR 1")) { try t.addMSIXCapability(big) }
        let overlap = try MSIXCapability(vectorCount: 8, tableBAR: 1, tableOffset: 0x100, pbaBAR: 1, pbaOffset: 0x178)
        #expect(throws: PCIError.invalidMSIX("the table and the PBA overlap")) { try t.addMSIXCapability(overlap) }
        let ok = try MSIXCapability(vectorCount: 8, tableBAR: 1, tableOffset: 0x100, pbaBAR: 1, pbaOffset: 0x180)
        #expect(try t.addMSIXCapability(ok) == 0x40)
        #expect(throws: PCIError.invalidMSIX("the function already has one")) { try t.addMSIXCapability(ok) }
        #expect(t.read(offset: 0x40, size: 4) == 0x0007_0011)
        #expect(t.read(offset: 0x44, size: 4) == 0x101 && t.read(offset: 0x48, size: 4) == 0x181)
    }
}
