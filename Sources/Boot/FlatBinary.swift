// FlatBinary.swift: a raw real-mode program, the first lesson's guest.
//
// No header, no format: the file's bytes are copied to 0x1000 and the CPU
// starts there in 16-bit real mode, CS:IP = 0000:1000, with DS = ES = SS = 0
// and SP = 0x1000, the way a boot sector starts at 0000:7C00 on a PC.
// Real mode addresses segment * 16 + offset, so the program sees the first
// 1 MiB; it must fit below the reserved area at 0x9FC00.

import Memory

/// Loads flat real-mode binaries.
public enum FlatBinaryLoader {
    /// Largest binary that fits between 0x1000 and 0x9FC00.
    public static let maximumSize = Int(MachineMap.lowReservedStart - MachineMap.flatLoadAddress.rawValue)

    public static func load(_ bytes: [UInt8], memory: GuestMemory) throws(BootError) -> LoadedKernel {
        guard !bytes.isEmpty else { throw BootError("the flat binary is empty") }
        guard bytes.count <= maximumSize else {
            throw BootError("the flat binary is \(bytes.count) bytes; at most \(maximumSize) fit between 0x1000 and 0x9fc00")
        }
        let start = MachineMap.flatLoadAddress
        guard let range = GuestRange(start: start, length: UInt64(bytes.count)),
            memory.contains(start, size: range.length)
        else { throw BootError("the flat binary (\(bytes.count) bytes at 0x1000) does not fit in guest RAM (\(formatBytes(memory.size)))") }
        do { try memory.write(bytes: bytes, at: start) } catch {
            throw BootError("cannot copy the flat binary into guest memory: \(error)")
        }
        var cpu = BootCPUState(
            rip: start.rawValue, cs: .realMode(selector: 0, code: true), data: .realMode(selector: 0, code: false),
            cr0: BootCPUState.cr0ExtensionType)
        cpu.rsp = MachineMap.flatStackPointer
        return LoadedKernel(cpu: cpu, ranges: [range], summary: "flat real-mode binary, \(bytes.count) bytes at 0x1000")
    }
}
