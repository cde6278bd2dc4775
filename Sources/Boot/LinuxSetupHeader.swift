// LinuxSetupHeader.swift: the bzImage setup header (Documentation/arch/x86/boot.rst,
// "The Real-Mode Kernel Header").
//
// A bzImage starts with the real-mode setup code; at offset 0x1F1 sits the
// setup header, a table of fields the boot loader reads (how big the setup
// code is, which protocol version, where the kernel wants to live, how much
// memory it needs to decompress itself) and writes (where the command line and
// initrd are). The protected-mode kernel follows the setup code, at file
// offset (setup_sects + 1) * 512. skvm uses the 64-bit boot protocol
// (boot.rst, "64-bit Boot Protocol"): it never runs the real-mode setup code.

/// The fields of a bzImage's setup header that a 64-bit loader needs.
public struct LinuxSetupHeader: Equatable, Sendable {
    // Offsets into the image (= into boot_params), boot.rst's table.
    static let setupSectsOffset = 0x1F1
    static let syssizeOffset = 0x1F4
    static let bootFlagOffset = 0x1FE
    static let jumpOffset = 0x200
    static let headerOffset = 0x202
    static let versionOffset = 0x206
    static let loadflagsOffset = 0x211
    static let initrdAddrMaxOffset = 0x22C
    static let kernelAlignmentOffset = 0x230
    static let relocatableOffset = 0x234
    static let xloadflagsOffset = 0x236
    static let cmdlineSizeOffset = 0x238
    static let prefAddressOffset = 0x258
    static let initSizeOffset = 0x260

    /// "HdrS", little-endian.
    static let magic: UInt32 = 0x5372_6448
    /// loadflags bit 0: the protected-mode code is loaded at 0x100000 (a bzImage).
    static let loadedHigh: UInt8 = 0x01
    /// xloadflags bit 0: the kernel has the 64-bit entry point at +0x200.
    static let kernel64: UInt16 = 0x01
    /// 2.12 added xloadflags (and with it XLF_KERNEL_64): the oldest protocol skvm can enter in 64-bit mode.
    public static let minimumVersion: UInt16 = 0x020C

    /// Protocol version, e.g. 0x020F.
    public let version: UInt16
    /// Number of 512-byte setup sectors after the boot sector.
    public let setupSectors: Int
    /// Where the protected-mode kernel starts in the file.
    public var kernelOffset: Int { (setupSectors + 1) * 512 }
    /// End of the setup header in the image (0x202 + the jump's offset byte).
    public let headerEnd: Int
    public let loadflags: UInt8
    public let xloadflags: UInt16
    public let relocatable: Bool
    public let kernelAlignment: UInt32
    /// The highest address the initrd may end at (inclusive), boot.rst "initrd_addr_max".
    public let initrdAddressMax: UInt32
    /// The largest command line, excluding the NUL.
    public let commandLineSize: UInt32
    /// Where the kernel prefers to be loaded.
    public let preferredAddress: UInt64
    /// Bytes of memory the kernel needs from its load address to decompress and start.
    public let initSize: UInt32
    /// Size of the protected-mode code in bytes (syssize, counted in 16-byte paragraphs).
    public let protectedModeSize: Int

    /// Parses and validates the header of `image`.
    public init(_ image: [UInt8]) throws(BootError) {
        let r = ByteReader(bytes: image)
        guard image.count >= 0x264, r.u32(Self.headerOffset) == Self.magic else {
            throw BootError("not a Linux bzImage (no \"HdrS\" setup header at 0x202)")
        }
        guard let version = r.u16(Self.versionOffset), let sects = r.u8(Self.setupSectsOffset),
            let jump = r.u8(Self.jumpOffset + 1), let loadflags = r.u8(Self.loadflagsOffset),
            let xloadflags = r.u16(Self.xloadflagsOffset), let relocatable = r.u8(Self.relocatableOffset),
            let alignment = r.u32(Self.kernelAlignmentOffset), let initrdMax = r.u32(Self.initrdAddrMaxOffset),
            let cmdlineSize = r.u32(Self.cmdlineSizeOffset), let pref = r.u64(Self.prefAddressOffset),
            let initSize = r.u32(Self.initSizeOffset), let syssize = r.u32(Self.syssizeOffset)
        else { throw BootError("the bzImage setup header is truncated") }
        guard version >= Self.minimumVersion else {
            throw BootError("boot protocol \(Self.versionString(version)) is too old: skvm needs \(Self.versionString(Self.minimumVersion)) (Linux 3.8 or later) for the 64-bit entry point")
        }
        guard r.u16(Self.bootFlagOffset) == 0xAA55 else { throw BootError("the bzImage boot sector lacks its 0xAA55 signature") }
        guard loadflags & Self.loadedHigh != 0 else { throw BootError("a zImage (not LOAD_HIGH): only bzImage kernels are supported") }
        guard xloadflags & Self.kernel64 != 0 else {
            throw BootError("a 32-bit kernel (XLF_KERNEL_64 is not set): skvm boots 64-bit kernels")
        }
        self.version = version
        // boot.rst: "If this field is 0, the real value is 4."
        self.setupSectors = sects == 0 ? 4 : Int(sects)
        self.headerEnd = Self.headerOffset + Int(jump)
        self.loadflags = loadflags
        self.xloadflags = xloadflags
        self.relocatable = relocatable != 0
        self.kernelAlignment = alignment
        self.initrdAddressMax = initrdMax
        self.commandLineSize = cmdlineSize
        self.preferredAddress = pref
        self.initSize = initSize
        self.protectedModeSize = Int(syssize) * 16
        guard kernelOffset < image.count else {
            throw BootError("the bzImage is truncated: its setup code (\(kernelOffset) bytes) is longer than the file")
        }
        // syssize (protocol 2.04+: 32 bits) says how long the protected-mode
        // part is, rounded up to 16 bytes (arch/x86/boot/tools/build.c), so
        // the file may end up to 15 bytes early; a shorter one would fail
        // inside the guest's decompressor.
        guard image.count - kernelOffset + 15 >= protectedModeSize else {
            throw BootError("the bzImage is truncated: its header announces \(protectedModeSize) bytes of kernel after the setup code, the file has \(image.count - kernelOffset)")
        }
        // The header is copied into boot_params, where it must end before the
        // EDD signature buffer at 0x290 (arch/x86/include/uapi/asm/bootparam.h).
        guard headerEnd <= kernelOffset, headerEnd <= 0x290 else {
            throw BootError("the bzImage setup header claims an impossible length")
        }
    }

    static func versionString(_ v: UInt16) -> String { "\(v >> 8).\(String(format2(v & 0xFF)))" }
    private static func format2(_ v: UInt16) -> String { v < 10 ? "0\(v)" : "\(v)" }
}
