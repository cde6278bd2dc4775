// TapDevice.swift: a Linux tap interface as a NetBackend.
//
// A tap is a virtual Ethernet interface whose other end is a file
// descriptor: frames the host stack sends to the interface are read from
// the descriptor, frames written to the descriptor arrive on the interface
// (Documentation/networking/tuntap.rst). Users attach it to a bridge, NAT it
// or give it an address, and the guest is on that network.
//
// skvm opens it with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: Ethernet frames, no
// packet-information prefix, and the virtio-net header in front of every
// frame, which TUNSETVNETHDRSZ makes the 12-byte virtio 1.x header. The
// descriptor is non-blocking: the I/O thread polls it and never waits in
// read or write.
//
// Opening by name creates the interface when it does not exist; such a tap
// is not persistent, so it disappears when skvm closes it (on exit). An
// existing tap (`ip tuntap add dev tap0 mode tap vnet_hdr`, owned by the
// user running skvm, or any tap for root) is attached and left in place.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// An open tap interface.
public final class TapDevice: NetBackend, @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `fd` is written only by `close`, after the
    // I/O thread (the only user of send/receive) has stopped.

    /// The virtio 1.x header length: struct virtio_net_hdr (10) + num_buffers (2).
    public static let headerLength = 12

    public let name: String
    /// True when skvm created the interface (it vanishes on close).
    public let created: Bool
    private var fd: Int32

    public var pollDescriptor: Int32 { fd }

    private init(fd: Int32, name: String, created: Bool) {
        self.fd = fd
        self.name = name
        self.created = created
    }

    deinit { close() }

    /// Opens the tap `name`, creating it when there is no interface of that name.
    public static func open(name: String) throws(NetError) -> TapDevice {
        guard !name.isEmpty, name.utf8.count < Int(CKVM_IFNAMSIZ), name != ".", name != "..",
            !name.utf8.contains(where: { $0 == UInt8(ascii: "/") || $0 <= 0x20 || $0 == UInt8(ascii: ":") || $0 >= 0x7F })
        else {
            throw NetError("--net tap=\(name): not an interface name (1-\(CKVM_IFNAMSIZ - 1) characters, no '/', ':' or spaces)")
        }
        let existed = access("/sys/class/net/\(name)", F_OK) == 0
        let fd = Glibc.open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let e = errno
            switch e {
            case ENOENT, ENODEV, ENXIO:
                throw NetError("--net tap=\(name): /dev/net/tun is missing: load the tun module (modprobe tun)")
            default:
                throw NetError("--net tap=\(name): cannot open /dev/net/tun: \(String(cString: strerror(e)))")
            }
        }
        var actual = [CChar](repeating: 0, count: Int(CKVM_IFNAMSIZ))
        let r = ckvm_tun_set_iff(fd, name, CKVM_IFF_TAP | CKVM_IFF_NO_PI | CKVM_IFF_VNET_HDR, &actual)
        guard r == 0 else {
            Glibc.close(fd)
            let why: String
            switch -r {
            case EPERM, EACCES:
                why = existed
                    ? "permission denied: the tap belongs to another user (ip tuntap add dev \(name) mode tap user $USER), or skvm needs CAP_NET_ADMIN"
                    : "permission denied: creating a tap needs CAP_NET_ADMIN (or create it first: ip tuntap add dev \(name) mode tap user $USER)"
            case EBUSY: why = "the tap is in use by another process (or was created with multi_queue)"
            case EINVAL: why = "an interface named \(name) exists and is not a tap (or is a tap with other flags)"
            default: why = String(cString: strerror(-r))
            }
            throw NetError("--net tap=\(name): \(why)")
        }
        let tap = TapDevice(fd: fd, name: String(cString: actual), created: !existed)
        try tap.configureHeader()
        return tap
    }

    /// Adopts a tap descriptor opened by a parent process (libvirt's way):
    /// it must be a tap with IFF_NO_PI and IFF_VNET_HDR.
    public static func adopt(fd: Int32) throws(NetError) -> TapDevice {
        var flags: Int16 = 0
        var actual = [CChar](repeating: 0, count: Int(CKVM_IFNAMSIZ))
        let r = ckvm_tun_get_iff(fd, &flags, &actual)
        guard r == 0 else {
            throw NetError("--net fd=\(fd): not an open tap descriptor (\(String(cString: strerror(-r))))")
        }
        guard flags & CKVM_IFF_TAP != 0 else { throw NetError("--net fd=\(fd): a tun (IP) device, not a tap (Ethernet)") }
        guard flags & CKVM_IFF_NO_PI != 0, flags & CKVM_IFF_VNET_HDR != 0 else {
            throw NetError("--net fd=\(fd): the tap must be opened with IFF_NO_PI and IFF_VNET_HDR (vnet_hdr)")
        }
        let current = fcntl(fd, F_GETFL)
        guard current >= 0, fcntl(fd, F_SETFL, current | O_NONBLOCK) == 0 else {
            throw NetError("--net fd=\(fd): cannot make it non-blocking: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tap = TapDevice(fd: fd, name: String(cString: actual), created: false)
        try tap.configureHeader()
        return tap
    }

    private func configureHeader() throws(NetError) {
        let r = ckvm_tun_set_vnet_hdr_size(fd, Int32(Self.headerLength))
        guard r == 0 else {
            close()
            throw NetError("tap \(name): TUNSETVNETHDRSZ \(Self.headerLength) failed: \(String(cString: strerror(-r)))")
        }
        // No offloads towards the guest until it negotiates them.
        _ = ckvm_tun_set_offload(fd, 0)
    }

    public func send(_ vectors: UnsafeBufferPointer<iovec>) -> SendOutcome {
        let n = writev(fd, vectors.baseAddress, Int32(vectors.count))
        return n < 0 ? .dropped(errno: errno) : .sent
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        // One byte more than the caller's buffer holds reveals a frame that was cut.
        let n = read(fd, buffer.baseAddress, buffer.count)
        return n < 0 ? nil : n
    }

    public func setOffloads(_ flags: UInt32) -> Bool {
        ckvm_tun_set_offload(fd, flags) == 0
    }

    public func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }
}
