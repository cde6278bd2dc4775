// MachineMap.swift: every fixed guest-physical address skvm uses, in one place.
//
// docs/memory-map.md draws this map; keep the two in step. The layout follows
// the PC's, because every x86 kernel expects it: RAM from 0 with the legacy
// hole below 1 MiB reserved for the BIOS era, kernels at 1 MiB, and a hole
// below 4 GiB where devices live (so RAM above 3 GiB moves above 4 GiB).

import Memory

/// The x86-64 machine layout.
public enum MachineMap {
    /// Where a flat real-mode binary is loaded and entered (CS:IP = 0000:1000).
    public static let flatLoadAddress = GuestAddress(0x1000)
    /// The stack pointer a flat binary starts with (grows down below its code).
    public static let flatStackPointer: UInt64 = 0x1000
    // Linux (64-bit boot protocol) boot data, all below 1 MiB.
    /// The boot GDT: null, null, 64-bit code (selector 0x10 = __BOOT_CS), data (0x18 = __BOOT_DS).
    public static let linuxGDT = GuestAddress(0x500)
    /// `struct boot_params`, the zero page; its address goes in RSI.
    public static let zeroPage = GuestAddress(0x7000)
    /// The boot stack pointer (grows down below the page tables).
    public static let linuxBootStack: UInt64 = 0x8FF0
    /// Identity page tables: PML4, PDPT and four PDs (6 pages, up to 0xF000).
    public static let pageTables = GuestAddress(0x9000)
    /// The kernel command line.
    public static let linuxCommandLine = GuestAddress(0x2_0000)
    /// The MP floating pointer and configuration table (Intel MP spec 1.4,
    /// found by Linux's scan of the last KiB of base memory).
    public static let mpTable = GuestAddress(0x9_FC00)
    /// Where a Linux kernel without a preferred address (boot protocol < 2.10) is loaded.
    public static let linuxDefaultLoadAddress: UInt64 = 0x100_0000
    /// The local APIC and IOAPIC, at their architectural addresses.
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000

    /// Start of the area below 640 KiB that is reserved on a PC (EBDA, MP
    /// floating pointer at 0x9FC00) up to 1 MiB (VGA, option ROMs, BIOS).
    public static let lowReservedStart: UInt64 = 0x9_FC00
    /// 1 MiB: where kernels are loaded, above the legacy hole.
    public static let highMemoryStart: UInt64 = 0x10_0000
    /// The lowest address boot data (GDT, multiboot information) may use:
    /// page 0 holds the real-mode IVT and BIOS data area.
    public static let bootDataStart: UInt64 = 0x1000
    /// RAM below 4 GiB ends here at the latest; [3 GiB, 4 GiB) is the MMIO hole.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    /// 4 GiB: where RAM continues when the guest has more than 3 GiB.
    public static let highRAMStart: UInt64 = 0x1_0000_0000
    /// PCI BARs are assigned from here (the first 256 MiB of the MMIO hole).
    public static let pciMemoryWindow: Range<UInt64> = 0xC000_0000..<0xD000_0000
    /// virtio-mmio windows (virtio 1.2 §4.2), one 4 KiB page each from here,
    /// just above the PCI window: device n is at base + n * stride.
    public static let virtioMMIOBase: UInt64 = 0xD000_0000
    public static let virtioMMIOStride: UInt64 = 0x1000
    /// At most this many virtio-mmio devices (their interrupt lines are IOAPIC pins 16-23).
    public static let virtioMMIOSlots = 8
    /// Device n's interrupt: IOAPIC pin 16 + n, level-triggered and active high
    /// (listed so in the MP table). Pins above 15 have no 8259 behind them and
    /// no ISA device claims them, so the lines are the devices' own.
    public static let virtioMMIOFirstIRQ: UInt32 = 16

    /// Device n's window.
    public static func virtioMMIOAddress(_ n: Int) -> UInt64 { virtioMMIOBase + UInt64(n) * virtioMMIOStride }

    /// Three pages KVM needs for VT-x real-mode emulation (KVM_SET_TSS_ADDR), in the hole.
    public static let kvmTSSAddress = GuestAddress(0xFFFB_D000)
    /// One page for VT-x's identity page table (KVM_SET_IDENTITY_MAP_ADDR), just below the TSS.
    public static let kvmIdentityMapAddress = GuestAddress(0xFFFB_C000)

    // Legacy I/O ports.
    public static let com1Port: UInt64 = 0x3F8
    public static let com1IRQ: UInt32 = 4
    public static let i8042Port: UInt64 = 0x60
    public static let debugExitPort: UInt64 = 0xF4
    public static let cmosPort: UInt64 = 0x70
    /// QEMU's fw_cfg: selector 0x510, data 0x511.
    public static let firmwareConfigPort: UInt64 = 0x510
    /// POST-code port: Linux writes it as an I/O delay (io_delay); skvm absorbs it silently.
    public static let postCodePort: UInt64 = 0x80

    /// The guest RAM ranges for `size` bytes of memory: one range below the
    /// MMIO hole, and the rest from 4 GiB.
    public static func ramLayout(size: UInt64) -> [GuestRange] {
        let low = min(size, mmioHoleStart)
        var ranges: [GuestRange] = []
        if let r = GuestRange(start: GuestAddress(0), length: low) { ranges.append(r) }
        if size > low, let r = GuestRange(start: GuestAddress(highRAMStart), length: size - low) { ranges.append(r) }
        return ranges
    }

    /// The memory map a firmware would report (E820 and multiboot use the same types).
    public static func memoryMap(size: UInt64) -> [MemoryMapEntry] {
        let low = min(size, mmioHoleStart)
        var map: [MemoryMapEntry] = [
            MemoryMapEntry(base: 0, length: min(lowReservedStart, low), type: .ram)
        ]
        if low > lowReservedStart {
            map.append(MemoryMapEntry(base: lowReservedStart, length: min(highMemoryStart, low) - lowReservedStart, type: .reserved))
        }
        if low > highMemoryStart {
            map.append(MemoryMapEntry(base: highMemoryStart, length: low - highMemoryStart, type: .ram))
        }
        if size > low {
            map.append(MemoryMapEntry(base: highRAMStart, length: size - low, type: .ram))
        }
        return map
    }
}

/// One entry of a firmware memory map.
public struct MemoryMapEntry: Equatable, Sendable {
    /// E820 types (ACPI spec, "System Address Map Interfaces").
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
    }
    public let base: UInt64
    public let length: UInt64
    public let type: Kind

    public init(base: UInt64, length: UInt64, type: Kind) {
        self.base = base
        self.length = length
        self.type = type
    }
}
