// MSIXTests.swift: the MSI-X table, pending bit array, masking and the router
// (PCI Local Bus Specification 3.0, §6.8.2): exact table contents, the
// order of router calls, pending bits set while masked and delivered on
// unmask, function mask and enable, and hostile table accesses.

import Devices
import PCI
import Testing

/// A function with BAR0 (64 KiB): the MSI-X table at 0, the PBA at 0x8000.
struct MSIXFixture {
    let router = RecordingRouter()
    let table: MSIXTable
    let configuration: PCIConfiguration
    let capability: Int

    init(vectors: Int = 9) throws {
        var s = endpointSpace()
        try s.setBAR(0, .memory32(size: 0x1_0000))
        let cap = try MSIXCapability(vectorCount: vectors, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x8000)
        capability = try s.addMSIXCapability(cap)
        table = try MSIXTable(vectorCount: vectors, router: router)
        configuration = try PCIConfiguration(s, msix: table)
    }

    /// Writes message control (cap + 2) as a guest would, with a word write.
    func control(_ value: UInt16) { configuration.write(offset: capability + 2, size: 2, value: UInt32(value)) }
    /// Writes the command register.
    func command(_ c: PCICommand) { configuration.write(offset: 0x04, size: 2, value: UInt32(c.rawValue)) }
    /// Programs vector `v`'s address and data, with dword writes, leaving its mask bit alone.
    func program(_ v: Int, address: UInt64, data: UInt32) {
        table.write(offset: UInt64(v) * 16, size: 4, value: address & 0xFFFF_FFFF)
        table.write(offset: UInt64(v) * 16 + 4, size: 4, value: address >> 32)
        table.write(offset: UInt64(v) * 16 + 8, size: 4, value: UInt64(data))
    }
    /// Sets vector `v`'s vector control register.
    func mask(_ v: Int, _ masked: Bool) { table.write(offset: UInt64(v) * 16 + 12, size: 4, value: masked ? 1 : 0) }
    /// Enables MSI-X and bus mastering and forgets the router calls so far.
    func enable() {
        command([.memorySpace, .busMaster])
        control(0x8000)
        _ = router.take()
    }
}

@Suite("MSI-X")
struct MSIXTests {
    @Test("after reset every entry is masked with address 0 and data 0; DWORD and QWORD reads")
    func resetState() throws {
        let f = try MSIXFixture()
        for v in 0..<9 {
            #expect(f.table.read(offset: UInt64(v) * 16, size: 4) == 0)
            #expect(f.table.read(offset: UInt64(v) * 16 + 12, size: 4) == 1)
            #expect(f.table.read(offset: UInt64(v) * 16, size: 8) == 0)
            #expect(f.table.read(offset: UInt64(v) * 16 + 8, size: 8) == 0x1_0000_0000)
        }
        #expect(f.table.entry(0) == MSIXTableEntry())
        #expect(f.table.tableLength == 144 && f.table.pbaLength == 8)
        #expect(!f.table.isEnabled && !f.table.isFunctionMasked)
        #expect(f.router.take() == [])
    }

    @Test("entry writes store exact values and tell the router whenever the route changes")
    func programEntries() throws {
        let f = try MSIXFixture()
        f.enable()
        f.table.write(offset: 0x00, size: 4, value: 0xFEE0_1003)       // bits 1:0 are not stored
        f.table.write(offset: 0x04, size: 4, value: 0)                 // unchanged: no call
        f.table.write(offset: 0x08, size: 4, value: 0x4041)
        f.table.write(offset: 0x0C, size: 4, value: 0xFFFF_FFFE)       // reserved bits dropped: unmasked
        #expect(f.router.take() == [
            .update(vector: 0, address: 0xFEE0_1000, data: 0, masked: true),
            .update(vector: 0, address: 0xFEE0_1000, data: 0x4041, masked: true),
            .update(vector: 0, address: 0xFEE0_1000, data: 0x4041, masked: false),
        ])
        #expect(f.table.read(offset: 0x00, size: 4) == 0xFEE0_1000)
        #expect(f.table.read(offset: 0x08, size: 4) == 0x4041)
        #expect(f.table.read(offset: 0x0C, size: 4) == 0)
        // QWORD writes: address (low, high), then (data, control).
        f.table.write(offset: 0x10, size: 8, value: 0x0000_0001_FEE0_2000)
        f.table.write(offset: 0x18, size: 8, value: 0x0000_0000_0000_0055)
        #expect(f.router.take() == [
            .update(vector: 1, address: 0x1_FEE0_2000, data: 0, masked: true),
            .update(vector: 1, address: 0x1_FEE0_2000, data: 0x55, masked: false),
        ])
        #expect(f.table.read(offset: 0x10, size: 8) == 0x0000_0001_FEE0_2000)
        #expect(f.table.read(offset: 0x18, size: 8) == 0x55)
        #expect(f.table.read(offset: 0x14, size: 4) == 1)
        #expect(f.table.entry(1)?.address == 0x1_FEE0_2000)
        // Writing the same value again changes nothing and calls nothing.
        f.table.write(offset: 0x18, size: 8, value: 0x55)
        #expect(f.router.take() == [])
    }

    @Test("accesses outside the table, misaligned or of the wrong width read all ones and write nothing")
    func hostileTableAccesses() throws {
        let f = try MSIXFixture()
        f.enable()
        let end: UInt64 = 9 * 16
        #expect(f.table.read(offset: end, size: 4) == 0xFFFF_FFFF)
        #expect(f.table.read(offset: end, size: 8) == UInt64.max)
        #expect(f.table.read(offset: UInt64.max - 3, size: 4) == 0xFFFF_FFFF)
        #expect(f.table.read(offset: 2, size: 4) == 0xFFFF_FFFF)
        #expect(f.table.read(offset: 4, size: 8) == UInt64.max)
        #expect(f.table.read(offset: 12, size: 2) == 0xFFFF)
        #expect(f.table.read(offset: 12, size: 1) == 0xFF)
        f.table.write(offset: end + 12, size: 4, value: 0)
        f.table.write(offset: end, size: 8, value: 0xFEE0_0000)
        f.table.write(offset: UInt64.max - 7, size: 8, value: 0)
        f.table.write(offset: 12, size: 2, value: 0)     // an unmask by word write: not allowed
        f.table.write(offset: 12, size: 1, value: 0)
        f.table.write(offset: 14, size: 4, value: 0)
        f.table.write(offset: 12, size: 8, value: 0)
        #expect(f.router.take() == [])
        #expect(f.table.entry(0)?.isMasked == true)
        #expect(f.table.entry(9) == nil && f.table.entry(-1) == nil)
    }

    @Test("a masked vector's interrupt sets its pending bit; unmasking delivers it and clears the bit")
    func pendingUntilUnmasked() throws {
        let f = try MSIXFixture()
        #expect(f.table.trigger(vector: 3) == .msixDisabled)
        #expect(f.table.pendingBitArray.read(offset: 0, size: 8) == 0)
        f.enable()
        #expect(f.router.take() == [])  // all vectors stay masked: no route changed
        f.program(3, address: 0xFEE0_0000, data: 0x31)
        _ = f.router.take()
        #expect(f.table.trigger(vector: 3) == .pending)
        #expect(f.table.trigger(vector: 3) == .pending)
        #expect(f.table.isPending(3))
        #expect(f.table.pendingBitArray.read(offset: 0, size: 8) == 0x8)
        f.mask(3, false)
        #expect(f.router.take() == [
            .update(vector: 3, address: 0xFEE0_0000, data: 0x31, masked: false),
            .trigger(vector: 3),
        ])
        #expect(!f.table.isPending(3))
        #expect(f.table.pendingBitArray.read(offset: 0, size: 8) == 0)
        #expect(f.table.trigger(vector: 3) == .delivered)
        #expect(f.router.take() == [.trigger(vector: 3)])
    }

    @Test("the function mask masks every vector without touching their mask bits; clearing it delivers pending vectors")
    func functionMask() throws {
        let f = try MSIXFixture()
        f.enable()
        for v in 0..<3 { f.program(v, address: 0xFEE0_0000, data: UInt32(0x40 + v)) }
        f.mask(0, false)
        f.mask(1, false)
        _ = f.router.take()
        f.control(0xC000)
        #expect(f.table.isFunctionMasked)
        #expect(f.configuration.read(offset: f.capability + 2, size: 2) == 0xC008)
        #expect(f.router.take() == [
            .update(vector: 0, address: 0xFEE0_0000, data: 0x40, masked: true),
            .update(vector: 1, address: 0xFEE0_0000, data: 0x41, masked: true),
        ])
        #expect(f.table.read(offset: 0x0C, size: 4) == 0)  // the per-vector bit is unchanged
        #expect(f.table.trigger(vector: 0) == .pending)
        #expect(f.table.trigger(vector: 2) == .pending)
        #expect(f.table.pendingBitArray.read(offset: 0, size: 4) == 0b101)
        f.control(0x8000)
        #expect(f.router.take() == [
            .update(vector: 0, address: 0xFEE0_0000, data: 0x40, masked: false),
            .trigger(vector: 0),
            .update(vector: 1, address: 0xFEE0_0000, data: 0x41, masked: false),
        ])
        #expect(f.table.pendingBitArray.read(offset: 0, size: 4) == 0b100)  // vector 2 is still masked
    }

    @Test("disabling MSI-X masks every route; enabling it again restores them")
    func enableBit() throws {
        let f = try MSIXFixture()
        f.enable()
        f.program(5, address: 0xFEE0_0000, data: 0x25)
        f.mask(5, false)
        _ = f.router.take()
        f.control(0x0000)
        #expect(!f.table.isEnabled)
        #expect(f.router.take() == [.update(vector: 5, address: 0xFEE0_0000, data: 0x25, masked: true)])
        #expect(f.table.trigger(vector: 5) == .msixDisabled)
        #expect(f.table.pendingBitArray.read(offset: 0, size: 8) == 0)
        f.control(0x8000)
        #expect(f.router.take() == [.update(vector: 5, address: 0xFEE0_0000, data: 0x25, masked: false)])
        #expect(f.table.trigger(vector: 5) == .delivered)
    }

    @Test("with bus mastering off nothing is sent; pending vectors wait for it")
    func busMaster() throws {
        let f = try MSIXFixture()
        f.enable()
        f.program(0, address: 0xFEE0_0000, data: 0x20)
        f.mask(0, false)
        f.command(.memorySpace)
        _ = f.router.take()
        #expect(f.table.trigger(vector: 0) == .busMasterDisabled)
        #expect(f.router.take() == [])
        f.program(1, address: 0xFEE0_0000, data: 0x21)
        #expect(f.table.trigger(vector: 1) == .pending)
        f.mask(1, false)
        #expect(f.table.isPending(1))
        _ = f.router.take()
        f.command([.memorySpace, .busMaster])
        #expect(f.router.take() == [.trigger(vector: 1)])
        #expect(!f.table.isPending(1))
    }

    @Test("vectors outside the table are refused (virtio's NO_VECTOR is 0xFFFF)")
    func invalidVectors() throws {
        let f = try MSIXFixture()
        f.enable()
        for v in [9, 0xFFFF, -1, Int.max] { #expect(f.table.trigger(vector: v) == .invalidVector) }
        f.table.clearPending(vector: 9)
        #expect(!f.table.isPending(9))
        #expect(f.router.take() == [])
    }

    @Test("the PBA: one bit per vector in QWORDs, DWORD halves, read-only, bounded")
    func pendingBitArray() throws {
        let f = try MSIXFixture(vectors: 70)
        f.enable()
        for v in [3, 40, 64, 69] { #expect(f.table.trigger(vector: v) == .pending) }
        let pba = f.table.pendingBitArray
        #expect(pba.read(offset: 0, size: 8) == (1 << 3) | (1 << 40))
        #expect(pba.read(offset: 0, size: 4) == 0x8)
        #expect(pba.read(offset: 4, size: 4) == 0x100)
        #expect(pba.read(offset: 8, size: 8) == 0x21)
        #expect(pba.read(offset: 16, size: 8) == UInt64.max)
        #expect(pba.read(offset: 2, size: 4) == 0xFFFF_FFFF)
        #expect(pba.read(offset: 4, size: 8) == UInt64.max)
        #expect(pba.read(offset: 0, size: 1) == 0xFF)
        pba.write(offset: 0, size: 8, value: 0)
        pba.write(offset: 8, size: 4, value: 0)
        #expect(pba.read(offset: 8, size: 8) == 0x21)
        f.table.clearPending(vector: 40)
        #expect(pba.read(offset: 0, size: 8) == 0x8)
        #expect(f.router.take() == [])
    }

    @Test("a table holds 1 to 2048 vectors")
    func tableSizeBounds() throws {
        let router = RecordingRouter()
        #expect(throws: PCIError.self) { try MSIXTable(vectorCount: 0, router: router) }
        #expect(throws: PCIError.self) { try MSIXTable(vectorCount: 2049, router: router) }
        let f = try MSIXFixture(vectors: 2048)
        #expect(f.table.tableLength == 0x8000 && f.table.pbaLength == 256)
        #expect(f.table.read(offset: 0x7FFC, size: 4) == 1)
        #expect(f.table.read(offset: 0x8000, size: 4) == 0xFFFF_FFFF)
        #expect(f.configuration.read(offset: f.capability + 2, size: 2) == 0x07FF)
        f.enable()
        #expect(f.table.trigger(vector: 2047) == .pending)
        #expect(f.table.pendingBitArray.read(offset: 248, size: 8) == 1 << 63)
    }

    @Test("a configuration space and a table must agree on MSI-X")
    func configurationMustMatch() throws {
        let router = RecordingRouter()
        var s = endpointSpace()
        #expect(throws: PCIError.self) { try PCIConfiguration(s, msix: try MSIXTable(vectorCount: 4, router: router)) }
        try s.setBAR(0, .memory32(size: 0x1000))
        try s.addMSIXCapability(try MSIXCapability(vectorCount: 4, tableBAR: 0, tableOffset: 0, pbaBAR: 0, pbaOffset: 0x800))
        #expect(throws: PCIError.self) { try PCIConfiguration(s, msix: try MSIXTable(vectorCount: 5, router: router)) }
        _ = try PCIConfiguration(s, msix: try MSIXTable(vectorCount: 4, router: router))
    }

    @Test("a guest enables MSI-X through ports 0xCF8/0xCFC and reaches the table through the BAR")
    func endToEnd() throws {
        let f = try MSIXFixture()
        let map = try PCIBarRegionMap(name: "bar0", regions: [
            .init(offset: 0, length: f.table.tableLength, device: f.table),
            .init(offset: 0x8000, length: f.table.pbaLength, device: f.table.pendingBitArray),
        ])
        let device = PCIFunction(name: "ep", configuration: f.configuration, barHandlers: [0: map])
        let bridge = PCIHostBridge()
        try bridge.register(device, slot: 4)
        let ports = ConfigPorts(bridge: bridge)
        #expect(ports.read(device: 4, offset: 0x34, size: 1) == UInt64(f.capability))
        #expect(ports.read(device: 4, offset: f.capability) == 0x0008_0011)
        ports.write(device: 4, offset: 0x04, size: 2, value: 0x0006)
        ports.write(device: 4, offset: f.capability + 2, size: 2, value: 0x8000)
        #expect(f.table.isEnabled)
        map.write(offset: 0x20, size: 4, value: 0xFEE0_0000)
        map.write(offset: 0x28, size: 8, value: 0x0000_0000_0000_0062)
        #expect(f.router.take() == [
            .update(vector: 2, address: 0xFEE0_0000, data: 0, masked: true),
            .update(vector: 2, address: 0xFEE0_0000, data: 0x62, masked: false),
        ])
        #expect(f.table.trigger(vector: 2) == .delivered)
        #expect(map.read(offset: 0x8000, size: 8) == 0)
        #expect(map.read(offset: 0x8008, size: 4) == 0xFFFF_FFFF)      // past the PBA
        #expect(map.read(offset: 0x8C, size: 8) == UInt64.max)         // straddles the table's end
        #expect(f.router.take() == [.trigger(vector: 2)])
    }
}

@Suite("MSI-X threading")
struct MSIXThreadingTests {
    @Test("triggers racing with mask changes: the router never sees a trigger for a vector it was told is masked")
    func triggerRacesMask() async throws {
        let f = try MSIXFixture(vectors: 2)
        f.enable()
        f.program(0, address: 0xFEE0_0000, data: 0x30)
        let table = f.table
        await withTaskGroup(of: Void.self) { group in
            group.addTask {  // the I/O thread
                for _ in 0..<2000 { table.trigger(vector: 0) }
            }
            group.addTask {  // a vCPU toggling the mask bit and the function mask
                for i in 0..<500 {
                    f.mask(0, i % 2 == 1)
                    if i % 7 == 0 { f.control(i % 14 == 0 ? 0xC000 : 0x8000) }
                }
                f.control(0x8000)
                f.mask(0, false)
            }
        }
        // Replay the log: a trigger is legal only while the last update said unmasked.
        var masked = true
        var triggers = 0
        for call in f.router.take() {
            switch call {
            case .update(let v, _, _, let m):
                #expect(v == 0)
                masked = m
            case .trigger(let v):
                #expect(v == 0)
                #expect(!masked)
                triggers += 1
            }
        }
        #expect(!masked && !f.table.isPending(0) && triggers > 0)
    }
}
