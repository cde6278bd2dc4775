// FirmwareConfig.swift: QEMU's fw_cfg device, the traditional I/O-port interface
// (QEMU docs/specs/fw_cfg.rst).
//
// Firmware and test kernels written for QEMU read facts about the machine
// from it: write a 16-bit item key to the selector port (0x510), then read the
// item's bytes one at a time from the data port (0x511). Selecting an item
// rewinds to its first byte; reads past the end, and reads of items that do
// not exist, return 0. Writes to the data port are ignored (the spec
// deprecates them). The DMA interface is not offered (the ID item says so).
//
// The two ports behave as QEMU 7.2's combined region does (hw/nvram/fw_cfg.c,
// fw_cfg_comb_read/write), so even odd accesses agree: any read of either port
// returns the next data byte (wider reads fill the upper bytes with ones); a
// 16-bit write to either port selects, other writes do nothing. In the key,
// bit 14 (the write channel) is ignored and bit 15 picks the architecture's
// own items (x86: 0x8002, FW_CFG_IRQ0_OVERRIDE, which QEMU sets to 1 under KVM).

import Synchronization

/// The fw_cfg selector and data ports.
public final class FirmwareConfig: BusDevice {
    public let name = "fw_cfg"

    /// Well-known item keys (fw_cfg.rst, "Selector Register"; include/standard-headers/linux/qemu_fw_cfg.h).
    public enum Key: UInt16 {
        case signature = 0x00     // "QEMU"
        case id = 0x01            // feature bits: 1 = traditional interface, 2 = DMA
        case ramSize = 0x03       // u64
        case cpuCount = 0x05      // u16: CPUs at boot
        case maxCPUs = 0x0F       // u16
        case irq0Override = 0x8002   // x86-specific (bit 15): u32, 1
        case commandLineSize = 0x14  // u32, including the NUL
        case commandLineData = 0x15  // the bytes, NUL-terminated
    }

    /// The offset of the data port from the selector port.
    public static let dataPortOffset: UInt64 = 1

    private struct State {
        var selected: UInt16 = 0
        var offset = 0
    }
    private let state = Mutex(State())
    private let items: [UInt16: [UInt8]]

    /// A device serving `items` (key to bytes).
    public init(items: [UInt16: [UInt8]]) {
        self.items = items
    }

    /// The items QEMU's x86 machines provide for a machine with `ramSize`
    /// bytes and `cpus` vCPUs. `linuxCommandLine` is given for Linux kernels
    /// only: QEMU adds the command-line items on its Linux path alone
    /// (hw/i386/x86.c, x86_load_linux returns for multiboot kernels before it).
    public static func standardItems(ramSize: UInt64, cpus: Int, linuxCommandLine: String?) -> [UInt16: [UInt8]] {
        func le(_ v: UInt64, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }
        var items: [UInt16: [UInt8]] = [
            Key.signature.rawValue: Array("QEMU".utf8),
            Key.id.rawValue: le(1, 4),
            Key.ramSize.rawValue: le(ramSize, 8),
            Key.cpuCount.rawValue: le(UInt64(cpus), 2),
            Key.maxCPUs.rawValue: le(UInt64(cpus), 2),
            Key.irq0Override.rawValue: le(1, 4),
        ]
        if let linuxCommandLine {
            let cmdline = Array(linuxCommandLine.utf8) + [0]
            items[Key.commandLineSize.rawValue] = le(UInt64(cmdline.count), 4)
            items[Key.commandLineData.rawValue] = cmdline
        }
        return items
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset <= Self.dataPortOffset else { return allOnes(size) }
        return state.withLock { s in
            var byte: UInt8 = 0
            if let item = items[s.selected], s.offset < item.count { byte = item[s.offset] }
            if s.offset < Int.max { s.offset += 1 }
            // One data byte per access, whatever its width; the rest reads as ones.
            return (allOnes(size) & ~0xFF) | UInt64(byte)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset <= Self.dataPortOffset, size == 2 else { return }  // 1-byte data writes are deprecated; others invalid
        state.withLock { s in
            let key = UInt16(truncatingIfNeeded: value)
            s.selected = key & 0xBFFF  // drop the write-channel bit, keep the architecture bit
            s.offset = 0
        }
    }
}
