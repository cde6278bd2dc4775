// PCICapabilities.swift: the capability list, and the MSI-X capability structure.
//
// PCI Local Bus Specification 3.0, §6.7 "Capabilities List": when status bit
// 4 is set, the byte at 0x34 points to the first capability (bits 1:0 are
// reserved and software masks them). Each capability starts with its ID byte
// and a "next" byte pointing to the following one, 0 ending the list; the
// capabilities live in the device-specific area above the 64-byte header and
// are dword-aligned. IDs used here (PCI Code and ID Assignment Specification):
// 0x09 vendor-specific (its third byte is the capability's length; virtio-pci
// builds its common/notify/ISR/device-config capabilities on it, virtio 1.2
// §4.1.4), and 0x11 MSI-X.
//
// PCI Local Bus Specification 3.0, §6.8.2 "MSI-X Capability and Table
// Structure":
//
//   cap + 0   capability ID 0x11        cap + 1   next pointer
//   cap + 2   message control: bit 15 MSI-X enable (RW), bit 14 function mask
//             (RW), bits 10:0 table size N - 1 (RO)
//   cap + 4   table offset (bits 31:3) | table BIR (bits 2:0), RO
//   cap + 8   PBA offset (bits 31:3)   | PBA BIR (bits 2:0), RO
//
// The BIR names the BAR (0-5) that holds the table or the pending bit array;
// both offsets are QWORD-aligned. Cloud Hypervisor's pci/src/msix.rs builds the
// same 12-byte structure (its `MsixCap`).

extension PCIConfigurationSpace {
    /// Capability IDs skvm uses.
    public static let vendorSpecificCapabilityID: UInt8 = 0x09
    public static let msixCapabilityID: UInt8 = 0x11

    /// Appends a capability with ID `id` whose bytes after (ID, next) are
    /// `body`, and returns its offset. `writableMask`, if given, has one byte
    /// per body byte: the bits software may change. Everything else is
    /// read-only, including the ID and next pointer.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8], writableMask: [UInt8]? = nil) throws(PCIError) -> Int {
        if let mask = writableMask, mask.count != body.count {
            throw .invalidCapability("writable mask of \(mask.count) bytes for a body of \(body.count)")
        }
        let length = 2 + body.count
        // Capabilities are dword-aligned (§6.7) and must end by 0xFF.
        let offset = (capabilityEnd + 3) & ~3
        guard offset + length <= Self.size else { throw .capabilitySpaceFull(length: length) }
        poke(offset: offset, bytes: [id, 0] + body)
        if let mask = writableMask { allowWrites(offset: offset + 2, mask: mask) }
        // Link it: from 0x34 for the first capability, from the previous one's next byte otherwise.
        let link = lastCapability.map { $0 + 1 } ?? Self.capabilitiesPointerOffset
        poke(offset: link, bytes: [UInt8(truncatingIfNeeded: offset)])
        setStatusBits(Self.statusCapabilityList)
        lastCapability = offset
        capabilityEnd = offset + length
        return offset
    }

    /// Appends a vendor-specific capability (ID 0x09): ID, next, a length byte
    /// the builder fills in (3 + data.count), then `data`. virtio-pci's
    /// `struct virtio_pci_cap` is this with `data` starting at `cfg_type`.
    @discardableResult
    public mutating func addVendorSpecificCapability(_ data: [UInt8], writableMask: [UInt8]? = nil) throws(PCIError) -> Int {
        let length = 3 + data.count
        guard length <= Self.size - Self.firstCapabilityOffset else { throw .capabilitySpaceFull(length: length) }
        if let mask = writableMask, mask.count != data.count {
            throw .invalidCapability("writable mask of \(mask.count) bytes for \(data.count) bytes of data")
        }
        return try addCapability(
            id: Self.vendorSpecificCapabilityID, body: [UInt8(length)] + data,
            writableMask: writableMask.map { [0] + $0 })
    }

    /// Appends the MSI-X capability. The BARs it names must already be
    /// described as memory BARs large enough to hold the table and the PBA,
    /// and the function can have only one MSI-X capability.
    @discardableResult
    public mutating func addMSIXCapability(_ msix: MSIXCapability) throws(PCIError) -> Int {
        guard msixCapabilityOffset == nil else { throw .invalidMSIX("the function already has one") }
        for (bir, offset, length, what) in [
            (msix.tableBAR, msix.tableOffset, msix.tableLength, "table"),
            (msix.pbaBAR, msix.pbaOffset, msix.pbaLength, "PBA"),
        ] {
            // §6.8.2.4: the table and PBA are in memory space, inside the BAR the BIR names.
            guard let bar = bar(bir), bar.space == .memory else {
                throw .invalidMSIX("the \(what)'s BIR \(bir) names no memory BAR")
            }
            guard UInt64(offset) <= bar.size, length <= bar.size - UInt64(offset) else {
                throw .invalidMSIX("the \(what) does not fit in BAR \(bir)")
            }
        }
        if msix.tableBAR == msix.pbaBAR {
            let t = UInt64(msix.tableOffset)
            let p = UInt64(msix.pbaOffset)
            guard t + msix.tableLength <= p || p + msix.pbaLength <= t else {
                throw .invalidMSIX("the table and the PBA overlap")
            }
        }
        // Message control's enable (15) and function mask (14) are the only writable bits.
        let offset = try addCapability(
            id: Self.msixCapabilityID, body: msix.body,
            writableMask: [0x00, 0xC0] + Array(repeating: 0, count: 8))
        msixCapabilityOffset = offset
        msixCapability = msix
        return offset
    }

    /// The MSI-X message control word as the guest left it, if the function has MSI-X.
    public var msixMessageControl: UInt16? {
        guard let offset = msixCapabilityOffset else { return nil }
        return UInt16(truncatingIfNeeded: read(offset: offset + 2, size: 2))
    }

    /// The offsets of the capabilities, walked as a driver walks them: from
    /// 0x34, masking bits 1:0, stopping at 0 or after 48 steps (the most
    /// dword-aligned capabilities that fit in 0x40-0xFF), so a corrupt list
    /// cannot loop.
    public func capabilityOffsets() -> [Int] {
        guard status & Self.statusCapabilityList != 0 else { return [] }
        var offsets: [Int] = []
        var next = Int(read(offset: Self.capabilitiesPointerOffset, size: 1)) & ~3
        while next != 0, offsets.count < (Self.size - Self.firstCapabilityOffset) / 4 {
            offsets.append(next)
            next = Int(read(offset: next + 1, size: 1)) & ~3
        }
        return offsets
    }
}

/// The MSI-X capability: how many vectors, and where the table and pending
/// bit array sit (which BAR, at which offset).
public struct MSIXCapability: Equatable, Sendable {
    /// §6.8.2.3: the table size field is 11 bits, N - 1, so at most 2048 vectors.
    public static let maximumVectorCount = 2048
    /// Each table entry is 16 bytes: address low, address high, data, vector control.
    public static let entrySize: UInt64 = 16

    /// The number of vectors (table entries), 1...2048.
    public let vectorCount: Int
    /// The BAR holding the table, and its offset inside it (8-byte aligned).
    public let tableBAR: Int
    public let tableOffset: UInt32
    /// The BAR holding the pending bit array, and its offset inside it (8-byte aligned).
    public let pbaBAR: Int
    public let pbaOffset: UInt32

    /// Checks the fields §6.8.2 constrains: the count, the BIRs and the QWORD alignment.
    public init(vectorCount: Int, tableBAR: Int, tableOffset: UInt32, pbaBAR: Int, pbaOffset: UInt32) throws(PCIError) {
        guard vectorCount >= 1, vectorCount <= Self.maximumVectorCount else {
            throw .invalidMSIX("\(vectorCount) vectors (1...\(Self.maximumVectorCount) allowed)")
        }
        guard (0...5).contains(tableBAR), (0...5).contains(pbaBAR) else {
            throw .invalidMSIX("BIR \(tableBAR)/\(pbaBAR) outside 0...5")
        }
        guard tableOffset & 7 == 0, pbaOffset & 7 == 0 else {
            throw .invalidMSIX("offsets 0x\(String(tableOffset, radix: 16))/0x\(String(pbaOffset, radix: 16)) are not QWORD-aligned")
        }
        self.vectorCount = vectorCount
        self.tableBAR = tableBAR
        self.tableOffset = tableOffset
        self.pbaBAR = pbaBAR
        self.pbaOffset = pbaOffset
    }

    /// The table's length: 16 bytes per vector.
    public var tableLength: UInt64 { UInt64(vectorCount) * Self.entrySize }
    /// The PBA's length: one bit per vector, in whole QWORDs (§6.8.2.10).
    public var pbaLength: UInt64 { UInt64((vectorCount + 63) / 64) * 8 }

    /// The 10 bytes after (ID, next): message control (enable and function
    /// mask clear), table offset/BIR, PBA offset/BIR.
    var body: [UInt8] {
        let control = UInt16(vectorCount - 1)
        let table = tableOffset | UInt32(tableBAR)
        let pba = pbaOffset | UInt32(pbaBAR)
        return [UInt8(truncatingIfNeeded: control), UInt8(truncatingIfNeeded: control >> 8)]
            + (0..<4).map { UInt8(truncatingIfNeeded: table >> (8 * $0)) }
            + (0..<4).map { UInt8(truncatingIfNeeded: pba >> (8 * $0)) }
    }
}
