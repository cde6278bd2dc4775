// PageTables.swift: identity-mapped page tables for entering a kernel in long mode.
//
// 64-bit mode cannot run without paging, so a loader that enters a kernel in
// long mode must provide page tables (boot.rst, 64-bit boot protocol: the
// kernel, zero page and command line must be identity mapped). skvm maps the
// first 4 GiB with 2 MiB pages: one PML4 entry -> one PDPT whose 4 entries
// point to 4 page directories of 512 entries each (Intel SDM vol. 3, 4.5
// "4-Level Paging"). The kernel replaces them with its own almost at once.

import Memory

/// Builds the boot page tables.
public enum IdentityPageTables {
    /// Present | writable.
    static let presentWritable: UInt64 = 0x3
    /// PS: this PD entry maps a 2 MiB page.
    static let largePage: UInt64 = 0x80

    /// The bytes of PML4, PDPT and 4 PDs (6 pages) to place at `base`,
    /// identity-mapping [0, 4 GiB).
    public static func build(at base: UInt64) -> [UInt8] {
        var tables = [UInt8](repeating: 0, count: 6 * 4096)
        func put(_ value: UInt64, page: Int, index: Int) {
            let at = page * 4096 + index * 8
            for i in 0..<8 { tables[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        put((base + 0x1000) | presentWritable, page: 0, index: 0)            // PML4[0] -> PDPT
        for gib in 0..<4 {
            put((base + UInt64(2 + gib) * 0x1000) | presentWritable, page: 1, index: gib)  // PDPT[i] -> PD i
            for entry in 0..<512 {
                let physical = (UInt64(gib) << 30) | (UInt64(entry) << 21)
                put(physical | presentWritable | largePage, page: 2 + gib, index: entry)
            }
        }
        return tables
    }
}
