// PCIConfigurationSpace.swift: one PCI function's 256-byte configuration space.
//
// PCI Local Bus Specification 3.0, §6.1 "Configuration Space Organization"
// and §6.2 "Configuration Space Functions" (the type 0 header):
//
//   0x00  vendor ID (RO)                 0x02  device ID (RO)
//   0x04  command (RW)                   0x06  status (RO; error bits RW1C)
//   0x08  revision ID, class code (RO)
//   0x0C  cache line size (RW), latency timer, header type, BIST (RO)
//   0x10 .. 0x27  base address registers 0-5
//   0x28  CardBus CIS pointer (RO 0)     0x2C  subsystem vendor ID, subsystem ID (RO)
//   0x30  expansion ROM base (not implemented: RO 0, so sizing finds no ROM)
//   0x34  capabilities pointer (RO)
//   0x3C  interrupt line (RW), interrupt pin, Min_Gnt, Max_Lat (RO)
//   0x40 .. 0xFF  the capability list (§6.7) and device-specific registers
//
// The space is a value: 64 dword registers, each with a writable mask and a
// write-one-to-clear mask, so one write routine enforces every rule above
// (Cloud Hypervisor's configuration.rs keeps the same pair; kvmtool's pci.c
// special-cases 0xFFFFFFFF writes to BARs instead, losing the type bits).
// Accesses carry a dword register and byte enables, as a configuration cycle
// does (§3.2.2.3.2); the offset/size forms accept aligned 1, 2 or 4 bytes.

/// The three bytes of a class code (§6.2.1 and PCI Code and ID Assignment Specification).
public struct PCIClassCode: Equatable, Hashable, Sendable {
    /// The base class (byte 0x0B): 0x01 mass storage, 0x02 network, 0x06 bridge, ...
    public let baseClass: UInt8
    /// The subclass (byte 0x0A).
    public let subclass: UInt8
    /// The register-level programming interface (byte 0x09).
    public let programmingInterface: UInt8

    public init(baseClass: UInt8, subclass: UInt8, programmingInterface: UInt8 = 0) {
        self.baseClass = baseClass
        self.subclass = subclass
        self.programmingInterface = programmingInterface
    }

    /// 06/00/00: a host bridge. Linux's `pci_sanity_check` looks for one on bus 0.
    public static let hostBridge = PCIClassCode(baseClass: 0x06, subclass: 0x00)
    /// 01/00/00: a SCSI storage controller (QEMU's class for virtio-blk).
    public static let scsiStorage = PCIClassCode(baseClass: 0x01, subclass: 0x00)
    /// 02/00/00: an Ethernet controller (virtio-net).
    public static let ethernet = PCIClassCode(baseClass: 0x02, subclass: 0x00)
    /// FF/00/00: a device that fits no defined class.
    public static let unassigned = PCIClassCode(baseClass: 0xFF, subclass: 0x00)
}

/// The command register's bits (§6.2.2, figure 6-2) that skvm implements.
public struct PCICommand: OptionSet, Equatable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Bit 0: the function responds to I/O space accesses (its I/O BARs decode).
    public static let ioSpace = PCICommand(rawValue: 1 << 0)
    /// Bit 1: the function responds to memory space accesses (its memory BARs decode).
    public static let memorySpace = PCICommand(rawValue: 1 << 1)
    /// Bit 2: the function may master the bus: DMA, and MSI/MSI-X messages (§6.8).
    public static let busMaster = PCICommand(rawValue: 1 << 2)
    /// Bit 6: parity error response.
    public static let parityErrorResponse = PCICommand(rawValue: 1 << 6)
    /// Bit 8: SERR# enable.
    public static let serrEnable = PCICommand(rawValue: 1 << 8)
    /// Bit 10: INTx emulation disabled (PCI 2.3 and later).
    public static let interruptDisable = PCICommand(rawValue: 1 << 10)

    /// Every bit above: the command register's writable mask. Special cycles,
    /// memory-write-and-invalidate, VGA snooping, stepping and fast back-to-back
    /// are hardwired to zero, as PCI Express requires.
    public static let writable: PCICommand = [
        .ioSpace, .memorySpace, .busMaster, .parityErrorResponse, .serrEnable, .interruptDisable,
    ]
}

/// One function's configuration space: a type 0 header, up to six BARs and a capability list.
public struct PCIConfigurationSpace: Equatable, Sendable {
    /// Conventional PCI configuration space is 256 bytes (PCI Express extends it to 4 KiB).
    public static let size = 256
    public static let vendorIDOffset = 0x00
    public static let commandOffset = 0x04
    public static let statusOffset = 0x06
    public static let classCodeOffset = 0x08
    public static let headerTypeOffset = 0x0E
    public static let firstBAROffset = 0x10
    public static let subsystemOffset = 0x2C
    public static let expansionROMOffset = 0x30
    public static let capabilitiesPointerOffset = 0x34
    public static let interruptLineOffset = 0x3C
    /// Where the capability list starts: the first byte after the header.
    public static let firstCapabilityOffset = 0x40
    /// Status bit 4: the function has a capability list at 0x34 (§6.2.3).
    public static let statusCapabilityList: UInt16 = 1 << 4
    /// Status bit 3: the function's INTx is asserted (PCI 2.3; RO).
    public static let statusInterrupt: UInt16 = 1 << 3
    /// Status bits that are "write 1 to clear": master data parity error (8),
    /// signaled target abort (11), received target abort (12), received master
    /// abort (13), signaled system error (14), detected parity error (15).
    public static let statusWriteOneToClear: UInt16 = 0xF900

    /// What each of the six BAR registers holds.
    enum BARSlot: Equatable, Sendable {
        case unused
        case bar(PCIBar)
        /// The upper half of the 64-bit BAR whose low register is `of`.
        case upperHalf(of: Int)
    }

    /// The 64 dword registers, little-endian within each dword.
    private(set) var registers: [UInt32]
    /// The bits of each register software may change.
    private(set) var writable: [UInt32]
    /// The bits of each register a write of 1 clears.
    private(set) var writeOneToClear: [UInt32]
    /// The six BAR registers.
    private(set) var barSlots: [BARSlot] = Array(repeating: .unused, count: 6)
    /// Offset of the last capability (whose next pointer a new one fills in), if any.
    var lastCapability: Int?
    /// The first free byte for the next capability.
    var capabilityEnd = PCIConfigurationSpace.firstCapabilityOffset
    /// Offset of the MSI-X capability, if the function has one.
    public internal(set) var msixCapabilityOffset: Int?
    /// The MSI-X capability as it was added (vector count, table and PBA placement).
    public internal(set) var msixCapability: MSIXCapability?

    /// A type 0 header with no BARs and no capabilities.
    ///
    /// `interruptPin` is 0 for none or 1-4 for INTA#-INTD# (§6.2.4); the
    /// interrupt line register starts at 0xFF ("unknown / not connected").
    public init(
        vendorID: UInt16, deviceID: UInt16, classCode: PCIClassCode, revisionID: UInt8 = 0,
        subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0, interruptPin: UInt8 = 0
    ) {
        registers = Array(repeating: 0, count: Self.size / 4)
        writable = Array(repeating: 0, count: Self.size / 4)
        writeOneToClear = Array(repeating: 0, count: Self.size / 4)
        registers[0] = UInt32(deviceID) << 16 | UInt32(vendorID)
        // Command (low half) is writable through its mask; status (high half) is
        // read-only except for the RW1C error bits.
        writable[1] = UInt32(PCICommand.writable.rawValue)
        writeOneToClear[1] = UInt32(Self.statusWriteOneToClear) << 16
        registers[2] = UInt32(classCode.baseClass) << 24 | UInt32(classCode.subclass) << 16
            | UInt32(classCode.programmingInterface) << 8 | UInt32(revisionID)
        // Header type 0x00: a type 0 header, single-function (bit 7 clear), so
        // Linux's scan does not probe functions 1-7. Only the cache line size is
        // writable (PCI Express hardwires the latency timer to 0).
        writable[3] = 0x0000_00FF
        registers[11] = UInt32(subsystemID) << 16 | UInt32(subsystemVendorID)
        registers[15] = UInt32(min(interruptPin, 4)) << 8 | 0xFF
        writable[15] = 0x0000_00FF
    }

    /// The header skvm's host bridge presents at 00:00.0: the same IDs as
    /// QEMU's q35 (Intel 82G33/P35 DRAM controller, 8086:29C0), class 06/00/00.
    public static func hostBridge() -> PCIConfigurationSpace {
        PCIConfigurationSpace(vendorID: 0x8086, deviceID: 0x29C0, classCode: .hostBridge)
    }

    // MARK: Access by register and byte enables

    /// Reads register `register` (offset / 4). Registers past 63 read all ones.
    public func read(register: Int) -> UInt32 {
        guard register >= 0, register < registers.count else { return UInt32.max }
        return registers[register]
    }

    /// Writes the bytes of `value` selected by `byteEnables` (bit n = byte n)
    /// into register `register`, honouring the writable and RW1C masks.
    /// Writes past register 63 are ignored.
    public mutating func write(register: Int, value: UInt32, byteEnables: UInt8) {
        guard register >= 0, register < registers.count else { return }
        let lanes = Self.laneMask(byteEnables)
        let writeMask = writable[register] & lanes
        let clearMask = writeOneToClear[register] & lanes & value
        var r = registers[register]
        r = (r & ~writeMask) | (value & writeMask)
        r &= ~clearMask
        registers[register] = r
    }

    /// Reads `size` (1, 2 or 4) bytes at `offset`; unaligned or out-of-range reads return all ones.
    public func read(offset: Int, size: Int) -> UInt32 {
        guard let (register, shift) = Self.locate(offset: offset, size: size) else {
            return UInt32(truncatingIfNeeded: Self.allOnes(size))
        }
        return (registers[register] >> shift) & UInt32(truncatingIfNeeded: Self.allOnes(size))
    }

    /// Writes the low `size` (1, 2 or 4) bytes of `value` at `offset`; unaligned
    /// or out-of-range writes are ignored.
    public mutating func write(offset: Int, size: Int, value: UInt32) {
        guard let (register, shift) = Self.locate(offset: offset, size: size) else { return }
        let enables = UInt8(truncatingIfNeeded: ((1 << size) - 1) << (shift / 8))
        write(register: register, value: value << shift, byteEnables: enables)
    }

    static func locate(offset: Int, size: Int) -> (register: Int, shift: UInt32)? {
        guard size == 1 || size == 2 || size == 4 else { return nil }
        guard offset >= 0, offset % size == 0, offset + size <= Self.size else { return nil }
        return (offset / 4, UInt32(offset % 4) * 8)
    }

    static func laneMask(_ byteEnables: UInt8) -> UInt32 {
        var mask: UInt32 = 0
        for lane in 0..<4 where byteEnables & (1 << lane) != 0 { mask |= 0xFF << (8 * UInt32(lane)) }
        return mask
    }

    /// All ones for an access of `size` bytes (up to 4).
    static func allOnes(_ size: Int) -> UInt64 {
        size >= 4 ? 0xFFFF_FFFF : (UInt64(1) << (8 * UInt64(max(size, 0)))) - 1
    }

    // MARK: Device-side access (no masks)

    /// Sets bytes `offset..<offset+bytes.count` as the device (not the guest)
    /// would: read-only fields included. Bytes past 0xFF are dropped.
    mutating func poke(offset: Int, bytes: [UInt8]) {
        for (i, byte) in bytes.enumerated() {
            let at = offset + i
            guard at >= 0, at < Self.size else { continue }
            let shift = UInt32(at % 4) * 8
            registers[at / 4] = (registers[at / 4] & ~(0xFF << shift)) | UInt32(byte) << shift
        }
    }

    /// Makes the bits of `mask` (one byte per offset) writable by software.
    mutating func allowWrites(offset: Int, mask: [UInt8]) {
        for (i, byte) in mask.enumerated() {
            let at = offset + i
            guard at >= 0, at < Self.size else { continue }
            writable[at / 4] |= UInt32(byte) << (UInt32(at % 4) * 8)
        }
    }

    // MARK: Header fields

    /// The vendor ID (0x00).
    public var vendorID: UInt16 { UInt16(truncatingIfNeeded: registers[0]) }
    /// The device ID (0x02).
    public var deviceID: UInt16 { UInt16(truncatingIfNeeded: registers[0] >> 16) }
    /// The class code (0x09-0x0B).
    public var classCode: PCIClassCode {
        let r = registers[2]
        return PCIClassCode(
            baseClass: UInt8(truncatingIfNeeded: r >> 24), subclass: UInt8(truncatingIfNeeded: r >> 16),
            programmingInterface: UInt8(truncatingIfNeeded: r >> 8))
    }
    /// The command register (0x04) as the guest last wrote it.
    public var command: PCICommand {
        get { PCICommand(rawValue: UInt16(truncatingIfNeeded: registers[1])) }
        set {
            let bits = UInt32(newValue.intersection(.writable).rawValue)
            registers[1] = (registers[1] & 0xFFFF_0000) | bits
        }
    }
    /// The status register (0x06).
    public var status: UInt16 { UInt16(truncatingIfNeeded: registers[1] >> 16) }

    /// Sets status bits from the device side: an error bit (which the guest
    /// then clears by writing 1) or the interrupt status bit.
    public mutating func setStatusBits(_ bits: UInt16) { registers[1] |= UInt32(bits) << 16 }
    /// Clears status bits from the device side (e.g. the interrupt status bit on deassert).
    public mutating func clearStatusBits(_ bits: UInt16) { registers[1] &= ~(UInt32(bits) << 16) }
    /// The interrupt line register (0x3C), which software writes and the device ignores.
    public var interruptLine: UInt8 { UInt8(truncatingIfNeeded: registers[15]) }

    // MARK: Base address registers

    /// Describes BAR `index` as `bar`. The address starts at 0; the type bits
    /// and the writable mask (the address bits at or above the size) are set,
    /// which is all hardware-exact sizing needs. A 64-bit BAR also claims
    /// register `index + 1`.
    public mutating func setBAR(_ index: Int, _ bar: PCIBar) throws(PCIError) {
        guard index >= 0, index + bar.registerCount <= 6 else { throw .invalidBARIndex(index) }
        guard bar.hasValidSize else { throw .invalidBARSize(index: index, size: bar.size) }
        for i in index..<(index + bar.registerCount) where barSlots[i] != .unused { throw .barInUse(i) }
        let register = Self.firstBAROffset / 4 + index
        // The address bits below the size read as zero; so do bits 3:0
        // (memory) or 1:0 (I/O), which hold the type.
        let sizeMask = ~(bar.size - 1)
        switch bar {
        case .memory32:
            writable[register] = UInt32(truncatingIfNeeded: sizeMask) & 0xFFFF_FFF0
        case .memory64:
            writable[register] = UInt32(truncatingIfNeeded: sizeMask) & 0xFFFF_FFF0
            writable[register + 1] = UInt32(truncatingIfNeeded: sizeMask >> 32)
            registers[register + 1] = 0
            barSlots[index + 1] = .upperHalf(of: index)
        case .io:
            // Bits 31:16 hardwired to zero: an x86 has 64 KiB of ports.
            writable[register] = UInt32(truncatingIfNeeded: sizeMask) & 0x0000_FFFC
        }
        registers[register] = bar.typeBits
        barSlots[index] = .bar(bar)
    }

    /// The BAR described at `index`, or nil (also for the upper half of a 64-bit BAR).
    public func bar(_ index: Int) -> PCIBar? {
        guard index >= 0, index < 6, case .bar(let b) = barSlots[index] else { return nil }
        return b
    }

    /// The address BAR `index` holds now, whether or not it decodes. While a
    /// driver sizes the BAR this is the size mask, as on hardware.
    public func barAddress(_ index: Int) -> UInt64? {
        guard let bar = bar(index) else { return nil }
        let register = Self.firstBAROffset / 4 + index
        switch bar {
        case .memory32: return UInt64(registers[register] & 0xFFFF_FFF0)
        case .memory64:
            return UInt64(registers[register] & 0xFFFF_FFF0) | UInt64(registers[register + 1]) << 32
        case .io: return UInt64(registers[register] & 0xFFFF_FFFC)
        }
    }

    /// Programs BAR `index` to `address`, as firmware would (used by `PCIBarAllocator`).
    /// The address must be aligned to the BAR's size and fit its kind.
    public mutating func setBARAddress(_ index: Int, _ address: UInt64) throws(PCIError) {
        guard let bar = bar(index) else { throw .noSuchBAR(index) }
        guard address & (bar.size - 1) == 0, address < bar.addressLimit,
            bar.addressLimit - address >= bar.size
        else { throw .invalidBARAddress(index: index, address: address) }
        let register = Self.firstBAROffset / 4 + index
        registers[register] = UInt32(truncatingIfNeeded: address) | bar.typeBits
        if bar.registerCount == 2 { registers[register + 1] = UInt32(truncatingIfNeeded: address >> 32) }
    }

    /// Where BAR `index` decodes now: nil unless it is described and the
    /// command register enables its address space.
    public func barMapping(_ index: Int) -> PCIBarMapping? {
        guard let bar = bar(index), let address = barAddress(index) else { return nil }
        let needed: PCICommand = bar.space == .memory ? .memorySpace : .ioSpace
        guard command.contains(needed) else { return nil }
        return PCIBarMapping(index: index, space: bar.space, address: address, size: bar.size)
    }

    /// The mappings of all six BARs (nil where nothing decodes).
    public func barMappings() -> [PCIBarMapping?] { (0..<6).map { barMapping($0) } }
}
