// ConfigurationSpaceTests.swift: the type 0 header's read-only and writable
// fields, RW1C status bits, access alignment, and BAR sizing exactly as
// hardware answers it (PCI Local Bus Specification 3.0, §6.1, §6.2, §6.2.5.1).

import PCI
import Testing

@Suite("PCI configuration space")
struct ConfigurationSpaceTests {
    @Test("writing all ones everywhere changes only the writable fields")
    func readOnlyHeader() throws {
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x1000))
        try s.addVendorSpecificCapability([1, 0, 0, 0])
        let before = (0..<64).map { s.read(register: $0) }
        for r in 0..<64 { s.write(register: r, value: 0xFFFF_FFFF, byteEnables: 0xF) }
        #expect(s.read(register: 0) == 0x1042_1AF4)           // vendor, device
        #expect(s.read(register: 1) == 0x0010_0547)           // status keeps only bit 4; command's writable bits
        #expect(s.read(register: 2) == 0x0100_0001)           // class 01/00/00, revision 1
        #expect(s.read(register: 3) == 0x0000_00FF)           // cache line size only
        #expect(s.read(register: 4) == 0xFFFF_F000)           // BAR0 sizing mask
        for r in 5...10 { #expect(s.read(register: r) == 0) } // unused BARs, CardBus CIS
        #expect(s.read(register: 11) == 0x0002_1AF4)          // subsystem
        #expect(s.read(register: 12) == 0)                    // no expansion ROM
        #expect(s.read(register: 13) == 0x40)                 // capabilities pointer
        #expect(s.read(register: 15) == 0x0000_01FF)          // pin INTA, line written
        #expect(s.read(register: 16) == before[16])           // the capability is read-only
        #expect(s.read(register: 17) == before[17])
        for r in 18..<64 { #expect(s.read(register: r) == 0) }
        #expect(s.command == [.ioSpace, .memorySpace, .busMaster, .parityErrorResponse, .serrEnable, .interruptDisable])
        #expect(s.interruptLine == 0xFF)
    }

    @Test("a fresh header: IDs, class, interrupt pin and line, single-function header type")
    func freshHeader() {
        let s = endpointSpace()
        #expect(s.vendorID == 0x1AF4 && s.deviceID == 0x1042)
        #expect(s.classCode == .scsiStorage)
        #expect(s.read(offset: 0x0E, size: 1) == 0x00)
        #expect(s.read(offset: 0x3C, size: 2) == 0x01FF)
        #expect(s.status == 0 && s.command == [])
        #expect(s.capabilityOffsets() == [])
    }

    @Test("status error bits are write-one-to-clear; the capability and interrupt bits are read-only")
    func statusWriteOneToClear() throws {
        var s = endpointSpace()
        try s.addVendorSpecificCapability([0])
        s.setStatusBits(0x8000 | 0x2000 | 0x0100 | PCIConfigurationSpace.statusInterrupt)
        #expect(s.status == 0xA118)
        s.write(offset: 0x06, size: 2, value: 0x0000)  // writing 0 clears nothing
        #expect(s.status == 0xA118)
        s.write(offset: 0x06, size: 2, value: 0x2000)
        #expect(s.status == 0x8118)
        s.write(offset: 0x06, size: 2, value: 0xFFFF)
        #expect(s.status == 0x0018)
        // A dword write to the command register with status bits zero clears nothing.
        s.setStatusBits(0x0800)
        s.write(register: 1, value: 0x0000_0002, byteEnables: 0xF)
        #expect(s.status == 0x0818 && s.command == .memorySpace)
        // Byte enables that leave out the status bytes do not clear them.
        s.write(register: 1, value: 0xFFFF_0000, byteEnables: 0x3)
        #expect(s.status == 0x0818 && s.command == [])
        s.clearStatusBits(PCIConfigurationSpace.statusInterrupt)
        #expect(s.status == 0x0810)
    }

    @Test("byte enables select which bytes of the dword are written")
    func byteEnables() {
        var s = endpointSpace()
        s.write(register: 15, value: 0x1234_5678, byteEnables: 0b0010)  // interrupt pin: read-only
        #expect(s.read(register: 15) == 0x0000_01FF)
        s.write(register: 15, value: 0x1234_5678, byteEnables: 0b0001)
        #expect(s.read(register: 15) == 0x0000_0178)
        s.write(register: 3, value: 0xFFFF_FF20, byteEnables: 0b1110)   // cache line not enabled
        #expect(s.read(register: 3) == 0)
        s.write(register: 64, value: 0, byteEnables: 0xF)               // past the end: ignored
        #expect(s.read(register: 64) == 0xFFFF_FFFF && s.read(register: -1) == 0xFFFF_FFFF)
    }

    @Test("unaligned, odd-sized and out-of-range accesses read all ones and write nothing")
    func hostileAccesses() {
        var s = endpointSpace()
        #expect(s.read(offset: 1, size: 2) == 0xFFFF)
        #expect(s.read(offset: 2, size: 4) == 0xFFFF_FFFF)
        #expect(s.read(offset: 0, size: 3) == 0xFF_FFFF)
        #expect(s.read(offset: 0, size: 8) == 0xFFFF_FFFF)
        #expect(s.read(offset: 256, size: 1) == 0xFF)
        #expect(s.read(offset: 254, size: 4) == 0xFFFF_FFFF)
        #expect(s.read(offset: -4, size: 4) == 0xFFFF_FFFF)
        #expect(s.read(offset: 255, size: 1) == 0)
        #expect(s.read(offset: 252, size: 4) == 0)
        let before = s
        s.write(offset: 0x3B, size: 2, value: 0xFFFF)
        s.write(offset: 0x3D, size: 4, value: 0xFFFF_FFFF)
        s.write(offset: 0x3C, size: 3, value: 0xFFFF_FF)
        s.write(offset: 0x3C, size: 0, value: 0x12)
        s.write(offset: 256, size: 1, value: 0x12)
        #expect(s == before)
        s.write(offset: 0x3C, size: 1, value: 0x0B)
        #expect(s.interruptLine == 0x0B)
    }

    @Test("a 32-bit memory BAR sizes as ~(size - 1) with its type bits, and restores")
    func sizeMemory32() throws {
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x4000))
        try s.setBAR(1, .memory32(size: 0x10, prefetchable: true))
        try s.setBARAddress(0, 0xC000_0000)
        try s.setBARAddress(1, 0xC000_4010)
        #expect(s.read(offset: 0x10, size: 4) == 0xC000_0000)
        #expect(s.read(offset: 0x14, size: 4) == 0xC000_4018)
        s.write(offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        s.write(offset: 0x14, size: 4, value: 0xFFFF_FFFF)
        #expect(s.read(offset: 0x10, size: 4) == 0xFFFF_C000)
        #expect(s.read(offset: 0x14, size: 4) == 0xFFFF_FFF8)
        // Writing the type bits as zero changes nothing: they are read-only.
        s.write(offset: 0x14, size: 4, value: 0)
        #expect(s.read(offset: 0x14, size: 4) == 0x0000_0008)
        s.write(offset: 0x10, size: 4, value: 0xC000_0000)
        s.write(offset: 0x14, size: 4, value: 0xC000_4010)
        #expect(s.read(offset: 0x10, size: 4) == 0xC000_0000)
        #expect(s.read(offset: 0x14, size: 4) == 0xC000_4018)
        // Address bits below the size cannot be set.
        s.write(offset: 0x10, size: 4, value: 0xC000_1230)
        #expect(s.barAddress(0) == 0xC000_0000)
        // A word write sizes half of the register, as byte enables say.
        s.write(offset: 0x12, size: 2, value: 0xD000)
        #expect(s.read(offset: 0x10, size: 4) == 0xD000_0000)
    }

    @Test("a 64-bit memory BAR sizes across both registers, and the upper half is not a BAR")
    func sizeMemory64() throws {
        var s = endpointSpace()
        try s.setBAR(2, .memory64(size: 0x10_0000, prefetchable: true))
        try s.setBAR(4, .memory64(size: 0x2_0000_0000))  // 8 GiB
        #expect(s.read(offset: 0x18, size: 4) == 0x0000_000C)
        #expect(s.read(offset: 0x20, size: 4) == 0x0000_0004)
        #expect(s.bar(3) == nil && s.bar(5) == nil && s.bar(2) == .memory64(size: 0x10_0000, prefetchable: true))
        for offset in [0x18, 0x1C, 0x20, 0x24] { s.write(offset: offset, size: 4, value: 0xFFFF_FFFF) }
        #expect(s.read(offset: 0x18, size: 4) == 0xFFF0_000C)
        #expect(s.read(offset: 0x1C, size: 4) == 0xFFFF_FFFF)
        #expect(s.read(offset: 0x20, size: 4) == 0x0000_0004)
        #expect(s.read(offset: 0x24, size: 4) == 0xFFFF_FFFE)
        // Linux combines the halves: size = ~mask + 1.
        let mask = UInt64(s.read(offset: 0x24, size: 4)) << 32 | UInt64(s.read(offset: 0x20, size: 4) & ~0xF)
        #expect(~mask &+ 1 == 0x2_0000_0000)
        s.write(offset: 0x18, size: 4, value: 0xC010_0000)
        s.write(offset: 0x1C, size: 4, value: 0x0000_0001)
        #expect(s.barAddress(2) == 0x1_C010_0000)
        s.write(offset: 0x20, size: 4, value: 0)
        s.write(offset: 0x24, size: 4, value: 0x0000_0005)
        #expect(s.barAddress(4) == 0x4_0000_0000)
    }

    @Test("an I/O BAR sizes with bit 0 set and the upper 16 bits zero")
    func sizeIO() throws {
        var s = endpointSpace()
        try s.setBAR(5, .io(size: 0x20))
        #expect(s.read(offset: 0x24, size: 4) == 0x0000_0001)
        s.write(offset: 0x24, size: 4, value: 0xFFFF_FFFF)
        #expect(s.read(offset: 0x24, size: 4) == 0x0000_FFE1)
        s.write(offset: 0x24, size: 4, value: 0xC020)
        #expect(s.read(offset: 0x24, size: 4) == 0x0000_C021)
        #expect(s.barAddress(5) == 0xC020)
        #expect(s.barMapping(5) == nil)
        s.command = .ioSpace
        #expect(s.barMapping(5) == PCIBarMapping(index: 5, space: .io, address: 0xC020, size: 0x20))
        #expect(s.barMapping(0) == nil)
    }

    @Test("memory BARs decode only with command bit 1, I/O BARs only with bit 0")
    func decodeEnables() throws {
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x1000))
        try s.setBARAddress(0, 0xC000_1000)
        #expect(s.barMappings() == [nil, nil, nil, nil, nil, nil])
        s.write(offset: 0x04, size: 2, value: 0x0001)
        #expect(s.barMapping(0) == nil)
        s.write(offset: 0x04, size: 2, value: 0x0002)
        #expect(s.barMapping(0) == PCIBarMapping(index: 0, space: .memory, address: 0xC000_1000, size: 0x1000))
    }

    @Test("BAR descriptions the specification forbids are refused")
    func invalidBARs() throws {
        var s = endpointSpace()
        #expect(throws: PCIError.invalidBARSize(index: 0, size: 0x3000)) { try s.setBAR(0, .memory32(size: 0x3000)) }
        #expect(throws: PCIError.invalidBARSize(index: 0, size: 8)) { try s.setBAR(0, .memory32(size: 8)) }
        #expect(throws: PCIError.invalidBARSize(index: 0, size: 0)) { try s.setBAR(0, .memory32(size: 0)) }
        #expect(throws: PCIError.invalidBARSize(index: 1, size: 512)) { try s.setBAR(1, .io(size: 512)) }
        #expect(throws: PCIError.invalidBARSize(index: 1, size: 2)) { try s.setBAR(1, .io(size: 2)) }
        #expect(throws: PCIError.invalidBARIndex(5)) { try s.setBAR(5, .memory64(size: 0x1000)) }
        #expect(throws: PCIError.invalidBARIndex(6)) { try s.setBAR(6, .io(size: 4)) }
        #expect(throws: PCIError.invalidBARIndex(-1)) { try s.setBAR(-1, .io(size: 4)) }
        try s.setBAR(1, .memory64(size: 0x1000))
        #expect(throws: PCIError.barInUse(2)) { try s.setBAR(2, .io(size: 4)) }
        #expect(throws: PCIError.barInUse(1)) { try s.setBAR(0, .memory64(size: 0x1000)) }
        #expect(throws: PCIError.barInUse(1)) { try s.setBAR(1, .io(size: 4)) }
        try s.setBAR(3, .io(size: 256))
        #expect(throws: PCIError.invalidBARAddress(index: 1, address: 0xC000_0800)) { try s.setBARAddress(1, 0xC000_0800) }
        #expect(throws: PCIError.invalidBARAddress(index: 3, address: 0x1_0000)) { try s.setBARAddress(3, 0x1_0000) }
        #expect(throws: PCIError.noSuchBAR(2)) { try s.setBARAddress(2, 0) }
        #expect(throws: PCIError.noSuchBAR(0)) { try s.setBARAddress(0, 0) }
        try s.setBAR(0, .memory32(size: 0x1000))
        #expect(throws: PCIError.invalidBARAddress(index: 0, address: 0x1_0000_0000)) { try s.setBARAddress(0, 0x1_0000_0000) }
        try s.setBARAddress(0, 0xFFFF_F000)
        #expect(s.barAddress(0) == 0xFFFF_F000)
    }
}
