// ELF.swift: the parts of an ELF executable a boot loader needs.
//
// System V ABI, "Object Files": the ELF header (e_ident, e_entry, e_phoff,
// e_phentsize, e_phnum) and the program headers of type PT_LOAD, each of which
// says "copy p_filesz bytes from p_offset to physical address p_paddr, then
// zero up to p_memsz". Section headers do not matter for loading. Both ELF32
// and ELF64 are read; every offset and size is checked against the file.

/// A loadable ELF executable.
public struct ELFImage: Equatable, Sendable {
    /// One PT_LOAD program header.
    public struct Segment: Equatable, Sendable {
        public let fileOffset: UInt64
        public let fileSize: UInt64
        public let virtualAddress: UInt64
        public let physicalAddress: UInt64
        public let memorySize: UInt64
    }

    public enum Class: Sendable { case elf32, elf64 }

    public let elfClass: Class
    /// e_machine: 3 = i386, 62 = x86-64.
    public let machine: UInt16
    public let entry: UInt64
    public let segments: [Segment]

    static let magic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]  // "\x7FELF"

    /// True when `bytes` starts with the ELF magic.
    public static func isELF(_ bytes: [UInt8]) -> Bool { bytes.starts(with: magic) }

    /// Parses and validates an x86 ELF executable.
    public init(_ bytes: [UInt8]) throws(BootError) {
        let r = ByteReader(bytes: bytes)
        guard Self.isELF(bytes) else { throw BootError("not an ELF file") }
        guard let cls = r.u8(4), let data = r.u8(5) else { throw BootError("ELF header is truncated") }
        guard data == 1 else { throw BootError("ELF file is not little-endian") }
        switch cls {
        case 1: elfClass = .elf32
        case 2: elfClass = .elf64
        default: throw BootError("ELF class \(cls) is neither 32- nor 64-bit")
        }
        let is64 = elfClass == .elf64
        guard let type = r.u16(16), let machine = r.u16(18) else { throw BootError("ELF header is truncated") }
        guard type == 2 else { throw BootError("ELF file is not an executable (e_type \(type))") }
        guard machine == 3 || machine == 62 else { throw BootError("ELF file is not for x86 (e_machine \(machine))") }
        self.machine = machine
        let entry = is64 ? r.u64(24) : r.u32(24).map(UInt64.init)
        let phoff = is64 ? r.u64(32) : r.u32(28).map(UInt64.init)
        let phentsize = r.u16(is64 ? 54 : 42)
        let phnum = r.u16(is64 ? 56 : 44)
        guard let entry, let phoff, let phentsize, let phnum else { throw BootError("ELF header is truncated") }
        self.entry = entry
        let minimumEntrySize = is64 ? 56 : 32
        guard phnum > 0 else { throw BootError("ELF file has no program headers") }
        guard Int(phentsize) >= minimumEntrySize else { throw BootError("ELF program header size \(phentsize) is too small") }
        let tableSize = UInt64(phentsize) * UInt64(phnum)
        guard phoff <= UInt64(bytes.count), tableSize <= UInt64(bytes.count) - phoff else {
            throw BootError("ELF program headers lie past the end of the file")
        }
        var segments: [Segment] = []
        for i in 0..<Int(phnum) {
            let h = Int(phoff) + i * Int(phentsize)
            guard let pType = r.u32(h), pType == 1 else { continue }  // PT_LOAD only
            let s: Segment?
            if is64 {
                s = zip5(r.u64(h + 8), r.u64(h + 16), r.u64(h + 24), r.u64(h + 32), r.u64(h + 40)).map {
                    Segment(fileOffset: $0, fileSize: $3, virtualAddress: $1, physicalAddress: $2, memorySize: $4)
                }
            } else {
                s = zip5(r.u32(h + 4), r.u32(h + 8), r.u32(h + 12), r.u32(h + 16), r.u32(h + 20)).map {
                    Segment(fileOffset: UInt64($0), fileSize: UInt64($3), virtualAddress: UInt64($1),
                            physicalAddress: UInt64($2), memorySize: UInt64($4))
                }
            }
            guard let s else { throw BootError("ELF program header \(i) is truncated") }
            guard s.fileSize <= s.memorySize else {
                throw BootError("ELF segment \(i) has p_filesz \(s.fileSize) larger than p_memsz \(s.memorySize)")
            }
            guard s.fileOffset <= UInt64(bytes.count), s.fileSize <= UInt64(bytes.count) - s.fileOffset else {
                throw BootError("ELF segment \(i) lies past the end of the file (the file is truncated?)")
            }
            guard s.physicalAddress.addingReportingOverflow(s.memorySize).overflow == false,
                s.virtualAddress.addingReportingOverflow(s.memorySize).overflow == false
            else { throw BootError("ELF segment \(i) wraps around the address space") }
            if s.memorySize > 0 { segments.append(s) }
        }
        guard !segments.isEmpty else { throw BootError("ELF file has no loadable segments") }
        self.segments = segments
    }

    /// The physical address of `entry`: translated through the segment whose
    /// virtual range contains it (GRUB does this for higher-half kernels), or
    /// `entry` itself when no segment maps it virtually.
    public var physicalEntry: UInt64 {
        for s in segments where entry >= s.virtualAddress && entry - s.virtualAddress < s.memorySize {
            return s.physicalAddress + (entry - s.virtualAddress)
        }
        return entry
    }
}

private func zip5<A, B, C, D, E>(_ a: A?, _ b: B?, _ c: C?, _ d: D?, _ e: E?) -> (A, B, C, D, E)? {
    guard let a, let b, let c, let d, let e else { return nil }
    return (a, b, c, d, e)
}
