// LinuxSetupHeaderTests.swift: parsing and validating the bzImage setup header.
//
// Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header": 0x1F1
// setup_sects (0 means 4), 0x1FE boot_flag 0xAA55, 0x201 the jump's offset
// byte (the header ends at 0x202 + it), 0x202 "HdrS", 0x206 version, 0x211
// loadflags (bit 0 LOADED_HIGH), 0x22C initrd_addr_max, 0x230
// kernel_alignment, 0x234 relocatable_kernel, 0x236 xloadflags (bit 0
// XLF_KERNEL_64, protocol 2.12), 0x238 cmdline_size, 0x258 pref_address,
// 0x260 init_size. The protected-mode kernel starts at (setup_sects + 1) * 512.
// The header is copied into boot_params, where it must end by 0x290
// (bootparam.h: edd_mbr_sig_buffer follows).

@testable import Boot
import Testing
import TestSupport

private let payload = patternBytes(count: 0x1000, seed: 0x40)

@Suite("LinuxSetupHeader: the real Debian bzImage")
struct RealBzImageHeaderTests {
    @Test(
        "Linux 6.1: protocol 2.15, 64-bit entry, prefers 16 MiB, kernel after the setup sectors",
        .enabled(if: linuxGuestAssetExists("bzImage"), "guests/build/linux/bzImage is absent (make guests builds it)"))
    func debianKernel() throws {
        let image = try #require(linuxGuestAsset("bzImage"))
        let header = try LinuxSetupHeader(image)
        #expect(header.version == 0x020F)
        #expect(header.xloadflags & 0x1 == 0x1)
        #expect(header.preferredAddress == 0x100_0000)
        #expect(header.setupSectors == Int(image[0x1F1]))
        #expect(header.kernelOffset == (Int(image[0x1F1]) + 1) * 512)
        #expect(header.headerEnd == 0x202 + Int(image[0x201]))
        #expect(header.loadflags & 0x1 == 0x1)
        #expect(header.initSize == image.le32(0x260))
        #expect(header.commandLineSize == image.le32(0x238))
        #expect(header.initrdAddressMax == image.le32(0x22C))
        #expect(header.kernelAlignment == image.le32(0x230))
        #expect(header.relocatable == (image[0x234] != 0))
        #expect(LinuxLoader.isBzImage(image))
        #expect(!LinuxLoader.isELFKernel(image))
    }
}

@Suite("LinuxSetupHeader: synthetic images")
struct SyntheticSetupHeaderTests {
    @Test("every field is read from its boot.rst offset")
    func exactFields() throws {
        var b = BzImageBuilder(payload: payload)
        b.setupSectors = 7
        b.version = 0x020D
        b.jumpOffset = 0x66
        b.loadflags = 0x81
        b.xloadflags = 0x1F
        b.relocatable = false
        b.kernelAlignment = 0x40_0000
        b.initrdAddressMax = 0x37FF_FFFF
        b.commandLineSize = 0x1234
        b.preferredAddress = 0x0000_0001_2345_6000
        b.initSize = 0x0ABC_D000
        b.fill = 0xCC
        let header = try LinuxSetupHeader(b.build())
        #expect(header.version == 0x020D)
        #expect(header.setupSectors == 7)
        #expect(header.headerEnd == 0x268)
        #expect(header.loadflags == 0x81)
        #expect(header.xloadflags == 0x1F)
        #expect(header.relocatable == false)
        #expect(header.kernelAlignment == 0x40_0000)
        #expect(header.initrdAddressMax == 0x37FF_FFFF)
        #expect(header.commandLineSize == 0x1234)
        #expect(header.preferredAddress == 0x0000_0001_2345_6000)
        #expect(header.initSize == 0x0ABC_D000)
        #expect(header.kernelOffset == 8 * 512)
    }

    @Test("the default builder image: protocol 2.15, 4 setup sectors, header to 0x26C")
    func defaults() throws {
        let header = try LinuxSetupHeader(BzImageBuilder(payload: payload).build())
        #expect(header.version == 0x020F)
        #expect(header.setupSectors == 4)
        #expect(header.kernelOffset == 0xA00)
        #expect(header.headerEnd == 0x26C)
        #expect(header.relocatable)
        #expect(header.preferredAddress == 0x100_0000)
        #expect(header.initSize == 0x10_0000)
        #expect(header.commandLineSize == 2047)
        #expect(header.initrdAddressMax == 0x7FFF_FFFF)
    }

    @Test("setup_sects 0 means 4 (boot.rst): the kernel starts at 5 * 512")
    func zeroSetupSectorsMeansFour() throws {
        var b = BzImageBuilder(payload: payload)
        b.setupSectors = 0
        let image = b.build()
        #expect(image.count == 0xA00 + payload.count)
        let header = try LinuxSetupHeader(image)
        #expect(header.setupSectors == 4)
        #expect(header.kernelOffset == 0xA00)
        #expect(Array(image[header.kernelOffset...]) == payload)
    }

    @Test("setup_sects is honoured for every value: 1, 4, 5, 63, 255", arguments: [1, 4, 5, 63, 255] as [UInt8])
    func setupSectorCounts(_ sects: UInt8) throws {
        var b = BzImageBuilder(payload: payload)
        b.setupSectors = sects
        let image = b.build()
        let header = try LinuxSetupHeader(image)
        #expect(header.setupSectors == Int(sects))
        #expect(header.kernelOffset == (Int(sects) + 1) * 512)
        #expect(Array(image[header.kernelOffset...]) == payload)
    }

    @Test("the oldest accepted protocol is 2.12, and a header may end exactly at 0x290")
    func boundaries() throws {
        var b = BzImageBuilder(payload: payload)
        b.version = 0x020C
        b.jumpOffset = 0x8E
        let header = try LinuxSetupHeader(b.build())
        #expect(header.version == 0x020C)
        #expect(header.headerEnd == 0x290)
        #expect(LinuxSetupHeader.minimumVersion == 0x020C)
    }

    @Test("the smallest valid image: one setup sector and a one-byte payload")
    func smallest() throws {
        var b = BzImageBuilder(payload: [0x90])
        b.setupSectors = 1
        let image = b.build()
        #expect(image.count == 0x401)
        #expect(try LinuxSetupHeader(image).kernelOffset == 0x400)
    }

    @Test("protocol versions print as major.minor with two digits")
    func versionString() {
        #expect(LinuxSetupHeader.versionString(0x020F) == "2.15")
        #expect(LinuxSetupHeader.versionString(0x020C) == "2.12")
        #expect(LinuxSetupHeader.versionString(0x0205) == "2.05")
    }
}

@Suite("LinuxSetupHeader: hostile images")
struct HostileSetupHeaderTests {
    @Test("no \"HdrS\" at 0x202")
    func noMagic() {
        var b = BzImageBuilder(payload: payload)
        b.magic = 0x5372_6447  // "GdrS"
        expectBootError(containing: "no \"HdrS\" setup header") { try LinuxSetupHeader(b.build()) }
    }

    @Test("a file shorter than 0x264 bytes, even with \"HdrS\" in place", arguments: [0, 0x206, 0x263])
    func tooShort(_ count: Int) {
        let image = Array(BzImageBuilder(payload: payload).build().prefix(count))
        expectBootError(containing: "not a Linux bzImage") { try LinuxSetupHeader(image) }
    }

    @Test("protocol 2.11 is too old: the message names 2.11 and 2.12")
    func protocolTooOld() {
        var b = BzImageBuilder(payload: payload)
        b.version = 0x020B
        let error = expectBootError(containing: "2.12") { try LinuxSetupHeader(b.build()) }
        #expect(error?.message.contains("boot protocol 2.11 is too old") == true)
    }

    @Test("protocol 2.00 and 0x0000 are too old too", arguments: [0x0200, 0x0000] as [UInt16])
    func ancientProtocols(_ version: UInt16) {
        var b = BzImageBuilder(payload: payload)
        b.version = version
        expectBootError(containing: "too old") { try LinuxSetupHeader(b.build()) }
    }

    @Test("no 0xAA55 boot flag", arguments: [0x0000, 0x55AA, 0xAA54] as [UInt16])
    func missingBootFlag(_ flag: UInt16) {
        var b = BzImageBuilder(payload: payload)
        b.bootFlag = flag
        expectBootError(containing: "0xAA55") { try LinuxSetupHeader(b.build()) }
    }

    @Test("a zImage: LOADED_HIGH clear, even with other loadflags set")
    func zImage() {
        var b = BzImageBuilder(payload: payload)
        b.loadflags = 0xFE
        expectBootError(containing: "zImage") { try LinuxSetupHeader(b.build()) }
    }

    @Test("a 32-bit kernel: XLF_KERNEL_64 clear, even with the other xloadflags set")
    func thirtyTwoBitKernel() {
        var b = BzImageBuilder(payload: payload)
        b.xloadflags = 0xFFFE
        expectBootError(containing: "32-bit") { try LinuxSetupHeader(b.build()) }
    }

    @Test("setup code longer than the file", arguments: [0x264, 0x400, 0x9FF])
    func truncatedSetup(_ keep: Int) {
        // 4 setup sectors: the kernel would start at 0xA00; keep fewer bytes than that.
        let image = Array(BzImageBuilder(payload: payload).build().prefix(keep))
        #expect(image.count == keep)
        expectBootError(containing: "truncated") { try LinuxSetupHeader(image) }
    }

    @Test("setup_sects 255 with a short file: truncated, not a crash")
    func hugeSetupSectorsShortFile() {
        var b = BzImageBuilder(payload: payload)
        b.setupSectors = 255
        let image = Array(b.build().prefix(0x2000))
        expectBootError(containing: "truncated") { try LinuxSetupHeader(image) }
    }

    @Test("an image that ends exactly where the kernel would start has no kernel")
    func noPayload() {
        let image = BzImageBuilder(payload: []).build()
        #expect(image.count == 0xA00)
        expectBootError(containing: "truncated") { try LinuxSetupHeader(image) }
    }

    @Test("a jump byte that puts the header's end past 0x290", arguments: [0x8F, 0xC0, 0xFF] as [UInt8])
    func headerPast0x290(_ jump: UInt8) {
        var b = BzImageBuilder(payload: payload)
        b.jumpOffset = jump
        expectBootError(containing: "impossible length") { try LinuxSetupHeader(b.build()) }
    }
}

@Suite("LinuxSetupHeader: truncation against syssize")
struct LinuxSetupHeaderTruncationTests {
    @Test("a payload shorter than syssize announces is a truncated bzImage")
    func truncated() throws {
        var b = BzImageBuilder(payload: [UInt8](repeating: 0x90, count: 4096))
        b.syssize = 4096 / 16 + 1
        #expect(throws: BootError.self) { _ = try LinuxSetupHeader(b.build()) }
        do { _ = try LinuxSetupHeader(b.build()) } catch {
            #expect(error.message.contains("the bzImage is truncated: its header announces 4112 bytes of kernel after the setup code, the file has 4096"))
        }
    }

    @Test("syssize rounds up to 16 bytes: a payload that fills its last paragraph partly is whole")
    func roundedUp() throws {
        let b = BzImageBuilder(payload: [UInt8](repeating: 0x90, count: 4100))
        let h = try LinuxSetupHeader(b.build() + [UInt8](repeating: 0, count: 12))
        #expect(h.protectedModeSize == 4112)
    }
}
