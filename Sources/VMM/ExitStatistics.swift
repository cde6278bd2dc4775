// ExitStatistics.swift: counting exits without allocating on the hot path.
//
// `--stats` prints, at the end, how many exits of each reason each run had,
// and which ports and MMIO addresses caused them. Every counter is allocated
// before the first KVM_RUN; counting is an array increment or a probe into a
// fixed open-addressing table.

import CKVM

/// A fixed-capacity map from (address, direction) to a count.
public struct AddressCounter: Sendable {
    public struct Slot: Sendable, Equatable {
        public var address: UInt64
        public var isWrite: Bool
        public var count: UInt64
    }
    /// Power-of-two capacity; when full, new keys are counted in `overflow`.
    private var slots: [Slot?]
    /// Accesses to keys that did not fit.
    public private(set) var overflow: UInt64 = 0

    public init(capacity: Int = 1024) {
        var c = 1
        while c < capacity { c <<= 1 }
        slots = [Slot?](repeating: nil, count: c)
    }

    /// Adds `n` to (address, isWrite) and returns the new count (0 when the key did not fit).
    @inline(__always) @discardableResult
    public mutating func increment(_ address: UInt64, isWrite: Bool, by n: UInt64 = 1) -> UInt64 {
        let mask = slots.count - 1
        // Fibonacci hashing spreads nearby ports and addresses over the table.
        var i = Int(truncatingIfNeeded: (((address << 1) | (isWrite ? 1 : 0)) &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
        for _ in 0..<slots.count {
            if let s = slots[i] {
                if s.address == address && s.isWrite == isWrite {
                    let count = s.count &+ n
                    slots[i] = Slot(address: address, isWrite: isWrite, count: count)
                    return count
                }
                i = (i + 1) & mask
            } else {
                slots[i] = Slot(address: address, isWrite: isWrite, count: n)
                return n
            }
        }
        overflow &+= n
        return 0
    }

    /// Every key with its count, most frequent first.
    public var sorted: [Slot] {
        slots.compactMap { $0 }.sorted { $0.count != $1.count ? $0.count > $1.count : $0.address < $1.address }
    }

    /// Adds `other`'s counts to this one's.
    public mutating func merge(_ other: AddressCounter) {
        for s in other.slots.compactMap({ $0 }) { increment(s.address, isWrite: s.isWrite, by: s.count) }
        overflow &+= other.overflow
    }
}

/// Per-vCPU exit counters.
public struct ExitStatistics: Sendable {
    /// Exits by KVM_EXIT_* reason (index), plus one slot for reasons >= 63.
    public private(set) var byReason: [UInt64] = [UInt64](repeating: 0, count: 64)
    public var pio = AddressCounter()
    public var mmio = AddressCounter()

    public init() {}

    @inline(__always)
    public mutating func count(reason: UInt32) {
        byReason[Int(min(reason, 63))] &+= 1
    }

    public var total: UInt64 { byReason.reduce(0, &+) }

    public mutating func merge(_ other: ExitStatistics) {
        for i in byReason.indices { byReason[i] &+= other.byReason[i] }
        pio.merge(other.pio)
        mmio.merge(other.mmio)
    }

    /// The table `--stats` prints.
    public func table(pioNames: (UInt64) -> String, mmioNames: (UInt64) -> String) -> String {
        var out = pad("exit reason", 20) + leftPad("count", 9) + "\n"
        for (reason, n) in byReason.enumerated() where n > 0 {
            out += pad(exitReasonName(UInt32(reason)), 20) + leftPad(String(n), 9) + "\n"
        }
        out += pad("total", 20) + leftPad(String(total), 9) + "\n"
        let ports = pio.sorted
        if !ports.isEmpty {
            out += "\n" + pad("port", 10) + pad("dir", 5) + leftPad("count", 8) + "  device\n"
            for s in ports {
                out += pad(hex4(s.address), 10) + pad(s.isWrite ? "out" : "in", 5) + leftPad(String(s.count), 8) + "  " + pioNames(s.address) + "\n"
            }
            if pio.overflow > 0 { out += "(\(pio.overflow) more at ports not listed)\n" }
        }
        let addresses = mmio.sorted
        if !addresses.isEmpty {
            out += "\n" + pad("mmio address", 20) + pad("dir", 6) + leftPad("count", 8) + "  device\n"
            for s in addresses {
                out += pad("0x" + String(s.address, radix: 16), 20) + pad(s.isWrite ? "write" : "read", 6) + leftPad(String(s.count), 8) + "  " + mmioNames(s.address) + "\n"
            }
            if mmio.overflow > 0 { out += "(\(mmio.overflow) more at addresses not listed)\n" }
        }
        return out
    }
}

/// KVM_EXIT_* as text ("IO", "MMIO", "SHUTDOWN", ...), for tables and diagnoses.
public func exitReasonName(_ reason: UInt32) -> String {
    let names: [Int32: String] = [
        KVM_EXIT_UNKNOWN: "UNKNOWN", KVM_EXIT_EXCEPTION: "EXCEPTION", KVM_EXIT_IO: "IO",
        KVM_EXIT_HYPERCALL: "HYPERCALL", KVM_EXIT_DEBUG: "DEBUG", KVM_EXIT_HLT: "HLT", KVM_EXIT_MMIO: "MMIO",
        KVM_EXIT_IRQ_WINDOW_OPEN: "IRQ_WINDOW_OPEN", KVM_EXIT_SHUTDOWN: "SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY",
        KVM_EXIT_INTR: "INTR", KVM_EXIT_SET_TPR: "SET_TPR", KVM_EXIT_TPR_ACCESS: "TPR_ACCESS", KVM_EXIT_NMI: "NMI",
        KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR", KVM_EXIT_SYSTEM_EVENT: "SYSTEM_EVENT",
        KVM_EXIT_IOAPIC_EOI: "IOAPIC_EOI", KVM_EXIT_X86_RDMSR: "X86_RDMSR", KVM_EXIT_X86_WRMSR: "X86_WRMSR",
        KVM_EXIT_DIRTY_RING_FULL: "DIRTY_RING_FULL", KVM_EXIT_X86_BUS_LOCK: "X86_BUS_LOCK", KVM_EXIT_NOTIFY: "NOTIFY",
    ]
    return names[Int32(bitPattern: reason)] ?? "exit \(reason)"
}

func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }
func leftPad(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
func hex4(_ v: UInt64) -> String { "0x" + leftPad(String(v, radix: 16), 4).replacingSpaces() }

extension String {
    func replacingSpaces() -> String { String(map { $0 == " " ? "0" : $0 }) }
}
