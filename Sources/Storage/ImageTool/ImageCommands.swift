// ImageCommands.swift: the logic behind `skvm img create|io|convert|resize`
// (the CLI in Sources/skvm/Img.swift only parses arguments and prints).

#if canImport(Glibc)
import Glibc
#endif

/// One operation of `skvm img io`, applied in order.
public enum ImageIOOperation: Sendable, Equatable {
    /// Writes `data` at byte `offset` (any alignment).
    case write(offset: UInt64, data: [UInt8])
    /// Reads `length` bytes at `offset` and hands them to the output.
    case read(offset: UInt64, length: UInt64)
    case flush
    case discard(offset: UInt64, length: UInt64)
    case writeZeroes(offset: UInt64, length: UInt64)
}

public enum ImageTool {
    // MARK: - create

    /// Creates an image at `path` (replacing any file there, atomically).
    ///
    /// `size` nil takes the backing file's size (as qemu-img does); the
    /// backing file must open (resolved against `path`'s folder) and its
    /// format is detected when `backingFormat` is nil.
    public static func create(path: String, format: ImageFormat, size: UInt64?, backingFile: String? = nil,
                              backingFormat: ImageFormat? = nil, clusterSize: UInt64 = 65536,
                              refcountBits: UInt64 = 16, version: UInt32 = 3) throws(BlockError) {
        var virtualSize = size
        var backingKind = backingFormat
        if let backingFile {
            guard format == .qcow2 else { throw .unsupportedImage(path: path, reason: "a raw image cannot have a backing file") }
            let full = Qcow2Backing.resolve(backingFile, relativeTo: path)
            let info = try ImageInfo.gather(path: full, format: backingFormat)
            backingKind = info.format
            if virtualSize == nil { virtualSize = info.virtualSize }
        }
        guard let virtualSize else { throw .unsupportedImage(path: path, reason: "no size given and no backing file to take it from") }
        try refuseIfInUse(path)
        switch format {
        case .raw:
            try Qcow2Creator.writeAtomically(path: path, bytes: [], extraLength: virtualSize)
        case .qcow2:
            guard refcountBits > 0, refcountBits <= 64, refcountBits & (refcountBits - 1) == 0 else {
                throw .unsupportedImage(path: path, reason: "refcount_bits \(refcountBits) is not a power of two up to 64")
            }
            var o = Qcow2CreateOptions(size: virtualSize)
            o.clusterSize = clusterSize
            o.refcountOrder = UInt32(refcountBits.trailingZeroBitCount)
            o.version = version
            o.backingFile = backingFile
            o.backingFormat = backingFile == nil ? nil : backingKind?.rawValue
            try Qcow2Creator.create(path: path, options: o)
        }
    }

    /// Throws `.locked` when an image exists at `path` and someone holds a
    /// lock on it (a running VM): replacing it under them would leave them
    /// writing a file nobody sees. A missing file is fine.
    static func refuseIfInUse(_ path: String) throws(BlockError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var r: Int32
        repeat { r = flock(fd, LOCK_EX | LOCK_NB) } while r < 0 && errno == EINTR
        if r < 0 && errno == EWOULDBLOCK { throw .locked(path: path, readOnly: false) }
    }

    // MARK: - io

    /// Opens the image writable (read-only when every operation is a
    /// read), applies `operations` in order, flushes and closes.
    /// `output` receives the bytes of each read.
    public static func io(path: String, format: ImageFormat? = nil, operations: [ImageIOOperation],
                          output: (UnsafeRawBufferPointer) -> Void) throws(BlockError) {
        let readOnly = operations.allSatisfy { if case .read = $0 { return true } else { return false } }
        let image = try openImage(path: path, format: format, readOnly: readOnly)
        defer { image.close() }
        var buffer: [UInt8] = []
        for op in operations {
            switch op {
            case .write(let offset, let data):
                try data.withBytes { (b) throws(BlockError) in try image.write(at: offset, from: b) }
            case .read(let offset, let length):
                try image.checkRange(.read, offset: offset, length: length)
                var done: UInt64 = 0
                while done < length {
                    let n = Int(min(length - done, 1 << 20))
                    if buffer.count < n { buffer = [UInt8](repeating: 0, count: n) }
                    try buffer.withMutableBytes { (b) throws(BlockError) in
                        try image.read(at: offset + done, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<n]))
                    }
                    buffer.withUnsafeBytes { output(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    done += UInt64(n)
                }
            case .flush:
                try image.flush()
            case .discard(let offset, let length):
                try image.discard(at: offset, length: length)
            case .writeZeroes(let offset, let length):
                try image.writeZeroes(at: offset, length: length, mayUnmap: false)
            }
        }
        try image.flush()
    }

    // MARK: - convert

    /// Copies the image `source` into a new image `destination` of
    /// `format`, skipping chunks of zeros (left unallocated or sparse).
    /// The destination is built under a temporary name and renamed at the
    /// end. `progress` gets the fraction done after each chunk.
    public static func convert(source: String, sourceFormat: ImageFormat? = nil, destination: String, format: ImageFormat,
                               clusterSize: UInt64 = 65536, progress: ((Double) -> Void)? = nil) throws(BlockError) {
        let input = try openImage(path: source, format: sourceFormat, readOnly: true)
        defer { input.close() }
        try refuseIfInUse(destination)
        let size = input.size
        let temporary = destination + ".skvm-convert-\(getpid())"
        var done = false
        defer { if !done { unlink(temporary) } }
        let output: any BlockBackend
        switch format {
        case .raw:
            try Qcow2Creator.writeAtomically(path: temporary, bytes: [], extraLength: size)
            output = try RawImage(path: temporary)
        case .qcow2:
            var o = Qcow2CreateOptions(size: size)
            o.clusterSize = clusterSize
            try Qcow2Creator.create(path: temporary, options: o)
            output = try Qcow2Image(path: temporary)
        }
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        var offset: UInt64 = 0
        do throws(BlockError) {
            while offset < size {
                let n = Int(min(UInt64(chunk), size - offset))
                try buffer.withMutableBytes { (b) throws(BlockError) in
                    let piece = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                    try input.read(at: offset, into: piece)
                    if !isZero(UnsafeRawBufferPointer(piece)) { try output.write(at: offset, from: UnsafeRawBufferPointer(piece)) }
                }
                offset += UInt64(n)
                progress?(Double(offset) / Double(size))
            }
            try output.flush()
        } catch {
            output.close()
            throw error
        }
        output.close()
        guard rename(temporary, destination) == 0 else { throw .openFailed(path: destination, errno: errno) }
        done = true
        if size == 0 { progress?(1) }
    }

    /// True when every byte is zero.
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let words = bytes.count / 8
        while i < words {
            if bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        for j in (words * 8)..<bytes.count where bytes[j] != 0 { return false }
        return true
    }

    // MARK: - resize

    /// Grows the image at `path` to `size` bytes (rounded up to 512).
    /// Shrinking is refused for qcow2 (data could be lost) and needs
    /// `shrink` for raw.
    public static func resize(path: String, format: ImageFormat? = nil, size: UInt64, shrink: Bool = false) throws(BlockError) {
        let kind: ImageFormat
        if let format { kind = format } else { kind = try ImageFormat.detect(path: path) }
        switch kind {
        case .raw:
            let image = try RawImage(path: path)
            defer { image.close() }
            guard size >= image.size || shrink else {
                throw .unsupportedImage(path: path, reason: "shrinking from \(image.size) to \(size) bytes loses data; pass --shrink")
            }
            guard truncate(path, off_t(size)) == 0 else { throw .openFailed(path: path, errno: errno) }
        case .qcow2:
            let file = try Qcow2File(path: path, readOnly: false)
            defer { file.close() }
            let engine = try Qcow2Engine(file: file, chain: [], openBacking: false)
            try engine.grow(to: alignUp(size, 512) ?? size)
        }
    }
}
