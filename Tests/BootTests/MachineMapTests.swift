// MachineMapTests.swift: the guest-physical layout (docs/memory-map.md):
// RAM from 0, the legacy area [0x9FC00, 1 MiB) reserved, and the MMIO hole
// [3 GiB, 4 GiB) that moves RAM above 3 GiB to 4 GiB. Memory-map types are
// the E820 ones (ACPI, "System Address Map Interfaces"): 1 RAM, 2 reserved.

import Boot
import Memory
import Testing

private let kib: UInt64 = 1 << 10
private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

private func range(_ start: UInt64, _ length: UInt64) throws -> GuestRange {
    try #require(GuestRange(start: GuestAddress(start), length: length))
}

@Suite("MachineMap")
struct MachineMapTests {
    @Test("1 MiB: one RAM range; low RAM then the reserved legacy area")
    func oneMiB() throws {
        #expect(MachineMap.ramLayout(size: mib) == [try range(0, mib)])
        #expect(MachineMap.memoryMap(size: mib) == [
            MemoryMapEntry(base: 0, length: 0x9_FC00, type: .ram),
            MemoryMapEntry(base: 0x9_FC00, length: 0x6_0400, type: .reserved),
        ])
    }

    @Test("128 MiB: one RAM range; low RAM, legacy area, RAM from 1 MiB")
    func oneHundredTwentyEightMiB() throws {
        #expect(MachineMap.ramLayout(size: 128 * mib) == [try range(0, 128 * mib)])
        #expect(MachineMap.memoryMap(size: 128 * mib) == [
            MemoryMapEntry(base: 0, length: 0x9_FC00, type: .ram),
            MemoryMapEntry(base: 0x9_FC00, length: 0x6_0400, type: .reserved),
            MemoryMapEntry(base: 0x10_0000, length: 127 * mib, type: .ram),
        ])
    }

    @Test("exactly 3 GiB: everything still fits below the MMIO hole")
    func threeGiB() throws {
        #expect(MachineMap.ramLayout(size: 3 * gib) == [try range(0, 3 * gib)])
        #expect(MachineMap.memoryMap(size: 3 * gib) == [
            MemoryMapEntry(base: 0, length: 0x9_FC00, type: .ram),
            MemoryMapEntry(base: 0x9_FC00, length: 0x6_0400, type: .reserved),
            MemoryMapEntry(base: 0x10_0000, length: 3 * gib - mib, type: .ram),
        ])
    }

    @Test("4 GiB: [0, 3 GiB) and [4 GiB, 5 GiB), the hole left out")
    func fourGiB() throws {
        #expect(MachineMap.ramLayout(size: 4 * gib) == [try range(0, 3 * gib), try range(4 * gib, gib)])
        #expect(MachineMap.memoryMap(size: 4 * gib) == [
            MemoryMapEntry(base: 0, length: 0x9_FC00, type: .ram),
            MemoryMapEntry(base: 0x9_FC00, length: 0x6_0400, type: .reserved),
            MemoryMapEntry(base: 0x10_0000, length: 3 * gib - mib, type: .ram),
            MemoryMapEntry(base: 4 * gib, length: gib, type: .ram),
        ])
    }

    @Test("3 GiB + 4 KiB: one page above the hole")
    func justAboveThreeGiB() throws {
        #expect(MachineMap.ramLayout(size: 3 * gib + 4 * kib) == [try range(0, 3 * gib), try range(4 * gib, 4 * kib)])
        #expect(MachineMap.memoryMap(size: 3 * gib + 4 * kib).last == MemoryMapEntry(base: 4 * gib, length: 4 * kib, type: .ram))
    }

    @Test(
        "the memory map covers exactly `size` bytes of RAM, and the layout matches it",
        arguments: [mib, 2 * mib, 128 * mib, 3 * gib - 4 * kib, 3 * gib, 3 * gib + 4 * kib, 4 * gib, 64 * gib])
    func mapAccountsForAllRAM(_ size: UInt64) {
        let map = MachineMap.memoryMap(size: size)
        let ramInMap = map.filter { $0.type == .ram }.reduce(0) { $0 + $1.length }
        let reserved = map.filter { $0.type == .reserved }.reduce(0) { $0 + $1.length }
        #expect(ramInMap + reserved == size)
        #expect(MachineMap.ramLayout(size: size).reduce(0) { $0 + $1.length } == size)
        // Sorted, disjoint, and the RAM entries lie inside the RAM layout.
        for (a, b) in zip(map, map.dropFirst()) { #expect(a.base + a.length <= b.base) }
        let layout = MachineMap.ramLayout(size: size)
        for e in map where e.type == .ram {
            #expect(layout.contains { $0.start.rawValue <= e.base && e.base + e.length <= $0.end.rawValue })
        }
    }

    @Test("KVM's TSS and identity-map pages lie in the MMIO hole, one after the other")
    func kvmPagesInHole() {
        let identity = MachineMap.kvmIdentityMapAddress.rawValue
        let tss = MachineMap.kvmTSSAddress.rawValue
        #expect(identity + 0x1000 == tss)
        #expect(identity >= MachineMap.mmioHoleStart)
        #expect(tss + 3 * 0x1000 <= MachineMap.highRAMStart)
        #expect(MachineMap.mmioHoleStart == 3 * gib)
        #expect(MachineMap.highRAMStart == 4 * gib)
    }
}
