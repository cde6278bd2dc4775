// ZeroPageTests.swift: `struct boot_params`, byte by byte.
//
// Documentation/arch/x86/zero-page.rst: 0x1E8 e820_entries (u8), 0x1F1 the
// setup header (hdr), 0x2D0 e820_table, 128 entries of 20 bytes (u64 addr,
// u64 size, u32 type). boot.rst: the loader copies the header from the image,
// [0x1F1, 0x202 + byte at 0x201), then writes type_of_loader (0x210; 0xFF for
// a loader without an assigned id), vid_mode (0x1FA; 0xFFFF "normal"),
// ramdisk_image (0x218), ramdisk_size (0x21C) and cmd_line_ptr (0x228).
// Every expectation below compares all 4096 bytes, so a stray write fails.

@testable import Boot
import Memory
import Testing
import TestSupport

private let kib: UInt64 = 1 << 10
private let mib: UInt64 = 1 << 20
private let gib: UInt64 = 1 << 30

/// A 4 KiB page of zeros with `edits` applied, each a little-endian value at an offset.
private struct ExpectedPage {
    var bytes = [UInt8](repeating: 0, count: 4096)
    mutating func put<T: FixedWidthInteger>(_ v: T, at o: Int) { bytes.storeLittleEndian(v, at: o) }
    mutating func putE820(_ entries: [MemoryMapEntry]) {
        bytes[0x1E8] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            put(e.base, at: 0x2D0 + 20 * i)
            put(e.length, at: 0x2D0 + 20 * i + 8)
            put(e.type.rawValue, at: 0x2D0 + 20 * i + 16)
        }
    }
}

/// The first offset at which two pages differ (for a readable failure).
private func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
    guard let i = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset else { return "none" }
    return "offset \(hex(i)): \(hex(a[i])) vs \(hex(b[i]))"
}

@Suite("ZeroPage: the setup header copy")
struct ZeroPageHeaderCopyTests {
    @Test("exactly [0x1F1, 0x202 + jump byte) is copied, for header ends 0x268, 0x26C and 0x290",
          arguments: [0x66, 0x6A, 0x8E] as [UInt8])
    func copiesExactlyTheHeader(_ jump: UInt8) throws {
        var b = BzImageBuilder(payload: patternBytes(count: 64))
        b.jumpOffset = jump
        b.fill = 0xCC  // every byte of the setup area is non-zero
        let image = b.build()
        let header = try LinuxSetupHeader(image)
        let page = ZeroPage(setupHeaderFrom: image, header: header)
        let end = 0x202 + Int(jump)

        var expected = [UInt8](repeating: 0, count: 4096)
        expected[0x1F1..<end] = image[0x1F1..<end]
        #expect(page.bytes == expected, "first difference: \(firstDifference(page.bytes, expected))")
        #expect(page.bytes[0x1F0] == 0)
        #expect(page.bytes[end - 1] == image[end - 1])
        #expect(page.bytes[end] == 0)
    }

    @Test("the sentinel at 0x1EF stays 0 although the image has 0xFF there (boot.rst: copy from 0x1F1)")
    func sentinelNotCopied() throws {
        var image = BzImageBuilder(payload: patternBytes(count: 64)).build()
        image[0x1EF] = 0xFF
        image[0x1F0] = 0xFF
        let page = ZeroPage(setupHeaderFrom: image, header: try LinuxSetupHeader(image))
        #expect(page.bytes[0x1EF] == 0)
        #expect(page.bytes[0x1F0] == 0)
        #expect(page.bytes[0x1F1] == 4)
    }

    @Test("the real Debian bzImage: its header bytes, and zeros elsewhere",
          .enabled(if: linuxGuestAssetExists("bzImage"), "guests/build/linux/bzImage is absent (make guests builds it)"))
    func realKernel() throws {
        let image = try #require(linuxGuestAsset("bzImage"))
        let header = try LinuxSetupHeader(image)
        let page = ZeroPage(setupHeaderFrom: image, header: header)
        var expected = [UInt8](repeating: 0, count: 4096)
        expected[0x1F1..<header.headerEnd] = image[0x1F1..<header.headerEnd]
        #expect(page.bytes == expected, "first difference: \(firstDifference(page.bytes, expected))")
        #expect(page.bytes.le32(0x202) == 0x5372_6448)
    }
}

@Suite("ZeroPage: ELF kernels and configure()")
struct ZeroPageConfigureTests {
    @Test("forELFKernel: boot_flag, HdrS, version 2.12, kernel_alignment 16 MiB, cmdline_size 2047, nothing else")
    func forELFKernel() {
        var expected = ExpectedPage()
        expected.put(UInt16(0xAA55), at: 0x1FE)
        expected.put(UInt32(0x5372_6448), at: 0x202)
        expected.put(UInt16(0x020C), at: 0x206)
        expected.put(UInt32(0x100_0000), at: 0x230)
        expected.put(UInt32(2047), at: 0x238)
        let page = ZeroPage.forELFKernel()
        #expect(page.bytes == expected.bytes, "first difference: \(firstDifference(page.bytes, expected.bytes))")
        #expect(Array(page.bytes[0x202..<0x206]) == Array("HdrS".utf8))
    }

    @Test("configure on an empty page writes exactly the loader's fields and the E820 map")
    func configureFields() {
        var page = ZeroPage()
        let map = MachineMap.memoryMap(size: 64 * mib)
        page.configure(commandLineAddress: 0x2_0000, initrd: (address: 0x3FF_D000, size: 0x2710), e820: map)
        var expected = ExpectedPage()
        expected.bytes[0x210] = 0xFF
        expected.put(UInt16(0xFFFF), at: 0x1FA)
        expected.put(UInt32(0x2_0000), at: 0x228)
        expected.put(UInt32(0x3FF_D000), at: 0x218)
        expected.put(UInt32(0x2710), at: 0x21C)
        expected.putE820(map)
        #expect(page.bytes == expected.bytes, "first difference: \(firstDifference(page.bytes, expected.bytes))")
    }

    @Test("without an initrd the ramdisk fields are zeroed, even if the image's header had bytes there")
    func noInitrdClearsRamdiskFields() throws {
        var b = BzImageBuilder(payload: patternBytes(count: 64))
        b.fill = 0xCC
        let image = b.build()
        var page = ZeroPage(setupHeaderFrom: image, header: try LinuxSetupHeader(image))
        #expect(page.bytes.le32(0x218) == 0xCCCC_CCCC)
        page.configure(commandLineAddress: 0x2_0000, initrd: nil, e820: [])
        #expect(page.bytes.le32(0x218) == 0)
        #expect(page.bytes.le32(0x21C) == 0)
        #expect(page.bytes.le32(0x228) == 0x2_0000)
        #expect(page.bytes[0x210] == 0xFF)
        #expect(page.bytes.le16(0x1FA) == 0xFFFF)
        #expect(page.bytes[0x1E8] == 0)
        // The rest of the copied header is left alone.
        #expect(page.bytes.le16(0x206) == 0x020F)
        #expect(page.bytes[0x211] == 0x01)
        #expect(page.bytes.le32(0x238) == 2047)
        #expect(page.bytes.le64(0x258) == 0x100_0000)
        #expect(page.bytes[0x1F2] == 0xCC)
        #expect(page.bytes[0x26B] == 0xCC)
        #expect(page.bytes[0x26C] == 0)
        #expect(page.bytes[0x2D0..<0xCD0].allSatisfy { $0 == 0 })
    }

    @Test("E820 for 64 MiB, 3 GiB, 3 GiB + 4 KiB, 4 GiB and 64 GiB matches MachineMap.memoryMap byte for byte",
          arguments: [(64 * mib, 3), (3 * gib, 3), (3 * gib + 4 * kib, 4), (4 * gib, 4), (64 * gib, 4)])
    func e820(_ size: UInt64, _ count: Int) {
        let map = MachineMap.memoryMap(size: size)
        #expect(map.count == count)
        var page = ZeroPage()
        page.configure(commandLineAddress: 0x2_0000, initrd: nil, e820: map)
        #expect(page.bytes[0x1E8] == UInt8(count))
        for (i, e) in map.enumerated() {
            let at = 0x2D0 + 20 * i
            #expect(page.bytes.le64(at) == e.base)
            #expect(page.bytes.le64(at + 8) == e.length)
            #expect(page.bytes.le32(at + 16) == e.type.rawValue)
        }
        // Nothing past the last entry.
        #expect(page.bytes[(0x2D0 + 20 * count)...].allSatisfy { $0 == 0 })
    }

    @Test("64 GiB, spelled out: RAM, reserved legacy area, RAM to 3 GiB, RAM from 4 GiB")
    func e820SixtyFourGiBLiteral() {
        var page = ZeroPage()
        page.configure(commandLineAddress: 0, initrd: nil, e820: MachineMap.memoryMap(size: 64 * gib))
        let table = Array(page.bytes[0x2D0..<(0x2D0 + 80)])
        var expected: [UInt8] = []
        for (base, length, type) in [(0, 0x9_FC00, 1), (0x9_FC00, 0x6_0400, 2), (0x10_0000, 3 * gib - mib, 1), (4 * gib, 61 * gib, 1)]
            as [(UInt64, UInt64, UInt32)] {
            expected.appendLittleEndian(base)
            expected.appendLittleEndian(length)
            expected.appendLittleEndian(type)
        }
        #expect(table == expected)
        #expect(page.bytes[0x1E8] == 4)
    }

    @Test("the E820 table is capped at 128 entries: 128, 129 and 300 given", arguments: [128, 129, 300])
    func e820Cap(_ given: Int) {
        let map = (0..<given).map { MemoryMapEntry(base: UInt64($0) * 0x10_0000, length: 0x1000 + UInt64($0), type: $0 % 2 == 0 ? .ram : .reserved) }
        var page = ZeroPage()
        page.configure(commandLineAddress: 0x2_0000, initrd: nil, e820: map)
        #expect(page.bytes[0x1E8] == 128)
        #expect(ZeroPage.e820Capacity == 128)
        for i in [0, 1, 126, 127] {
            let at = 0x2D0 + 20 * i
            #expect(page.bytes.le64(at) == UInt64(i) * 0x10_0000)
            #expect(page.bytes.le64(at + 8) == 0x1000 + UInt64(i))
            #expect(page.bytes.le32(at + 16) == (i % 2 == 0 ? 1 : 2))
        }
        // Entry 128 would start at 0xCD0: nothing is written there (edd_mbr_sig_buffer etc. follow).
        #expect(page.bytes[0xCD0...].allSatisfy { $0 == 0 })
    }

    @Test("configure again: the loader's fields take the second call's values")
    func configureOverwritesFields() {
        var page = ZeroPage()
        page.configure(commandLineAddress: 0x2_0000, initrd: (0x100_0000, 10), e820: MachineMap.memoryMap(size: 64 * mib))
        page.configure(commandLineAddress: 0x3_0000, initrd: nil, e820: MachineMap.memoryMap(size: 64 * mib))
        #expect(page.bytes.le32(0x228) == 0x3_0000)
        #expect(page.bytes.le32(0x218) == 0)
        #expect(page.bytes.le32(0x21C) == 0)
        #expect(page.bytes[0x1E8] == 3)
    }
}
