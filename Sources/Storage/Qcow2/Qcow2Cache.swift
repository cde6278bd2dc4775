// Qcow2Cache.swift: a small bounded cache of cluster-sized tables.
//
// L2 tables and refcount blocks are read a cluster at a time and reused
// heavily; a fixed number of slots, reused in least-recently-used order,
// bounds the memory whatever the image size. Each slot's storage is
// allocated once and overwritten in place, so a miss costs a pread and no
// allocation. The cache only stores: the owner decides when a dirty slot
// may be written (the crash-safety ordering lives in Qcow2Engine).

/// A bounded LRU set of tables keyed by their host offset.
struct Qcow2Cache<Table> {
    struct Slot {
        /// The table's host offset, or nil for an empty slot.
        var offset: UInt64?
        var table: Table
        /// Changed in memory and not yet written.
        var dirty = false
        var lastUse: UInt64 = 0
    }

    private(set) var slots: [Slot]
    private var index: [UInt64: Int] = [:]
    private var clock: UInt64 = 0

    /// `capacity` slots, each starting as `empty` (a table of the right size).
    init(capacity: Int, empty: Table) {
        slots = Array(repeating: Slot(offset: nil, table: empty), count: max(1, capacity))
    }

    /// The slot holding the table at `offset`, marked as just used.
    mutating func lookup(_ offset: UInt64) -> Int? {
        guard let i = index[offset] else { return nil }
        clock += 1
        slots[i].lastUse = clock
        return i
    }

    /// The slot to reuse for a new table: an empty one, else the least
    /// recently used. The caller writes it back first when it is dirty.
    func victim() -> Int {
        var best = 0
        for i in slots.indices {
            if slots[i].offset == nil { return i }
            if slots[i].lastUse < slots[best].lastUse { best = i }
        }
        return best
    }

    /// Makes slot `i` hold the table at `offset` (its contents set by the caller).
    mutating func assign(_ i: Int, offset: UInt64) {
        if let old = slots[i].offset { index[old] = nil }
        slots[i].offset = offset
        slots[i].dirty = false
        clock += 1
        slots[i].lastUse = clock
        index[offset] = i
    }

    /// Forgets slot `i` (after an error left it half-filled).
    mutating func drop(_ i: Int) {
        if let old = slots[i].offset { index[old] = nil }
        slots[i].offset = nil
        slots[i].dirty = false
    }

    subscript(i: Int) -> Slot {
        get { slots[i] }
        _modify { yield &slots[i] }
    }

    /// The slots that are dirty.
    var dirtySlots: [Int] { slots.indices.filter { slots[$0].dirty } }
}
