// TestDevice.swift: QEMU's pc-testdev (hw/misc/pc-testdev.c), for test kernels
// written against it (kvm-unit-tests and the like). Off unless --test-device.
//
//   ports 0xe0-0xe3   a 32-bit scratch register, any width, by byte lanes
//   ports 0xe4-0xe7   "flush page": a 4-byte write of a guest-physical address
//                     makes the host drop and re-create that page's mapping,
//                     so KVM must fault it in again (mprotect NONE, then RW)
//   ports 0xe8-0xeb   the same scratch register, accessed a byte at a time
//   ports 0x2000+n    a 1-byte write drives ISA IRQ line n (0-23) to !!value
//   MMIO 0xff000000   64 KiB of scratch memory (a separate device: TestDeviceMemory)

import Synchronization

/// What the test device needs from the machine.
public protocol TestDeviceHost: Sendable {
    /// Drives interrupt line `irq` (GSI) high or low.
    func setIRQ(_ irq: UInt32, level: Bool)
    /// Drops and re-creates the host mapping of the guest page at `address` (page-aligned).
    func flushPage(_ address: UInt64)
}

/// The pc-testdev port block at 0xe0 (12 ports).
public final class TestDevicePorts: BusDevice {
    public let name = "pc-testdev"
    public static let base: UInt64 = 0xE0
    public static let length: UInt64 = 12
    private let scratch = Mutex<UInt32>(0)
    private let host: any TestDeviceHost

    public init(host: any TestDeviceHost) { self.host = host }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0..<4, 8..<12:
            let lane = Int(offset & 3)
            let bytes = min(size, 4 - lane)
            let value = scratch.withLock { $0 } >> (8 * UInt32(lane))
            // Bytes past the register's end read as ones, as an unclaimed port does.
            return (UInt64(value) & allOnes(bytes)) | (allOnes(size) & ~allOnes(bytes))
        default:
            return allOnes(size)  // flush-page is write-only
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0..<4, 8..<12:
            let lane = UInt32(offset & 3)
            let bits = UInt32(min(size, 4 - Int(lane))) * 8
            let mask = (bits >= 32 ? UInt32.max : (UInt32(1) << bits) - 1) << (8 * lane)
            scratch.withLock { s in s = (s & ~mask) | ((UInt32(truncatingIfNeeded: value) << (8 * lane)) & mask) }
        case 4 where size == 4:
            host.flushPage(value & ~0xFFF)
        default:
            break  // other widths at the flush port are invalid in QEMU too
        }
    }
}

/// The pc-testdev IRQ lines at ports 0x2000-0x2017.
public final class TestDeviceIRQLines: BusDevice {
    public let name = "pc-testdev IRQ lines"
    public static let base: UInt64 = 0x2000
    public static let length: UInt64 = 24
    private let host: any TestDeviceHost

    public init(host: any TestDeviceHost) { self.host = host }

    public func read(offset: UInt64, size: Int) -> UInt64 { allOnes(size) }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < Self.length, size == 1 else { return }  // QEMU accepts 1-byte writes only
        host.setIRQ(UInt32(offset), level: value & 0xFF != 0)
    }
}

/// The pc-testdev scratch memory at MMIO 0xff000000 (64 KiB).
public final class TestDeviceMemory: BusDevice {
    public let name = "pc-testdev iomem"
    public static let base: UInt64 = 0xFF00_0000
    public static let length: UInt64 = 0x10000
    private let bytes = Mutex<[UInt8]>([UInt8](repeating: 0, count: Int(TestDeviceMemory.length)))

    public init() {}

    public func read(offset: UInt64, size: Int) -> UInt64 {
        bytes.withLock { b in
            var v: UInt64 = 0
            for i in 0..<size where Int(offset) + i < b.count { v |= UInt64(b[Int(offset) + i]) << (8 * UInt64(i)) }
            return v
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        bytes.withLock { b in
            for i in 0..<size where Int(offset) + i < b.count { b[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
    }
}
