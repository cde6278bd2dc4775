// NetTests.swift: the virtio-net device (virtio 1.2 §5.1) driven by real
// chains in guest memory, against a fake tap: transmit (gathered frames,
// header checks), receive (one buffer, mergeable buffers, running out of
// buffers mid-frame, no buffers at all), offload negotiation, and the ways
// a hostile guest can get a frame wrong.

#if canImport(Glibc)
import Glibc
#endif
import Memory
import Network
import Synchronization
import Testing
import TestSupport
import VirtioQueue
@testable import Virtio

/// A NetBackend that records what is sent and hands out queued frames.
final class FakeTap: NetBackend, @unchecked Sendable {
    let name = "faketap"
    let pollDescriptor: Int32 = -1
    private let state = Mutex<(sent: [[UInt8]], inbox: [[UInt8]], offloads: [UInt32], refuse: Int32?)>(([], [], [], nil))

    var sent: [[UInt8]] { state.withLock { $0.sent } }
    var inbox: [[UInt8]] { state.withLock { $0.inbox } }
    var offloads: [UInt32] { state.withLock { $0.offloads } }
    func queue(_ frame: [UInt8]) { state.withLock { $0.inbox.append(frame) } }
    func refuseSends(_ e: Int32?) { state.withLock { $0.refuse = e } }

    func send(_ vectors: UnsafeBufferPointer<iovec>) -> SendOutcome {
        var bytes: [UInt8] = []
        for v in vectors { bytes += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len) }
        return state.withLock {
            if let e = $0.refuse { return .dropped(errno: e) }
            $0.sent.append(bytes)
            return .sent
        }
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        state.withLock { s -> Int? in
            guard !s.inbox.isEmpty else { return nil }
            let f = s.inbox.removeFirst()
            let n = min(f.count, buffer.count)
            buffer.copyBytes(from: f[0..<n])
            return f.count > buffer.count ? buffer.count : n
        }
    }

    func setOffloads(_ flags: UInt32) -> Bool {
        state.withLock { $0.offloads.append(flags) }
        return true
    }

    func close() {}
}

/// A device, its fake tap, and driver-side receive and transmit queues.
struct NetRig {
    let tap = FakeTap()
    let device: VirtioNet
    let rx: VirtqueueDriver
    let tx: VirtqueueDriver
    let memory: GuestMemory
    let interrupt = RecordingInterruptSignal()
    let features: FeatureSet

    init(features: FeatureSet? = nil) throws {
        device = VirtioNet(backend: tap, mac: MACAddress("52:54:00:12:34:56")!)
        memory = try makeGuestMemory(size: 4 << 20)
        rx = try VirtqueueDriver(memory: memory, layout: .packed(size: 16, base: 0x1000, memoryEnd: 2 << 20))
        tx = try VirtqueueDriver(memory: memory, layout: .packed(size: 16, base: (2 << 20) + 0x1000, memoryEnd: 4 << 20))
        let negotiated = features ?? device.offeredFeatures
        self.features = negotiated
        try device.activate(queues: [try rx.makeQueue(features: negotiated), try tx.makeQueue(features: negotiated)],
                            features: negotiated, memory: memory, interrupt: interrupt)
    }

    static func header(flags: UInt8 = 0, gso: UInt8 = 0, gsoSize: UInt16 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0) -> [UInt8] {
        [flags, gso, 0, 0, UInt8(gsoSize & 0xFF), UInt8(gsoSize >> 8), UInt8(csumStart & 0xFF), UInt8(csumStart >> 8),
         UInt8(csumOffset & 0xFF), UInt8(csumOffset >> 8), 0, 0]
    }

    static func frame(_ length: Int, seed: Int = 0) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &+ $0 / 256) }
    }

    /// Sends one chain of `segments` on the transmit queue; returns the used element.
    func transmit(_ segments: [VirtqueueDriver.Segment]) throws -> VirtqueueDriver.UsedElement {
        let chain = try tx.addChain(segments)
        device.queueNotified(VirtioNet.transmitQueue)
        let used = try #require(try tx.popUsed())
        #expect(used.element.id == UInt32(chain.head))
        return used.element
    }
}

private let mergeable: FeatureSet = [.version1, VirtioNet.featureMAC, VirtioNet.featureStatus, VirtioNet.featureMergeableRxBuffers]
private let plain: FeatureSet = [.version1, VirtioNet.featureMAC, VirtioNet.featureStatus]

@Suite("virtio-net")
struct NetTests {
    @Test("configuration: the MAC, link up, one queue pair; features include MAC, STATUS, MRG_RXBUF and the offloads")
    func configuration() throws {
        let rig = try NetRig()
        #expect((0..<6).map { UInt8(rig.device.readConfig(offset: $0, size: 1)) } == [0x52, 0x54, 0, 0x12, 0x34, 0x56])
        #expect(rig.device.readConfig(offset: 6, size: 2) == 1)
        #expect(rig.device.readConfig(offset: 8, size: 2) == 1)
        #expect(rig.device.readConfig(offset: 11, size: 4) == 0)   // past the end
        for f in [VirtioNet.featureMAC, VirtioNet.featureStatus, VirtioNet.featureMergeableRxBuffers, VirtioNet.featureChecksum,
                  VirtioNet.featureGuestChecksum, VirtioNet.featureHostTSO4, VirtioNet.featureGuestTSO4, FeatureSet.version1] {
            #expect(rig.device.offeredFeatures.contains(f))
        }
    }

    @Test("transmit: header and frame gathered from several descriptors reach the tap byte for byte")
    func transmit() throws {
        let rig = try NetRig(features: plain)
        let frame = NetRig.frame(1514)
        let used = try rig.transmit([.readable(NetRig.header()), .readable(Array(frame[0..<100])), .readable(Array(frame[100...]))])
        #expect(used.len == 0)
        #expect(rig.tap.sent == [NetRig.header() + frame])
        #expect(rig.device.statistics.txFrames == 1)
        #expect(rig.interrupt.events == [.usedBuffer(queueIndex: 1)])
    }

    @Test("transmit with CSUM and HOST_TSO4: a 64 KiB GSO frame's header passes through unchanged")
    func transmitGSO() throws {
        let rig = try NetRig()
        let header = NetRig.header(flags: 1, gso: 1, gsoSize: 1448, csumStart: 34, csumOffset: 16)
        let frame = NetRig.frame(65_000)
        _ = try rig.transmit([.readable(header + frame)])
        #expect(rig.tap.sent == [header + frame])
    }

    @Test("hostile transmit chains are dropped and counted, the buffer comes back, and the device keeps going",
          arguments: [
            ("too short for a header", [VirtqueueDriver.Segment.readable([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]),
            ("header but no Ethernet header", [.readable(NetRig.header() + [1, 2, 3])]),
            ("NEEDS_CSUM without CSUM", [.readable(NetRig.header(flags: 1, csumStart: 14, csumOffset: 6) + NetRig.frame(60))]),
            ("GSO without HOST_TSO4", [.readable(NetRig.header(flags: 1, gso: 1, gsoSize: 1448, csumStart: 34, csumOffset: 16) + NetRig.frame(2000))]),
            ("a writable buffer", [.readable(NetRig.header() + NetRig.frame(60)), .writable(16)]),
            ("longer than any frame", [.readable(NetRig.header() + NetRig.frame(65_551))]),
          ] as [(String, [VirtqueueDriver.Segment])])
    func hostileTransmit(_ what: String, _ segments: [VirtqueueDriver.Segment]) throws {
        let rig = try NetRig(features: plain)
        let used = try rig.transmit(segments)
        #expect(used.len == 0)
        #expect(rig.tap.sent.isEmpty, "\(what) was sent")
        #expect(rig.device.statistics.txDropped == 1)
        // The next good frame still goes out.
        _ = try rig.transmit([.readable(NetRig.header() + NetRig.frame(60))])
        #expect(rig.tap.sent.count == 1)
    }

    @Test("header checks under CSUM + HOST_TSO4: the checksum field inside the frame, a segment size, NEEDS_CSUM with GSO, no ECN")
    func headerChecks() {
        let f: FeatureSet = [VirtioNet.featureChecksum, VirtioNet.featureHostTSO4]
        #expect(NetHeader(flags: 1, checksumStart: 34, checksumOffset: 16).transmitProblem(features: f, frameLength: 52) == nil)
        #expect(NetHeader(flags: 1, checksumStart: 34, checksumOffset: 16).transmitProblem(features: f, frameLength: 51) != nil)
        #expect(NetHeader(flags: 1, gsoType: 1, gsoSize: 0, checksumStart: 34, checksumOffset: 16).transmitProblem(features: f, frameLength: 2000) != nil)
        #expect(NetHeader(flags: 0, gsoType: 1, gsoSize: 1448).transmitProblem(features: f, frameLength: 2000) != nil)
        #expect(NetHeader(flags: 1, gsoType: 0x81, gsoSize: 1448, checksumStart: 34, checksumOffset: 16).transmitProblem(features: f, frameLength: 2000) != nil)
        #expect(NetHeader(flags: 1, gsoType: 4, gsoSize: 1448, checksumStart: 54, checksumOffset: 16).transmitProblem(features: f, frameLength: 2000) != nil)
        #expect(NetHeader(flags: 0x10).transmitProblem(features: f, frameLength: 60) != nil)
    }

    @Test("a frame the host refuses is dropped and counted")
    func hostRefuses() throws {
        let rig = try NetRig(features: plain)
        rig.tap.refuseSends(EINVAL)
        _ = try rig.transmit([.readable(NetRig.header() + NetRig.frame(60))])
        #expect(rig.device.statistics.txDropped == 1)
        #expect(rig.device.statistics.txFrames == 0)
    }

    @Test("receive without MRG_RXBUF: one buffer per frame, num_buffers 1")
    func receivePlain() throws {
        let rig = try NetRig(features: plain)
        let chain = try rig.rx.addChain([.writable(1526)])
        let frame = NetRig.header() + NetRig.frame(1000)
        rig.tap.queue(frame)
        rig.device.queueNotified(VirtioNet.receiveQueue)
        let used = try #require(try rig.rx.popUsed())
        #expect(used.element.id == UInt32(chain.head))
        #expect(used.element.len == 1012)
        let written = try rig.rx.readWritten(chain, count: 1012)
        #expect(Array(written[0..<10]) == Array(frame[0..<10]))
        #expect(written[10] == 1 && written[11] == 0)
        #expect(Array(written[12...]) == Array(frame[12...]))
        #expect(rig.device.statistics.rxFrames == 1)
        #expect(rig.interrupt.events == [.usedBuffer(queueIndex: 0)])
        // No buffer left: the tap is not read, and the device stops asking for input.
        rig.tap.queue(frame)
        rig.device.queueNotified(VirtioNet.receiveQueue)
        #expect(rig.tap.inbox.count == 1)
        #expect(!rig.device.wantsBackendInput)
    }

    @Test("receive without MRG_RXBUF: a frame bigger than the buffer is dropped, the buffer kept for the next frame")
    func receiveTooBig() throws {
        let rig = try NetRig(features: plain)
        let chain = try rig.rx.addChain([.writable(1526)])
        rig.tap.queue(NetRig.header() + NetRig.frame(3000))
        rig.tap.queue(NetRig.header() + NetRig.frame(100))
        rig.device.queueNotified(VirtioNet.receiveQueue)
        let used = try #require(try rig.rx.popUsed())
        #expect(used.element.id == UInt32(chain.head))
        #expect(used.element.len == 112)
        #expect(rig.device.statistics.rxDropped == 1)
        #expect(rig.device.statistics.rxFrames == 1)
    }

    @Test("receive with MRG_RXBUF: a frame spans buffers, num_buffers counts them, all published at once")
    func receiveMergeable() throws {
        let rig = try NetRig(features: mergeable)
        let chains = try (0..<3).map { _ in try rig.rx.addChain([.writable(1526)]) }
        let frame = NetRig.header() + NetRig.frame(3000)
        rig.tap.queue(frame)
        rig.device.queueNotified(VirtioNet.receiveQueue)
        #expect(try rig.rx.usedIndex() == 2)
        let a = try #require(try rig.rx.popUsed()), b = try #require(try rig.rx.popUsed())
        #expect([a.element.id, b.element.id] == [UInt32(chains[0].head), UInt32(chains[1].head)])
        #expect([a.element.len, b.element.len] == [1526, 1486])
        let bytes = try rig.rx.readWritten(chains[0], count: 1526) + rig.rx.readWritten(chains[1], count: 1486)
        #expect(bytes[10] == 2 && bytes[11] == 0)
        #expect(Array(bytes[12...]) == Array(frame[12...]))
        #expect(rig.device.wantsBackendInput)
    }

    @Test("receive with MRG_RXBUF: buffers run out mid-frame; nothing is published until the guest posts more")
    func receiveWaitsForBuffers() throws {
        let rig = try NetRig(features: mergeable)
        let first = try rig.rx.addChain([.writable(1526)])
        let frame = NetRig.header() + NetRig.frame(3000)
        rig.tap.queue(frame)
        rig.device.queueNotified(VirtioNet.receiveQueue)
        #expect(try rig.rx.usedIndex() == 0)
        #expect(!rig.device.wantsBackendInput)
        let second = try rig.rx.addChain([.writable(2048)])
        rig.device.queueNotified(VirtioNet.receiveQueue)
        #expect(try rig.rx.usedIndex() == 2)
        let bytes = try rig.rx.readWritten(first, count: 1526) + rig.rx.readWritten(second, count: 1486)
        #expect(bytes[10] == 2)
        #expect(Array(bytes[12...]) == Array(frame[12...]))
    }

    @Test("a receive chain with a device-readable buffer breaks the queue: DEVICE_NEEDS_RESET")
    func receiveReadableBuffer() throws {
        let rig = try NetRig(features: plain)
        try rig.rx.addChain([.readable([1, 2, 3]), .writable(1526)])
        rig.tap.queue(NetRig.header() + NetRig.frame(60))
        rig.device.queueNotified(VirtioNet.receiveQueue)
        #expect(try rig.rx.usedIndex() == 0)
        #expect(rig.interrupt.events == [.configChange])
        #expect(!rig.device.wantsBackendInput)
    }

    @Test("offloads follow the guest: GUEST_CSUM + GUEST_TSO4/6 turn on TUN_F_CSUM|TSO4|TSO6; TSO without CSUM none; reset clears")
    func offloads() throws {
        let all = try NetRig()
        #expect(all.tap.offloads == [TapOffload.checksum | TapOffload.tso4 | TapOffload.tso6])
        all.device.reset()
        #expect(all.tap.offloads.last == 0)
        #expect(!all.device.wantsBackendInput)
        let noCsum = try NetRig(features: [.version1, VirtioNet.featureGuestTSO4])
        #expect(noCsum.tap.offloads == [0])
    }
}
