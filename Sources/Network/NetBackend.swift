// NetBackend.swift: what a virtio-net device sends frames to and receives
// them from.
//
// Every frame crosses this seam with the 12-byte virtio-net header in front
// (virtio 1.2 §5.1.6: struct virtio_net_hdr with num_buffers), exactly as a
// tap opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 reads and writes it:
// the guest's offload requests (checksum, TSO) go to the host kernel as they
// are, and the host's come back the same way. No checksum work in the VMM.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// What became of a frame handed to `send`.
public enum SendOutcome: Equatable, Sendable {
    case sent
    /// The host refused the frame (a malformed header: EINVAL; a full queue: EAGAIN/ENOBUFS).
    case dropped(errno: Int32)
}

/// A host network endpoint (a tap device, or a test double).
public protocol NetBackend: AnyObject, Sendable {
    /// The descriptor the I/O thread polls for POLLIN (frames waiting).
    var pollDescriptor: Int32 { get }
    /// A name for messages ("tap0").
    var name: String { get }

    /// Sends one frame: header and frame, gathered from `vectors` (usually
    /// pieces of guest memory, used only during the call).
    func send(_ vectors: UnsafeBufferPointer<iovec>) -> SendOutcome

    /// Receives one frame with its header into `buffer`; returns its length,
    /// or nil when no frame is waiting. A frame that does not fit comes back
    /// cut, with a length of at least `buffer.count`: give one byte more room
    /// than the largest frame you accept and drop anything that fills it.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int?

    /// Which offloads the host may hand us (TUN_F_* bits), following what
    /// the guest accepted; false when the host refuses them.
    func setOffloads(_ flags: UInt32) -> Bool

    /// Closes the endpoint (a tap skvm created disappears). Closing twice is harmless.
    func close()
}

/// The offload bits of `NetBackend.setOffloads` (linux/if_tun.h TUN_F_*).
public enum TapOffload {
    /// The host may hand over frames with partial checksums (NEEDS_CSUM).
    public static let checksum = UInt32(CKVM_TUN_F_CSUM)
    /// ... and TCP/IPv4 segments up to 64 KiB (GSO TCPV4); needs `checksum`.
    public static let tso4 = UInt32(CKVM_TUN_F_TSO4)
    /// ... and TCP/IPv6 segments (GSO TCPV6); needs `checksum`.
    public static let tso6 = UInt32(CKVM_TUN_F_TSO6)
}
