// Qcow2Backing.swift: the backing file chain (qcow2.txt, header fields
// backing_file_offset/backing_file_size and the backing format extension).
//
// An unallocated cluster reads from the backing file; a backing file
// shorter than the image reads as zeros past its end. The backing file is a
// raw file or another qcow2 image (which may have its own backing file),
// opened read-only with a shared lock. A relative name is relative to the
// folder of the image that names it, as in QEMU. A chain deeper than
// `maxDepth`, or one that names a file twice (compared by realpath), is
// refused instead of recursing forever.

#if canImport(Glibc)
import Glibc
#endif

/// An opened backing file.
enum Qcow2Backing: Sendable {
    case raw(RawBackingFile)
    case qcow2(Qcow2Image)

    /// The longest chain skvm opens.
    static let maxDepth = 32

    /// The backing file's size in bytes.
    var size: UInt64 {
        switch self {
        case .raw(let f): return f.size
        case .qcow2(let q): return q.size
        }
    }

    /// Reads [offset, offset + buffer.count); the part past the backing
    /// file's end reads as zeros.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let size = self.size
        let inside = offset >= size ? 0 : Int(min(UInt64(buffer.count), size - offset))
        if inside > 0 {
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<inside])
            switch self {
            case .raw(let f): try f.read(at: offset, into: part)
            case .qcow2(let q): try q.read(at: offset, into: part)
            }
        }
        if inside < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    func close() {
        switch self {
        case .raw(let f): f.close()
        case .qcow2(let q): q.close()
        }
    }

    /// The path a backing file name refers to, seen from the image at `imagePath`.
    static func resolve(_ name: String, relativeTo imagePath: String) -> String {
        if name.hasPrefix("/") { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    /// realpath(3), or the path itself when it cannot be resolved.
    static func canonical(_ path: String) -> String {
        guard let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }

    /// Opens the backing file `name` of the image at `imagePath`; `chain`
    /// holds the canonical paths of the images above it, top first.
    static func open(name: String, format: String?, imagePath: String, chain: [String]) throws(BlockError) -> Qcow2Backing {
        let path = resolve(name, relativeTo: imagePath)
        let real = canonical(path)
        guard !chain.contains(real) else {
            throw .invalidImage(path: imagePath, reason: "backing file loop: \((chain + [real]).joined(separator: " -> "))")
        }
        guard chain.count < maxDepth else {
            throw .unsupportedImage(path: imagePath, reason: "the backing chain is deeper than \(maxDepth) images")
        }
        let isQcow2: Bool
        switch format {
        case "qcow2": isQcow2 = true
        case "raw": isQcow2 = false
        case nil: isQcow2 = try probeQcow2(path)
        case let other?: throw .unsupportedImage(path: imagePath, reason: "backing file format '\(other)' (skvm reads raw and qcow2)")
        }
        if isQcow2 {
            return .qcow2(try Qcow2Image(path: path, readOnly: true, chain: chain + [real]))
        }
        return .raw(try RawBackingFile(path: path))
    }

    /// True when the file at `path` starts with the qcow2 magic.
    static func probeQcow2(_ path: String) throws(BlockError) -> Bool {
        let file = try Qcow2File(path: path, readOnly: true)
        defer { file.close() }
        guard file.length >= 4 else { return false }
        return try file.readArray(at: 0, count: 4) == [0x51, 0x46, 0x49, 0xFB]
    }
}

/// A raw backing file of any length, read-only. (RawImage insists on whole
/// sectors; a backing file need not have them.)
final class RawBackingFile: Sendable {
    let size: UInt64
    private let descriptor: Int32

    init(path: String) throws(BlockError) {
        let file = try Qcow2File(path: path, readOnly: true)
        size = file.length
        // Keep the descriptor (and its shared lock) beyond the wrapper.
        descriptor = fcntl(file.descriptor, F_DUPFD_CLOEXEC, 0)
        file.close()
        guard descriptor >= 0 else { throw .openFailed(path: path, errno: errno) }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        try preadAll(descriptor, base, count: buffer.count, offset: offset, operation: .read)
    }

    func close() {}

    deinit { Glibc.close(descriptor) }
}
