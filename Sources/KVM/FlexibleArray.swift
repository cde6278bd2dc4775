// FlexibleArray.swift: C structs that end in a flexible array member.
//
// `struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; }`
// does not import into Swift with its `entries` (SWIFT-ON-KVM.md, pitfall 6),
// and neither do kvm_msrs or kvm_irq_routing. All of them are "a header of two
// u32, then N entries", so one helper lays them out in a byte buffer.

/// A `{ u32 count; u32 pad; Entry entries[]; }` block for an ioctl.
struct FlexibleArray<Entry> {
    /// The header (two 32-bit words) and then the entries, as bytes.
    private(set) var bytes: [UInt8]
    private let headerSize = 8

    /// Room for `capacity` entries, count set to `capacity` (what KVM_GET_SUPPORTED_CPUID wants).
    init(capacity: Int) {
        bytes = [UInt8](repeating: 0, count: headerSize + capacity * MemoryLayout<Entry>.stride)
        setCount(UInt32(capacity))
    }

    /// Exactly `entries`, count set to match.
    init(_ entries: [Entry]) {
        self.init(capacity: entries.count)
        bytes.withUnsafeMutableBytes { raw in
            for (i, e) in entries.enumerated() {
                // SAFETY: the buffer has headerSize + count * stride bytes; Entry is a
                // plain C struct (unions included), copied byte for byte.
                withUnsafeBytes(of: e) { source in
                    UnsafeMutableRawBufferPointer(rebasing: raw[(headerSize + i * MemoryLayout<Entry>.stride)...]).copyMemory(from: source)
                }
            }
        }
    }

    var count: UInt32 { bytes.withUnsafeBytes { $0.load(as: UInt32.self) } }

    private mutating func setCount(_ n: UInt32) {
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: n, as: UInt32.self) }
    }

    /// Calls `body` with a pointer to the block, for the ioctl.
    mutating func withPointer<R>(_ body: (UnsafeMutableRawPointer) -> R) -> R {
        bytes.withUnsafeMutableBytes { raw in
            // SAFETY: baseAddress is non-nil: the buffer holds at least the 8-byte header.
            body(raw.baseAddress.unsafelyUnwrapped)
        }
    }
}

extension FlexibleArray where Entry: BitwiseCopyable {
    /// The entries, as many as the count says (never more than the buffer holds).
    var entries: [Entry] {
        bytes.withUnsafeBytes { raw in
            let capacity = (raw.count - headerSize) / MemoryLayout<Entry>.stride
            let n = min(Int(raw.load(as: UInt32.self)), capacity)
            return (0..<n).map { raw.loadUnaligned(fromByteOffset: headerSize + $0 * MemoryLayout<Entry>.stride, as: Entry.self) }
        }
    }

}
