// ConfigMechanismTests.swift: configuration mechanism #1 on ports 0xCF8-0xCFF
// (PCI Local Bus Specification 3.0, §3.2.2.3.2), as Linux's arch/x86/pci/direct.c
// drives it: the address latch, byte/word/dword data accesses, the enable
// bit, absent devices and functions, and the host bridge at 00:00.0.

import Devices
import PCI
import Testing

@Suite("PCI configuration mechanism #1")
struct ConfigMechanismTests {
    let bridge = PCIHostBridge()
    var ports: ConfigPorts { ConfigPorts(bridge: bridge) }

    @Test("a dword write to 0xCF8 latches the address and reads back, with bits 1:0 zero")
    func addressLatch() {
        bridge.write(offset: 0, size: 4, value: 0x8000_0000)
        #expect(bridge.read(offset: 0, size: 4) == 0x8000_0000)
        bridge.write(offset: 0, size: 4, value: 0x8012_3457)
        #expect(bridge.read(offset: 0, size: 4) == 0x8012_3454)
        let a = PCIConfigAddress(rawValue: 0x8012_3454)
        #expect(a.isEnabled && a.bus == 0x12 && a.device == 6 && a.function == 4 && a.register == 0x15)
    }

    @Test("byte and word writes to 0xCF8-0xCFB do not latch; byte and word reads there read all ones")
    func narrowAddressAccesses() {
        bridge.write(offset: 0, size: 4, value: 0x8000_0800)
        // Linux's pci_check_type1 writes 0x01 to 0xCFB before probing.
        bridge.write(offset: 3, size: 1, value: 0x01)
        bridge.write(offset: 0, size: 2, value: 0xFFFF)
        bridge.write(offset: 2, size: 2, value: 0x0000)
        bridge.write(offset: 0, size: 1, value: 0x44)
        #expect(bridge.read(offset: 0, size: 4) == 0x8000_0800)
        #expect(bridge.read(offset: 0, size: 1) == 0xFF)
        #expect(bridge.read(offset: 0, size: 2) == 0xFFFF)
        #expect(bridge.read(offset: 1, size: 1) == 0xFF)
        #expect(bridge.read(offset: 3, size: 1) == 0xFF)
        // A dword at 0xCF9 (offset 1) is not CONFIG_ADDRESS either.
        bridge.write(offset: 1, size: 4, value: 0)
        #expect(bridge.read(offset: 1, size: 4) == 0xFFFF_FFFF)
        #expect(bridge.read(offset: 0, size: 4) == 0x8000_0800)
    }

    @Test("the host bridge at 00:00.0: 8086:29C0, class 06/00/00, header type 0, no capabilities")
    func hostBridgeIdentity() {
        #expect(ports.read(device: 0, offset: 0x00) == 0x29C0_8086)
        #expect(ports.read(device: 0, offset: 0x08) == 0x0600_0000)
        #expect(ports.read(device: 0, offset: 0x0C) == 0x0000_0000)
        #expect(ports.read(device: 0, offset: 0x0E, size: 1) == 0x00)
        #expect(ports.read(device: 0, offset: 0x04) == 0x0000_0000)
        #expect(ports.read(device: 0, offset: 0x34, size: 1) == 0x00)
        // No BARs: sizing finds none.
        ports.write(device: 0, offset: 0x10, value: 0xFFFF_FFFF)
        #expect(ports.read(device: 0, offset: 0x10) == 0)
    }

    @Test("byte and word data accesses pick their bytes from the port's low two bits")
    func byteAndWordData() {
        // Vendor 0x8086, device 0x29C0 at offset 0: bytes 86 80 C0 29.
        #expect(ports.read(device: 0, offset: 0, size: 2) == 0x8086)
        #expect(ports.read(device: 0, offset: 2, size: 2) == 0x29C0)
        #expect(ports.read(device: 0, offset: 0, size: 1) == 0x86)
        #expect(ports.read(device: 0, offset: 1, size: 1) == 0x80)
        #expect(ports.read(device: 0, offset: 2, size: 1) == 0xC0)
        #expect(ports.read(device: 0, offset: 3, size: 1) == 0x29)
        // The class code's top byte through 0xCFF.
        #expect(ports.read(device: 0, offset: 0x0B, size: 1) == 0x06)
    }

    @Test("unaligned or oversized data accesses read all ones and write nothing")
    func unalignedData() throws {
        let device = PCIFunction(name: "ep", configuration: try PCIConfiguration(endpointSpace()))
        try bridge.register(device, slot: 1)
        ports.select(device: 1, offset: 0)
        #expect(bridge.read(offset: 5, size: 2) == 0xFFFF)  // word at 0xCFD
        #expect(bridge.read(offset: 7, size: 2) == 0xFFFF)  // word at 0xCFF spills past the dword
        #expect(bridge.read(offset: 6, size: 4) == 0xFFFF_FFFF)
        #expect(bridge.read(offset: 4, size: 8) == UInt64.max)
        #expect(bridge.read(offset: 4, size: 3) == 0xFF_FFFF)
        // A word write at 0xCFD to the command register would set memory space; it must not.
        ports.select(device: 1, offset: 0x04)
        bridge.write(offset: 5, size: 2, value: 0x0202)
        bridge.write(offset: 4, size: 8, value: 0x7)
        #expect(ports.read(device: 1, offset: 0x04, size: 2) == 0)
        // The aligned word lands.
        ports.write(device: 1, offset: 0x04, size: 2, value: 0x0006)
        #expect(ports.read(device: 1, offset: 0x04, size: 2) == 0x0006)
        #expect(ports.read(device: 1, offset: 0x04) == 0x0000_0006)  // status 0: no capabilities
    }

    @Test("with bit 31 clear, CONFIG_DATA reads all ones and writes go nowhere")
    func disabledAddress() throws {
        let device = PCIFunction(name: "ep", configuration: try PCIConfiguration(endpointSpace()))
        try bridge.register(device, slot: 2)
        ports.select(device: 0, offset: 0, enabled: false)
        #expect(bridge.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        #expect(bridge.read(offset: 4, size: 2) == 0xFFFF)
        #expect(bridge.read(offset: 4, size: 1) == 0xFF)
        ports.select(device: 2, offset: 0x3C, enabled: false)
        bridge.write(offset: 4, size: 1, value: 0x0A)
        #expect(ports.read(device: 2, offset: 0x3C, size: 1) == 0xFF)
        ports.write(device: 2, offset: 0x3C, size: 1, value: 0x0A)
        #expect(ports.read(device: 2, offset: 0x3C, size: 1) == 0x0A)
    }

    @Test("absent slots, functions 1-7, other buses and extended registers read 0xFFFFFFFF")
    func absentFunctions() throws {
        let device = PCIFunction(name: "ep", configuration: try PCIConfiguration(endpointSpace()))
        try bridge.register(device, slot: 3)
        #expect(ports.read(device: 3, offset: 0) == 0x1042_1AF4)
        for slot in [1, 2, 4, 31] { #expect(ports.read(device: slot, offset: 0) == 0xFFFF_FFFF) }
        for function in 1...7 {
            #expect(ports.read(device: 3, function: function, offset: 0) == 0xFFFF_FFFF)
            #expect(ports.read(device: 0, function: function, offset: 0) == 0xFFFF_FFFF)
        }
        ports.select(bus: 1, device: 3, offset: 0)
        #expect(bridge.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        ports.select(bus: 0xFF, device: 0, offset: 0)
        #expect(bridge.read(offset: 4, size: 2) == 0xFFFF)
        // Linux's PCI_CONF1_ADDRESS for register 0x100 puts 1 in bits 27:24.
        bridge.write(offset: 0, size: 4, value: 0x8100_1800)
        #expect(bridge.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        // Writes to absent functions are dropped without effect on the device.
        ports.write(device: 3, function: 1, offset: 0x04, value: 0x6)
        ports.select(bus: 1, device: 3, offset: 0x04)
        bridge.write(offset: 4, size: 4, value: 0x6)
        #expect(ports.read(device: 3, offset: 0x04, size: 2) == 0)
    }

    @Test("a scan of bus 0 like Linux's pci_sanity_check finds the host bridge and the devices")
    func busScan() throws {
        try bridge.register(PCIFunction(name: "a", configuration: try PCIConfiguration(endpointSpace())), slot: 1)
        try bridge.register(PCIFunction(name: "b", configuration: try PCIConfiguration(endpointSpace())), slot: 31)
        var found: [Int: UInt64] = [:]
        for slot in 0..<32 {
            let id = ports.read(device: slot, offset: 0)
            if id & 0xFFFF != 0xFFFF { found[slot] = ports.read(device: slot, offset: 0x08) >> 8 }
        }
        #expect(found == [0: 0x06_0000, 1: 0x01_0000, 31: 0x01_0000])
    }

    @Test("registration rejects slot 0, slots past 31, negative slots and occupied slots")
    func registration() throws {
        let make = { () throws -> PCIFunction in PCIFunction(name: "x", configuration: try PCIConfiguration(endpointSpace())) }
        #expect(throws: PCIError.invalidSlot(0)) { try bridge.register(try make(), slot: 0) }
        #expect(throws: PCIError.invalidSlot(32)) { try bridge.register(try make(), slot: 32) }
        #expect(throws: PCIError.invalidSlot(-1)) { try bridge.register(try make(), slot: -1) }
        try bridge.register(try make(), slot: 5)
        #expect(throws: PCIError.slotInUse(5)) { try bridge.register(try make(), slot: 5) }
        #expect(bridge.device(slot: 5)?.name == "x")
        #expect(bridge.device(slot: 0)?.name == "host-bridge")
        #expect(bridge.device(slot: 6) == nil)
        #expect(bridge.device(slot: 99) == nil)
    }
}
