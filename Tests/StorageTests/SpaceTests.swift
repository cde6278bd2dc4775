// SpaceTests.swift: discard and write-zeroes on real files.
//
// Discard punches holes (st_blocks drops, the range reads as zeros), a
// write-zeroes without unmap zeroes in place, one with unmap may punch, and
// where the filesystem has no FALLOC_FL_ZERO_RANGE (tmpfs) write-zeroes falls
// back to writing zeros. The image size never changes.

#if canImport(Glibc)
import Glibc
#endif
import Storage
import Testing

private let mib = 1 << 20

/// The image must read `expected` everywhere: through the backend and the file.
private func expectContents(_ disk: RawImage, _ image: TempImage, _ expected: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(mismatch(try disk.readBytes(at: 0, count: expected.count), expected) == nil, sourceLocation: sourceLocation)
    #expect(mismatch(try image.contents(count: expected.count), expected) == nil, sourceLocation: sourceLocation)
    #expect(try image.fileStat().size == expected.count, sourceLocation: sourceLocation)
}

/// The original pattern with [offset, offset + length) zeroed.
private func patternZeroed(size: Int, _ offset: Int, _ length: Int) -> [UInt8] {
    var bytes = pattern(at: 0, count: size)
    bytes.replaceSubrange(offset..<(offset + length), with: repeatElement(0, count: length))
    return bytes
}

@Suite("RawImage: discard and write-zeroes")
struct SpaceTests {
    @Test("discard punches a hole: fewer blocks, zeros there, neighbours and size intact", arguments: CacheMode.allCases)
    func discardPunches(cache: CacheMode) throws {
        if cache == .none, directIODirectory == nil { try Test.cancel("no directory here accepts O_DIRECT") }
        let image = try TempImage(size: mib, in: cache == .none ? directIODirectory ?? "/tmp" : "/tmp")
        let disk = try RawImage(path: image.path, cache: cache)
        try disk.flush()
        let before = try image.fileStat().blocks
        try disk.discard(at: 128 << 10, length: 256 << 10)
        let after = try image.fileStat().blocks
        // 256 KiB is 512 blocks of 512 bytes, all released.
        #expect(before - after >= 512, "st_blocks \(before) -> \(after)")
        try expectContents(disk, image, patternZeroed(size: mib, 128 << 10, 256 << 10))
    }

    @Test("discard of a range that is not block-aligned, and of the last sector")
    func discardUnaligned() throws {
        let image = try TempImage(size: 64 << 10)
        let disk = try RawImage(path: image.path)
        // Punching a partial block zeroes the bytes (fallocate(2)).
        try disk.discard(at: 1000, length: 100)
        try disk.discard(at: UInt64((64 << 10) - 512), length: 512)
        var expected = patternZeroed(size: 64 << 10, 1000, 100)
        expected.replaceSubrange(((64 << 10) - 512)..<(64 << 10), with: repeatElement(0, count: 512))
        try expectContents(disk, image, expected)
    }

    @Test("write-zeroes without unmap zeroes in place: the blocks stay allocated", arguments: CacheMode.allCases)
    func writeZeroesKeepsBlocks(cache: CacheMode) throws {
        if cache == .none, directIODirectory == nil { try Test.cancel("no directory here accepts O_DIRECT") }
        let image = try TempImage(size: mib, in: cache == .none ? directIODirectory ?? "/tmp" : "/tmp")
        let disk = try RawImage(path: image.path, cache: cache)
        try disk.flush()
        let before = try image.fileStat().blocks
        try disk.writeZeroes(at: 64 << 10, length: 512 << 10, mayUnmap: false)
        // Unaligned ends too: the partial blocks are zeroed, not released.
        try disk.writeZeroes(at: 700_001, length: 3333, mayUnmap: false)
        let after = try image.fileStat().blocks
        #expect(after >= before, "st_blocks \(before) -> \(after)")
        var expected = patternZeroed(size: mib, 64 << 10, 512 << 10)
        expected.replaceSubrange(700_001..<703_334, with: repeatElement(0, count: 3333))
        try expectContents(disk, image, expected)
    }

    @Test("write-zeroes with unmap may release the blocks, and reads zeros")
    func writeZeroesUnmap() throws {
        let image = try TempImage(size: mib)
        let disk = try RawImage(path: image.path)
        try disk.flush()
        let before = try image.fileStat().blocks
        try disk.writeZeroes(at: 256 << 10, length: 512 << 10, mayUnmap: true)
        let after = try image.fileStat().blocks
        // On ext4/xfs/btrfs/tmpfs the hole punch succeeds: 1024 blocks released.
        #expect(before - after >= 1024, "st_blocks \(before) -> \(after)")
        try expectContents(disk, image, patternZeroed(size: mib, 256 << 10, 512 << 10))
    }

    @Test(
        "on tmpfs (no FALLOC_FL_ZERO_RANGE) write-zeroes falls back to writing zeros, in pieces",
        .enabled(if: tmpfsDirectory != nil, "no writable tmpfs here"))
    func writeZeroesFallback() throws {
        let directory = try #require(tmpfsDirectory)
        let size = 4 * mib
        let image = try TempImage(size: size, in: directory)
        let disk = try RawImage(path: image.path)
        // More than one 1 MiB piece, with unaligned ends.
        try disk.writeZeroes(at: 1234, length: UInt64(2 * mib + 777), mayUnmap: false)
        try disk.writeZeroes(at: UInt64(size - 1), length: 1, mayUnmap: false)
        var expected = patternZeroed(size: size, 1234, 2 * mib + 777)
        expected[size - 1] = 0
        try expectContents(disk, image, expected)
    }

    @Test(
        "the tmpfs fallback works through the bounce buffer too (cache=none)",
        .enabled(if: tmpfsDirectory != nil, "no writable tmpfs here"))
    func writeZeroesFallbackDirect() throws {
        let directory = try #require(tmpfsDirectory)
        let image = try TempImage(size: mib, in: directory)
        let disk: RawImage
        do {
            disk = try RawImage(path: image.path, cache: .none)
        } catch .directIOUnsupported {
            try Test.cancel("this tmpfs refuses O_DIRECT (Linux before 6.6)")
        }
        try disk.writeZeroes(at: 100, length: 5000, mayUnmap: false)
        try expectContents(disk, image, patternZeroed(size: mib, 100, 5000))
    }
}
