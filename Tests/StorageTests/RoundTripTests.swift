// RoundTripTests.swift: RawImage reads and writes, aligned and not, in both
// cache modes.
//
// With cache=none every request whose offset, length or buffer address is
// not block-aligned goes through the bounce buffer, with a read-modify-write
// for partial blocks. Each case writes through the backend, then checks the
// file itself with buffered I/O: the written range holds the new bytes and
// everything around it still holds the original pattern.

#if canImport(Glibc)
import Glibc
#endif
import Storage
import Testing

/// A request: where, how long, and how far its buffer sits from alignment.
struct Request: Sendable, CustomTestStringConvertible {
    let offset: Int
    let length: Int
    let misalignment: Int
    var testDescription: String { "\(length) bytes at \(offset), buffer +\(misalignment)" }
}

private let imageSize = 1 << 20

private let requests: [Request] = [
    Request(offset: 0, length: 512, misalignment: 0),          // one sector
    Request(offset: 4096, length: 8192, misalignment: 0),      // pages
    Request(offset: 4096, length: 8192, misalignment: 1),      // aligned range, odd buffer
    Request(offset: 512, length: 512, misalignment: 8),        // aligned range, 8-byte-aligned buffer
    Request(offset: 1, length: 1, misalignment: 0),            // one byte inside a block
    Request(offset: 511, length: 2, misalignment: 0),          // straddles two blocks
    Request(offset: 1000, length: 3000, misalignment: 3),      // partial head and tail
    Request(offset: 4095, length: 8193, misalignment: 0),
    Request(offset: 300, length: 300_000, misalignment: 5),    // more than the bounce buffer
    Request(offset: 512, length: 600_000, misalignment: 0),    // aligned start, partial tail, two chunks
    Request(offset: imageSize - 1, length: 1, misalignment: 0),   // the last byte
    Request(offset: imageSize - 700, length: 700, misalignment: 0),
    Request(offset: 0, length: imageSize, misalignment: 0),       // the whole disk
    Request(offset: 0, length: imageSize, misalignment: 2),
]

/// Where the images for `cache` live: /tmp for writeback, a directory that
/// accepts O_DIRECT for cache=none (the suite is skipped without one).
private func imageDirectory(for cache: CacheMode) throws -> String {
    guard cache == .none else { return "/tmp" }
    return try #require(directIODirectory)
}

// MARK: - Checks shared by both cache modes

private func checkRead(_ cache: CacheMode, _ request: Request) throws {
    let image = try TempImage(size: imageSize, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    let bytes = try disk.readBytes(at: UInt64(request.offset), count: request.length, misalignment: request.misalignment)
    #expect(mismatch(bytes, pattern(at: request.offset, count: request.length)) == nil)
}

private func checkWrite(_ cache: CacheMode, _ request: Request) throws {
    let image = try TempImage(size: imageSize, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    let new = pattern(at: request.offset, count: request.length, seed: 0x5A)
    try disk.writeBytes(new, at: UInt64(request.offset), misalignment: request.misalignment)
    // Read back through the backend at a different buffer alignment...
    let back = try disk.readBytes(at: UInt64(request.offset), count: request.length, misalignment: (request.misalignment + 1) % 4)
    #expect(mismatch(back, new) == nil)
    // ...and through the file: the range holds the new bytes, the rest the old.
    let file = try image.contents(count: imageSize)
    var expected = pattern(at: 0, count: imageSize)
    expected.replaceSubrange(request.offset..<(request.offset + request.length), with: new)
    #expect(mismatch(file, expected) == nil)
    #expect(try image.fileStat().size == imageSize)
}

private func checkNeighbouringWrites(_ cache: CacheMode) throws {
    let image = try TempImage(size: 8192, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    try disk.writeBytes([1, 2, 3], at: 10)
    try disk.writeBytes([4, 5, 6], at: 13)
    try disk.writeBytes([7], at: 4095)
    try disk.writeBytes([8], at: 4096)
    #expect(try disk.readBytes(at: 9, count: 8) == [patternByte(9), 1, 2, 3, 4, 5, 6, patternByte(16)])
    #expect(try image.contents(at: 4094, count: 4) == [patternByte(4094), 7, 8, patternByte(4097)])
}

private func checkZeroLength(_ cache: CacheMode) throws {
    let image = try TempImage(size: 4096, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    for offset: UInt64 in [0, 7, 4096] {
        #expect(try disk.readBytes(at: offset, count: 0) == [])
        try disk.writeBytes([], at: offset)
        try disk.discard(at: offset, length: 0)
        try disk.writeZeroes(at: offset, length: 0, mayUnmap: false)
    }
    #expect(try image.contents(count: 4096) == pattern(at: 0, count: 4096))
}

private func checkFlush(_ cache: CacheMode) throws {
    let image = try TempImage(size: 8192, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    try disk.writeBytes([9, 9, 9], at: 100)
    try disk.flush()
    try disk.flush()
    #expect(try image.contents(at: 100, count: 3) == [9, 9, 9])
}

/// Eight tasks write single bytes, interleaved, into the same two blocks:
/// with cache=none every write is a read-modify-write of a whole block, so
/// without the bounce lock some writes would undo others.
private func checkConcurrentSmallWrites(_ cache: CacheMode) async throws {
    let image = try TempImage(size: 8192, in: imageDirectory(for: cache))
    let disk = try RawImage(path: image.path, cache: cache)
    let writers = 8, span = 1024
    try await withThrowingTaskGroup(of: Void.self) { group in
        for w in 0..<writers {
            group.addTask {
                // Writer w owns the bytes at offsets w, w + 8, w + 16, ... below span.
                for offset in stride(from: w, to: span, by: writers) {
                    try disk.writeBytes([UInt8(0xA0 + w)], at: UInt64(offset))
                }
            }
        }
        try await group.waitForAll()
    }
    let expected = (0..<span).map { UInt8(0xA0 + $0 % writers) } + pattern(at: span, count: 8192 - span)
    #expect(mismatch(try image.contents(count: 8192), expected) == nil)
}

/// The flags (from /proc/self/fdinfo, octal) of every descriptor this
/// process has open on `path`.
private func openFlags(of path: String) throws -> [Int] {
    var flags: [Int] = []
    let directory = try #require(opendir("/proc/self/fd"))
    defer { closedir(directory) }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var target = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/fd/\(name)", &target, 4095)
        guard n > 0, String(decoding: target[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == path else { continue }
        let info = try #require(fileText("/proc/self/fdinfo/\(name)"))
        let line = try #require(info.split(separator: "\n").first { $0.hasPrefix("flags:") })
        let digits = line.dropFirst("flags:".count).drop { $0 == " " || $0 == "\t" }
        flags.append(try #require(Int(digits, radix: 8)))
    }
    return flags
}

// MARK: - The suites

@Suite("RawImage round-trips, cache=writeback")
struct WritebackRoundTripTests {
    @Test("reads return the file's bytes", arguments: requests)
    func reads(_ request: Request) throws { try checkRead(.writeback, request) }

    @Test("writes land exactly and leave their neighbours alone", arguments: requests)
    func writes(_ request: Request) throws { try checkWrite(.writeback, request) }

    @Test("two small writes in one block both survive")
    func neighbouringWrites() throws { try checkNeighbouringWrites(.writeback) }

    @Test("zero-length requests succeed anywhere up to the end")
    func zeroLength() throws { try checkZeroLength(.writeback) }

    @Test("flush succeeds after writes")
    func flush() throws { try checkFlush(.writeback) }

    @Test("concurrent one-byte writes into the same blocks all land")
    func concurrentSmallWrites() async throws { try await checkConcurrentSmallWrites(.writeback) }

    @Test("no alignment constraints, 512-byte sectors, no O_DIRECT")
    func properties() throws {
        let image = try TempImage(size: 64 << 10)
        let disk = try RawImage(path: image.path)
        #expect(disk.size == 64 << 10 && disk.path == image.path)
        #expect(disk.cache == .writeback && !disk.readOnly && !disk.isBlockDevice)
        #expect(disk.directIOAlignment == 1 && disk.memoryAlignment == 1 && disk.sectorSize == 512)
        #expect(try openFlags(of: image.path).map { $0 & 0o40000 } == [0])
    }
}

@Suite(
    "RawImage round-trips, cache=none (O_DIRECT)",
    .enabled(if: directIODirectory != nil, "no directory here (/tmp, /var/tmp, the package folder) accepts O_DIRECT"))
struct DirectRoundTripTests {
    @Test("reads return the file's bytes", arguments: requests)
    func reads(_ request: Request) throws { try checkRead(.none, request) }

    @Test("writes land exactly and leave their neighbours alone", arguments: requests)
    func writes(_ request: Request) throws { try checkWrite(.none, request) }

    @Test("two unaligned writes in one block both survive the read-modify-write")
    func neighbouringWrites() throws { try checkNeighbouringWrites(.none) }

    @Test("zero-length requests succeed anywhere up to the end")
    func zeroLength() throws { try checkZeroLength(.none) }

    @Test("flush succeeds after writes")
    func flush() throws { try checkFlush(.none) }

    @Test("concurrent one-byte writes into the same blocks all land: read-modify-writes do not overlap")
    func concurrentSmallWrites() async throws { try await checkConcurrentSmallWrites(.none) }

    @Test("the descriptor is O_DIRECT; alignments are powers of two; sectors cover a block")
    func properties() throws {
        let image = try TempImage(size: 64 << 10, in: imageDirectory(for: .none))
        let disk = try RawImage(path: image.path, cache: .none)
        #expect(disk.cache == .none && disk.size == 64 << 10)
        #expect(disk.directIOAlignment >= 512 && disk.directIOAlignment & (disk.directIOAlignment - 1) == 0)
        #expect(disk.memoryAlignment >= 1 && disk.memoryAlignment & (disk.memoryAlignment - 1) == 0)
        #expect(disk.sectorSize == max(512, disk.directIOAlignment))
        // O_DIRECT is 040000 on x86-64.
        #expect(try openFlags(of: image.path).map { $0 & 0o40000 } == [0o40000])
    }
}
