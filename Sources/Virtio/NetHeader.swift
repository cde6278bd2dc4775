// NetHeader.swift: the virtio-net header in front of every frame (virtio 1.2 §5.1.6).
//
//   struct virtio_net_hdr {
//       u8   flags;        // 1 NEEDS_CSUM, 2 DATA_VALID, 4 RSC_INFO
//       u8   gso_type;     // 0 NONE, 1 TCPV4, 3 UDP, 4 TCPV6, 5 UDP_L4; | 0x80 ECN
//       le16 hdr_len;
//       le16 gso_size;
//       le16 csum_start;
//       le16 csum_offset;
//       le16 num_buffers;  // receive: how many buffers this frame spans
//   };
//
// On transmit the header comes from the guest and goes to the tap as it is;
// the tap (the host kernel) checks it again, but skvm refuses what the
// negotiated features forbid (§5.1.6.2.1) before anything leaves, so a
// hostile guest's frame is dropped and counted here rather than relying on
// the host to notice.

import VirtioQueue

/// A parsed virtio-net header.
struct NetHeader: Equatable {
    static let length = 12
    static let flagNeedsChecksum: UInt8 = 1
    static let gsoNone: UInt8 = 0
    static let gsoTCPv4: UInt8 = 1
    static let gsoUDP: UInt8 = 3
    static let gsoTCPv6: UInt8 = 4
    static let gsoUDPL4: UInt8 = 5
    static let gsoECN: UInt8 = 0x80

    var flags: UInt8
    var gsoType: UInt8
    var headerLength: UInt16
    var gsoSize: UInt16
    var checksumStart: UInt16
    var checksumOffset: UInt16

    init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        (self.flags, self.gsoType, self.headerLength, self.gsoSize, self.checksumStart, self.checksumOffset) =
            (flags, gsoType, headerLength, gsoSize, checksumStart, checksumOffset)
    }

    /// Parses the first 10 bytes of `bytes` (at least that many); no allocation.
    init?(_ bytes: [UInt8]) {
        guard bytes.count >= 10 else { return nil }
        func le16(_ i: Int) -> UInt16 { UInt16(bytes[i]) | UInt16(bytes[i + 1]) << 8 }
        self.init(flags: bytes[0], gsoType: bytes[1], headerLength: le16(2), gsoSize: le16(4), checksumStart: le16(6), checksumOffset: le16(8))
    }

    /// Why a transmitted frame with this header must be dropped under the
    /// negotiated `features` (nil: send it). `frameLength` excludes the header.
    func transmitProblem(features: FeatureSet, frameLength: Int) -> String? {
        if flags & Self.flagNeedsChecksum != 0 {
            // §5.1.6.2: NEEDS_CSUM only with VIRTIO_NET_F_CSUM; the checksum field inside the frame.
            guard features.contains(VirtioNet.featureChecksum) else { return "NEEDS_CSUM without VIRTIO_NET_F_CSUM" }
            guard Int(checksumStart) + Int(checksumOffset) + 2 <= frameLength else {
                return "checksum at \(checksumStart)+\(checksumOffset) outside the \(frameLength)-byte frame"
            }
        }
        if flags & ~(Self.flagNeedsChecksum | 2) != 0 { return "flags 0x\(String(flags, radix: 16))" }
        let gso = gsoType & ~Self.gsoECN
        if gsoType != Self.gsoNone {
            // §5.1.6.2.1: GSO only as negotiated, always with NEEDS_CSUM and a segment size.
            let allowed: Bool
            switch gso {
            case Self.gsoTCPv4: allowed = features.contains(VirtioNet.featureHostTSO4)
            case Self.gsoTCPv6: allowed = features.contains(VirtioNet.featureHostTSO6)
            default: allowed = false
            }
            guard allowed else { return "gso_type \(gsoType) not negotiated" }
            guard gsoType & Self.gsoECN == 0 || features.contains(VirtioNet.featureHostECN) else { return "ECN without VIRTIO_NET_F_HOST_ECN" }
            guard flags & Self.flagNeedsChecksum != 0 else { return "GSO without NEEDS_CSUM" }
            guard gsoSize > 0 else { return "GSO with gso_size 0" }
        }
        return nil
    }
}
