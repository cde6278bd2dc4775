// BlockDeviceTests.swift: RawImage on a real block device.
//
// A loop device (losetup) over a temporary file gives a block device nobody
// else uses: its size comes from BLKGETSIZE64 and its sector size from
// BLKSSZGET or statx, not from stat. With `--sector-size 4096` it is a
// "4K native" disk, on which cache=none needs 4096-byte alignment, so 512-byte
// requests go through the bounce buffer with a read-modify-write. Needs root
// and /dev/loop-control; skipped otherwise. Every device is detached again.

#if canImport(Glibc)
import Glibc
#endif
import Storage
import Testing

/// True when this process can attach loop devices.
private let canUseLoopDevices: Bool =
    getuid() == 0 && access("/dev/loop-control", R_OK | W_OK) == 0
    && (access("/usr/sbin/losetup", X_OK) == 0 || access("/sbin/losetup", X_OK) == 0)

/// A loop device over a fresh pattern-filled file, detached on deinit.
private final class LoopDevice {
    let backing: TempImage
    let device: String

    init(size: Int, sectorSize: Int = 512) throws {
        backing = try TempImage(size: size)
        let output = backing.path + ".loop"
        defer { unlink(output) }
        let status = system("losetup --find --show --sector-size \(sectorSize) '\(backing.path)' > '\(output)' 2>&1")
        let text = fileText(output) ?? ""
        try #require(status == 0, "losetup failed: \(text)")
        device = text.split(separator: "\n").first.map(String.init) ?? ""
        try #require(device.hasPrefix("/dev/loop"), "losetup printed '\(text)'")
    }

    deinit { _ = system("losetup --detach '\(device)' 2>/dev/null") }
}

@Suite("RawImage on a block device", .enabled(if: canUseLoopDevices, "needs root, /dev/loop-control and losetup"), .serialized)
struct BlockDeviceTests {
    @Test("the size and sector size come from the device; the lock applies", arguments: CacheMode.allCases)
    func properties(cache: CacheMode) throws {
        let loop = try LoopDevice(size: 1 << 20)
        let disk = try RawImage(path: loop.device, cache: cache)
        #expect(disk.isBlockDevice)
        #expect(disk.size == 1 << 20)
        #expect(disk.sectorSize == 512)
        #expect(throws: BlockError.locked(path: loop.device, readOnly: true)) {
            _ = try RawImage(path: loop.device, readOnly: true)
        }
        #expect(try disk.readBytes(at: 1000, count: 3000, misalignment: 1) == pattern(at: 1000, count: 3000))
        disk.close()
    }

    @Test("writes reach the backing file after flush", arguments: CacheMode.allCases)
    func writes(cache: CacheMode) throws {
        let loop = try LoopDevice(size: 1 << 20)
        let disk = try RawImage(path: loop.device, cache: cache)
        let new = pattern(at: 777, count: 5000, seed: 9)
        try disk.writeBytes(new, at: 777, misalignment: 3)
        try disk.writeZeroes(at: 65536, length: 8192, mayUnmap: false)
        try disk.discard(at: 131072, length: 4096)
        try disk.flush()
        #expect(try disk.readBytes(at: 777, count: 5000) == new)
        #expect(try disk.readBytes(at: 65536, count: 8192) == [UInt8](repeating: 0, count: 8192))
        disk.close()
        #expect(try loop.backing.contents(at: 777, count: 5000) == new)
        #expect(try loop.backing.contents(at: 65536, count: 8192) == [UInt8](repeating: 0, count: 8192))
        #expect(try loop.backing.contents(at: 60000, count: 5536) == pattern(at: 60000, count: 5536))
    }

    @Test("a 4K-sector device with cache=none: 4096-byte alignment, 512-byte writes read-modify-write")
    func fourKNative() throws {
        let loop = try LoopDevice(size: 1 << 20, sectorSize: 4096)
        let disk = try RawImage(path: loop.device, cache: .none)
        #expect(disk.directIOAlignment == 4096)
        #expect(disk.sectorSize == 4096)
        // One sector in the middle of a 4 KiB block, and one straddling two blocks.
        try disk.writeBytes([UInt8](repeating: 0xAB, count: 512), at: 4096 + 1024)
        try disk.writeBytes([UInt8](repeating: 0xCD, count: 1024), at: 8192 - 512)
        try disk.flush()
        disk.close()
        var expected = pattern(at: 4096, count: 8192)
        expected.replaceSubrange(1024..<1536, with: repeatElement(0xAB, count: 512))
        expected.replaceSubrange(3584..<4608, with: repeatElement(0xCD, count: 1024))
        #expect(mismatch(try loop.backing.contents(at: 4096, count: 8192), expected) == nil)
        // With cache=writeback the page cache absorbs the alignment: 512-byte sectors.
        let buffered = try RawImage(path: loop.device)
        #expect(buffered.sectorSize == 512 && buffered.directIOAlignment == 1)
        #expect(mismatch(try buffered.readBytes(at: 4096, count: 8192), expected) == nil)
    }
}
