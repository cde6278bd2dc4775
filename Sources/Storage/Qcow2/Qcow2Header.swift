// Qcow2Header.swift: the qcow2 file header and its extensions (qcow2.txt,
// "Header", "Header extensions", "Feature name table").
//
// The header sits at offset 0 of the first cluster: 72 bytes in version 2,
// `header_length` (at least 104) in version 3, followed by extensions
// (type, length, data padded to 8) up to a type-0 end marker, and, anywhere
// after them in the first cluster, the backing file name. `parse` checks
// what can be checked from the header alone; `Qcow2Image` checks the rest
// (tables against the file size and against each other).

/// One entry of the feature name table extension (type 0x6803f857).
public struct Qcow2FeatureName: Equatable, Sendable {
    /// 0 incompatible, 1 compatible, 2 autoclear.
    public var type: UInt8
    /// The bit number within that bitmap (0-63).
    public var bit: UInt8
    /// The name, at most 46 bytes.
    public var name: String

    public init(type: UInt8, bit: UInt8, name: String) {
        self.type = type
        self.bit = bit
        self.name = name
    }
}

/// A header extension skvm does not interpret, kept so that a rewritten
/// header preserves it (qcow2.txt: unknown extensions "can be safely ignored").
public struct Qcow2HeaderExtension: Equatable, Sendable {
    /// The extension's type (bytes 0-3).
    public var type: UInt32
    /// Its data, without the padding.
    public var data: [UInt8]

    public init(type: UInt32, data: [UInt8]) {
        self.type = type
        self.data = data
    }
}

/// The decoded qcow2 header. Field names follow qcow2.txt.
public struct Qcow2Header: Equatable, Sendable {
    /// "QFI\xfb".
    public static let magic: UInt32 = 0x5146_49FB

    // Incompatible feature bits (qcow2.txt, bytes 72-79).
    /// Refcounts may be stale (lazy refcounts were in use when the writer stopped).
    public static let dirtyBit: UInt64 = 1 << 0
    /// Some structure is known to be corrupt; no writes until repaired.
    public static let corruptBit: UInt64 = 1 << 1
    /// Guest data lives in an external file (not supported).
    public static let externalDataFileBit: UInt64 = 1 << 2
    /// compression_type is not zlib.
    public static let compressionTypeBit: UInt64 = 1 << 3
    /// L2 entries are 128 bits with subcluster bitmaps (not supported).
    public static let extendedL2Bit: UInt64 = 1 << 4
    /// Compatible bit 0: lazy refcounts may be used.
    public static let lazyRefcountsBit: UInt64 = 1 << 0

    // Header extension types.
    static let endOfExtensions: UInt32 = 0
    static let backingFormatExtension: UInt32 = 0xE279_2ACA
    static let featureNameExtension: UInt32 = 0x6803_F857

    /// 2 or 3 (bytes 4-7).
    public var version: UInt32 = 3
    /// Where the backing file name is, 0 without one (bytes 8-15); set by `serialized`.
    public var backingFileOffset: UInt64 = 0
    /// The backing file name's length, at most 1023 (bytes 16-19); set by `serialized`.
    public var backingFileSize: UInt32 = 0
    /// log2 of the cluster size, 9 to 21 (bytes 20-23).
    public var clusterBits: UInt32 = 16
    /// The virtual disk size in bytes (bytes 24-31).
    public var size: UInt64 = 0
    /// 0 none, 1 AES, 2 LUKS (bytes 32-35); skvm opens only 0.
    public var cryptMethod: UInt32 = 0
    /// Entries in the active L1 table (bytes 36-39).
    public var l1Size: UInt32 = 0
    /// The active L1 table's offset, cluster-aligned (bytes 40-47).
    public var l1TableOffset: UInt64 = 0
    /// The refcount table's offset, cluster-aligned (bytes 48-55).
    public var refcountTableOffset: UInt64 = 0
    /// The refcount table's length in clusters (bytes 56-59).
    public var refcountTableClusters: UInt32 = 0
    /// Internal snapshots in the snapshot table (bytes 60-63).
    public var snapshotCount: UInt32 = 0
    /// The snapshot table's offset (bytes 64-71).
    public var snapshotsOffset: UInt64 = 0
    /// Bits an implementation must understand to open the image (v3, bytes 72-79).
    public var incompatibleFeatures: UInt64 = 0
    /// Bits that may be ignored (v3, bytes 80-87): bit 0 lazy refcounts.
    public var compatibleFeatures: UInt64 = 0
    /// Bits a writer that does not maintain them must clear (v3, bytes 88-95).
    public var autoclearFeatures: UInt64 = 0
    /// refcount_bits = 1 << refcountOrder; always 4 in version 2.
    public var refcountOrder: UInt32 = 4
    /// 72 in version 2; at least 104 and a multiple of 8 in version 3.
    public var headerLength: UInt32 = 112
    /// 0 zlib, 1 zstd (byte 104; 0 when absent).
    public var compressionType: UInt8 = 0
    /// Header bytes [105, headerLength), preserved when the header is rewritten.
    public var additionalFields: [UInt8] = []

    /// The backing file name as stored (may be relative to the image's folder).
    public var backingFile: String?
    /// The backing file format extension ("raw", "qcow2"), when present.
    public var backingFormat: String?
    public var featureNames: [Qcow2FeatureName] = []
    public var unknownExtensions: [Qcow2HeaderExtension] = []

    public init() {}

    /// The cluster size in bytes.
    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Bits per refcount entry.
    public var refcountBits: UInt64 { 1 << UInt64(refcountOrder) }

    /// The incompatible bits this implementation understands.
    static let knownIncompatible: UInt64 = dirtyBit | corruptBit | externalDataFileBit | compressionTypeBit | extendedL2Bit

    // MARK: - Parsing

    /// Parses the header from the first bytes of the file (`bytes` holds the
    /// first cluster, or the whole file when it is shorter).
    ///
    /// Throws `.invalidImage` for a malformed header. Feature support is
    /// decided separately by `checkSupported`.
    public static func parse(_ bytes: [UInt8], path: String) throws(BlockError) -> Qcow2Header {
        func invalid(_ reason: String) -> BlockError { .invalidImage(path: path, reason: reason) }
        guard bytes.count >= 72, bytes.be32(0) == magic else { throw invalid("not a qcow2 image (no QFI\\xfb magic)") }
        var h = Qcow2Header()
        h.version = bytes.be32(4)
        guard h.version == 2 || h.version == 3 else {
            throw BlockError.unsupportedImage(path: path, reason: "qcow2 version \(h.version) (skvm reads versions 2 and 3)")
        }
        h.backingFileOffset = bytes.be64(8)
        h.backingFileSize = bytes.be32(16)
        h.clusterBits = bytes.be32(20)
        // qcow2.txt: at least 9; QEMU's limit (and ours) is 2 MiB.
        guard (9...21).contains(h.clusterBits) else {
            throw invalid("cluster_bits \(h.clusterBits) is outside 9...21 (512 B to 2 MiB clusters)")
        }
        h.size = bytes.be64(24)
        h.cryptMethod = bytes.be32(32)
        h.l1Size = bytes.be32(36)
        h.l1TableOffset = bytes.be64(40)
        h.refcountTableOffset = bytes.be64(48)
        h.refcountTableClusters = bytes.be32(56)
        h.snapshotCount = bytes.be32(60)
        h.snapshotsOffset = bytes.be64(64)
        if h.version == 2 {
            h.headerLength = 72
            h.refcountOrder = 4
        } else {
            guard bytes.count >= 104 else { throw invalid("version 3 header truncated (\(bytes.count) bytes)") }
            h.incompatibleFeatures = bytes.be64(72)
            h.compatibleFeatures = bytes.be64(80)
            h.autoclearFeatures = bytes.be64(88)
            h.refcountOrder = bytes.be32(96)
            h.headerLength = bytes.be32(100)
            guard h.refcountOrder <= 6 else { throw invalid("refcount_order \(h.refcountOrder) is above 6") }
            guard h.headerLength >= 104, h.headerLength % 8 == 0, UInt64(h.headerLength) <= h.clusterSize,
                  Int(h.headerLength) <= bytes.count
            else { throw invalid("header_length \(h.headerLength) is not a multiple of 8 between 104 and the cluster size") }
            if h.headerLength > 104 {
                h.compressionType = bytes[104]
                h.additionalFields = Array(bytes[105..<Int(h.headerLength)])
            }
        }
        let clusterSize = h.clusterSize
        // The backing file name lives in the first cluster (qcow2.txt, Header extensions).
        if h.backingFileOffset != 0 {
            guard h.backingFileSize > 0, h.backingFileSize <= 1023 else {
                throw invalid("backing_file_size \(h.backingFileSize) is not between 1 and 1023")
            }
            let end = h.backingFileOffset.addingReportingOverflow(UInt64(h.backingFileSize))
            guard !end.overflow, h.backingFileOffset >= UInt64(h.headerLength), end.partialValue <= clusterSize,
                  end.partialValue <= UInt64(bytes.count)
            else { throw invalid("the backing file name at offset \(h.backingFileOffset) is not inside the header cluster") }
            let start = Int(h.backingFileOffset)
            h.backingFile = String(decoding: bytes[start..<(start + Int(h.backingFileSize))], as: UTF8.self)
        }
        try h.parseExtensions(bytes, path: path)
        return h
    }

    /// Walks the header extensions after `headerLength` until the end marker.
    private mutating func parseExtensions(_ bytes: [UInt8], path: String) throws(BlockError) {
        func invalid(_ reason: String) -> BlockError { .invalidImage(path: path, reason: reason) }
        // Extensions may not run into the backing file name or past the cluster.
        var limit = min(Int(clusterSize), bytes.count)
        if backingFileOffset != 0 { limit = min(limit, Int(backingFileOffset)) }
        var at = Int(headerLength)
        var seen: Set<UInt32> = []
        // Each iteration consumes at least 8 bytes, so this ends.
        while at + 8 <= limit {
            let type = bytes.be32(at)
            let length = Int(bytes.be32(at + 4))
            if type == Self.endOfExtensions { return }
            let dataStart = at + 8
            guard length <= limit - dataStart else {
                throw invalid("header extension 0x\(String(type, radix: 16)) of \(length) bytes runs past the header cluster")
            }
            let data = Array(bytes[dataStart..<(dataStart + length)])
            // "each header extension type shall appear at most once"
            guard seen.insert(type).inserted else { throw invalid("header extension 0x\(String(type, radix: 16)) appears twice") }
            switch type {
            case Self.backingFormatExtension:
                backingFormat = String(decoding: data, as: UTF8.self)
            case Self.featureNameExtension:
                guard length % 48 == 0 else { throw invalid("the feature name table's length \(length) is not a multiple of 48") }
                for i in stride(from: 0, to: length, by: 48) {
                    let name = data[(i + 2)..<(i + 48)].prefix { $0 != 0 }
                    featureNames.append(Qcow2FeatureName(type: data[i], bit: data[i + 1], name: String(decoding: name, as: UTF8.self)))
                }
            default:
                unknownExtensions.append(Qcow2HeaderExtension(type: type, data: data))
            }
            // Data is padded to a multiple of 8.
            at = dataStart + (length + 7) & ~7
        }
        // Reaching the limit without an end marker: the header area is full
        // (a v2 image without extensions has zeros here, the end marker).
    }

    // MARK: - Features

    /// Throws `.unsupportedImage` for what skvm cannot handle: encryption,
    /// unknown incompatible bits (named, with the image's own feature name
    /// when it has one), external data files, extended L2 entries, unknown
    /// compression types; and, when `writable`, the dirty and corrupt bits.
    public func checkSupported(writable: Bool, path: String) throws(BlockError) {
        func unsupported(_ reason: String) -> BlockError { .unsupportedImage(path: path, reason: reason) }
        if cryptMethod != 0 {
            let kind = cryptMethod == 1 ? "AES" : cryptMethod == 2 ? "LUKS" : "method \(cryptMethod)"
            throw unsupported("it is encrypted (crypt_method \(cryptMethod), \(kind)); decrypt it with qemu-img convert")
        }
        let unknown = incompatibleFeatures & ~Self.knownIncompatible
        if unknown != 0 {
            let names = featureNames.filter { $0.type == 0 && unknown & (1 << UInt64($0.bit & 63)) != 0 }.map(\.name)
            let named = names.isEmpty ? "" : " (\(names.joined(separator: ", ")))"
            throw unsupported("unknown incompatible feature \(bitList(unknown))\(named)")
        }
        if incompatibleFeatures & Self.externalDataFileBit != 0 {
            throw unsupported("it uses an external data file (incompatible bit 2)")
        }
        if incompatibleFeatures & Self.extendedL2Bit != 0 {
            throw unsupported("it uses extended L2 entries (subclusters, incompatible bit 4)")
        }
        let hasTypeBit = incompatibleFeatures & Self.compressionTypeBit != 0
        if hasTypeBit != (compressionType != 0) {
            throw BlockError.invalidImage(path: path, reason: "the compression type bit and compression_type \(compressionType) disagree")
        }
        guard compressionType <= 1 else { throw unsupported("compression_type \(compressionType) (skvm knows 0 zlib and 1 zstd)") }
        guard writable else { return }
        if incompatibleFeatures & Self.dirtyBit != 0 {
            throw unsupported("the dirty bit is set (refcounts may be stale after a crash with lazy refcounts); "
                + "repair it with 'qemu-img check -r all' or open it read-only")
        }
        if incompatibleFeatures & Self.corruptBit != 0 {
            throw unsupported("the corrupt bit is set; repair it with 'qemu-img check -r all' or open it read-only")
        }
    }

    // MARK: - Serializing

    /// The header, its extensions and the backing file name as the first
    /// bytes of the file; nil when they do not fit in one cluster.
    ///
    /// Version 3 headers get a feature name table, a backing format
    /// extension when `backingFormat` is set, and every preserved unknown
    /// extension. The backing file name follows the end marker, and
    /// `backingFileOffset`/`backingFileSize` are set accordingly.
    public func serialized() -> [UInt8]? {
        var h = self
        var out = [UInt8](repeating: 0, count: Int(h.version == 2 ? 72 : h.headerLength))
        var extensions: [(UInt32, [UInt8])] = []
        if let format = h.backingFormat { extensions.append((Self.backingFormatExtension, Array(format.utf8))) }
        if h.version == 3 {
            var table: [UInt8] = []
            for f in h.featureNames.isEmpty ? Self.defaultFeatureNames : h.featureNames {
                var entry = [UInt8](repeating: 0, count: 48)
                entry[0] = f.type
                entry[1] = f.bit
                for (i, b) in f.name.utf8.prefix(46).enumerated() { entry[2 + i] = b }
                table += entry
            }
            extensions.append((Self.featureNameExtension, table))
            for e in h.unknownExtensions { extensions.append((e.type, e.data)) }
        }
        var tail: [UInt8] = []
        for (type, data) in extensions {
            var e = [UInt8](repeating: 0, count: 8)
            e.putBE32(type, at: 0)
            e.putBE32(UInt32(data.count), at: 4)
            tail += e + data + [UInt8](repeating: 0, count: (8 - data.count % 8) % 8)
        }
        tail += [UInt8](repeating: 0, count: 8)  // end marker
        if let name = h.backingFile {
            h.backingFileOffset = UInt64(out.count + tail.count)
            h.backingFileSize = UInt32(name.utf8.count)
            tail += Array(name.utf8)
        } else {
            h.backingFileOffset = 0
            h.backingFileSize = 0
        }
        guard UInt64(out.count + tail.count) <= h.clusterSize else { return nil }
        out.putBE32(Self.magic, at: 0)
        out.putBE32(h.version, at: 4)
        out.putBE64(h.backingFileOffset, at: 8)
        out.putBE32(h.backingFileSize, at: 16)
        out.putBE32(h.clusterBits, at: 20)
        out.putBE64(h.size, at: 24)
        out.putBE32(h.cryptMethod, at: 32)
        out.putBE32(h.l1Size, at: 36)
        out.putBE64(h.l1TableOffset, at: 40)
        out.putBE64(h.refcountTableOffset, at: 48)
        out.putBE32(h.refcountTableClusters, at: 56)
        out.putBE32(h.snapshotCount, at: 60)
        out.putBE64(h.snapshotsOffset, at: 64)
        if h.version == 3 {
            out.putBE64(h.incompatibleFeatures, at: 72)
            out.putBE64(h.compatibleFeatures, at: 80)
            out.putBE64(h.autoclearFeatures, at: 88)
            out.putBE32(h.refcountOrder, at: 96)
            out.putBE32(h.headerLength, at: 100)
            if h.headerLength > 104 {
                out[104] = h.compressionType
                for (i, b) in h.additionalFields.prefix(Int(h.headerLength) - 105).enumerated() { out[105 + i] = b }
            }
        }
        return out + tail
    }

    /// How many entries `serialized` writes in its feature name table.
    public static var defaultFeatureNamesCount: Int { defaultFeatureNames.count }

    /// The feature name table QEMU writes, for the bits skvm knows.
    static let defaultFeatureNames: [Qcow2FeatureName] = [
        .init(type: 0, bit: 0, name: "dirty bit"),
        .init(type: 0, bit: 1, name: "corrupt bit"),
        .init(type: 0, bit: 2, name: "external data file"),
        .init(type: 0, bit: 3, name: "compression type"),
        .init(type: 0, bit: 4, name: "extended L2 entries"),
        .init(type: 1, bit: 0, name: "lazy refcounts"),
        .init(type: 2, bit: 0, name: "bitmaps"),
        .init(type: 2, bit: 1, name: "raw external data"),
    ]
}
