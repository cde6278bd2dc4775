// MPTable.swift: the Intel MultiProcessor Specification (v1.4) tables.
//
// Without ACPI, this is how Linux learns how many CPUs the machine has and
// how ISA interrupts reach the IOAPIC. Linux scans the last KiB of base
// memory (0x9FC00 with 639 KiB of it) for the 16-byte floating pointer
// "_MP_", which points to the configuration table "PCMP": a header and
// entries for each processor, the ISA bus, the IOAPIC, the 16 ISA
// interrupts and the two local interrupt lines (MP spec chapter 4).
// kvmtool and Firecracker describe their machines the same way; skvm picks
// the MP table over an ACPI MADT because it is a quarter of the code and
// every x86-64 Linux still parses it (docs/linux-boot.md says more).

/// Builds the MP floating pointer and configuration table.
public enum MPTable {
    /// APIC ids 0..N-1 for the CPUs and N for the IOAPIC, all below the broadcast id 0xFF.
    public static let maximumCPUs = 254

    static let localAPICVersion: UInt8 = 0x14
    static let ioAPICVersion: UInt8 = 0x11

    /// The bytes to place at `address` for `cpus` processors (APIC ids 0..<cpus).
    /// `signature` and `features` are CPUID leaf 1 EAX and EDX, as the spec asks.
    /// `levelTriggeredPins` are IOAPIC pins above 15 that devices drive as
    /// level-triggered, active-high lines (the virtio-mmio devices').
    public static func build(at address: UInt64, cpus: Int, signature: UInt32, features: UInt32,
                             levelTriggeredPins: [UInt8] = []) -> [UInt8] {
        var table: [UInt8] = []
        func u8(_ v: UInt8) { table.append(v) }
        func u16(_ v: UInt16) { for i in 0..<2 { table.append(UInt8(truncatingIfNeeded: v >> (8 * UInt16(i)))) } }
        func u32(_ v: UInt32) { for i in 0..<4 { table.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
        func text(_ s: String, _ width: Int) { table += Array(s.utf8.prefix(width)) + [UInt8](repeating: 0x20, count: max(0, width - s.utf8.count)) }

        let ioAPICID = UInt8(truncatingIfNeeded: cpus)  // the first id after the CPUs'
        // Configuration table header (spec 4.2), 44 bytes; length and checksum patched below.
        text("PCMP", 4)
        u16(0)               // base table length
        u8(4)                // spec revision 1.4
        u8(0)                // checksum
        text("SKVM", 8)      // OEM id
        text("SKVMCPU", 12)  // product id
        u32(0); u16(0)       // no OEM table
        u16(0)               // entry count
        u32(MachineMap.localAPICAddress)
        u16(0); u8(0); u8(0) // no extended table
        var entries: UInt16 = 0
        // Processor entries (4.3.1): the bootstrap processor is APIC id 0.
        for id in 0..<cpus {
            u8(0)
            u8(UInt8(truncatingIfNeeded: id))
            u8(localAPICVersion)
            u8(id == 0 ? 0x03 : 0x01)  // EN, and BP for the bootstrap processor
            u32(signature)
            u32(features)
            u32(0); u32(0)
            entries += 1
        }
        // The ISA bus (4.3.2).
        u8(1); u8(0); text("ISA", 6)
        entries += 1
        // The IOAPIC (4.3.3).
        u8(2); u8(ioAPICID); u8(ioAPICVersion); u8(0x01); u32(MachineMap.ioAPICAddress)
        entries += 1
        // ISA IRQs 0-15 to IOAPIC pins 0-15 (4.3.4): KVM's default GSI routing is
        // the identity, the PIT included (it raises GSI 0).
        for irq in 0..<16 {
            u8(3); u8(0); u16(0); u8(0); u8(UInt8(irq)); u8(ioAPICID); u8(UInt8(irq))
            entries += 1
        }
        // Device lines above the ISA range (4.3.4, table 4-10): polarity bits
        // 1:0 = 01 (active high), trigger mode bits 3:2 = 11 (level). The
        // source bus is the ISA bus, the only one this table lists; Linux maps
        // such an entry 1:1 to its GSI and takes the flags as written.
        for pin in levelTriggeredPins {
            u8(3); u8(0); u16(0x000D); u8(0); u8(pin); u8(ioAPICID); u8(pin)
            entries += 1
        }
        // Local interrupts (4.3.5): LINT0 = ExtINT (the 8259), LINT1 = NMI, on every local APIC.
        u8(4); u8(3); u16(0); u8(0); u8(0); u8(0xFF); u8(0)
        u8(4); u8(1); u16(0); u8(0); u8(0); u8(0xFF); u8(1)
        entries += 2
        let length = table.count
        table[4] = UInt8(length & 0xFF)
        table[5] = UInt8(length >> 8)
        table[34] = UInt8(entries & 0xFF)
        table[35] = UInt8(entries >> 8)
        table[7] = checksum(table)

        // The floating pointer (4.1), 16 bytes, placed before the table.
        var pointer: [UInt8] = Array("_MP_".utf8)
        let tableAddress = UInt32(truncatingIfNeeded: address + 16)
        for i in 0..<4 { pointer.append(UInt8(truncatingIfNeeded: tableAddress >> (8 * UInt32(i)))) }
        pointer += [1, 4, 0, 0, 0, 0, 0, 0]  // length 1 (16 bytes), revision 1.4, checksum, no default configuration
        pointer[10] = checksum(pointer)
        return pointer + table
    }

    /// The byte that makes `bytes` sum to zero (mod 256).
    static func checksum(_ bytes: [UInt8]) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }
}
