// MachineConfig.swift: everything a user chose for one VM, validated.

import Boot
import Devices
import Memory
import Network

/// The configuration of one VM.
public struct MachineConfig: Sendable {
    /// How to read the kernel file.
    public enum KernelFormat: Sendable, Equatable {
        /// Detect from the file: a multiboot header (ELF or a.out kludge).
        case auto
        /// A flat real-mode binary loaded at 0x1000.
        case flat
    }

    public var kernelPath: String
    public var kernelFormat: KernelFormat = .auto
    /// Guest RAM in bytes.
    public var memorySize: UInt64 = MachineConfig.defaultMemorySize
    /// Text appended to the kernel's command line.
    public var append: String = ""
    /// The KVM device (SKVM_KVM_DEVICE or --kvm-device overrides it).
    public var kvmDevicePath: String = "/dev/kvm"
    /// Feed stdin to the serial port.
    public var consoleInput: Bool = true
    /// Where COM1's output goes (nil: stdout).
    public var serialOutput: (any SerialOutput)? = nil
    /// Print only the guest's output and errors.
    public var quiet: Bool = false
    /// Collect and print exit statistics at the end.
    public var statistics: Bool = false
    /// Back guest RAM with transparent hugepages (madvise) when possible, or hugetlb pages.
    public var memoryBacking: MemoryBacking = .transparentHugepages
    /// Allocate all guest RAM before the guest starts.
    public var prefault: Bool = false
    /// Number of vCPUs.
    public var cpus: Int = 1
    /// Host CPU for each vCPU (vCPU i on pinning[i]), or nil for no pinning.
    public var pinning: [Int]? = nil
    /// --initrd values: one ramdisk for a Linux kernel, or any number of
    /// multiboot modules, each "FILE [ARGS]" (QEMU's form: the module's string
    /// is the whole text, the file is its first word).
    public var initrds: [String] = []
    /// Virtio block devices (--disk), in PCI slot order.
    public var disks: [DiskConfig] = []
    /// Virtio network devices (--net), after the disks in slot order.
    public var nets: [NetConfig] = []
    /// Add QEMU's pc-testdev ports (--test-device).
    public var testDevice: Bool = false
    /// What to trace (--trace), and where (--trace-file; nil: stderr).
    public var trace: TraceOptions = []
    public var traceFile: String? = nil
    /// CPUID features to hide from the guest (--cpuid-mask), beyond the host policy.
    public var hiddenFeatures: [CPUIDFeature] = []
    /// CPUID features to keep even when the host policy would hide them (--cpuid-unmask).
    public var keptFeatures: [CPUIDFeature] = []

    public static let defaultMemorySize: UInt64 = 128 << 20
    /// The smallest machine skvm builds: 1 MiB covers the real-mode address space.
    public static let minimumMemorySize: UInt64 = 1 << 20

    public init(kernelPath: String) { self.kernelPath = kernelPath }
}

/// One --net: a tap device behind a virtio-net device.
public struct NetConfig: Sendable, Equatable {
    public enum Endpoint: Sendable, Equatable {
        /// A tap opened (or created) by name.
        case tap(String)
        /// A tap descriptor inherited from the parent process.
        case fd(Int32)
    }
    public var endpoint: Endpoint
    /// nil: a stable default derived from the endpoint and the NIC's index.
    public var mac: MACAddress? = nil
    public var transport: DiskConfig.Transport = .pci

    public init(endpoint: Endpoint) { self.endpoint = endpoint }

    /// Parses "tap=NAME[,mac=52:54:00:..][,transport=pci|mmio]" or "fd=N[,...]".
    public static func parse(_ text: String) throws(ConfigError) -> NetConfig {
        var endpoint: Endpoint? = nil
        var mac: MACAddress? = nil
        var transport = DiskConfig.Transport.pci
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[1].isEmpty else {
                throw ConfigError("--net '\(text)': '\(item)' is not key=value (tap=NAME or fd=N, then mac=, transport=)")
            }
            switch kv[0] {
            case "tap", "ifname":
                guard endpoint == nil else { throw ConfigError("--net '\(text)': give one of tap= and fd=") }
                endpoint = .tap(kv[1])
            case "fd":
                guard endpoint == nil else { throw ConfigError("--net '\(text)': give one of tap= and fd=") }
                guard let fd = Int32(kv[1]), fd >= 0 else { throw ConfigError("--net fd '\(kv[1])' is not a descriptor number") }
                endpoint = .fd(fd)
            case "mac":
                guard let m = MACAddress(kv[1]) else {
                    throw ConfigError("--net mac '\(kv[1])' is not a unicast MAC address (like 52:54:00:12:34:56)")
                }
                mac = m
            case "transport":
                guard let t = DiskConfig.Transport(rawValue: kv[1]) else { throw ConfigError("--net transport '\(kv[1])' is not pci or mmio") }
                transport = t
            default:
                throw ConfigError("--net: unknown key '\(kv[0])' (tap, fd, mac, transport)")
            }
        }
        guard let endpoint else { throw ConfigError("--net '\(text)' needs tap=NAME or fd=N") }
        var net = NetConfig(endpoint: endpoint)
        net.mac = mac
        net.transport = transport
        return net
    }
}

/// One --disk: an image behind a virtio-blk device.
public struct DiskConfig: Sendable, Equatable {
    public enum Format: String, Sendable { case raw, qcow2, auto }
    public enum Cache: String, Sendable { case writeback, none }
    /// How the guest finds the device: a PCI function (what stock kernels
    /// probe), or a virtio-mmio window (for kernels built with
    /// CONFIG_VIRTIO_MMIO; Linux learns of it from the command line).
    public enum Transport: String, Sendable { case pci, mmio }
    public var path: String
    public var transport: Transport = .pci
    public var format: Format = .auto
    public var readOnly = false
    public var cache: Cache = .writeback
    /// GET_ID's answer (at most 20 bytes); default "skvm-diskN".
    public var serial: String? = nil

    public init(path: String) { self.path = path }

    /// Parses "PATH" or "path=PATH,format=raw|qcow2|auto,readonly=on|off,cache=writeback|none,serial=ID,transport=pci|mmio".
    public static func parse(_ text: String) throws(ConfigError) -> DiskConfig {
        guard text.contains("=") else {
            guard !text.isEmpty else { throw ConfigError("--disk needs a path") }
            return DiskConfig(path: text)
        }
        var path: String? = nil
        var disk = DiskConfig(path: "")
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[1].isEmpty else { throw ConfigError("--disk '\(text)': '\(item)' is not key=value") }
            switch kv[0] {
            case "path", "file": path = kv[1]
            case "format":
                guard let f = Format(rawValue: kv[1]) else { throw ConfigError("--disk format '\(kv[1])' is not raw, qcow2 or auto") }
                disk.format = f
            case "readonly":
                guard ["on", "off", "true", "false", "yes", "no"].contains(kv[1]) else { throw ConfigError("--disk readonly takes on or off") }
                disk.readOnly = ["on", "true", "yes"].contains(kv[1])
            case "cache":
                guard let c = Cache(rawValue: kv[1]) else { throw ConfigError("--disk cache '\(kv[1])' is not writeback or none") }
                disk.cache = c
            case "serial":
                guard kv[1].utf8.count <= 20 else { throw ConfigError("--disk serial '\(kv[1])' is longer than 20 bytes") }
                disk.serial = kv[1]
            case "transport":
                guard let t = Transport(rawValue: kv[1]) else { throw ConfigError("--disk transport '\(kv[1])' is not pci or mmio") }
                disk.transport = t
            default: throw ConfigError("--disk: unknown key '\(kv[0])' (path, format, readonly, cache, serial, transport)")
            }
        }
        guard let path else { throw ConfigError("--disk '\(text)' has no path=") }
        disk.path = path
        return disk
    }
}

/// A configuration value a user got wrong.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Byte sizes as people write them: "512M", "2G", "64MiB", "1024" (MiB by default).
public enum ByteSize {
    /// Parses `text`. A bare number is in units of `defaultUnit` (MiB for
    /// --memory, as in QEMU, kvmtool and Firecracker). Suffixes K, M, G, T
    /// (optionally followed by "iB" or "B") are powers of 1024; "B" alone is bytes.
    public static func parse(_ text: String, defaultUnit: UInt64 = 1 << 20) throws(ConfigError) -> UInt64 {
        let t = text.trimmingSpaces()
        let digits = t.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { throw ConfigError("'\(text)' is not a size (expected a number with an optional unit, like 512M or 2G)") }
        guard let number = UInt64(digits) else { throw ConfigError("'\(text)' is too large") }
        let unitText = t.dropFirst(digits.count).uppercased()
        let unit: UInt64
        switch unitText {
        case "": unit = defaultUnit
        case "B": unit = 1
        case "K", "KB", "KIB": unit = 1 << 10
        case "M", "MB", "MIB": unit = 1 << 20
        case "G", "GB", "GIB": unit = 1 << 30
        case "T", "TB", "TIB": unit = 1 << 40
        default: throw ConfigError("'\(text)' has an unknown unit '\(t.dropFirst(digits.count))' (use K, M, G or T)")
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw ConfigError("'\(text)' is too large") }
        return bytes
    }

    /// Parses and checks a guest memory size.
    public static func parseMemory(_ text: String) throws(ConfigError) -> UInt64 {
        let bytes = try parse(text)
        guard bytes > 0 else { throw ConfigError("--memory must be more than 0") }
        guard bytes >= MachineConfig.minimumMemorySize else {
            throw ConfigError("--memory \(text) is less than the minimum of 1 MiB")
        }
        guard bytes % 4096 == 0 else { throw ConfigError("--memory \(text) is not a whole number of 4 KiB pages") }
        return bytes
    }
}

/// Host CPU lists as `taskset` and cgroups write them: "0,1", "2-5", "0,4-6".
public enum CPUList {
    public static func parse(_ text: String) throws(ConfigError) -> [Int] {
        var cpus: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let first = Int(bounds[0]), first >= 0,
                let last = bounds.count == 2 ? Int(bounds[1]) : first, last >= first, last < 4096
            else { throw ConfigError("'\(text)' is not a CPU list (expected numbers and ranges like 0,1 or 2-5)") }
            cpus += Array(first...last)
        }
        guard Set(cpus).count == cpus.count else { throw ConfigError("CPU list '\(text)' names a CPU twice") }
        return cpus
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
