// MultibootHeaderTests.swift: finding and validating the Multiboot header.
//
// Multiboot Specification 0.6.96 §3.1.1: the header is 32-bit aligned and lies
// entirely within the first 8192 bytes; magic + flags + checksum == 0 (mod
// 2^32); flags bits 0-15 are requirements a loader must meet or refuse the
// kernel. §3.1.3: with flags bit 16 the header carries header_addr,
// load_addr, load_end_addr, bss_end_addr and entry_addr.

@testable import Boot
import Testing
import TestSupport

@Suite("MultibootHeader.find")
struct MultibootHeaderTests {
    /// `header` placed at `offset` in a file of `size` zero bytes.
    private func file(_ header: [UInt8], at offset: Int, size: Int = 8192 + 64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(size, offset + header.count))
        bytes.replaceSubrange(offset..<(offset + header.count), with: header)
        return bytes
    }

    @Test("found at offset 0")
    func atStart() throws {
        let h = try #require(try MultibootHeader.find(in: file(multibootHeader(flags: 0x3), at: 0)))
        #expect(h == MultibootHeader(offset: 0, flags: 0x3, addresses: nil))
    }

    @Test("found at a later 4-byte-aligned offset, after other bytes", arguments: [4, 0x40, 0x1000, 8192 - 12])
    func later(_ offset: Int) throws {
        var bytes = file(multibootHeader(flags: 0x2), at: offset)
        for i in 0..<offset { bytes[i] = 0x90 }  // anything but the magic
        let h = try #require(try MultibootHeader.find(in: bytes))
        #expect(h.offset == offset)
        #expect(h.flags == 0x2)
    }

    @Test("not found when not 4-byte aligned", arguments: [1, 2, 3, 0x41])
    func unaligned(_ offset: Int) throws {
        #expect(try MultibootHeader.find(in: file(multibootHeader(flags: 0), at: offset)) == nil)
    }

    @Test("not found when it does not end within the first 8192 bytes", arguments: [8192 - 8, 8192, 8192 + 4])
    func beyondSearchLimit(_ offset: Int) throws {
        #expect(try MultibootHeader.find(in: file(multibootHeader(flags: 0), at: offset)) == nil)
    }

    @Test("no magic, an empty file, or a file too short for the checksum: nil")
    func absent() throws {
        #expect(try MultibootHeader.find(in: []) == nil)
        #expect(try MultibootHeader.find(in: [UInt8](repeating: 0xFF, count: 100)) == nil)
        #expect(try MultibootHeader.find(in: Array(multibootHeader(flags: 0).prefix(8))) == nil)
    }

    @Test("a bad checksum is an error naming the checksum and the offset")
    func badChecksum() {
        let bad = multibootHeader(flags: 0x3, checksum: 0x1234_5678)
        #expect(throws: BootError("the multiboot header at offset 0x40 has a bad checksum")) {
            try MultibootHeader.find(in: file(bad, at: 0x40))
        }
    }

    @Test("a valid header after one with a bad checksum is found")
    func goodAfterBad() throws {
        var bytes = file(multibootHeader(flags: 0, checksum: 0), at: 0)
        bytes.replaceSubrange(0x20..<0x2C, with: multibootHeader(flags: 0x1))
        let h = try #require(try MultibootHeader.find(in: bytes))
        #expect(h.offset == 0x20)
        #expect(h.flags == 0x1)
    }

    @Test(
        "required flag bits skvm does not provide are refused",
        arguments: [(UInt32(1) << 3, "0x8"), (0x0000_8000, "0x8000"), (0x0001_000F, "0x8"), (0x0000_FFFF, "0xfff8")])
    func unsupportedRequirement(_ flags: UInt32, _ reported: String) {
        let header = multibootHeader(flags: flags, addresses: MultibootAddressFields(
            headerAddress: 0x10_0000, loadAddress: 0x10_0000, loadEndAddress: 0, bssEndAddress: 0, entryAddress: 0x10_0020))
        #expect(throws: BootError("the multiboot header requires features skvm does not provide (flags \(reported))")) {
            try MultibootHeader.find(in: file(header, at: 0))
        }
    }

    @Test("bits 0-2 and the optional bits 17-31 are accepted", arguments: [0x0, 0x1, 0x2, 0x4, 0x7, 0xFFFE_0007] as [UInt32])
    func supportedFlags(_ flags: UInt32) throws {
        let h = try #require(try MultibootHeader.find(in: file(multibootHeader(flags: flags), at: 0)))
        #expect(h.flags == flags)
        #expect(h.addresses == nil)
    }

    @Test("a.out kludge: the five address fields are parsed in order")
    func addressFields() throws {
        let fields = MultibootAddressFields(
            headerAddress: 0x10_0040, loadAddress: 0x10_0000, loadEndAddress: 0x10_2000, bssEndAddress: 0x10_8000,
            entryAddress: 0x10_0080)
        let bytes = file(multibootHeader(flags: multibootAddressFieldsFlag | 0x3, addresses: fields), at: 0x40)
        let h = try #require(try MultibootHeader.find(in: bytes))
        #expect(h == MultibootHeader(
            offset: 0x40, flags: 0x0001_0003,
            addresses: .init(headerAddress: 0x10_0040, loadAddress: 0x10_0000, loadEndAddress: 0x10_2000,
                             bssEndAddress: 0x10_8000, entryAddress: 0x10_0080)))
    }

    @Test("address fields are ignored without flag 16")
    func addressFieldsIgnoredWithoutFlag() throws {
        let fields = MultibootAddressFields(headerAddress: 1, loadAddress: 2, loadEndAddress: 3, bssEndAddress: 4, entryAddress: 5)
        let h = try #require(try MultibootHeader.find(in: file(multibootHeader(flags: 0, addresses: fields), at: 0)))
        #expect(h.addresses == nil)
    }

    @Test("flag 16 with the address fields cut off by the end of the file is an error", arguments: [0, 4, 16, 19])
    func truncatedAddressFields(_ present: Int) {
        let header = multibootHeader(flags: multibootAddressFieldsFlag) + [UInt8](repeating: 0, count: present)
        #expect(throws: BootError("the multiboot header's address fields are truncated")) {
            try MultibootHeader.find(in: header)
        }
    }
}
