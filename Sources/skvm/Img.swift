// Img.swift: `skvm img`, disk image tools in the manner of qemu-img.
//
// Argument parsing and printing only; the logic is in Storage/ImageTool
// and Storage/Qcow2 (Qcow2Checker, Qcow2Creator). Exit statuses follow
// qemu-img: 0 success, 1 error; `check` 2 for corruptions, 3 for leaks only.

import ArgumentParser
import Storage

#if canImport(Glibc)
import Glibc
#endif

struct Img: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "img",
        abstract: "Create, inspect, check, convert, resize and access raw and qcow2 disk images.",
        discussion: "Like qemu-img. See docs/qcow2.md for what skvm's qcow2 supports.",
        subcommands: [ImgCreate.self, ImgInfo.self, ImgCheck.self, ImgIO.self, ImgConvert.self, ImgResize.self])
}

extension ImageFormat: ExpressibleByArgument {}

/// Runs `body`; a BlockError prints as "skvm: img <command>: <message>" and exits 1.
private func imgCommand(_ name: String, _ body: () throws(BlockError) -> Void) throws {
    do {
        try body()
    } catch {
        writeStderr("skvm: img \(name): \(error)\n")
        throw ExitWithStatus(status: 1)
    }
}

/// A size argument: bytes, or with a K/M/G/T suffix.
private func parseSize(_ text: String, _ what: String) throws -> UInt64 {
    guard let v = ImageSize.parse(text) else { throw ValidationError("\(what) '\(text)' is not a size (e.g. 10G, 512M, 4096)") }
    return v
}

struct ImgCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create an image (qcow2 version 3 by default; an existing file is replaced).")

    @Option(name: .short, help: "Format: qcow2 or raw.")
    var f: ImageFormat = .qcow2
    @Option(name: .short, help: ArgumentHelp("Backing file (qcow2 only; relative to the new image's folder).", valueName: "backing"))
    var b: String?
    @Option(name: .customShort("F"), help: ArgumentHelp("Backing file format (default: detected).", valueName: "fmt"))
    var backingFormat: ImageFormat?
    @Option(name: .customLong("cluster-size"), help: ArgumentHelp("Cluster size, 512 to 2M.", valueName: "size"))
    var clusterSize: String = "64K"
    @Option(name: .customLong("refcount-bits"), help: "Refcount width: 1, 2, 4, 8, 16, 32 or 64.")
    var refcountBits: UInt64 = 16
    @Option(help: "qcow2 compatibility: 1.1 (version 3) or 0.10 (version 2).")
    var compat: String = "1.1"
    @Argument(help: "The image file.")
    var file: String
    @Argument(help: "Virtual size (e.g. 10G); default: the backing file's.")
    var size: String?

    mutating func run() throws {
        let size = try self.size.map { try parseSize($0, "size") }
        let cluster = try parseSize(clusterSize, "--cluster-size")
        guard compat == "1.1" || compat == "0.10" else { throw ValidationError("--compat must be 1.1 or 0.10") }
        let (f, b, bf, rb, version) = (f, b, backingFormat, refcountBits, UInt32(compat == "1.1" ? 3 : 2))
        let file = file
        try imgCommand("create") { () throws(BlockError) in
            try ImageTool.create(path: file, format: f, size: size, backingFile: b, backingFormat: bf,
                                 clusterSize: cluster, refcountBits: rb, version: version)
        }
        // qemu-img's confirmation line.
        print("Formatting '\(file)', fmt=\(f.rawValue)" + (size.map { " size=\($0)" } ?? ""))
    }
}

struct ImgInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show an image's format, sizes, backing file, snapshots and flags.")

    @Option(name: .short, help: "Format (default: detected).")
    var f: ImageFormat?
    @Flag(help: "Print JSON (qemu-img's field names).")
    var json = false
    @Flag(name: .customLong("backing-chain"), help: "Also show every image of the backing chain.")
    var backingChain = false
    @Argument(help: "The image file.")
    var file: String

    mutating func run() throws {
        let (file, f, chain, json) = (file, f, backingChain, json)
        try imgCommand("info") { () throws(BlockError) in
            let info = try ImageInfo.gather(path: file, format: f, backingChain: chain)
            print(json ? info.json : info.text, terminator: json ? "\n" : "")
        }
    }
}

struct ImgCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a qcow2 image's refcounts against its tables.",
        discussion: "Exit status: 0 no problems, 1 the check could not run, 2 corruptions, 3 leaked clusters only.")

    @Argument(help: "The qcow2 image.")
    var file: String

    mutating func run() throws {
        let file = file
        var status: Int32 = 0
        try imgCommand("check") { () throws(BlockError) in
            guard try ImageFormat.detect(path: file) == .qcow2 else {
                throw .unsupportedImage(path: file, reason: "only qcow2 images can be checked")
            }
            let report = try Qcow2Checker.check(path: file)
            print(report.text, terminator: "")
            status = report.exitStatus
        }
        if status != 0 { throw ExitWithStatus(status: status) }
    }
}

struct ImgIO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "Read and write an image through skvm's backend, for scripts and tests.",
        discussion: """
            Operations, applied in the order given: --write OFFSET --from DATAFILE (writes the file's bytes at \
            OFFSET, any alignment), --read OFFSET LENGTH (prints the bytes, raw, to stdout), --flush, \
            --discard OFFSET LENGTH, --zero OFFSET LENGTH. Offsets and lengths take K/M/G suffixes. \
            The image is flushed and closed at the end.
            """)

    @Option(name: .short, help: "Format (default: detected).")
    var f: ImageFormat?
    @Argument(help: "The image file.")
    var file: String
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Operations (see above).", valueName: "operation"))
    var operations: [String] = []

    /// The operations in order, with data files read.
    func parsed() throws -> [ImageIOOperation] {
        var ops: [ImageIOOperation] = []
        var i = 0
        func value(_ what: String) throws -> String {
            i += 1
            guard i < operations.count else { throw ValidationError("\(what) needs a value") }
            return operations[i]
        }
        while i < operations.count {
            switch operations[i] {
            case "--write":
                let offset = try parseSize(try value("--write"), "offset")
                guard try value("--write OFFSET") == "--from" else { throw ValidationError("--write OFFSET must be followed by --from DATAFILE") }
                let path = try value("--from")
                guard let data = readWholeFile(path) else { throw ValidationError("cannot read '\(path)'") }
                ops.append(.write(offset: offset, data: data))
            case "--read":
                let offset = try parseSize(try value("--read"), "offset")
                ops.append(.read(offset: offset, length: try parseSize(try value("--read OFFSET"), "length")))
            case "--flush":
                ops.append(.flush)
            case "--discard":
                let offset = try parseSize(try value("--discard"), "offset")
                ops.append(.discard(offset: offset, length: try parseSize(try value("--discard OFFSET"), "length")))
            case "--zero":
                let offset = try parseSize(try value("--zero"), "offset")
                ops.append(.writeZeroes(offset: offset, length: try parseSize(try value("--zero OFFSET"), "length")))
            case let other:
                throw ValidationError("unknown io operation '\(other)' (--write, --read, --flush, --discard, --zero)")
            }
            i += 1
        }
        return ops
    }

    mutating func run() throws {
        let ops = try parsed()
        let (file, f) = (file, f)
        try imgCommand("io") { () throws(BlockError) in
            try ImageTool.io(path: file, format: f, operations: ops) { bytes in
                var done = 0
                while done < bytes.count, let base = bytes.baseAddress {
                    let n = Glibc.write(1, base + done, bytes.count - done)
                    if n < 0 && errno == EINTR { continue }
                    guard n > 0 else { return }
                    done += n
                }
            }
        }
    }
}

struct ImgConvert: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Copy an image into a new one, of either format (zero chunks left sparse).")

    @Option(name: .short, help: "Source format (default: detected).")
    var f: ImageFormat?
    @Option(name: .customShort("O"), help: "Output format: raw or qcow2.")
    var outputFormat: ImageFormat = .raw
    @Flag(name: .short, help: "Show progress (on a terminal).")
    var p = false
    @Argument(help: "The source image.")
    var source: String
    @Argument(help: "The new image.")
    var destination: String

    mutating func run() throws {
        let showProgress = p && isatty(2) != 0
        let (source, destination, f, o) = (source, destination, f, outputFormat)
        try imgCommand("convert") { () throws(BlockError) in
            var lastShown = -1
            try ImageTool.convert(source: source, sourceFormat: f, destination: destination, format: o) { fraction in
                let hundredths = Int(fraction * 10000)
                guard showProgress, hundredths / 100 != lastShown else { return }
                lastShown = hundredths / 100
                let frac = hundredths % 100
                writeStderr("    (\(hundredths / 100).\(frac < 10 ? "0" : "")\(frac)/100%)\r")
            }
            if showProgress { writeStderr("    (100.00/100%)\n") }
        }
    }
}

struct ImgResize: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resize", abstract: "Grow an image (raw images may shrink with --shrink).")

    @Option(name: .short, help: "Format (default: detected).")
    var f: ImageFormat?
    @Flag(help: "Allow shrinking a raw image (the end is lost).")
    var shrink = false
    @Argument(help: "The image file.")
    var file: String
    @Argument(help: "The new size, or +SIZE to grow by SIZE.")
    var size: String

    mutating func run() throws {
        let (file, f, shrink) = (file, f, shrink)
        let relative = size.hasPrefix("+")
        let amount = try parseSize(relative ? String(size.dropFirst()) : size, "size")
        try imgCommand("resize") { () throws(BlockError) in
            var target = amount
            if relative {
                let (sum, overflow) = try ImageInfo.gather(path: file, format: f).virtualSize.addingReportingOverflow(amount)
                guard !overflow else { throw .unsupportedImage(path: file, reason: "size overflows") }
                target = sum
            }
            try ImageTool.resize(path: file, format: f, size: target, shrink: shrink)
        }
        print("Image resized.")
    }
}

/// Writes `text` to stderr as it is (no newline added).
private func writeStderr(_ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}

/// A file's bytes, or nil.
private func readWholeFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { return nil }
        if n == 0 { return out }
        out += chunk[0..<n]
    }
}
