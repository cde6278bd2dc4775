// GuestMemory.swift: the guest's RAM, mapped into this process.
//
// KVM does not allocate guest memory: the VMM mmaps ordinary anonymous memory
// and tells KVM "guest-physical range X is backed by my virtual range Y"
// (KVM_SET_USER_MEMORY_REGION). This file owns those mappings and is the only
// place in skvm that turns a guest address into a host pointer. Every access
// checks `address + size` for overflow and against the regions first, so no
// guest-chosen number can make skvm read or write outside guest RAM.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// How guest RAM is backed on the host.
public enum MemoryBacking: Sendable, Equatable {
    /// Ordinary anonymous memory in 4 KiB pages, faulted in on first touch.
    case anonymous
    /// Anonymous memory, 2 MiB aligned, with `madvise(MADV_HUGEPAGE)` so that
    /// the kernel backs it with transparent hugepages where it can.
    case transparentHugepages
    /// Explicit 2 MiB hugetlbfs pages (`MAP_HUGETLB`) from the host's pool.
    case hugetlb
}

/// One contiguous piece of guest RAM and the host memory behind it.
public struct GuestRegion: Sendable {
    /// The guest-physical range this region covers.
    public let range: GuestRange
    /// The host virtual address of the region's first byte (for KVM_SET_USER_MEMORY_REGION).
    public let userspaceAddress: UInt64
}

/// The guest's RAM: a few regions, each mmapped at creation and unmapped on deinit.
///
/// Shared by every vCPU thread and the I/O thread: the guest itself writes it
/// concurrently at any time, so this class holds no mutable state of its own
/// after `init` and is `@unchecked Sendable` for that reason.
public final class GuestMemory: @unchecked Sendable {
    /// The regions, sorted by guest address, disjoint.
    public let regions: [GuestRegion]
    /// How the regions are backed.
    public let backing: MemoryBacking
    /// Total bytes of guest RAM.
    public let size: UInt64

    private struct Mapping {
        let base: UnsafeMutableRawPointer  // what mmap returned
        let length: Int                    // what to munmap
    }
    private let mappings: [Mapping]
    /// Host address of each region's first byte, parallel to `regions`.
    private let hostBases: [UnsafeMutableRawPointer]

    /// 2 MiB, the x86 large-page size.
    public static let hugepageSize: UInt64 = 2 << 20

    /// Maps guest RAM for `layout` (guest ranges, sorted, disjoint, 4 KiB aligned;
    /// 2 MiB aligned for hugetlb). With `prefault`, every page is allocated now
    /// (MAP_POPULATE) rather than on the guest's first touch.
    public init(layout: [GuestRange], backing: MemoryBacking = .anonymous, prefault: Bool = false) throws(MemoryError) {
        guard !layout.isEmpty else { throw .invalidLayout("no RAM regions") }
        let pageSize: UInt64 = backing == .hugetlb ? Self.hugepageSize : 4096
        var previousEnd: GuestAddress? = nil
        for r in layout {
            guard r.length > 0 else { throw .invalidLayout("empty region at \(r.start)") }
            guard r.start.rawValue % pageSize == 0, r.length % pageSize == 0 else {
                throw .invalidLayout("region \(r) is not aligned to \(formatBytes(pageSize))")
            }
            if let p = previousEnd, r.start < p { throw .invalidLayout("region \(r) overlaps or is out of order") }
            previousEnd = r.end
        }
        var maps: [Mapping] = []
        var regions: [GuestRegion] = []
        var bases: [UnsafeMutableRawPointer] = []
        // On failure part-way, unmap what was mapped so nothing leaks.
        func unmapAll() { for m in maps { munmap(m.base, m.length) } }
        for r in layout {
            guard r.length <= UInt64(Int.max) - Self.hugepageSize else {
                unmapAll()
                throw .mapFailed(size: r.length, errno: ENOMEM, hugetlb: backing == .hugetlb)
            }
            do {
                let (mapping, aligned) = try Self.map(length: Int(r.length), backing: backing, prefault: prefault)
                maps.append(mapping)
                regions.append(GuestRegion(range: r, userspaceAddress: UInt64(UInt(bitPattern: aligned))))
                bases.append(aligned)
            } catch {
                unmapAll()
                throw error
            }
        }
        self.mappings = maps
        self.regions = regions
        self.hostBases = bases
        self.backing = backing
        self.size = layout.reduce(0) { $0 + $1.length }
    }

    deinit {
        for m in mappings { munmap(m.base, m.length) }
    }

    /// mmaps `length` bytes; returns the mapping to unmap later and the aligned start.
    private static func map(length: Int, backing: MemoryBacking, prefault: Bool) throws(MemoryError) -> (Mapping, UnsafeMutableRawPointer) {
        // THP regions are prefaulted after madvise (MAP_POPULATE would fault 4 KiB pages first).
        var flags = MAP_PRIVATE | MAP_ANONYMOUS | (prefault && backing != .transparentHugepages ? MAP_POPULATE : 0)
        var mapLength = length
        switch backing {
        case .anonymous: flags |= MAP_NORESERVE
        case .hugetlb:
            // 2 MiB pages, the default hugetlb size on x86-64. Without
            // MAP_NORESERVE the pages are reserved now, so a short pool fails
            // here rather than as a SIGBUS when the guest first touches them.
            flags |= MAP_HUGETLB
        case .transparentHugepages: flags |= MAP_NORESERVE
        }
        if backing == .transparentHugepages {
            // THP only backs 2 MiB-aligned 2 MiB extents: over-map and align by hand.
            mapLength += Int(hugepageSize)
        }
        let p = mmap(nil, mapLength, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let p, p != MAP_FAILED else {
            throw .mapFailed(size: UInt64(length), errno: errno, hugetlb: backing == .hugetlb)
        }
        var start = p
        if backing == .transparentHugepages {
            let addr = UInt(bitPattern: p)
            let mask = UInt(hugepageSize) - 1
            start = p.advanced(by: Int(((addr + mask) & ~mask) - addr))
            // Advisory only: where THP is off the memory simply stays 4 KiB pages.
            _ = madvise(start, length, MADV_HUGEPAGE)
            if prefault {
                // Touch every page: the first write in each 2 MiB extent faults in a hugepage.
                for offset in stride(from: 0, to: length, by: 4096) {
                    // SAFETY: offset < length, inside the mapping just made.
                    start.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
                }
            }
        }
        return (Mapping(base: p, length: mapLength), start)
    }

    // MARK: - Translation (the one place guest addresses become pointers)

    /// The host pointer for [address, address + size), which must lie inside one region.
    @inline(__always)
    private func pointer(_ address: GuestAddress, _ size: UInt64) throws(MemoryError) -> UnsafeMutableRawPointer {
        guard address.adding(size) != nil else { throw .overflow(address: address.rawValue, size: size) }
        // Few regions (two at most on x86): a linear scan beats anything cleverer.
        for (i, r) in regions.enumerated() {
            guard let offset = address.offset(from: r.range.start), offset < r.range.length,
                size <= r.range.length - offset
            else { continue }
            // SAFETY: offset + size <= region length (checked just above), and the
            // region's host mapping lives as long as self.
            return hostBases[i].advanced(by: Int(offset))
        }
        throw .outOfRange(address: address.rawValue, size: size)
    }

    /// True when [address, address + size) is entirely guest RAM in one region.
    public func contains(_ address: GuestAddress, size: UInt64) -> Bool {
        (try? pointer(address, size)) != nil
    }

    // MARK: - Typed access

    /// Reads a `T` at `address` (unaligned loads are fine on x86).
    public func read<T: ByteValued>(_ type: T.Type = T.self, at address: GuestAddress) throws(MemoryError) -> T {
        let p = try pointer(address, UInt64(MemoryLayout<T>.size))
        // SAFETY: p addresses MemoryLayout<T>.size bytes of guest RAM; T is ByteValued.
        return p.loadUnaligned(as: T.self)
    }

    /// Writes `value` at `address`.
    public func write<T: ByteValued>(_ value: T, at address: GuestAddress) throws(MemoryError) {
        let p = try pointer(address, UInt64(MemoryLayout<T>.size))
        // SAFETY: as in read(_:at:).
        p.storeBytes(of: value, as: T.self)
    }

    // MARK: - Fields the guest changes concurrently

    /// Reads the 16-bit field at `address` with one load that cannot tear:
    /// virtio's ring indexes and flags, which the driver writes while the
    /// device reads (a generic `read` may be compiled as a byte-wise copy).
    /// An odd address (never the case for a validated ring) falls back to `read`.
    public func loadShared16(at address: GuestAddress) throws(MemoryError) -> UInt16 {
        let p = try pointer(address, 2)
        guard address.rawValue & 1 == 0 else { return p.loadUnaligned(as: UInt16.self) }
        // SAFETY: p addresses 2 bytes of guest RAM, 2-byte aligned.
        return ckvm_load_shared_u16(p)
    }

    /// Writes the 16-bit field at `address` with one store that cannot tear
    /// (used->idx, used->flags, avail_event); see `loadShared16`.
    public func storeShared16(_ value: UInt16, at address: GuestAddress) throws(MemoryError) {
        let p = try pointer(address, 2)
        guard address.rawValue & 1 == 0 else { return p.storeBytes(of: value, as: UInt16.self) }
        // SAFETY: as in loadShared16.
        ckvm_store_shared_u16(p, value)
    }

    // MARK: - Byte access

    /// Copies `bytes` into guest memory at `address`.
    public func write(bytes: some Collection<UInt8>, at address: GuestAddress) throws(MemoryError) {
        let p = try pointer(address, UInt64(bytes.count))
        // SAFETY: p addresses bytes.count bytes of guest RAM.
        let destination = UnsafeMutableRawBufferPointer(start: p, count: bytes.count)
        _ = destination.initializeMemory(as: UInt8.self, from: bytes)
    }

    /// Reads `count` bytes at `address`.
    public func readBytes(at address: GuestAddress, count: Int) throws(MemoryError) -> [UInt8] {
        let p = try pointer(address, UInt64(count))
        // SAFETY: p addresses count bytes of guest RAM.
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Appends the `count` bytes at `address` to `buffer`, with no intermediate
    /// array: gathering a scatter list (a virtqueue descriptor chain) into one
    /// buffer costs one copy per piece. On error `buffer` is left unchanged.
    public func readBytes(at address: GuestAddress, count: Int, appendingTo buffer: inout [UInt8]) throws(MemoryError) {
        // A negative count is a caller's bug; report it rather than trap on the conversion.
        guard count >= 0 else { throw .outOfRange(address: address.rawValue, size: UInt64(bitPattern: Int64(count))) }
        let p = try pointer(address, UInt64(count))
        // SAFETY: p addresses count bytes of guest RAM (checked by pointer(_:_:));
        // the raw buffer lives only for this call.
        buffer.append(contentsOf: UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Sets `count` bytes at `address` to `byte`.
    public func fill(_ byte: UInt8, at address: GuestAddress, count: UInt64) throws(MemoryError) {
        let p = try pointer(address, count)
        // SAFETY: p addresses count bytes of guest RAM.
        p.initializeMemory(as: UInt8.self, repeating: byte, count: Int(count))
    }

    /// Calls `body` with the guest bytes [address, address + count), for
    /// zero-copy I/O between a host file and guest RAM (a disk read straight
    /// into a virtqueue buffer). The range is checked first; the buffer is
    /// valid only during the call and must not be kept.
    public func withMutableBytes<R>(at address: GuestAddress, count: Int,
                                    _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        guard count >= 0 else { throw MemoryError.outOfRange(address: address.rawValue, size: 0) }
        let p = try pointer(address, UInt64(count))
        // SAFETY: p addresses count bytes of guest RAM, mapped while self lives.
        return try body(UnsafeMutableRawBufferPointer(start: p, count: count))
    }

    /// Copies `bytes` (host memory) into guest memory at `address` with one memcpy.
    public func write(raw bytes: UnsafeRawBufferPointer, at address: GuestAddress) throws(MemoryError) {
        guard bytes.count > 0, let source = bytes.baseAddress else { return }
        let p = try pointer(address, UInt64(bytes.count))
        // SAFETY: p addresses bytes.count bytes of guest RAM; the source is the caller's.
        p.copyMemory(from: source, byteCount: bytes.count)
    }

    /// The host address of the guest bytes [address, address + count), for
    /// scatter-gather system calls (writev of a descriptor chain to a tap)
    /// that need several ranges at once. The range is checked first. The
    /// pointer stays valid while this GuestMemory lives; use it only for
    /// the system call at hand and never keep it (the guest owns the bytes
    /// and may change them at any time).
    public func hostAddress(at address: GuestAddress, count: Int) throws(MemoryError) -> UnsafeMutableRawPointer {
        guard count >= 0 else { throw .outOfRange(address: address.rawValue, size: 0) }
        return try pointer(address, UInt64(count))
    }

    /// Drops and re-creates the host mapping of the 4 KiB guest page at
    /// `address` (mprotect to PROT_NONE and back), so that KVM's MMU notifier
    /// invalidates its mapping and the guest faults it in again; the contents
    /// stay. This is what QEMU's pc-testdev "flush page" port does.
    public func remapPage(at address: GuestAddress) throws(MemoryError) {
        let page = GuestAddress(address.rawValue & ~0xFFF)
        let p = try pointer(page, 4096)
        // SAFETY: p is a page-aligned page of guest RAM (checked above), host
        // pages are 4 KiB or larger and aligned the same way.
        mprotect(p, 4096, PROT_NONE)
        mprotect(p, 4096, PROT_READ | PROT_WRITE)
    }

    /// A NUL-terminated string at `address` of at most `maxLength` bytes, or nil
    /// when no NUL is found within `maxLength` bytes of guest RAM.
    public func readCString(at address: GuestAddress, maxLength: Int) throws(MemoryError) -> [UInt8]? {
        var bytes: [UInt8] = []
        var a = address
        while bytes.count < maxLength {
            let b: UInt8 = try read(at: a)
            if b == 0 { return bytes }
            bytes.append(b)
            guard let next = a.adding(1) else { throw .overflow(address: a.rawValue, size: 1) }
            a = next
        }
        return nil
    }
}
