// KVMError.swift: the one error type of the KVM layer.

#if canImport(Glibc)
import Glibc
#endif
import Memory

/// A failed KVM (or related) system call: which operation, the errno, and
/// what skvm was doing, so that the message alone explains the failure.
public struct KVMError: Error, CustomStringConvertible, Sendable {
    /// The ioctl or syscall that failed, e.g. "KVM_SET_SREGS".
    public let operation: String
    /// The errno it returned.
    public let errno: Int32
    /// What skvm was doing, e.g. "vCPU 1".
    public let context: String

    public init(operation: String, errno: Int32, context: String = "") {
        self.operation = operation
        self.errno = errno
        self.context = context
    }

    public var description: String {
        let what = context.isEmpty ? operation : "\(operation) (\(context))"
        return "\(what) failed: \(errnoString(errno))"
    }
}

/// Runs a shim call that returns >= 0 or -errno, retrying on EINTR unless told
/// not to, and turns a failure into a KVMError.
@inline(__always)
func check(_ operation: @autoclosure () -> String, context: @autoclosure () -> String = "",
           retryOnInterrupt: Bool = true, _ call: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let r = call()
        if r >= 0 { return r }
        if -r == EINTR && retryOnInterrupt { continue }
        throw KVMError(operation: operation(), errno: -r, context: context())
    }
}
