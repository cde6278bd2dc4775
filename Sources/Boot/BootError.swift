// BootError.swift: why a kernel could not be loaded, in words a user can act on.

import Memory

/// A kernel image that cannot be loaded as asked.
public struct BootError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
