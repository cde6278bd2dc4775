// ZeroPage.swift: `struct boot_params`, the "zero page" (Documentation/arch/x86/zero-page.rst).
//
// The one structure through which a boot loader tells Linux about the
// machine: the setup header (copied from the bzImage and updated), the E820
// memory map, and pointers to the command line and initrd. 4 KiB; skvm puts
// it at 0x7000 and passes its address in RSI. Fields are written at the
// offsets the documentation gives, so this file reads next to the spec.

/// A 4 KiB boot_params image.
public struct ZeroPage: Equatable, Sendable {
    public private(set) var bytes = [UInt8](repeating: 0, count: 4096)

    // zero-page.rst offsets.
    static let e820EntriesOffset = 0x1E8
    static let e820TableOffset = 0x2D0
    static let e820EntrySize = 20
    /// E820_MAX_ENTRIES_ZEROPAGE.
    public static let e820Capacity = 128
    // Setup header fields (boot.rst).
    static let vidModeOffset = 0x1FA
    static let bootFlagOffset = 0x1FE
    static let headerMagicOffset = 0x202
    static let versionOffset = 0x206
    static let typeOfLoaderOffset = 0x210
    static let ramdiskImageOffset = 0x218
    static let ramdiskSizeOffset = 0x21C
    static let cmdLinePtrOffset = 0x228
    static let kernelAlignmentOffset = 0x230
    static let cmdlineSizeOffset = 0x238

    public init() {}

    /// A zero page that starts from the bzImage's own setup header
    /// (boot.rst: copy [0x1F1, 0x202 + byte at 0x201) from the image).
    public init(setupHeaderFrom image: [UInt8], header: LinuxSetupHeader) {
        for i in 0x1F1..<header.headerEnd { bytes[i] = image[i] }
    }

    /// A zero page for a kernel without a setup header (an ELF vmlinux): the
    /// fields the kernel checks are filled in as a bzImage would have them.
    public static func forELFKernel() -> ZeroPage {
        var z = ZeroPage()
        z.put16(0xAA55, at: bootFlagOffset)
        z.put32(LinuxSetupHeader.magic, at: headerMagicOffset)
        z.put16(LinuxSetupHeader.minimumVersion, at: versionOffset)
        z.put32(0x100_0000, at: kernelAlignmentOffset)
        z.put32(UInt32(LinuxLoader.defaultCommandLineSize), at: cmdlineSizeOffset)
        return z
    }

    /// Fills in what the loader decided.
    public mutating func configure(commandLineAddress: UInt32, initrd: (address: UInt32, size: UInt32)?, e820: [MemoryMapEntry]) {
        // boot.rst: "If the boot loader has no assigned id, enter 0xFF here".
        bytes[Self.typeOfLoaderOffset] = 0xFF
        put16(0xFFFF, at: Self.vidModeOffset)  // "normal" video mode
        put32(commandLineAddress, at: Self.cmdLinePtrOffset)
        put32(initrd?.address ?? 0, at: Self.ramdiskImageOffset)
        put32(initrd?.size ?? 0, at: Self.ramdiskSizeOffset)
        let entries = e820.prefix(Self.e820Capacity)
        bytes[Self.e820EntriesOffset] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            let at = Self.e820TableOffset + i * Self.e820EntrySize
            put64(e.base, at: at)
            put64(e.length, at: at + 8)
            put32(e.type.rawValue, at: at + 16)
        }
    }

    mutating func put16(_ v: UInt16, at o: Int) { for i in 0..<2 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt16(i))) } }
    mutating func put32(_ v: UInt32, at o: Int) { for i in 0..<4 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) } }
    mutating func put64(_ v: UInt64, at o: Int) { for i in 0..<8 { bytes[o + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
}
