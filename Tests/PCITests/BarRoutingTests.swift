// BarRoutingTests.swift: BAR allocation in the MMIO hole (what firmware would
// do, PCI Local Bus Specification 3.0 §6.2.5.1: naturally aligned), BAR moves
// reported to the machine as a driver sizes and reprograms BARs, and accesses
// routed to whichever BAR decodes them now.

import Devices
import PCI
import Testing

@Suite("PCI BAR allocation and routing")
struct BarRoutingTests {
    /// The window skvm's machine uses: 0xC000_0000 up to the virtio-mmio devices at 0xD000_0000.
    static let memoryWindow: Range<UInt64> = 0xC000_0000..<0xD000_0000
    static let ioWindow: Range<UInt64> = 0xC000..<0x1_0000

    /// An endpoint with BAR0 mem32 16 KiB, BAR2 mem64 1 MiB, BAR4 I/O 32 bytes, assigned.
    static func assignedSpace(_ allocator: inout PCIBarAllocator) throws -> PCIConfigurationSpace {
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x4000))
        try s.setBAR(2, .memory64(size: 0x10_0000))
        try s.setBAR(4, .io(size: 0x20))
        try allocator.assign(&s)
        return s
    }

    @Test("the allocator places BARs naturally aligned from the window's base and enables decoding")
    func allocation() throws {
        var allocator = PCIBarAllocator(memoryWindow: Self.memoryWindow, ioWindow: Self.ioWindow)
        let s = try Self.assignedSpace(&allocator)
        #expect(s.barAddress(0) == 0xC000_0000)
        #expect(s.barAddress(2) == 0xC010_0000)
        #expect(s.barAddress(4) == 0xC000)
        #expect(s.read(offset: 0x10, size: 4) == 0xC000_0000)
        #expect(s.read(offset: 0x18, size: 4) == 0xC010_0004)
        #expect(s.read(offset: 0x1C, size: 4) == 0)
        #expect(s.read(offset: 0x20, size: 4) == 0xC001)
        #expect(s.command == [.memorySpace, .ioSpace])
        #expect(allocator.nextMemory == 0xC020_0000 && allocator.nextIO == 0xC020)
        // A second device continues after the first; small memory BARs still get a page.
        var t = endpointSpace()
        try t.setBAR(0, .memory32(size: 0x10))
        try t.setBAR(1, .memory32(size: 0x10))
        try allocator.assign(&t, enableDecoding: false)
        #expect(t.barAddress(0) == 0xC020_0000 && t.barAddress(1) == 0xC020_1000)
        #expect(t.command == [])
    }

    @Test("an allocation that does not fit fails and changes nothing")
    func exhaustion() throws {
        var allocator = PCIBarAllocator(memoryWindow: 0xC000_0000..<0xC000_8000)
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x4000))
        try s.setBAR(1, .memory32(size: 0x8000))  // aligned to 0x8000: would need 0xC000_8000..0xC001_0000
        let before = s
        #expect(throws: PCIError.windowExhausted(space: .memory, size: 0x8000)) { try allocator.assign(&s) }
        #expect(s == before && allocator.nextMemory == 0xC000_0000)
        var io = endpointSpace()
        try io.setBAR(0, .io(size: 4))
        #expect(throws: PCIError.windowExhausted(space: .io, size: 4)) { try allocator.assign(&io) }
        // A window at the very top of the address space must not overflow.
        var top = PCIBarAllocator(memoryWindow: 0xFFFF_FFFF_FFFF_F000..<UInt64.max)
        #expect(throws: PCIError.windowExhausted(space: .memory, size: 0x2000)) {
            _ = try top.allocate(.memory64(size: 0x2000))
        }
        // A 32-bit BAR cannot go above 4 GiB even if the window allows it.
        var high = PCIBarAllocator(memoryWindow: 0x1_0000_0000..<0x2_0000_0000)
        #expect(throws: PCIError.windowExhausted(space: .memory, size: 0x1000)) {
            _ = try high.allocate(.memory32(size: 0x1000))
        }
        #expect(try high.allocate(.memory64(size: 0x1000)) == 0x1_0000_0000)
    }

    /// A bridge with one assigned device in slot 1 and a listener.
    struct Machine {
        let listener = RecordingListener()
        let bridge: PCIHostBridge
        let bar0 = ProbeDevice("bar0", tag: 0x1000_0000)
        let bar2 = ProbeDevice("bar2", tag: 0x2000_0000)
        let bar4 = ProbeDevice("bar4", tag: 0x4000_0000)
        let deviceMoves = RecordingListener()
        var ports: ConfigPorts { ConfigPorts(bridge: bridge) }

        init() throws {
            bridge = PCIHostBridge(listener: listener)
            var allocator = PCIBarAllocator(memoryWindow: BarRoutingTests.memoryWindow, ioWindow: BarRoutingTests.ioWindow)
            let space = try BarRoutingTests.assignedSpace(&allocator)
            let moves = deviceMoves
            let device = PCIFunction(
                name: "ep", configuration: try PCIConfiguration(space), barHandlers: [0: bar0, 2: bar2, 4: bar4],
                onBarMoved: { moves.barMoved(slot: -1, index: $0, from: $1, to: $2) })
            try bridge.register(device, slot: 1)
        }
    }

    static let bar0 = PCIBarMapping(index: 0, space: .memory, address: 0xC000_0000, size: 0x4000)
    static let bar2 = PCIBarMapping(index: 2, space: .memory, address: 0xC010_0000, size: 0x10_0000)
    static let bar4 = PCIBarMapping(index: 4, space: .io, address: 0xC000, size: 0x20)

    @Test("registration reports the assigned BARs as moves from nowhere, and the bridge knows them")
    func initialMappings() throws {
        let m = try Machine()
        #expect(m.listener.take() == [
            .init(slot: 1, index: 0, from: nil, to: Self.bar0),
            .init(slot: 1, index: 2, from: nil, to: Self.bar2),
            .init(slot: 1, index: 4, from: nil, to: Self.bar4),
        ])
        #expect(m.deviceMoves.take().map(\.index) == [0, 2, 4])
        #expect(m.bridge.barMapping(slot: 1, index: 2) == Self.bar2)
        #expect(m.bridge.barMapping(slot: 1, index: 1) == nil)
        #expect(m.bridge.barMappings().map(\.mapping) == [Self.bar0, Self.bar2, Self.bar4])
    }

    @Test("Linux-style sizing: decode off, all ones, read the mask, restore, decode on")
    func sizingReportsNoBogusMapping() throws {
        let m = try Machine()
        _ = m.listener.take()
        let command = m.ports.read(device: 1, offset: 0x04, size: 2)
        m.ports.write(device: 1, offset: 0x04, size: 2, value: command & ~0x3)
        #expect(m.listener.take() == [
            .init(slot: 1, index: 0, from: Self.bar0, to: nil),
            .init(slot: 1, index: 2, from: Self.bar2, to: nil),
            .init(slot: 1, index: 4, from: Self.bar4, to: nil),
        ])
        for offset in stride(from: 0x10, through: 0x24, by: 4) {
            let original = m.ports.read(device: 1, offset: offset)
            m.ports.write(device: 1, offset: offset, value: 0xFFFF_FFFF)
            let mask = m.ports.read(device: 1, offset: offset)
            m.ports.write(device: 1, offset: offset, value: original)
            let expected: [Int: UInt64] = [0x10: 0xFFFF_C000, 0x18: 0xFFF0_0004, 0x1C: 0xFFFF_FFFF, 0x20: 0x0000_FFE1]
            #expect(mask == expected[offset, default: 0], "BAR register 0x\(String(offset, radix: 16))")
        }
        #expect(m.listener.take() == [])  // nothing decoded while the masks were in place
        m.ports.write(device: 1, offset: 0x04, size: 2, value: command)
        #expect(m.listener.take().map(\.to) == [Self.bar0, Self.bar2, Self.bar4])
    }

    @Test("reprogramming a decoding BAR reports each step, including a 64-bit BAR's half-written state")
    func moves() throws {
        let m = try Machine()
        _ = m.listener.take()
        _ = m.deviceMoves.take()
        m.ports.write(device: 1, offset: 0x10, value: 0xC800_0000)
        let moved0 = PCIBarMapping(index: 0, space: .memory, address: 0xC800_0000, size: 0x4000)
        #expect(m.listener.take() == [.init(slot: 1, index: 0, from: Self.bar0, to: moved0)])
        #expect(m.deviceMoves.take() == [.init(slot: -1, index: 0, from: Self.bar0, to: moved0)])
        // Writing the same address again is not a move.
        m.ports.write(device: 1, offset: 0x10, value: 0xC800_0000)
        #expect(m.listener.take() == [])
        m.ports.write(device: 1, offset: 0x18, value: 0x0020_0000)
        m.ports.write(device: 1, offset: 0x1C, value: 0x0000_0001)
        let half = PCIBarMapping(index: 2, space: .memory, address: 0x0020_0000, size: 0x10_0000)
        let full = PCIBarMapping(index: 2, space: .memory, address: 0x1_0020_0000, size: 0x10_0000)
        #expect(m.listener.take() == [
            .init(slot: 1, index: 2, from: Self.bar2, to: half),
            .init(slot: 1, index: 2, from: half, to: full),
        ])
        #expect(m.bridge.barMapping(slot: 1, index: 2) == full)
        // Writes to non-BAR registers never report moves.
        m.ports.write(device: 1, offset: 0x3C, size: 1, value: 5)
        m.ports.write(device: 1, offset: 0x0C, size: 1, value: 0x10)
        #expect(m.listener.take() == [])
    }

    @Test("a window over the MMIO hole routes accesses to the BAR that decodes them, and follows moves")
    func windowRouting() throws {
        let m = try Machine()
        let window = PCIBarWindow(bridge: m.bridge, space: .memory, base: 0xC000_0000)
        let ioWindow = PCIBarWindow(bridge: m.bridge, space: .io, base: 0xC000)
        #expect(window.read(offset: 0x10, size: 4) == 0x1000_0010)
        #expect(window.read(offset: 0x10_0000 + 0x44, size: 2) == 0x2000_0044)
        #expect(ioWindow.read(offset: 0x1F, size: 1) == 0x4000_001F)
        #expect(ioWindow.read(offset: 0x20, size: 1) == 0xFF)
        window.write(offset: 0x3FFC, size: 4, value: 0xAB)
        #expect(m.bar0.takeWrites() == [.init(offset: 0x3FFC, size: 4, value: 0xAB)])
        // Straddling a BAR's end, or in a gap: all ones, no write.
        #expect(window.read(offset: 0x3FFE, size: 4) == 0xFFFF_FFFF)
        #expect(window.read(offset: 0x4000, size: 4) == 0xFFFF_FFFF)
        window.write(offset: 0x3FFE, size: 4, value: 1)
        #expect(m.bar0.takeWrites() == [])
        // Move BAR0; the old range goes dark, the new one answers.
        m.ports.write(device: 1, offset: 0x10, value: 0xC000_8000)
        #expect(window.read(offset: 0x10, size: 4) == 0xFFFF_FFFF)
        #expect(window.read(offset: 0x8010, size: 4) == 0x1000_0010)
        // Memory decode off: nothing answers.
        m.ports.write(device: 1, offset: 0x04, size: 2, value: 0x0001)
        #expect(window.read(offset: 0x8010, size: 4) == 0xFFFF_FFFF)
        #expect(ioWindow.read(offset: 0, size: 4) == 0x4000_0000)
        // The address arithmetic cannot wrap.
        let top = PCIBarWindow(bridge: m.bridge, space: .memory, base: UInt64.max)
        #expect(top.read(offset: 2, size: 4) == 0xFFFF_FFFF)
        #expect(m.bridge.resolve(space: .memory, address: UInt64.max, size: 8) == nil)
    }

    @Test("a BAR region map dispatches by offset and refuses accesses that cross a region's end")
    func regionMap() throws {
        let a = ProbeDevice("a", tag: 0xA000)
        let b = ProbeDevice("b", tag: 0xB000)
        let map = try PCIBarRegionMap(name: "bar", regions: [
            .init(offset: 0x1000, length: 0x100, device: b),
            .init(offset: 0, length: 0x38, device: a),
        ])
        #expect(map.read(offset: 0x34, size: 4) == 0xA034)
        #expect(map.read(offset: 0x36, size: 4) == 0xFFFF_FFFF)
        #expect(map.read(offset: 0x38, size: 1) == 0xFF)
        #expect(map.read(offset: 0x10FF, size: 1) == 0xB0FF)
        map.write(offset: 0x1004, size: 2, value: 0x55)
        map.write(offset: 0x10FE, size: 4, value: 0x66)
        #expect(b.takeWrites() == [.init(offset: 4, size: 2, value: 0x55)])
        #expect(throws: BusError.self) {
            try PCIBarRegionMap(name: "bad", regions: [
                .init(offset: 0, length: 0x10, device: a), .init(offset: 0x8, length: 0x10, device: b),
            ])
        }
    }
}
