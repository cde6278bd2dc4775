// KernelImages.swift: test kernel images built in memory, byte by byte.
//
// The loaders' tests need kernels with exactly chosen headers, including
// hostile ones, so these builders write every field explicitly and let a test
// override any of them.
//
// - The Multiboot header: Multiboot Specification 0.6.96, §3.1.1 (magic,
//   flags, checksum) and §3.1.3 (the address fields of the "a.out kludge").
// - ELF: System V ABI, "Object Files", ELF header and program header table,
//   in both the 32-bit (52-byte header, 32-byte program headers) and the
//   64-bit (64-byte header, 56-byte program headers) layouts.

/// The five address fields of a Multiboot header (§3.1.3), valid when flags bit 16 is set.
public struct MultibootAddressFields: Sendable {
    public var headerAddress: UInt32
    public var loadAddress: UInt32
    public var loadEndAddress: UInt32
    public var bssEndAddress: UInt32
    public var entryAddress: UInt32

    public init(headerAddress: UInt32, loadAddress: UInt32, loadEndAddress: UInt32, bssEndAddress: UInt32, entryAddress: UInt32) {
        self.headerAddress = headerAddress
        self.loadAddress = loadAddress
        self.loadEndAddress = loadEndAddress
        self.bssEndAddress = bssEndAddress
        self.entryAddress = entryAddress
    }
}

/// The Multiboot header magic (§3.1.1).
public let multibootHeaderMagic: UInt32 = 0x1BAD_B002
/// Flags bit 16: the header carries the address fields (§3.1.3).
public let multibootAddressFieldsFlag: UInt32 = 1 << 16

/// A Multiboot header: magic, `flags` and a checksum, followed by `addresses`
/// when given (12 or 32 bytes).
///
/// - Parameters:
///   - flags: written as given; pass `multibootAddressFieldsFlag` yourself
///     when `addresses` is set (leaving it out makes a header whose address
///     fields the loader must ignore).
///   - checksum: nil for the correct one (magic + flags + checksum == 0 mod 2^32).
///   - addresses: the a.out-kludge fields, appended after the checksum.
public func multibootHeader(flags: UInt32, checksum: UInt32? = nil, addresses: MultibootAddressFields? = nil) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendLittleEndian(multibootHeaderMagic)
    bytes.appendLittleEndian(flags)
    bytes.appendLittleEndian(checksum ?? (0 &- (multibootHeaderMagic &+ flags)))
    if let a = addresses {
        bytes.appendLittleEndian(a.headerAddress)
        bytes.appendLittleEndian(a.loadAddress)
        bytes.appendLittleEndian(a.loadEndAddress)
        bytes.appendLittleEndian(a.bssEndAddress)
        bytes.appendLittleEndian(a.entryAddress)
    }
    return bytes
}

/// One program header for `ELFBuilder`, with the bytes it loads.
public struct ELFSegmentSpec: Sendable {
    /// p_type; 1 is PT_LOAD, the only type a loader acts on.
    public var type: UInt32 = 1
    public var virtualAddress: UInt64
    public var physicalAddress: UInt64
    /// The file bytes (p_filesz of them), placed in the file by the builder.
    public var data: [UInt8]
    /// p_memsz; the loader zeroes [p_filesz, p_memsz).
    public var memorySize: UInt64
    /// Written as p_offset instead of where the builder put `data` (for hostile images).
    public var fileOffsetOverride: UInt64? = nil
    /// Written as p_filesz instead of `data.count` (for hostile images).
    public var fileSizeOverride: UInt64? = nil

    /// A segment loaded at `address` (both virtual and physical), with
    /// `memorySize` defaulting to the size of `data` (no bss).
    public init(address: UInt64, data: [UInt8], memorySize: UInt64? = nil) {
        self.init(virtualAddress: address, physicalAddress: address, data: data, memorySize: memorySize)
    }

    /// A segment whose virtual and physical addresses differ (a higher-half kernel).
    public init(virtualAddress: UInt64, physicalAddress: UInt64, data: [UInt8], memorySize: UInt64? = nil) {
        self.virtualAddress = virtualAddress
        self.physicalAddress = physicalAddress
        self.data = data
        self.memorySize = memorySize ?? UInt64(data.count)
    }
}

/// Builds a little-endian x86 ELF executable.
///
/// File layout: the ELF header, the program header table right after it, then
/// `multibootHeader` (if any) at the next 4-byte boundary, then each segment's
/// data at the next 16-byte boundary, in order. `build()` returns the file
/// and where each part went.
public struct ELFBuilder: Sendable {
    public enum Class: Sendable { case elf32, elf64 }

    public var elfClass: Class
    /// e_machine: 3 (EM_386) by default for ELF32, 62 (EM_X86_64) for ELF64.
    public var machine: UInt16
    /// e_type: 2 (ET_EXEC).
    public var type: UInt16 = 2
    public var entry: UInt64
    public var segments: [ELFSegmentSpec]
    /// Bytes (normally a Multiboot header) placed after the program headers,
    /// within the first 8 KiB as §3.1.1 requires.
    public var multibootHeader: [UInt8]?
    /// Written as e_phnum instead of `segments.count`.
    public var programHeaderCountOverride: UInt16? = nil
    /// Written as e_phoff instead of the real table offset.
    public var programHeaderOffsetOverride: UInt64? = nil

    public init(_ elfClass: Class = .elf32, entry: UInt64, segments: [ELFSegmentSpec], multibootHeader: [UInt8]? = nil) {
        self.elfClass = elfClass
        self.machine = elfClass == .elf32 ? 3 : 62
        self.entry = entry
        self.segments = segments
        self.multibootHeader = multibootHeader
    }

    /// The built file and the offsets of its parts.
    public struct Image: Sendable {
        public var bytes: [UInt8]
        /// The file offset of the program header table.
        public var programHeaderOffset: Int
        /// The file offset of `multibootHeader`, if one was placed.
        public var multibootHeaderOffset: Int?
        /// The file offset of each segment's data, parallel to `segments`.
        public var segmentOffsets: [Int]
    }

    /// The ELF header size: 52 bytes (ELF32) or 64 (ELF64).
    public var headerSize: Int { elfClass == .elf32 ? 52 : 64 }
    /// The program header entry size: 32 bytes (ELF32) or 56 (ELF64).
    public var programHeaderSize: Int { elfClass == .elf32 ? 32 : 56 }

    public func build() -> Image {
        let is64 = elfClass == .elf64
        let phoff = headerSize
        var cursor = phoff + programHeaderSize * segments.count
        var multibootOffset: Int? = nil
        if let mb = multibootHeader {
            cursor = (cursor + 3) & ~3
            multibootOffset = cursor
            cursor += mb.count
        }
        var dataOffsets: [Int] = []
        for s in segments {
            cursor = (cursor + 15) & ~15
            dataOffsets.append(cursor)
            cursor += s.data.count
        }
        var bytes = [UInt8](repeating: 0, count: cursor)

        // e_ident: magic, class, data (1 = little-endian), version 1, System V ABI.
        bytes[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        bytes[4] = is64 ? 2 : 1
        bytes[5] = 1
        bytes[6] = 1
        bytes.storeLittleEndian(type, at: 16)
        bytes.storeLittleEndian(machine, at: 18)
        bytes.storeLittleEndian(UInt32(1), at: 20)  // e_version
        let phnum = programHeaderCountOverride ?? UInt16(segments.count)
        let tableOffset = programHeaderOffsetOverride ?? UInt64(phoff)
        if is64 {
            bytes.storeLittleEndian(entry, at: 24)
            bytes.storeLittleEndian(tableOffset, at: 32)
            bytes.storeLittleEndian(UInt16(64), at: 52)                 // e_ehsize
            bytes.storeLittleEndian(UInt16(programHeaderSize), at: 54)  // e_phentsize
            bytes.storeLittleEndian(phnum, at: 56)
        } else {
            bytes.storeLittleEndian(UInt32(truncatingIfNeeded: entry), at: 24)
            bytes.storeLittleEndian(UInt32(truncatingIfNeeded: tableOffset), at: 28)
            bytes.storeLittleEndian(UInt16(52), at: 40)
            bytes.storeLittleEndian(UInt16(programHeaderSize), at: 42)
            bytes.storeLittleEndian(phnum, at: 44)
        }

        for (i, s) in segments.enumerated() {
            let h = phoff + i * programHeaderSize
            let offset = s.fileOffsetOverride ?? UInt64(dataOffsets[i])
            let fileSize = s.fileSizeOverride ?? UInt64(s.data.count)
            if is64 {
                bytes.storeLittleEndian(s.type, at: h)
                bytes.storeLittleEndian(UInt32(7), at: h + 4)  // p_flags: RWX
                bytes.storeLittleEndian(offset, at: h + 8)
                bytes.storeLittleEndian(s.virtualAddress, at: h + 16)
                bytes.storeLittleEndian(s.physicalAddress, at: h + 24)
                bytes.storeLittleEndian(fileSize, at: h + 32)
                bytes.storeLittleEndian(s.memorySize, at: h + 40)
                bytes.storeLittleEndian(UInt64(16), at: h + 48)  // p_align
            } else {
                bytes.storeLittleEndian(s.type, at: h)
                bytes.storeLittleEndian(UInt32(truncatingIfNeeded: offset), at: h + 4)
                bytes.storeLittleEndian(UInt32(truncatingIfNeeded: s.virtualAddress), at: h + 8)
                bytes.storeLittleEndian(UInt32(truncatingIfNeeded: s.physicalAddress), at: h + 12)
                bytes.storeLittleEndian(UInt32(truncatingIfNeeded: fileSize), at: h + 16)
                bytes.storeLittleEndian(UInt32(truncatingIfNeeded: s.memorySize), at: h + 20)
                bytes.storeLittleEndian(UInt32(7), at: h + 24)   // p_flags
                bytes.storeLittleEndian(UInt32(16), at: h + 28)  // p_align
            }
            bytes.replaceSubrange(dataOffsets[i]..<(dataOffsets[i] + s.data.count), with: s.data)
        }
        if let mb = multibootHeader, let at = multibootOffset {
            bytes.replaceSubrange(at..<(at + mb.count), with: mb)
        }
        return Image(bytes: bytes, programHeaderOffset: phoff, multibootHeaderOffset: multibootOffset, segmentOffsets: dataOffsets)
    }
}

/// `count` bytes of a recognisable pattern: byte i is `(seed + i) & 0xFF`,
/// skipping 0 so that a zeroed byte never passes for a copied one.
public func patternBytes(count: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<count).map { i in
        let b = UInt8(truncatingIfNeeded: Int(seed) + i)
        return b == 0 ? 0xFF : b
    }
}

/// Builds a synthetic Linux bzImage: the real-mode setup sectors with a setup
/// header at 0x1F1, then a protected-mode payload of chosen bytes.
///
/// Layout (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"):
/// the boot sector and the setup sectors take `(effective setup_sects + 1) * 512`
/// bytes, where a `setup_sects` field of 0 means 4; the payload follows at that
/// file offset. Every header field a 64-bit loader reads is written explicitly
/// at its documented offset:
///
/// | offset | field             | property              |
/// |--------|-------------------|-----------------------|
/// | 0x1F1  | setup_sects       | `setupSectors`        |
/// | 0x1FE  | boot_flag         | `bootFlag`            |
/// | 0x200  | jump (0xEB)       | (fixed)               |
/// | 0x201  | jump offset byte  | `jumpOffset`          |
/// | 0x202  | header "HdrS"     | `magic`               |
/// | 0x206  | version           | `version`             |
/// | 0x211  | loadflags         | `loadflags`           |
/// | 0x22C  | initrd_addr_max   | `initrdAddressMax`    |
/// | 0x230  | kernel_alignment  | `kernelAlignment`     |
/// | 0x234  | relocatable_kernel| `relocatable`         |
/// | 0x236  | xloadflags        | `xloadflags`          |
/// | 0x238  | cmdline_size      | `commandLineSize`     |
/// | 0x258  | pref_address      | `preferredAddress`    |
/// | 0x260  | init_size         | `initSize`            |
///
/// Every other byte of the setup area is `fill` (0 by default), so a test can
/// fill it with a non-zero value to see exactly which bytes a loader copies.
/// The defaults describe a valid 64-bit bzImage with protocol 2.15 (as
/// Linux 6.1's), loaded at 16 MiB.
public struct BzImageBuilder: Sendable {
    /// "HdrS", little-endian.
    public static let headerMagic: UInt32 = 0x5372_6448
    /// loadflags bit 0, LOADED_HIGH: the payload is loaded at 1 MiB or above (a bzImage).
    public static let loadedHigh: UInt8 = 0x01
    /// xloadflags bit 0, XLF_KERNEL_64: the payload has a 64-bit entry point at +0x200.
    public static let kernel64: UInt16 = 0x01

    /// The raw setup_sects byte at 0x1F1 (0 means 4).
    public var setupSectors: UInt8 = 4
    public var bootFlag: UInt16 = 0xAA55
    /// The byte at 0x201: the setup header ends at 0x202 + this.
    public var jumpOffset: UInt8 = 0x6A
    public var magic: UInt32 = BzImageBuilder.headerMagic
    public var version: UInt16 = 0x020F
    public var loadflags: UInt8 = BzImageBuilder.loadedHigh
    public var initrdAddressMax: UInt32 = 0x7FFF_FFFF
    public var kernelAlignment: UInt32 = 0x20_0000
    /// relocatable_kernel, written as 1 or 0.
    public var relocatable: Bool = true
    public var xloadflags: UInt16 = BzImageBuilder.kernel64
    /// cmdline_size: the longest command line the kernel takes, without the NUL.
    public var commandLineSize: UInt32 = 2047
    public var preferredAddress: UInt64 = 0x100_0000
    public var initSize: UInt32 = 0x10_0000
    /// The protected-mode kernel, placed at `kernelOffset`.
    public var payload: [UInt8]
    /// Every setup-area byte that is not one of the fields above.
    public var fill: UInt8 = 0
    /// syssize (0x1F4) in 16-byte paragraphs; nil: the payload's own length, rounded up.
    public var syssize: UInt32? = nil

    public init(payload: [UInt8]) {
        self.payload = payload
    }

    /// setup_sects as a loader must read it: 0 means 4.
    public var effectiveSetupSectors: Int { setupSectors == 0 ? 4 : Int(setupSectors) }
    /// The file offset of the payload: `(effectiveSetupSectors + 1) * 512`.
    public var kernelOffset: Int { (effectiveSetupSectors + 1) * 512 }
    /// The end of the setup header: `0x202 + jumpOffset`.
    public var headerEnd: Int { 0x202 + Int(jumpOffset) }

    /// The image: `kernelOffset` bytes of setup, then `payload`.
    public func build() -> [UInt8] {
        var bytes = [UInt8](repeating: fill, count: kernelOffset)
        bytes[0x1F1] = setupSectors
        bytes.storeLittleEndian(syssize ?? UInt32((payload.count + 15) / 16), at: 0x1F4)
        bytes.storeLittleEndian(bootFlag, at: 0x1FE)
        bytes[0x200] = 0xEB  // jmp short
        bytes[0x201] = jumpOffset
        bytes.storeLittleEndian(magic, at: 0x202)
        bytes.storeLittleEndian(version, at: 0x206)
        bytes[0x211] = loadflags
        bytes.storeLittleEndian(initrdAddressMax, at: 0x22C)
        bytes.storeLittleEndian(kernelAlignment, at: 0x230)
        bytes[0x234] = relocatable ? 1 : 0
        bytes.storeLittleEndian(xloadflags, at: 0x236)
        bytes.storeLittleEndian(commandLineSize, at: 0x238)
        bytes.storeLittleEndian(preferredAddress, at: 0x258)
        bytes.storeLittleEndian(initSize, at: 0x260)
        return bytes + payload
    }
}
