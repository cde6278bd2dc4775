// GuestMemoryTests.swift: GuestMemory's checked accessors and layouts
// (STYLE.md §3.5: every access checks address + size for overflow and
// against one region; integers are little-endian).
//
// All memory here is an anonymous MAP_NORESERVE mmap: no VM, no /dev/kvm.

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Synchronization
import Testing

private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

private func range(_ start: UInt64, _ length: UInt64) throws -> GuestRange {
    try #require(GuestRange(start: GuestAddress(start), length: length))
}

/// One 1 MiB region from 0.
private func oneMiB() throws -> GuestMemory {
    try GuestMemory(layout: [range(0, mib)])
}

@Suite("GuestMemory: typed and byte access")
struct GuestMemoryAccessTests {
    @Test("UInt8...UInt64 round-trip at unaligned addresses, stored little-endian")
    func roundTripUnaligned() throws {
        let m = try oneMiB()
        try m.write(UInt8(0xA5), at: GuestAddress(0x101))
        try m.write(UInt16(0xBEEF), at: GuestAddress(0x203))
        try m.write(UInt32(0xDEAD_BEEF), at: GuestAddress(0x305))
        try m.write(UInt64(0x0123_4567_89AB_CDEF), at: GuestAddress(0x407))
        #expect(try m.read(UInt8.self, at: GuestAddress(0x101)) == 0xA5)
        #expect(try m.read(UInt16.self, at: GuestAddress(0x203)) == 0xBEEF)
        #expect(try m.read(UInt32.self, at: GuestAddress(0x305)) == 0xDEAD_BEEF)
        #expect(try m.read(UInt64.self, at: GuestAddress(0x407)) == 0x0123_4567_89AB_CDEF)
        #expect(try m.readBytes(at: GuestAddress(0x203), count: 2) == [0xEF, 0xBE])
        #expect(try m.readBytes(at: GuestAddress(0x305), count: 4) == [0xEF, 0xBE, 0xAD, 0xDE])
        #expect(try m.readBytes(at: GuestAddress(0x407), count: 8) == [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01])
        #expect(try m.read(Int32.self, at: GuestAddress(0x305)) == Int32(bitPattern: 0xDEAD_BEEF))
    }

    @Test("the last bytes of RAM are accessible")
    func lastBytes() throws {
        let m = try oneMiB()
        try m.write(UInt64(0x1122_3344_5566_7788), at: GuestAddress(mib - 8))
        #expect(try m.read(UInt64.self, at: GuestAddress(mib - 8)) == 0x1122_3344_5566_7788)
        #expect(try m.read(UInt8.self, at: GuestAddress(mib - 1)) == 0x11)
    }

    @Test("fresh memory reads as zeros")
    func freshIsZero() throws {
        let m = try oneMiB()
        #expect(try m.readBytes(at: GuestAddress(0), count: 64) == [UInt8](repeating: 0, count: 64))
        #expect(try m.read(UInt64.self, at: GuestAddress(mib - 8)) == 0)
    }

    @Test("write(bytes:), readBytes and fill")
    func bytesAndFill() throws {
        let m = try oneMiB()
        try m.write(bytes: [1, 2, 3, 4, 5], at: GuestAddress(0x1000))
        #expect(try m.readBytes(at: GuestAddress(0x1000), count: 5) == [1, 2, 3, 4, 5])
        try m.write(bytes: [9, 8, 7][1...], at: GuestAddress(0x1001))  // an ArraySlice is a Collection too
        #expect(try m.readBytes(at: GuestAddress(0x1000), count: 5) == [1, 8, 7, 4, 5])
        try m.fill(0xAA, at: GuestAddress(0x1001), count: 3)
        #expect(try m.readBytes(at: GuestAddress(0x1000), count: 5) == [1, 0xAA, 0xAA, 0xAA, 5])
        try m.fill(0x5A, at: GuestAddress(0), count: mib)
        #expect(try m.read(UInt64.self, at: GuestAddress(mib - 8)) == 0x5A5A_5A5A_5A5A_5A5A)
        #expect(try m.readBytes(at: GuestAddress(0x10), count: 0) == [])
    }

    @Test("an access crossing the end of RAM throws outOfRange and writes nothing")
    func crossingEnd() throws {
        let m = try oneMiB()
        #expect(throws: MemoryError.outOfRange(address: mib - 2, size: 4)) {
            try m.read(UInt32.self, at: GuestAddress(mib - 2))
        }
        #expect(throws: MemoryError.outOfRange(address: mib - 1, size: 8)) {
            try m.write(UInt64.max, at: GuestAddress(mib - 1))
        }
        #expect(try m.read(UInt8.self, at: GuestAddress(mib - 1)) == 0)  // nothing partial
        #expect(throws: MemoryError.outOfRange(address: mib - 3, size: 4)) {
            try m.write(bytes: [1, 2, 3, 4], at: GuestAddress(mib - 3))
        }
        #expect(try m.readBytes(at: GuestAddress(mib - 3), count: 3) == [0, 0, 0])
        #expect(throws: MemoryError.outOfRange(address: mib - 10, size: 11)) {
            try m.readBytes(at: GuestAddress(mib - 10), count: 11)
        }
        #expect(throws: MemoryError.outOfRange(address: 1, size: mib)) {
            try m.fill(0xFF, at: GuestAddress(1), count: mib)
        }
        #expect(try m.read(UInt8.self, at: GuestAddress(1)) == 0)
    }

    @Test("an access wholly past RAM throws outOfRange")
    func whollyPast() throws {
        let m = try oneMiB()
        #expect(throws: MemoryError.outOfRange(address: mib, size: 1)) {
            try m.read(UInt8.self, at: GuestAddress(mib))
        }
        #expect(throws: MemoryError.outOfRange(address: 0x1_0000_0000, size: 4)) {
            try m.write(UInt32(1), at: GuestAddress(0x1_0000_0000))
        }
        #expect(throws: MemoryError.outOfRange(address: UInt64.max - 8, size: 8)) {
            try m.read(UInt64.self, at: GuestAddress(UInt64.max - 8))
        }
        // Even an empty access must start inside RAM.
        #expect(throws: MemoryError.outOfRange(address: mib, size: 0)) {
            try m.readBytes(at: GuestAddress(mib), count: 0)
        }
    }

    @Test("an access whose end wraps past 2^64 throws overflow")
    func overflowAtTop() throws {
        let m = try oneMiB()
        #expect(throws: MemoryError.overflow(address: UInt64.max, size: 1)) {
            try m.read(UInt8.self, at: GuestAddress(UInt64.max))
        }
        #expect(throws: MemoryError.overflow(address: UInt64.max, size: 2)) {
            try m.read(UInt16.self, at: GuestAddress(UInt64.max))
        }
        #expect(throws: MemoryError.overflow(address: UInt64.max - 3, size: 8)) {
            try m.write(UInt64(0), at: GuestAddress(UInt64.max - 3))
        }
        #expect(throws: MemoryError.overflow(address: 1, size: UInt64.max)) {
            try m.fill(0, at: GuestAddress(1), count: UInt64.max)
        }
        // address + size == 2^64 - 1 exactly does not overflow: it is merely outside RAM.
        #expect(throws: MemoryError.outOfRange(address: 0, size: UInt64.max)) {
            try m.fill(0, at: GuestAddress(0), count: UInt64.max)
        }
    }

    @Test("contains(_:size:) agrees with the accessors")
    func containsAgrees() throws {
        let m = try oneMiB()
        #expect(m.contains(GuestAddress(0), size: mib))
        #expect(m.contains(GuestAddress(mib - 1), size: 1))
        #expect(!m.contains(GuestAddress(mib - 1), size: 2))
        #expect(!m.contains(GuestAddress(mib), size: 1))
        #expect(!m.contains(GuestAddress(UInt64.max), size: 1))
        #expect(!m.contains(GuestAddress(0), size: mib + 1))
    }

    @Test("region bookkeeping: size, ranges, backing")
    func bookkeeping() throws {
        let m = try oneMiB()
        #expect(m.size == mib)
        #expect(m.backing == .anonymous)
        #expect(m.regions.count == 1)
        #expect(m.regions.first?.range == (try range(0, mib)))
        #expect(m.regions.first?.userspaceAddress != 0)
        #expect((m.regions.first?.userspaceAddress ?? 1) % 4096 == 0)
    }
}

@Suite("GuestMemory: readCString")
struct ReadCStringTests {
    @Test("a NUL-terminated string returns its bytes without the NUL")
    func terminated() throws {
        let m = try oneMiB()
        try m.write(bytes: Array("hello".utf8) + [0, 0x41], at: GuestAddress(0x2000))
        #expect(try m.readCString(at: GuestAddress(0x2000), maxLength: 100) == Array("hello".utf8))
        // The NUL must lie within maxLength bytes: "hello" needs 6.
        #expect(try m.readCString(at: GuestAddress(0x2000), maxLength: 5) == nil)
        #expect(try m.readCString(at: GuestAddress(0x2000), maxLength: 6) == Array("hello".utf8))
        #expect(try m.readCString(at: GuestAddress(0x2005), maxLength: 6) == [])
    }

    @Test("no NUL within maxLength bytes gives nil; maxLength 0 reads nothing")
    func unterminated() throws {
        let m = try oneMiB()
        try m.fill(0x41, at: GuestAddress(0x3000), count: 64)
        #expect(try m.readCString(at: GuestAddress(0x3000), maxLength: 64) == nil)
        #expect(try m.readCString(at: GuestAddress(0x3000), maxLength: 0) == nil)
        // Past the 64 bytes of 'A' memory is zero again.
        #expect(try m.readCString(at: GuestAddress(0x3000), maxLength: 65) == [UInt8](repeating: 0x41, count: 64))
    }

    @Test("a string running off the end of RAM throws outOfRange at the end")
    func runsOffTheEnd() throws {
        let m = try oneMiB()
        try m.fill(0x42, at: GuestAddress(mib - 4), count: 4)
        #expect(throws: MemoryError.outOfRange(address: mib, size: 1)) {
            try m.readCString(at: GuestAddress(mib - 4), maxLength: 100)
        }
        #expect(throws: MemoryError.outOfRange(address: mib + 5, size: 1)) {
            try m.readCString(at: GuestAddress(mib + 5), maxLength: 100)
        }
    }
}

@Suite("GuestMemory: layouts")
struct GuestMemoryLayoutTests {
    /// [0, 16 MiB) and [4 GiB, 4 GiB + 16 MiB): RAM on both sides of a hole.
    private func holeLayout() throws -> GuestMemory {
        try GuestMemory(layout: [range(0, 16 * mib), range(4 * gib, 16 * mib)])
    }

    @Test("two regions with a hole: both sides work, the hole does not")
    func hole() throws {
        let m = try holeLayout()
        #expect(m.size == 32 * mib)
        #expect(m.regions.map(\.range) == [try range(0, 16 * mib), try range(4 * gib, 16 * mib)])
        try m.write(UInt32(0x1111_1111), at: GuestAddress(16 * mib - 4))
        try m.write(UInt32(0x2222_2222), at: GuestAddress(4 * gib))
        try m.write(UInt32(0x3333_3333), at: GuestAddress(4 * gib + 16 * mib - 4))
        #expect(try m.read(UInt32.self, at: GuestAddress(16 * mib - 4)) == 0x1111_1111)
        #expect(try m.read(UInt32.self, at: GuestAddress(4 * gib)) == 0x2222_2222)
        #expect(try m.read(UInt32.self, at: GuestAddress(4 * gib + 16 * mib - 4)) == 0x3333_3333)
        // The regions are separate mappings: writing one does not show in the other.
        #expect(try m.read(UInt32.self, at: GuestAddress(0)) == 0)

        #expect(throws: MemoryError.outOfRange(address: 16 * mib, size: 1)) {
            try m.read(UInt8.self, at: GuestAddress(16 * mib))
        }
        #expect(throws: MemoryError.outOfRange(address: 3 * gib, size: 4)) {
            try m.read(UInt32.self, at: GuestAddress(3 * gib))
        }
        #expect(throws: MemoryError.outOfRange(address: 4 * gib - 1, size: 1)) {
            try m.write(UInt8(1), at: GuestAddress(4 * gib - 1))
        }
        #expect(throws: MemoryError.outOfRange(address: 4 * gib + 16 * mib, size: 1)) {
            try m.read(UInt8.self, at: GuestAddress(4 * gib + 16 * mib))
        }
        // Starting in RAM and running into the hole.
        #expect(throws: MemoryError.outOfRange(address: 16 * mib - 2, size: 4)) {
            try m.read(UInt32.self, at: GuestAddress(16 * mib - 2))
        }
        // Starting in the hole and running into RAM.
        #expect(throws: MemoryError.outOfRange(address: 4 * gib - 2, size: 4)) {
            try m.read(UInt32.self, at: GuestAddress(4 * gib - 2))
        }
        // Covering the whole hole and both regions.
        #expect(throws: MemoryError.outOfRange(address: 0, size: 4 * gib + 16 * mib)) {
            try m.fill(0, at: GuestAddress(0), count: 4 * gib + 16 * mib)
        }
    }

    @Test("two adjacent regions: an access spanning the boundary fails, each side works")
    func adjacentBoundary() throws {
        let m = try GuestMemory(layout: [range(0, mib), range(mib, mib)])
        try m.write(UInt16(0xAAAA), at: GuestAddress(mib - 2))
        try m.write(UInt16(0xBBBB), at: GuestAddress(mib))
        #expect(throws: MemoryError.outOfRange(address: mib - 2, size: 4)) {
            try m.read(UInt32.self, at: GuestAddress(mib - 2))
        }
        #expect(throws: MemoryError.outOfRange(address: mib - 1, size: 2)) {
            try m.write(bytes: [1, 2], at: GuestAddress(mib - 1))
        }
        #expect(try m.read(UInt16.self, at: GuestAddress(mib - 2)) == 0xAAAA)
        #expect(try m.read(UInt16.self, at: GuestAddress(mib)) == 0xBBBB)
        #expect(!m.contains(GuestAddress(mib - 1), size: 2))
    }

    @Test("an empty layout is refused")
    func emptyLayout() {
        #expect(throws: MemoryError.invalidLayout("no RAM regions")) {
            try GuestMemory(layout: [])
        }
    }

    @Test("an empty region is refused")
    func emptyRegion() {
        #expect(throws: MemoryError.invalidLayout("empty region at 0x2000")) {
            try GuestMemory(layout: [range(0, 0x1000), range(0x2000, 0)])
        }
    }

    @Test(
        "unaligned regions are refused",
        arguments: [(0x800, 0x1000), (0x1000, 0x800), (0, 0x1001)] as [(UInt64, UInt64)])
    func unaligned(_ start: UInt64, _ length: UInt64) throws {
        let r = try range(start, length)
        #expect(throws: MemoryError.invalidLayout("region \(r) is not aligned to 4 KiB")) {
            try GuestMemory(layout: [r])
        }
    }

    @Test("overlapping regions are refused")
    func overlapping() throws {
        let second = try range(0x8000, 0x10000)
        #expect(throws: MemoryError.invalidLayout("region [0x8000, 0x18000) overlaps or is out of order")) {
            try GuestMemory(layout: [range(0, 0x10000), second])
        }
    }

    @Test("regions out of order are refused")
    func outOfOrder() throws {
        #expect(throws: MemoryError.invalidLayout("region [0x0, 0x10000) overlaps or is out of order")) {
            try GuestMemory(layout: [range(0x10_0000, 0x10000), range(0, 0x10000)])
        }
    }

    @Test("transparent hugepages: regions start 2 MiB-aligned on the host")
    func transparentHugepages() throws {
        let m = try GuestMemory(layout: [range(0, 4 * mib), range(4 * gib, 2 * mib)], backing: .transparentHugepages)
        #expect(m.backing == .transparentHugepages)
        for region in m.regions {
            #expect(region.userspaceAddress % GuestMemory.hugepageSize == 0)
        }
        try m.write(UInt64(0xFEED), at: GuestAddress(4 * mib - 8))
        try m.write(UInt64(0xF00D), at: GuestAddress(4 * gib + 2 * mib - 8))
        #expect(try m.read(UInt64.self, at: GuestAddress(4 * mib - 8)) == 0xFEED)
        #expect(try m.read(UInt64.self, at: GuestAddress(4 * gib + 2 * mib - 8)) == 0xF00D)
        #expect(throws: MemoryError.outOfRange(address: 4 * mib, size: 1)) {
            try m.read(UInt8.self, at: GuestAddress(4 * mib))
        }
    }

    @Test("hugetlb backing needs 2 MiB-aligned regions")
    func hugetlbAlignment() throws {
        let r = try range(0, 0x10_0000)
        #expect(throws: MemoryError.invalidLayout("region [0x0, 0x100000) is not aligned to 2 MiB")) {
            try GuestMemory(layout: [r], backing: .hugetlb)
        }
    }

    @Test(
        "hugetlb backing with an empty pool fails with mapFailed(hugetlb: true)",
        .enabled(if: hugetlbPoolIsEmpty(), "this host has free hugetlb pages, so the mapping would succeed"))
    func hugetlbEmptyPool() throws {
        // With no free hugetlb pages, mmap(MAP_HUGETLB) must fail with ENOMEM so that
        // `--hugepages` reports the empty pool. (It must not "succeed" and leave the
        // first touch of guest RAM to die with SIGBUS; this test never touches it.)
        #expect(throws: MemoryError.mapFailed(size: 2 * mib, errno: ENOMEM, hugetlb: true)) {
            try GuestMemory(layout: [range(0, 2 * mib)], backing: .hugetlb)
        }
        let error = MemoryError.mapFailed(size: 2 * mib, errno: ENOMEM, hugetlb: true)
        #expect(error.description == "cannot map 2 MiB of hugetlb memory for the guest: \(errnoString(ENOMEM))")
    }
}

/// True when /proc/meminfo reports `HugePages_Free: 0` (or no hugetlb support at all).
private func hugetlbPoolIsEmpty() -> Bool {
    let fd = open("/proc/meminfo", O_RDONLY)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { break }
        bytes += chunk[0..<n]
    }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("HugePages_Free:") }) else { return true }
    return line.split(separator: " ").last == "0"
}

@Suite("GuestMemory shared 16-bit fields")
struct SharedFieldTests {
    @Test("loadShared16 and storeShared16 round-trip, little-endian, and check the range")
    func roundTrip() throws {
        let m = try GuestMemory(layout: [GuestRange(start: GuestAddress(0), length: 1 << 20)!])
        try m.storeShared16(0x1234, at: GuestAddress(0x100))
        #expect(try m.readBytes(at: GuestAddress(0x100), count: 2) == [0x34, 0x12])
        #expect(try m.loadShared16(at: GuestAddress(0x100)) == 0x1234)
        #expect(throws: MemoryError.self) { try m.loadShared16(at: GuestAddress((1 << 20) - 1)) }
        #expect(throws: MemoryError.self) { try m.storeShared16(1, at: GuestAddress(1 << 20)) }
    }

    @Test("a field another thread keeps moving across a byte boundary (0x44FF <-> 0x4500) never reads torn")
    func neverTorn() throws {
        let m = try GuestMemory(layout: [GuestRange(start: GuestAddress(0), length: 1 << 20)!])
        let field = GuestAddress(0x2000)
        try m.storeShared16(0x44FF, at: field)
        final class Flag: @unchecked Sendable { let stop = Atomic<Bool>(false) }
        let flag = Flag()
        let writer = Thread {
            var v: UInt16 = 0x44FF
            while !flag.stop.load(ordering: .relaxed) {
                v = v == 0x44FF ? 0x4500 : 0x44FF
                try? m.storeShared16(v, at: field)
            }
        }
        writer.start()
        var torn = 0
        for _ in 0..<2_000_000 {
            let v = try m.loadShared16(at: field)
            if v != 0x44FF && v != 0x4500 { torn += 1 }
        }
        flag.stop.store(true, ordering: .relaxed)
        #expect(torn == 0, "saw \(torn) torn values (0x45FF or 0x4400)")
    }
}
