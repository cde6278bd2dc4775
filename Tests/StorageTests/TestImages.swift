// TestImages.swift: real temporary image files for the Storage tests.
//
// Every test works on its own file (mkstemp), filled with a pattern in which
// each byte depends on its offset, so that data landing at the wrong place or
// a read-modify-write that clobbers a neighbour shows up as a mismatch. The
// file is checked through plain buffered pread(2), independently of the
// backend under test.

#if canImport(Glibc)
import Glibc
#endif
import Storage
import Testing

/// The byte the pattern puts at `offset` (with `seed` to tell fills apart).
func patternByte(_ offset: Int, seed: UInt8 = 0) -> UInt8 {
    // Mixes low and high bits so that neither a shift by a sector nor by a
    // page reproduces the same bytes.
    UInt8(truncatingIfNeeded: offset &* 131 &+ (offset >> 9) &* 7 &+ (offset >> 12) &+ Int(seed))
}

/// The pattern for the first 8 MiB, computed once: tests are built without
/// optimisation, where a per-byte loop over every image would dominate.
private let basePattern: [UInt8] = (0..<(8 << 20)).map { patternByte($0) }

/// `count` pattern bytes starting at file offset `offset`.
func pattern(at offset: Int, count: Int, seed: UInt8 = 0) -> [UInt8] {
    if seed == 0, offset + count <= basePattern.count { return Array(basePattern[offset..<(offset + count)]) }
    return (0..<count).map { patternByte(offset + $0, seed: seed) }
}

/// Where two byte arrays first differ, as a sentence, or nil when they are
/// equal. Large images are compared with this, so that a failure names the
/// offset instead of printing a megabyte.
func mismatch(_ actual: [UInt8], _ expected: [UInt8]) -> String? {
    guard actual.count == expected.count else { return "\(actual.count) bytes, expected \(expected.count)" }
    // memcmp first: an element-wise loop is slow in a debug build.
    let same = actual.withUnsafeBytes { a in
        expected.withUnsafeBytes { b in
            guard let pa = a.baseAddress, let pb = b.baseAddress else { return true }  // both empty
            return memcmp(pa, pb, a.count) == 0
        }
    }
    if same { return nil }
    guard let i = actual.indices.first(where: { actual[$0] != expected[$0] }) else { return nil }
    return "byte \(i) is \(actual[i]), expected \(expected[i])"
}

/// A temporary file, removed when the value goes away.
final class TempImage {
    let path: String

    /// Creates a file of `size` bytes in `directory`, filled with the pattern
    /// (or a sparse file of zeros with `fill: false`).
    init(size: Int, in directory: String = "/tmp", fill: Bool = true) throws {
        var template = Array("\(directory)/skvm-storage-XXXXXX.img".utf8CString)
        let fd = mkstemps(&template, 4)
        try #require(fd >= 0, "mkstemps in \(directory) failed, errno \(errno)")
        defer { Glibc.close(fd) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if fill {
            let bytes = pattern(at: 0, count: size)
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            try #require(n == size)
        } else {
            try #require(ftruncate(fd, off_t(size)) == 0)
        }
    }

    deinit { unlink(path) }

    /// The file's bytes [offset, offset + count), read with buffered I/O.
    func contents(at offset: Int = 0, count: Int) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0xEE, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
        try #require(n == count)
        return bytes
    }

    /// The file's size and allocated 512-byte blocks (stat's st_size and st_blocks).
    func fileStat() throws -> (size: Int, blocks: Int) {
        var st = stat()
        try #require(stat(path, &st) == 0)
        return (Int(st.st_size), Int(st.st_blocks))
    }
}

/// `count` bytes at a deliberately chosen distance `misalignment` past a
/// 4096-aligned address, for testing buffers O_DIRECT cannot take as they are.
final class TestBuffer {
    private let storage: UnsafeMutableRawBufferPointer
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int, misalignment: Int = 0, fill: UInt8 = 0xCC) {
        storage = .allocate(byteCount: count + misalignment + 4096, alignment: 4096)
        storage.initializeMemory(as: UInt8.self, repeating: fill)
        bytes = UnsafeMutableRawBufferPointer(rebasing: storage[misalignment..<(misalignment + count)])
    }

    convenience init(_ contents: [UInt8], misalignment: Int = 0) {
        self.init(count: contents.count, misalignment: misalignment)
        bytes.copyBytes(from: contents)
    }

    deinit { storage.deallocate() }

    var array: [UInt8] { Array(bytes) }
}

extension BlockBackend {
    /// Reads `count` bytes at `offset` into a buffer `misalignment` bytes past alignment.
    func readBytes(at offset: UInt64, count: Int, misalignment: Int = 0) throws(BlockError) -> [UInt8] {
        let buffer = TestBuffer(count: count, misalignment: misalignment)
        try read(at: offset, into: buffer.bytes)
        return buffer.array
    }

    /// Writes `bytes` at `offset` from a buffer `misalignment` bytes past alignment.
    func writeBytes(_ bytes: [UInt8], at offset: UInt64, misalignment: Int = 0) throws(BlockError) {
        let buffer = TestBuffer(bytes, misalignment: misalignment)
        try write(at: offset, from: UnsafeRawBufferPointer(buffer.bytes))
    }
}

/// The filesystem type of the mount point `path` ("tmpfs", "ext4"), from
/// /proc/self/mounts, or nil when `path` is not a mount point.
func mountType(_ path: String) -> String? {
    guard let mounts = fileText("/proc/self/mounts") else { return nil }
    for line in mounts.split(separator: "\n") {
        let fields = line.split(separator: " ")
        if fields.count >= 3, fields[1] == path { return String(fields[2]) }
    }
    return nil
}

/// A small text file's contents (for /proc), or nil.
func fileText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var text: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n >= 0 else { return nil }
        if n == 0 { return String(decoding: text, as: UTF8.self) }
        text += chunk[0..<n]
    }
}

/// A directory whose filesystem accepts O_DIRECT, or nil when none of the
/// candidates does. /tmp is tmpfs on many hosts, and tmpfs refused O_DIRECT
/// before Linux 6.6; /var/tmp and the package folder are usually on disk.
let directIODirectory: String? = {
    for directory in ["/tmp", "/var/tmp", "."] {
        guard let image = try? TempImage(size: 4096, in: directory) else { continue }
        do {
            let backend = try RawImage(path: image.path, cache: .none)
            backend.close()
            return directory
        } catch {
            continue  // .directIOUnsupported: try the next candidate
        }
    }
    return nil
}()

/// A tmpfs directory, where fallocate(FALLOC_FL_ZERO_RANGE) is unsupported
/// (so write-zeroes must fall back to writing zeros), or nil.
let tmpfsDirectory: String? = {
    for directory in ["/dev/shm", "/tmp", "/run"] where mountType(directory) == "tmpfs" {
        if access(directory, W_OK) == 0 { return directory }
    }
    return nil
}()

/// A directory on a filesystem that refuses O_DIRECT, or nil (none on most
/// current hosts: tmpfs accepts it since Linux 6.6).
let noDirectIODirectory: String? = {
    for directory in ["/dev/shm", "/tmp", "/run"] {
        guard let image = try? TempImage(size: 4096, in: directory) else { continue }
        do {
            let backend = try RawImage(path: image.path, cache: .none)
            backend.close()
        } catch BlockError.directIOUnsupported {
            return directory
        } catch {}
    }
    return nil
}()
