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
