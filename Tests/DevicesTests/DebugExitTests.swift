// DebugExitTests.swift: QEMU's isa-debug-exit (hw/misc/debugexit.c): a write
// of v at the base port asks the VMM to exit with (v << 1) | 1; reads return
// all ones, as an ISA bus does for an absent register.

import Devices
import Testing
import TestSupport

@Suite("DebugExit")
struct DebugExitTests {
    @Test("1-, 2- and 4-byte writes request debugExit with the full value",
          arguments: [(1, 0x00), (1, 0x7F), (1, 0xFF), (2, 0x1234), (2, 0xFFFF), (4, 0xDEAD_BEEF), (4, 0)] as [(Int, UInt64)])
    func writes(_ size: Int, _ value: UInt64) {
        let control = RecordingMachineControl()
        let device = DebugExit(control: control)
        device.write(offset: 0, size: size, value: value)
        #expect(control.requests == [.debugExit(UInt32(value))])
    }

    @Test("writes at other offsets do nothing")
    func otherOffsets() {
        let control = RecordingMachineControl()
        let device = DebugExit(control: control)
        device.write(offset: 1, size: 1, value: 1)
        device.write(offset: 3, size: 1, value: 1)
        #expect(control.requests.isEmpty)
    }

    @Test("reads return all ones for the access width and request nothing", arguments: [1, 2, 4, 8])
    func reads(_ size: Int) {
        let control = RecordingMachineControl()
        let device = DebugExit(control: control)
        #expect(device.read(offset: 0, size: size) == allOnes(size))
        #expect(control.requests.isEmpty)
        #expect(device.name == "debug-exit")
    }

    @Test("allOnes", arguments: [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, UInt64.max)] as [(Int, UInt64)])
    func allOnesValues(_ size: Int, _ expected: UInt64) {
        #expect(allOnes(size) == expected)
    }
}

@Suite("fw_cfg (QEMU docs/specs/fw_cfg.rst, and QEMU 7.2's combined port behaviour)")
struct FirmwareConfigTests {
    static func device(cmdline: String? = nil) -> FirmwareConfig {
        FirmwareConfig(items: FirmwareConfig.standardItems(ramSize: 128 << 20, cpus: 2, linuxCommandLine: cmdline))
    }

    static func readItem(_ d: FirmwareConfig, key: UInt16, count: Int) -> [UInt8] {
        d.write(offset: 0, size: 2, value: UInt64(key))
        return (0..<count).map { _ in UInt8(d.read(offset: 1, size: 1)) }
    }

    @Test("signature, ID, RAM size, CPUs; unknown keys and reads past the end are zeros")
    func items() {
        let d = Self.device()
        #expect(Self.readItem(d, key: 0x00, count: 4) == Array("QEMU".utf8))
        #expect(Self.readItem(d, key: 0x01, count: 4) == [1, 0, 0, 0])
        #expect(Self.readItem(d, key: 0x03, count: 8) == [0, 0, 0, 8, 0, 0, 0, 0])  // 128 MiB
        #expect(Self.readItem(d, key: 0x05, count: 2) == [2, 0])
        #expect(Self.readItem(d, key: 0x0F, count: 2) == [2, 0])
        #expect(Self.readItem(d, key: 0x7FFF, count: 8) == [0, 0, 0, 0, 0, 0, 0, 0])
        #expect(Self.readItem(d, key: 0x00, count: 6) == Array("QEMU".utf8) + [0, 0])
        #expect(Self.readItem(d, key: 0x8002, count: 4) == [1, 0, 0, 0])
    }

    @Test("the command line is there for Linux kernels only")
    func commandLine() {
        #expect(Self.readItem(Self.device(), key: 0x14, count: 4) == [0, 0, 0, 0])
        let linux = Self.device(cmdline: "console=ttyS0")
        #expect(Self.readItem(linux, key: 0x14, count: 4) == [14, 0, 0, 0])
        #expect(Self.readItem(linux, key: 0x15, count: 14) == Array("console=ttyS0".utf8) + [0])
    }

    @Test("odd accesses behave as QEMU's: bit 14 ignored, 1- and 4-byte selector writes ignored, one byte per read")
    func oddAccesses() {
        let d = Self.device()
        d.write(offset: 0, size: 2, value: 0x4005)  // write-channel bit: reads key 5
        #expect(d.read(offset: 1, size: 1) == 2)
        d.write(offset: 0, size: 2, value: 0x0000)
        d.write(offset: 0, size: 1, value: 0x05)    // not a selection
        d.write(offset: 0, size: 4, value: 0x05)    // not a selection
        #expect(d.read(offset: 1, size: 1) == UInt64(UInt8(ascii: "Q")))
        #expect(d.read(offset: 1, size: 2) == 0xFF45)       // "E" and ones
        #expect(d.read(offset: 0, size: 1) == UInt64(UInt8(ascii: "M")))  // the selector port reads data too
        d.write(offset: 1, size: 2, value: 0x0001)  // a 16-bit write to the data port selects as well
        #expect(d.read(offset: 1, size: 1) == 1)
    }
}

@Suite("pc-testdev (QEMU hw/misc/pc-testdev.c)")
struct TestDeviceTests {
    final class Host: TestDeviceHost, @unchecked Sendable {
        var irqs: [(UInt32, Bool)] = []
        var flushed: [UInt64] = []
        func setIRQ(_ irq: UInt32, level: Bool) { irqs.append((irq, level)) }
        func flushPage(_ address: UInt64) { flushed.append(address) }
    }

    @Test("the scratch register by byte lanes, through 0xe0 and 0xe8; past its end reads ones")
    func scratch() {
        let host = Host()
        let d = TestDevicePorts(host: host)
        d.write(offset: 0, size: 4, value: 0x1234_5678)
        #expect(d.read(offset: 0, size: 4) == 0x1234_5678)
        #expect(d.read(offset: 2, size: 2) == 0x1234)
        #expect(d.read(offset: 9, size: 1) == 0x56)
        d.write(offset: 9, size: 1, value: 0xAB)
        #expect(d.read(offset: 0, size: 4) == 0x1234_AB78)
        #expect(d.read(offset: 9, size: 4) == 0xFF12_34AB)  // one byte past the register
        #expect(d.read(offset: 11, size: 2) == 0xFF12)
    }

    @Test("flush-page takes 4-byte writes, page aligned; IRQ lines take 1-byte writes")
    func flushAndIRQ() {
        let host = Host()
        TestDevicePorts(host: host).write(offset: 4, size: 4, value: 0x20_0123)
        TestDevicePorts(host: host).write(offset: 4, size: 2, value: 0x30_0000)
        #expect(host.flushed == [0x20_0000])
        let lines = TestDeviceIRQLines(host: host)
        lines.write(offset: 5, size: 1, value: 1)
        lines.write(offset: 5, size: 1, value: 0)
        lines.write(offset: 6, size: 2, value: 1)   // wrong width: ignored
        lines.write(offset: 30, size: 1, value: 1)  // past line 23: ignored
        #expect(host.irqs.map { "\($0.0):\($0.1)" } == ["5:true", "5:false"])
    }

    @Test("the 64 KiB scratch memory")
    func memory() {
        let m = TestDeviceMemory()
        m.write(offset: 0x100, size: 4, value: 0xDEAD_BEEF)
        #expect(m.read(offset: 0x102, size: 2) == 0xDEAD)
        m.write(offset: 0xFFFC, size: 4, value: 0xCAFE_F00D)
        #expect(m.read(offset: 0xFFFC, size: 4) == 0xCAFE_F00D)
    }
}
