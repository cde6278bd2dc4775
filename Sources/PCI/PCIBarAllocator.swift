// PCIBarAllocator.swift: the addresses firmware would give BARs, for guests
// that boot without firmware.
//
// PCI Local Bus Specification 3.0, §6.2.5.1: a BAR decodes a naturally aligned
// block (its address bits below the size are zero), so a BAR must be placed at
// a multiple of its size. On a PC the BIOS assigns every BAR during POST and
// enables decoding; skvm has no BIOS, so the machine runs this allocator over
// its devices before the first vCPU starts, and a guest (Linux, which keeps
// valid assignments it finds; or a test kernel) sees BARs already programmed.
// kvmtool's `pci_get_io_space_block` is the same bump allocator.
//
// The machine passes the windows (MachineMap's addresses: PCI cannot import
// Boot): memory from 0xC000_0000, below virtio-mmio at 0xD000_0000. Memory
// BARs get at least a page each, so no two BARs share a page.

/// Assigns BAR addresses in a memory window and an I/O window, bottom up.
public struct PCIBarAllocator: Equatable, Sendable {
    /// The smallest alignment given to memory BARs (one page).
    public static let minimumMemoryAlignment: UInt64 = 0x1000

    /// Where memory BARs go: [lowerBound, upperBound).
    public let memoryWindow: Range<UInt64>
    /// Where I/O BARs go (port numbers).
    public let ioWindow: Range<UInt64>
    /// The next free memory address.
    public private(set) var nextMemory: UInt64
    /// The next free port.
    public private(set) var nextIO: UInt64

    /// An allocator over `memoryWindow` and `ioWindow` (empty by default: no I/O BARs).
    public init(memoryWindow: Range<UInt64>, ioWindow: Range<UInt64> = 0..<0) {
        self.memoryWindow = memoryWindow
        self.ioWindow = ioWindow
        nextMemory = memoryWindow.lowerBound
        nextIO = ioWindow.lowerBound
    }

    /// Reserves a naturally aligned block for `bar` and returns its address.
    public mutating func allocate(_ bar: PCIBar) throws(PCIError) -> UInt64 {
        let size = bar.size
        guard bar.hasValidSize else { throw .invalidBARSize(index: -1, size: size) }
        switch bar.space {
        case .memory:
            let alignment = max(size, Self.minimumMemoryAlignment)
            guard let base = Self.place(size: size, alignment: alignment, next: nextMemory, in: memoryWindow),
                base + size <= bar.addressLimit
            else { throw .windowExhausted(space: .memory, size: size) }
            nextMemory = base + size
            return base
        case .io:
            guard let base = Self.place(size: size, alignment: size, next: nextIO, in: ioWindow) else {
                throw .windowExhausted(space: .io, size: size)
            }
            nextIO = base + size
            return base
        }
    }

    /// Programs every BAR of `space` (in index order) and, if `enableDecoding`,
    /// sets the command register's memory and I/O space bits for the spaces
    /// its BARs use, as a BIOS leaves a device. Bus mastering stays off: the
    /// driver turns it on. On failure neither the allocator nor `space` changes.
    public mutating func assign(_ space: inout PCIConfigurationSpace, enableDecoding: Bool = true) throws(PCIError) {
        var allocator = self
        var result = space
        var command = result.command
        for index in 0..<6 {
            guard let bar = result.bar(index) else { continue }
            let address = try allocator.allocate(bar)
            try result.setBARAddress(index, address)
            command.insert(bar.space == .memory ? .memorySpace : .ioSpace)
        }
        if enableDecoding { result.command = command }
        self = allocator
        space = result
    }

    /// The first address at or above `next`, aligned to `alignment`, where
    /// `size` bytes fit inside `window`; nil if none (or on overflow).
    private static func place(size: UInt64, alignment: UInt64, next: UInt64, in window: Range<UInt64>) -> UInt64? {
        let (bumped, overflow) = next.addingReportingOverflow(alignment - 1)
        guard !overflow else { return nil }
        let base = bumped & ~(alignment - 1)
        guard base >= window.lowerBound, base <= window.upperBound, size <= window.upperBound - base else { return nil }
        return base
    }
}
