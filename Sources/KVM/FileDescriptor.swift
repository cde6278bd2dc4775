// FileDescriptor.swift: a file descriptor closed exactly once.

#if canImport(Glibc)
import Glibc
#endif

/// Owns a file descriptor and closes it on deinit.
public final class OwnedFileDescriptor: @unchecked Sendable {
    /// The descriptor. Immutable, so sharing the object across threads is safe.
    public let rawValue: Int32
    public init(_ fd: Int32) { self.rawValue = fd }
    deinit { close(rawValue) }
}
