// MemoryBackend.swift: an in-memory disk for device tests.

import Storage
import Synchronization

/// A BlockBackend over a byte array, recording flushes, discards and write-zeroes.
public final class MemoryBackend: BlockBackend {
    private let state: Mutex<(bytes: [UInt8], flushes: Int, discards: [(UInt64, UInt64)], zeroes: [(UInt64, UInt64, Bool)])>
    public let readOnly: Bool
    public let sectorSize = 512
    /// When set, every operation fails with EIO (to test error paths).
    public let failing: Bool

    public init(bytes: [UInt8], readOnly: Bool = false, failing: Bool = false) {
        state = Mutex((bytes, 0, [], []))
        self.readOnly = readOnly
        self.failing = failing
    }

    public var size: UInt64 { state.withLock { UInt64($0.bytes.count) } }
    public var bytes: [UInt8] { state.withLock { $0.bytes } }
    public var flushes: Int { state.withLock { $0.flushes } }
    public var discards: [(UInt64, UInt64)] { state.withLock { $0.discards } }
    public var zeroes: [(UInt64, UInt64, Bool)] { state.withLock { $0.zeroes } }

    private func check(_ operation: BlockOperation, _ offset: UInt64, _ length: Int, write: Bool) throws(BlockError) {
        if failing { throw BlockError.ioFailed(operation: operation, offset: offset, length: UInt64(length), errno: 5) }
        if write && readOnly { throw BlockError.readOnly(operation: operation) }
        guard offset.addingReportingOverflow(UInt64(length)).overflow == false, offset + UInt64(length) <= size else {
            throw BlockError.outOfRange(operation: operation, offset: offset, length: UInt64(length), size: size)
        }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try check(.read, offset, buffer.count, write: false)
        state.withLock { s in
            for i in 0..<buffer.count { buffer[i] = s.bytes[Int(offset) + i] }
        }
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try check(.write, offset, buffer.count, write: true)
        state.withLock { s in
            for i in 0..<buffer.count { s.bytes[Int(offset) + i] = buffer[i] }
        }
    }

    public func flush() throws(BlockError) {
        if failing { throw BlockError.ioFailed(operation: .flush, offset: 0, length: 0, errno: 5) }
        state.withLock { $0.flushes += 1 }
    }

    public func discard(at offset: UInt64, length: UInt64) throws(BlockError) {
        try check(.discard, offset, Int(length), write: true)
        state.withLock { s in
            s.discards.append((offset, length))
            for i in 0..<Int(length) { s.bytes[Int(offset) + i] = 0 }
        }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayUnmap: Bool) throws(BlockError) {
        try check(.writeZeroes, offset, Int(length), write: true)
        state.withLock { s in
            s.zeroes.append((offset, length, mayUnmap))
            for i in 0..<Int(length) { s.bytes[Int(offset) + i] = 0 }
        }
    }

    public func close() {}
}
