// Qcow2Layout.swift: cluster geometry and the L1/L2 entry formats
// (qcow2.txt, "Cluster mapping").
//
// A guest offset splits into an L1 index, an L2 index and an offset in the
// cluster; an L2 entry is one of four kinds (unallocated, zero, standard,
// compressed). Decoding checks alignment, so nothing downstream ever sees an
// unaligned host offset from a standard descriptor.

/// Sizes and masks derived from cluster_bits.
struct Qcow2Geometry: Sendable {
    let clusterBits: UInt64
    let clusterSize: UInt64
    /// Entries per L2 table (cluster_size / 8).
    let l2Entries: UInt64
    /// log2(l2Entries).
    let l2Bits: UInt64
    /// Compressed descriptor: bits [0, compressedShift) hold the host offset.
    let compressedShift: UInt64
    /// Compressed descriptor: the mask for "additional sectors" after shifting.
    let compressedSectorMask: UInt64

    init(clusterBits: UInt32) {
        let bits = UInt64(clusterBits)
        self.clusterBits = bits
        clusterSize = 1 << bits
        l2Bits = bits - 3
        l2Entries = 1 << (bits - 3)
        // qcow2.txt: x = 62 - (cluster_bits - 8).
        compressedShift = 62 - (bits - 8)
        compressedSectorMask = (1 << (bits - 8)) - 1
    }

    /// Bytes of the virtual disk one L2 table maps.
    var bytesPerL2: UInt64 { clusterSize * l2Entries }

    /// L1 entries needed for a disk of `size` bytes, or nil when absurd.
    func l1Entries(forSize size: UInt64) -> UInt64? {
        guard let rounded = alignUp(size, bytesPerL2) else { return nil }
        return rounded / bytesPerL2
    }
}

/// Bits of L1 and L2 entries (qcow2.txt, "L1 table entry", "L2 table entry").
enum Qcow2Entry {
    /// Bits 9-55: a cluster-aligned host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    /// Bit 63: the refcount is exactly one (active tables only).
    static let copied: UInt64 = 1 << 63
    /// Bit 62 of an L2 entry: a compressed cluster.
    static let compressed: UInt64 = 1 << 62
    /// Bit 0 of a standard descriptor: the cluster reads as zeros.
    static let zero: UInt64 = 1
}

/// What one guest cluster maps to.
enum Qcow2Mapping: Equatable {
    /// Reads from the backing file, or zeros without one.
    case unallocated
    /// Reads as zeros; `host` is a preallocated cluster still referenced, or 0.
    case zero(host: UInt64)
    /// Data at the cluster-aligned `host` offset; `copied` means refcount 1
    /// (writable in place).
    case standard(host: UInt64, copied: Bool)
    /// Compressed data at the unaligned byte `offset`, `length` bytes up to
    /// the end of its last 512-byte sector.
    case compressed(offset: UInt64, length: UInt64)

    /// Decodes an L2 entry; nil when a standard descriptor's offset is not
    /// cluster-aligned or a non-zero entry has offset 0 with bit 63 set.
    init?(entry: UInt64, geometry g: Qcow2Geometry) {
        if entry & Qcow2Entry.compressed != 0 {
            let descriptor = entry & ~(Qcow2Entry.compressed | Qcow2Entry.copied)
            let offset = descriptor & ((1 << g.compressedShift) - 1)
            let sectors = (descriptor >> g.compressedShift) & g.compressedSectorMask + 1
            // The data runs to the end of its last sector (QEMU's csize).
            let end = (offset & ~511) + sectors * 512
            guard offset != 0 else { return nil }
            self = .compressed(offset: offset, length: end - offset)
            return
        }
        let host = entry & Qcow2Entry.offsetMask
        guard host & (g.clusterSize - 1) == 0 else { return nil }
        if entry & Qcow2Entry.zero != 0 {
            self = .zero(host: host)
        } else if host == 0 {
            guard entry & Qcow2Entry.copied == 0 else { return nil }
            self = .unallocated
        } else {
            self = .standard(host: host, copied: entry & Qcow2Entry.copied != 0)
        }
    }

    /// The host clusters this mapping holds a reference on, as a range of
    /// byte offsets [start, end) (empty for unallocated and plain zero).
    func referencedRange(clusterSize: UInt64) -> (start: UInt64, end: UInt64)? {
        switch self {
        case .unallocated, .zero(host: 0): return nil
        case .zero(let host), .standard(let host, _): return (host, host + clusterSize)
        case .compressed(let offset, let length): return (offset & ~(clusterSize - 1), offset + length)
        }
    }
}
