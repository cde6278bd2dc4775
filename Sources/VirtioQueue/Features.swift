// Features.swift: the device status field and the feature bits.
//
// virtio 1.2 §2.1 "Device Status Field", §2.2 "Feature Bits", §6 "Reserved
// Feature Bits". Bits 0-23 belong to the device type (virtio-blk's FLUSH is
// bit 9), 24-40 are the ring and transport bits named below. The driver
// accepts a subset of the offer and sets FEATURES_OK (§3.1.1); transports
// show the 64 bits as two 32-bit words picked by a select register.

/// A set of virtio feature bits (64 of them; virtio 1.2 §2.2).
///
/// Members use the spec's names in lower camel case (`VIRTIO_F_VERSION_1` is
/// `.version1`); the two ring bits keep Linux's `RING_` (`.ringEventIdx`).
/// Device-specific bits come from `FeatureSet(bit:)`.
public struct FeatureSet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The set holding only bit `bit` (0-63); an out-of-range bit gives the empty set.
    public init(bit: Int) {
        self.rawValue = (0..<64).contains(bit) ? UInt64(1) << UInt64(bit) : 0
    }

    /// VIRTIO_F_INDIRECT_DESC (28): indirect descriptor tables (§2.7.5.3).
    public static let ringIndirectDesc = FeatureSet(bit: 28)
    /// VIRTIO_F_EVENT_IDX (29): `used_event`/`avail_event` suppression (§2.7.7, §2.7.10).
    public static let ringEventIdx = FeatureSet(bit: 29)
    /// VIRTIO_F_VERSION_1 (32): virtio 1.x, not legacy; a modern device requires it.
    public static let version1 = FeatureSet(bit: 32)
    /// VIRTIO_F_ACCESS_PLATFORM (33): accesses go through an IOMMU (not offered).
    public static let accessPlatform = FeatureSet(bit: 33)
    /// VIRTIO_F_RING_PACKED (34): the packed layout (§2.8); not implemented, never offer it.
    public static let ringPacked = FeatureSet(bit: 34)
    /// VIRTIO_F_IN_ORDER (35): the device uses buffers in the order they were made available.
    public static let inOrder = FeatureSet(bit: 35)
    /// VIRTIO_F_ORDER_PLATFORM (36): accesses need the platform's ordering (hardware devices).
    public static let orderPlatform = FeatureSet(bit: 36)
    /// VIRTIO_F_SR_IOV (37): the device supports single root I/O virtualization.
    public static let srIOV = FeatureSet(bit: 37)
    /// VIRTIO_F_NOTIFICATION_DATA (38): available buffer notifications carry extra data.
    public static let notificationData = FeatureSet(bit: 38)
    /// VIRTIO_F_NOTIF_CONFIG_DATA (39): the driver uses a device-provided value in notifications.
    public static let notifConfigData = FeatureSet(bit: 39)
    /// VIRTIO_F_RING_RESET (40): the driver may reset a single queue.
    public static let ringReset = FeatureSet(bit: 40)

    /// Bits 0-31 (`select` 0) or 32-63 (`select` 1); 0 for any other select.
    public func word(_ select: UInt32) -> UInt32 {
        switch select {
        case 0: return UInt32(truncatingIfNeeded: rawValue)
        case 1: return UInt32(truncatingIfNeeded: rawValue >> 32)
        default: return 0
        }
    }

    /// This set with word `select` replaced by `value` (other selects: unchanged).
    public func settingWord(_ select: UInt32, to value: UInt32) -> FeatureSet {
        switch select {
        case 0: return FeatureSet(rawValue: (rawValue & 0xFFFF_FFFF_0000_0000) | UInt64(value))
        case 1: return FeatureSet(rawValue: (rawValue & 0x0000_0000_FFFF_FFFF) | (UInt64(value) << 32))
        default: return self
        }
    }

    /// The set bits in ascending order ("{28, 29, 32}").
    public var description: String {
        let bits = (0..<64).filter { rawValue & (UInt64(1) << UInt64($0)) != 0 }
        return "{" + bits.map(String.init).joined(separator: ", ") + "}"
    }
}

/// The device status field (virtio 1.2 §2.1). The driver sets ACKNOWLEDGE,
/// DRIVER, FEATURES_OK (and reads it back), then DRIVER_OK, after which the
/// device may use its queues (§3.1.1); writing 0 resets (§2.4). The device
/// only ever adds DEVICE_NEEDS_RESET.
public struct DeviceStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// ACKNOWLEDGE (1): the guest OS has found the device.
    public static let acknowledge = DeviceStatus(rawValue: 1)
    /// DRIVER (2): the guest OS knows how to drive the device.
    public static let driver = DeviceStatus(rawValue: 2)
    /// DRIVER_OK (4): the driver is set up and ready to drive the device.
    public static let driverOK = DeviceStatus(rawValue: 4)
    /// FEATURES_OK (8): feature negotiation is complete.
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// DEVICE_NEEDS_RESET (64): the device hit an unrecoverable error (a malformed queue).
    public static let deviceNeedsReset = DeviceStatus(rawValue: 64)
    /// FAILED (128): the driver gave up on the device.
    public static let failed = DeviceStatus(rawValue: 128)

    /// The set bits' spec names joined by `|`, unknown bits in hex, "0" when empty.
    public var description: String {
        let names: [(DeviceStatus, String)] = [
            (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.driverOK, "DRIVER_OK"),
            (.featuresOK, "FEATURES_OK"), (.deviceNeedsReset, "DEVICE_NEEDS_RESET"), (.failed, "FAILED"),
        ]
        var parts = names.filter { contains($0.0) }.map(\.1)
        let known = names.reduce(UInt8(0)) { $0 | $1.0.rawValue }
        if rawValue & ~known != 0 { parts.append("0x" + String(rawValue & ~known, radix: 16)) }
        return parts.isEmpty ? "0" : parts.joined(separator: "|")
    }
}
