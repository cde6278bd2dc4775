// NetError.swift: why a network endpoint could not be opened, as one line.

/// A network endpoint that could not be set up; `description` is the whole message.
public struct NetError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
