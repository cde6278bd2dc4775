// HostIO.swift: whole-buffer read(2) and write(2) on host file descriptors.
//
// The one place in VMM that hands Swift arrays to the kernel as raw buffers:
// everything else (stderr lines, trace lines, /proc files, input files,
// stdin) goes through these, so partial transfers and EINTR are handled once.

#if canImport(Glibc)
import Glibc
#endif

/// Writes all of `bytes` to `fd`, retrying after EINTR and partial writes.
/// Returns false when the descriptor fails (EPIPE, ENOSPC, ...).
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var done = 0
    while done < bytes.count {
        // SAFETY: the pointer covers bytes[done...], alive during the call.
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress.unsafelyUnwrapped.advanced(by: done), $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
    }
    return true
}

/// One read(2) into `buffer`: the byte count, 0 at end of file, or -errno.
public func readSome(_ fd: Int32, into buffer: inout [UInt8]) -> Int {
    // SAFETY: the pointer covers the whole buffer, alive during the call.
    let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
    return n < 0 ? -Int(errno) : n
}

/// Everything `fd` yields until end of file (at most `limit` bytes, then nil),
/// retrying after EINTR; nil on a read error.
public func readToEnd(_ fd: Int32, limit: Int = 1 << 30) -> [UInt8]? {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = readSome(fd, into: &chunk)
        if n == -Int(EINTR) { continue }
        if n < 0 { return nil }
        if n == 0 { return bytes }
        guard bytes.count + n <= limit else { return nil }
        bytes += chunk[0..<n]
    }
}
