// Net.swift: the virtio network device (virtio 1.2 §5.1) over a NetBackend (a tap).
//
// Two queues (§5.1.2): 0 receiveq (the driver posts empty buffers; the
// device fills them with frames from the host) and 1 transmitq (the driver
// posts frames; the device sends them). No control queue, one queue pair.
// Every frame carries the 12-byte virtio-net header (NetHeader.swift), which
// passes between the guest and the tap unchanged: checksum and segmentation
// offloads are the host kernel's work, skvm only says which the guest
// accepted (TUNSETOFFLOAD, from the negotiated GUEST_* features).
//
// Transmit: each chain's readable part is the header and the frame; it goes
// to the tap with one writev straight from guest memory (no copy). A chain
// too short for a header and an Ethernet header, too long for any frame, with
// a writable part, or with a header the features forbid is dropped and
// counted (`txDropped`); the guest gets the buffer back either way.
//
// Receive: the tap is read only when the guest has posted a buffer (so
// frames wait in the host's queue, not in skvm, and are dropped there when
// the guest does not keep up). A frame is read into one host buffer, then
// copied into the guest's buffers:
//  - with VIRTIO_NET_F_MRG_RXBUF (§5.1.6.4), into as many posted chains as
//    it needs, their count in the first header's num_buffers, all of them
//    published with one used->idx store. When the posted buffers run out
//    mid-frame the device waits for more (the frame stays pending).
//  - without it, into one chain, which must hold the whole frame; a frame
//    that does not fit is dropped (`rxDropped`) and the chain kept for the
//    next frame.
//
// Threading: as virtio-blk, every call comes under the transport's lock:
// config accesses from vCPU threads, `queueNotified` from the I/O thread
// (queue 0 also when the tap has frames: the machine polls
// `backendPollDescriptor` while `wantsBackendInput`). Nothing allocates per
// frame: the receive buffer, the iovec list and the used-element list are
// allocated once.

#if canImport(Glibc)
import Glibc
#endif
import Memory
import Network
import Synchronization
import VirtioQueue

/// A virtio-net device over a NetBackend.
public final class VirtioNet: VirtioDevice, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): every method but `wantsBackendInput` and
    // the counters runs under the transport's lock; those are atomics.

    // Feature bits (§5.1.3).
    public static let featureChecksum = FeatureSet(bit: 0)        // CSUM: the driver may send partial checksums
    public static let featureGuestChecksum = FeatureSet(bit: 1)   // GUEST_CSUM: the driver takes partial checksums
    public static let featureMAC = FeatureSet(bit: 5)
    public static let featureGuestTSO4 = FeatureSet(bit: 7)
    public static let featureGuestTSO6 = FeatureSet(bit: 8)
    public static let featureGuestECN = FeatureSet(bit: 9)
    public static let featureHostTSO4 = FeatureSet(bit: 11)
    public static let featureHostTSO6 = FeatureSet(bit: 12)
    public static let featureHostECN = FeatureSet(bit: 13)
    public static let featureMergeableRxBuffers = FeatureSet(bit: 15)
    public static let featureStatus = FeatureSet(bit: 16)

    /// VIRTIO_NET_S_LINK_UP in the configuration's status field.
    static let statusLinkUp: UInt16 = 1
    public static let queueSize: UInt16 = 256
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// The largest frame, header excluded: 64 KiB of TSO payload and its
    /// headers (what Linux's virtio_net sizes its big receive buffers for).
    public static let maximumFrame = 65550
    /// The smallest frame worth sending: an Ethernet header.
    static let minimumFrame = 14

    public let deviceType = VirtioDeviceType.net
    public let queueMaxSizes: [UInt16] = [VirtioNet.queueSize, VirtioNet.queueSize]
    /// mac[6], status, max_virtqueue_pairs, mtu (§5.1.4).
    public let configSize = 12

    public let mac: MACAddress
    private let backend: any NetBackend
    private var rx: Virtqueue? = nil
    private var tx: Virtqueue? = nil
    private var interrupt: (any InterruptSignal)? = nil
    private var features: FeatureSet = []
    private var needsReset = false

    // Receive state: the frame read from the backend and not yet fully
    // delivered, how much of it is in guest buffers, the chains it used.
    private let frame: UnsafeMutableRawBufferPointer
    private var frameLength: Int? = nil
    private var frameDelivered = 0
    private var frameFirstHeader: GuestAddress? = nil
    private var frameUsed: [UsedElement] = []
    /// A chain popped for a frame that did not fit (no MRG_RXBUF), kept for the next one.
    private var heldChain: DescriptorChain? = nil
    // Transmit scratch.
    private var vectors: [iovec] = []
    private var headerBytes: [UInt8] = []

    private let wantsInput = Atomic<Bool>(false)
    private let counters = Mutex(NetCounters())

    /// What the device did, for `--stats` and tests.
    public struct NetCounters: Equatable, Sendable {
        public var txFrames: UInt64 = 0
        public var txDropped: UInt64 = 0
        public var rxFrames: UInt64 = 0
        public var rxDropped: UInt64 = 0
        /// The last reason a frame was dropped, for diagnostics.
        public var lastDrop: String? = nil
    }

    public init(backend: any NetBackend, mac: MACAddress) {
        self.backend = backend
        self.mac = mac
        frame = UnsafeMutableRawBufferPointer.allocate(byteCount: NetHeader.length + Self.maximumFrame + 1, alignment: 64)
        frameUsed.reserveCapacity(Int(Self.queueSize))
        vectors.reserveCapacity(Int(Virtqueue.maximumIndirectEntries) + Int(Self.queueSize))
        headerBytes.reserveCapacity(NetHeader.length)
    }

    deinit { frame.deallocate() }

    /// The backend's descriptor, for the I/O thread's poll set.
    public var backendPollDescriptor: Int32 { backend.pollDescriptor }
    /// The backend's name ("tap0").
    public var backendName: String { backend.name }

    /// True while the device is waiting for frames from the backend (it has
    /// guest buffers to put them in): poll `backendPollDescriptor` and call
    /// the transport's `notify(queue: 0)` when it is readable.
    public var wantsBackendInput: Bool { wantsInput.load(ordering: .acquiring) }

    public var statistics: NetCounters { counters.withLock { $0 } }

    public var offeredFeatures: FeatureSet {
        [.version1, .ringEventIdx, .ringIndirectDesc, Self.featureMAC, Self.featureStatus, Self.featureMergeableRxBuffers,
         Self.featureChecksum, Self.featureGuestChecksum, Self.featureHostTSO4, Self.featureHostTSO6,
         Self.featureGuestTSO4, Self.featureGuestTSO6]
    }

    // MARK: Configuration space (§5.1.4)

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        var bytes = mac.bytes                                 // 0: mac
        bytes += [UInt8(Self.statusLinkUp), 0]                // 6: status
        bytes += [1, 0]                                       // 8: max_virtqueue_pairs
        bytes += [0xDC, 0x05]                                 // 10: mtu 1500 (VIRTIO_NET_F_MTU not offered)
        guard offset >= 0, size > 0, offset + size <= bytes.count else { return 0 }
        var value: UInt64 = 0
        for i in 0..<size { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        return value
    }

    /// Read-only for the driver (VIRTIO_NET_F_CTRL_MAC_ADDR is not offered).
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    // MARK: Life cycle

    public func activate(queues: [Virtqueue?], features: FeatureSet, memory: GuestMemory, interrupt: any InterruptSignal) throws {
        guard queues.count == 2, let r = queues[0], let t = queues[1] else { throw VirtqueueError.queueBroken }
        rx = r
        tx = t
        self.features = features
        self.interrupt = interrupt
        needsReset = false
        clearFrame()
        // The offloads the tap may hand us are those the guest takes (§5.1.6.4.1).
        var offloads: UInt32 = 0
        if features.contains(Self.featureGuestChecksum) {
            offloads |= TapOffload.checksum
            if features.contains(Self.featureGuestTSO4) { offloads |= TapOffload.tso4 }
            if features.contains(Self.featureGuestTSO6) { offloads |= TapOffload.tso6 }
        }
        if !backend.setOffloads(offloads) { _ = backend.setOffloads(0) }
        wantsInput.store(true, ordering: .releasing)
    }

    public func reset() {
        wantsInput.store(false, ordering: .releasing)
        rx = nil
        tx = nil
        interrupt = nil
        features = []
        needsReset = false
        clearFrame()
        _ = backend.setOffloads(0)
    }

    private func clearFrame() {
        frameLength = nil
        frameDelivered = 0
        frameFirstHeader = nil
        frameUsed.removeAll(keepingCapacity: true)
        heldChain = nil
    }

    public func queueNotified(_ index: Int) {
        guard !needsReset else { return }
        switch index {
        case Self.receiveQueue: receive()
        case Self.transmitQueue: transmit()
        default: break
        }
    }

    private func markNeedsReset() {
        needsReset = true
        wantsInput.store(false, ordering: .releasing)
        interrupt?.signalNeedsReset()
    }

    private func countDrop(rx isReceive: Bool, _ why: String) {
        counters.withLock {
            if isReceive { $0.rxDropped &+= 1 } else { $0.txDropped &+= 1 }
            $0.lastDrop = why
        }
    }

    // MARK: Transmit (§5.1.6.2)

    private func transmit() {
        // Taken out while in use: a second reference would make every pop copy (see VirtioBlock).
        guard var q = tx.take() else { return }
        defer { tx = q }
        var completed = false
        var sent: UInt64 = 0
        repeat {
            while true {
                let chain: DescriptorChain
                do {
                    guard let c = try q.popAvailable() else { break }
                    chain = c
                } catch {
                    markNeedsReset()
                    break
                }
                if send(chain) { sent &+= 1 }
                if (try? q.addUsed(head: chain.headIndex, length: 0)) != nil { completed = true }
            }
        } while !needsReset && q.enableNotification()
        if sent > 0 { counters.withLock { $0.txFrames &+= sent } }
        if completed && q.needsNotification() { interrupt?.signalUsedBuffer(queueIndex: Self.transmitQueue) }
    }

    /// Sends one chain's frame; false when it was dropped (and counted).
    private func send(_ chain: DescriptorChain) -> Bool {
        let length = chain.readableByteCount
        guard chain.writableByteCount == 0 else {
            countDrop(rx: false, "a transmit chain with a device-writable buffer")
            return false
        }
        guard length >= NetHeader.length + Self.minimumFrame else {
            countDrop(rx: false, "a \(length)-byte transmit chain: too short for the header and an Ethernet header")
            return false
        }
        guard length <= NetHeader.length + Self.maximumFrame else {
            countDrop(rx: false, "a \(length)-byte frame: longer than \(NetHeader.length + Self.maximumFrame)")
            return false
        }
        headerBytes.removeAll(keepingCapacity: true)
        guard (try? chain.readReadable(maxCount: NetHeader.length, appendingTo: &headerBytes)) == NetHeader.length,
            let header = NetHeader(headerBytes)
        else {
            countDrop(rx: false, "unreadable header")
            return false
        }
        if let problem = header.transmitProblem(features: features, frameLength: length - NetHeader.length) {
            countDrop(rx: false, "header: \(problem)")
            return false
        }
        vectors.removeAll(keepingCapacity: true)
        for b in chain.readableBuffers where b.length > 0 {
            // The chain's buffers were checked to be guest RAM when it was popped.
            guard let p = try? chain.memory.hostAddress(at: b.address, count: Int(b.length)) else {
                countDrop(rx: false, "a buffer outside guest memory")
                return false
            }
            vectors.append(iovec(iov_base: p, iov_len: Int(b.length)))
        }
        guard vectors.count <= 1024 else {  // IOV_MAX on Linux
            countDrop(rx: false, "\(vectors.count) buffers in one frame")
            return false
        }
        let outcome = vectors.withUnsafeBufferPointer { backend.send($0) }
        if case .dropped(let e) = outcome {
            countDrop(rx: false, "the host refused the frame: \(String(cString: strerror(e)))")
            return false
        }
        return true
    }

    // MARK: Receive (§5.1.6.3, §5.1.6.4)

    private func receive() {
        guard var q = rx.take() else { return }
        defer { rx = q }
        var delivered: UInt64 = 0
        var completed = false
        loop: while !needsReset {
            if frameLength == nil {
                // Read from the host only with a buffer to put the frame in.
                let available = heldChain != nil || ((try? q.hasAvailable()) ?? false)
                if !available {
                    if q.enableNotification() { continue }
                    wantsInput.store(false, ordering: .releasing)
                    break
                }
                guard let n = backend.receive(into: frame) else {
                    wantsInput.store(true, ordering: .releasing)
                    break
                }
                if n > NetHeader.length + Self.maximumFrame || n < NetHeader.length {
                    countDrop(rx: true, "a \(n)-byte frame from \(backend.name)")
                    continue
                }
                frameLength = n
                frameDelivered = 0
            }
            switch deliver(&q) {
            case .done:
                delivered &+= 1
                completed = true
            case .dropped:
                continue
            case .needBuffers:
                if q.enableNotification() { continue }
                wantsInput.store(false, ordering: .releasing)
                break loop
            case .broken:
                markNeedsReset()
                break loop
            }
        }
        if delivered > 0 { counters.withLock { $0.rxFrames &+= delivered } }
        if completed && q.needsNotification() { interrupt?.signalUsedBuffer(queueIndex: Self.receiveQueue) }
    }

    private enum Delivery { case done, dropped, needBuffers, broken }

    private func nextChain(_ q: inout Virtqueue) throws -> DescriptorChain? {
        if let c = heldChain {
            heldChain = nil
            return c
        }
        return try q.popAvailable()
    }

    /// Copies the pending frame into guest buffers.
    private func deliver(_ q: inout Virtqueue) -> Delivery {
        guard let length = frameLength else { return .done }
        let mergeable = features.contains(Self.featureMergeableRxBuffers)
        while frameDelivered < length {
            let chain: DescriptorChain
            do {
                guard let c = try nextChain(&q) else { return .needBuffers }
                chain = c
            } catch {
                return .broken
            }
            // A receive buffer the device cannot write, or (§5.1.6.3.1) one too small for a header.
            guard chain.readableByteCount == 0, chain.writableByteCount >= NetHeader.length,
                let first = chain.writableBuffers.first
            else { return .broken }
            if !mergeable && chain.writableByteCount < length {
                heldChain = chain
                frameLength = nil
                countDrop(rx: true, "a \(length - NetHeader.length)-byte frame and a \(chain.writableByteCount)-byte buffer (no MRG_RXBUF)")
                return .dropped
            }
            if frameDelivered == 0 {
                if mergeable && first.length < NetHeader.length { return .broken }
                frameFirstHeader = first.address
            }
            let count = min(chain.writableByteCount, length - frameDelivered)
            guard copy(from: frameDelivered, count: count, into: chain) else { return .broken }
            frameUsed.append(UsedElement(head: chain.headIndex, length: UInt32(count)))
            frameDelivered += count
        }
        // num_buffers: the chains this frame spans (1 without MRG_RXBUF), in
        // the first header, before any of them is published.
        guard let header = frameFirstHeader,
            (try? q.memory.write(UInt16(frameUsed.count).littleEndian, at: GuestAddress(header.rawValue + 10))) != nil,
            (try? q.addUsed(frameUsed)) != nil
        else { return .broken }
        frameUsed.removeAll(keepingCapacity: true)
        frameLength = nil
        frameFirstHeader = nil
        return .done
    }

    /// Copies `count` bytes of the pending frame from `offset` into the chain's writable buffers.
    private func copy(from offset: Int, count: Int, into chain: DescriptorChain) -> Bool {
        var source = offset
        var left = count
        for b in chain.writableBuffers where left > 0 {
            let n = min(Int(b.length), left)
            let piece = UnsafeRawBufferPointer(rebasing: frame[source..<(source + n)])
            guard (try? chain.memory.write(raw: piece, at: b.address)) != nil else { return false }
            source += n
            left -= n
        }
        return left == 0
    }
}

