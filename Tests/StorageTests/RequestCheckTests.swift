// RequestCheckTests.swift: what RawImage refuses before touching the file:
// ranges outside the image (or overflowing 64 bits), modifications of a
// read-only image, and anything after close.

#if canImport(Glibc)
import Glibc
#endif
import Storage
import Testing

private let size: UInt64 = 8192

/// Every operation on `disk` with [offset, offset + length), as the error it threw (nil: none).
private func errors(_ disk: RawImage, offset: UInt64, length: UInt64) -> [BlockOperation: BlockError?] {
    func run(_ body: () throws(BlockError) -> Void) -> BlockError? {
        do throws(BlockError) {
            try body()
            return nil
        } catch {
            return error
        }
    }
    var found: [BlockOperation: BlockError?] = [
        .discard: run { () throws(BlockError) in try disk.discard(at: offset, length: length) },
        .writeZeroes: run { () throws(BlockError) in try disk.writeZeroes(at: offset, length: length, mayUnmap: true) },
    ]
    // Reads and writes need a buffer as long as the request: only for lengths one can allocate.
    if length <= 1 << 16 {
        let buffer = TestBuffer(count: Int(length))
        found[.read] = run { () throws(BlockError) in try disk.read(at: offset, into: buffer.bytes) }
        found[.write] = run { () throws(BlockError) in try disk.write(at: offset, from: UnsafeRawBufferPointer(buffer.bytes)) }
    }
    return found
}

struct Range: Sendable, CustomTestStringConvertible {
    let offset: UInt64
    let length: UInt64
    var testDescription: String { "\(length) bytes at \(offset)" }
}

@Suite("RawImage: request checks")
struct RequestCheckTests {
    @Test(
        "ranges past the end or overflowing are refused with .outOfRange, the file untouched",
        arguments: [
            Range(offset: size, length: 1),                 // starts at the end
            Range(offset: size - 1, length: 2),             // straddles the end
            Range(offset: size + 1, length: 0),             // empty, but past the end
            Range(offset: 0, length: size + 1),             // one byte too long
            Range(offset: UInt64.max, length: 1),           // offset + length overflows
            Range(offset: 1, length: UInt64.max),           // overflows the other way
            Range(offset: UInt64.max, length: UInt64.max),
            Range(offset: UInt64(Int64.max), length: 512),  // beyond what off_t can say
        ])
    func outOfRange(_ range: Range) throws {
        let image = try TempImage(size: Int(size))
        let disk = try RawImage(path: image.path)
        let found = errors(disk, offset: range.offset, length: range.length)
        #expect(found.count == (range.length <= 1 << 16 ? 4 : 2))
        for (operation, error) in found {
            #expect(error == .outOfRange(operation: operation, offset: range.offset, length: range.length, size: size), "\(operation)")
        }
        #expect(mismatch(try image.contents(count: Int(size)), pattern(at: 0, count: Int(size))) == nil)
    }

    @Test("the last byte and the whole image are in range")
    func edges() throws {
        let image = try TempImage(size: Int(size))
        let disk = try RawImage(path: image.path)
        for (_, error) in errors(disk, offset: size - 1, length: 1) { #expect(error == nil) }
        for (_, error) in errors(disk, offset: 0, length: size) { #expect(error == nil) }
    }

    @Test("out-of-range messages say what was asked and why it does not fit")
    func outOfRangeMessages() {
        #expect(BlockError.outOfRange(operation: .read, offset: 8192, length: 512, size: 8192).description
            == "read of 512 bytes at offset 8192 ends past the end of the 8192-byte image")
        #expect(BlockError.outOfRange(operation: .writeZeroes, offset: UInt64.max, length: 2, size: 8192).description
            == "write-zeroes of 2 bytes at offset 18446744073709551615 overflows 64 bits")
    }

    @Test("a read-only image refuses write, discard and write-zeroes, and reads and flushes")
    func readOnly() throws {
        let image = try TempImage(size: Int(size))
        let disk = try RawImage(path: image.path, readOnly: true)
        #expect(disk.readOnly)
        let found = errors(disk, offset: 0, length: 512)
        #expect(found[.read] == .some(nil))
        #expect(found[.write] == .readOnly(operation: .write))
        #expect(found[.discard] == .readOnly(operation: .discard))
        #expect(found[.writeZeroes] == .readOnly(operation: .writeZeroes))
        // Read-only wins over the range check: the request is wrong either way.
        #expect(errors(disk, offset: size, length: 512)[.write] == .readOnly(operation: .write))
        try disk.flush()
        #expect(try disk.readBytes(at: 100, count: 4) == pattern(at: 100, count: 4))
        #expect(mismatch(try image.contents(count: Int(size)), pattern(at: 0, count: Int(size))) == nil)
        #expect(BlockError.readOnly(operation: .discard).description == "discard refused: the disk image is read-only")
    }

    @Test("after close every request throws .closed; closing twice is harmless")
    func closed() throws {
        let image = try TempImage(size: Int(size))
        let disk = try RawImage(path: image.path)
        disk.close()
        disk.close()
        for (operation, error) in errors(disk, offset: 0, length: 512) {
            #expect(error == .closed(operation: operation))
        }
        #expect(throws: BlockError.closed(operation: .flush)) { try disk.flush() }
        #expect(BlockError.closed(operation: .read).description == "read on a closed disk image")
    }

    @Test("host failures carry the operation, the range and errno")
    func ioFailedMessages() {
        #expect(BlockError.ioFailed(operation: .write, offset: 4096, length: 512, errno: ENOSPC).description
            == "write of 512 bytes at offset 4096 failed: No space left on device")
        #expect(BlockError.ioFailed(operation: .flush, offset: 0, length: 0, errno: EIO).description
            == "flush failed: Input/output error")
        #expect(BlockError.unexpectedEndOfFile(operation: .read, offset: 4096).description
            == "read at offset 4096 met the end of the file: the image shrank while in use")
    }

    @Test("a file truncated underneath reads as .unexpectedEndOfFile, not as a hang or garbage")
    func truncatedUnderneath() throws {
        let image = try TempImage(size: Int(size))
        let disk = try RawImage(path: image.path)
        try #require(truncate(image.path, 4096) == 0)
        #expect(throws: BlockError.unexpectedEndOfFile(operation: .read, offset: 4096)) {
            _ = try disk.readBytes(at: 4000, count: 200)
        }
    }
}
