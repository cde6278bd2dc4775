// ImageInfo.swift: `skvm img info`, what qemu-img info prints.

#if canImport(Glibc)
import Glibc
#endif

/// One image's facts (and, with `backingChain`, those of the images below it).
public struct ImageInfo: Sendable, Equatable {
    public var filename: String
    public var format: ImageFormat
    public var virtualSize: UInt64
    /// Bytes the file occupies on disk (st_blocks * 512).
    public var diskSize: UInt64
    public var clusterSize: UInt64?
    /// The backing file name as stored, and resolved against the image's folder.
    public var backingFile: String?
    public var fullBackingFile: String?
    public var backingFormat: String?
    public var snapshots: [Qcow2Snapshot] = []
    /// The qcow2 header (nil for raw).
    public var header: Qcow2Header?
    /// The images below this one, top first (filled by `gather(backingChain: true)`).
    public var backingChain: [ImageInfo] = []

    public var dirty: Bool { (header?.incompatibleFeatures ?? 0) & Qcow2Header.dirtyBit != 0 }
    public var corrupt: Bool { (header?.incompatibleFeatures ?? 0) & Qcow2Header.corruptBit != 0 }

    /// Reads the facts of the image at `path` (read-only, shared lock); with
    /// `backingChain`, of every image below it too (loops and chains deeper
    /// than 32 refused).
    public static func gather(path: String, format: ImageFormat? = nil, backingChain: Bool = false) throws(BlockError) -> ImageInfo {
        var info = try single(path: path, format: format)
        guard backingChain else { return info }
        var seen = [Qcow2Backing.canonical(path)]
        var next = info
        while let full = next.fullBackingFile {
            let real = Qcow2Backing.canonical(full)
            guard !seen.contains(real), seen.count < Qcow2Backing.maxDepth else {
                throw .invalidImage(path: path, reason: "backing file loop or chain deeper than \(Qcow2Backing.maxDepth): \((seen + [real]).joined(separator: " -> "))")
            }
            seen.append(real)
            next = try single(path: full, format: next.backingFormat.flatMap(ImageFormat.init(rawValue:)))
            info.backingChain.append(next)
        }
        return info
    }

    private static func single(path: String, format: ImageFormat?) throws(BlockError) -> ImageInfo {
        let file = try Qcow2File(path: path, readOnly: true)
        defer { file.close() }
        let kind: ImageFormat
        if let format { kind = format } else { kind = try ImageFormat.detect(path: path) }
        guard kind == .qcow2 else {
            return ImageInfo(filename: path, format: .raw, virtualSize: file.length, diskSize: file.allocatedBytes())
        }
        let engine = try Qcow2Engine(file: file, chain: [], openBacking: false)
        let h = engine.header
        var info = ImageInfo(filename: path, format: .qcow2, virtualSize: h.size, diskSize: file.allocatedBytes(),
                             clusterSize: h.clusterSize, header: h)
        info.snapshots = try Qcow2Snapshot.readTable(file: file, offset: h.snapshotsOffset, count: h.snapshotCount, clusterSize: h.clusterSize)
        if let name = h.backingFile {
            info.backingFile = name
            info.fullBackingFile = Qcow2Backing.resolve(name, relativeTo: path)
            info.backingFormat = h.backingFormat
        }
        return info
    }

    // MARK: - Output

    /// The report as qemu-img info prints it (each image of the chain in turn).
    public var text: String {
        ([self] + backingChain).map(\.textOne).joined(separator: "\n")
    }

    private var textOne: String {
        var out = "image: \(filename)\nfile format: \(format.rawValue)\n"
        out += "virtual size: \(ImageSize.human(virtualSize)) (\(virtualSize) bytes)\n"
        out += "disk size: \(ImageSize.human(diskSize))\n"
        if let clusterSize { out += "cluster_size: \(clusterSize)\n" }
        if let backingFile {
            out += "backing file: \(backingFile)"
            if let full = fullBackingFile, full != backingFile { out += " (actual path: \(full))" }
            out += "\n"
            if let backingFormat { out += "backing file format: \(backingFormat)\n" }
        }
        if !snapshots.isEmpty {
            out += "Snapshot list:\n"
            out += "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
            for s in snapshots {
                out += pad(s.id, 10) + pad(s.name, 17) + padLeft(ImageSize.human(s.vmStateSize), 8) + " "
                out += Self.date(s.dateSeconds) + " " + Self.clock(s.vmClockNanoseconds) + padLeft("0", 11) + "\n"
            }
        }
        if let h = header {
            out += "Format specific information:\n"
            out += "    compat: \(h.version == 2 ? "0.10" : "1.1")\n"
            out += "    compression type: \(h.compressionType == 1 ? "zstd" : "zlib")\n"
            out += "    lazy refcounts: \(h.compatibleFeatures & Qcow2Header.lazyRefcountsBit != 0)\n"
            out += "    refcount bits: \(h.refcountBits)\n"
            out += "    corrupt: \(corrupt)\n"
            out += "    extended l2: \(h.incompatibleFeatures & Qcow2Header.extendedL2Bit != 0)\n"
            out += "    dirty: \(dirty)\n"
        }
        return out
    }

    /// The report as JSON, with qemu-img's field names (the chain under "backing-chain").
    public var json: String {
        var fields: [(String, String)] = [
            ("filename", jsonString(filename)),
            ("format", jsonString(format.rawValue)),
            ("virtual-size", "\(virtualSize)"),
            ("actual-size", "\(diskSize)"),
        ]
        if let clusterSize { fields.append(("cluster-size", "\(clusterSize)")) }
        if let backingFile { fields.append(("backing-filename", jsonString(backingFile))) }
        if let fullBackingFile { fields.append(("full-backing-filename", jsonString(fullBackingFile))) }
        if let backingFormat { fields.append(("backing-filename-format", jsonString(backingFormat))) }
        if header != nil {
            fields.append(("dirty-flag", "\(dirty)"))
            let snaps = snapshots.map { s in
                "{\"id\": \(jsonString(s.id)), \"name\": \(jsonString(s.name)), \"vm-state-size\": \(s.vmStateSize), "
                    + "\"date-sec\": \(s.dateSeconds), \"date-nsec\": \(s.dateNanoseconds), "
                    + "\"vm-clock-sec\": \(s.vmClockNanoseconds / 1_000_000_000), \"vm-clock-nsec\": \(s.vmClockNanoseconds % 1_000_000_000), \"icount\": 0}"
            }
            fields.append(("snapshots", "[" + snaps.joined(separator: ", ") + "]"))
        }
        if let h = header {
            fields.append(("format-specific", "{\"type\": \"qcow2\", \"data\": {\"compat\": \"\(h.version == 2 ? "0.10" : "1.1")\", "
                + "\"compression-type\": \"\(h.compressionType == 1 ? "zstd" : "zlib")\", "
                + "\"lazy-refcounts\": \(h.compatibleFeatures & Qcow2Header.lazyRefcountsBit != 0), "
                + "\"refcount-bits\": \(h.refcountBits), \"corrupt\": \(corrupt), "
                + "\"extended-l2\": \(h.incompatibleFeatures & Qcow2Header.extendedL2Bit != 0)}}"))
        }
        if !backingChain.isEmpty {
            fields.append(("backing-chain", "[" + backingChain.map(\.json).joined(separator: ", ") + "]"))
        }
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    private func padLeft(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }

    /// "2026-12-01 07:29:58" in local time.
    static func date(_ seconds: UInt32) -> String {
        var t = time_t(seconds)
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let n = strftime(&buffer, 32, "%Y-%m-%d %H:%M:%S", &parts)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "00:00:00.000" (hours:minutes:seconds.milliseconds), as qemu-img.
    static func clock(_ ns: UInt64) -> String {
        let ms = ns / 1_000_000
        func two(_ v: UInt64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let millis = ms % 1000
        return "\(two(ms / 3_600_000)):\(two(ms / 60000 % 60)):\(two(ms / 1000 % 60)).\(millis < 10 ? "00" : millis < 100 ? "0" : "")\(millis)"
    }
}

/// `s` as a JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
