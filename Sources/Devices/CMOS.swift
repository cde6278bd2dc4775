// CMOS.swift: the MC146818 real-time clock and CMOS RAM at ports 0x70/0x71.
//
// Write a register number to 0x70 (bit 7 masks NMIs on a PC), then read or
// write it at 0x71. Registers 0x00-0x09 are the clock (seconds, minutes,
// hours, day of week, day, month, year; BCD unless register B says binary),
// 0x32 the century; 0x0A-0x0D the status registers. Linux reads the clock at
// boot (read_persistent_clock) to set the system time. skvm answers from the
// host's clock in UTC on every read, so the guest's time is the host's; writes
// to the clock registers are ignored (the host clock stays the truth).
// The memory-size bytes firmware leaves there (0x15-0x18, 0x30-0x31,
// 0x34-0x35, 0x5B-0x5D, as QEMU and SeaBIOS fill them) are filled too.

#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A broken-down UTC time.
public struct WallClockTime: Equatable, Sendable {
    public var year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int
    /// 1 = Sunday ... 7 = Saturday, as the RTC counts.
    public var weekday: Int

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, weekday: Int) {
        (self.year, self.month, self.day, self.hour, self.minute, self.second, self.weekday) = (year, month, day, hour, minute, second, weekday)
    }

    /// The host's current time, UTC.
    public static func now() -> WallClockTime {
        var t = time(nil)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        return WallClockTime(year: Int(tm.tm_year) + 1900, month: Int(tm.tm_mon) + 1, day: Int(tm.tm_mday),
                             hour: Int(tm.tm_hour), minute: Int(tm.tm_min), second: Int(tm.tm_sec), weekday: Int(tm.tm_wday) + 1)
    }
}

/// The RTC and CMOS RAM.
public final class CMOS: BusDevice {
    public let name = "cmos (RTC)"

    static let statusA: UInt8 = 0x0A
    static let statusB: UInt8 = 0x0B
    static let statusC: UInt8 = 0x0C
    static let statusD: UInt8 = 0x0D
    /// Register B bit 2: binary (not BCD) clock values; bit 1: 24-hour mode.
    static let binaryMode: UInt8 = 0x04

    private struct State {
        var index: UInt8 = 0
        var ram = [UInt8](repeating: 0, count: 128)
    }
    private let state: Mutex<State>
    private let clock: @Sendable () -> WallClockTime

    /// A CMOS for a guest with `memorySize` bytes of RAM, reading time from `clock`.
    public init(memorySize: UInt64, clock: @escaping @Sendable () -> WallClockTime = WallClockTime.now) {
        var s = State()
        s.ram[Int(Self.statusA)] = 0x26  // 32.768 kHz time base, 1024 Hz rate; UIP clear
        s.ram[Int(Self.statusB)] = 0x02  // 24-hour, BCD
        s.ram[Int(Self.statusD)] = 0x80  // VRT: the battery is good
        // Base memory 640 KiB; extended memory (KiB from 1 MiB, capped at 63 MiB);
        // memory above 16 MiB in 64 KiB units (below 4 GiB); above 4 GiB in 64 KiB units.
        func put16(_ v: UInt64, _ lo: Int) { s.ram[lo] = UInt8(v & 0xFF); s.ram[lo + 1] = UInt8((v >> 8) & 0xFF) }
        let lowRAM = min(memorySize, 0xC000_0000)
        put16(640, 0x15)
        let extendedKiB = min(lowRAM > 0x10_0000 ? (lowRAM - 0x10_0000) / 1024 : 0, 0xFC00)
        put16(extendedKiB, 0x17)
        put16(extendedKiB, 0x30)
        put16(min(lowRAM > 0x100_0000 ? (lowRAM - 0x100_0000) >> 16 : 0, 0xFFFF), 0x34)
        let high = memorySize > lowRAM ? (memorySize - lowRAM) >> 16 : 0
        s.ram[0x5B] = UInt8(high & 0xFF); s.ram[0x5C] = UInt8((high >> 8) & 0xFF); s.ram[0x5D] = UInt8((high >> 16) & 0xFF)
        self.state = Mutex(s)
        self.clock = clock
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0: return UInt64(state.withLock { $0.index })
        case 1:
            return UInt64(state.withLock { s -> UInt8 in
                let i = s.index & 0x7F
                if let v = clockRegister(i, binary: s.ram[Int(Self.statusB)] & Self.binaryMode != 0) { return v }
                if i == Self.statusC {
                    // Reading C acknowledges (clears) the interrupt flags.
                    let v = s.ram[Int(i)]
                    s.ram[Int(i)] = 0
                    return v
                }
                return s.ram[Int(i)]
            })
        default: return allOnes(size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let v = UInt8(truncatingIfNeeded: value)
        state.withLock { s in
            switch offset {
            case 0: s.index = v  // bit 7 is the NMI mask on a PC; KVM owns NMIs, so it is only remembered
            case 1:
                let i = s.index & 0x7F
                switch i {
                case 0x00...0x09, 0x32, Self.statusC, Self.statusD: break  // clock and read-only status
                case Self.statusA: s.ram[Int(i)] = v & 0x7F  // UIP is read-only
                default: s.ram[Int(i)] = v
                }
            default: break
            }
        }
    }

    /// The clock registers, from the host's time now.
    private func clockRegister(_ index: UInt8, binary: Bool) -> UInt8? {
        let t: WallClockTime
        switch index {
        case 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32: t = clock()
        default: return nil
        }
        let value: Int
        switch index {
        case 0x00: value = t.second
        case 0x02: value = t.minute
        case 0x04: value = t.hour
        case 0x06: value = t.weekday
        case 0x07: value = t.day
        case 0x08: value = t.month
        case 0x09: value = t.year % 100
        default: value = t.year / 100
        }
        return binary ? UInt8(value) : UInt8((value / 10) << 4 | (value % 10))
    }
}

/// A port that accepts writes and reads all ones, silently: port 0x80, where
/// Linux and firmware write POST codes and I/O delays (thousands per boot).
public final class IgnoredPort: BusDevice {
    public let name: String
    public init(name: String) { self.name = name }
    public func read(offset: UInt64, size: Int) -> UInt64 { allOnes(size) }
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}
