// NetNamespace.swift: a network namespace of a test's own, with a tap in it.
//
// Network tests never touch the host's interfaces: each creates a namespace
// with a unique name, a tap device `tap0` inside it (created with vnet_hdr,
// as skvm opens it) whose host end is 10.0.2.2/24 and up, and deletes the
// namespace (and with it the tap) when done. skvm runs inside it with
// `ip netns exec`. This needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and
// iproute2; without them the tests skip, unless SKVM_REQUIRE_KVM=1 (CI).

import Foundation
import Testing

final class NetNamespace {
    let name: String
    static let hostAddress = "10.0.2.2"
    static let guestAddress = "10.0.2.15"

    /// True when this process may create namespaces and iproute2 is there.
    static let available: Bool = geteuid() == 0 && ip != nil && access("/dev/net/tun", R_OK | W_OK) == 0
    static let runTests = available || Harness.kvmRequired

    static let ip: String? = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    private static let counter = Mutex(0)

    /// A new namespace; with `tap`, a tap of that name inside it, addressed and up.
    init(tap: String? = "tap0") throws {
        let n = Self.counter.withLock { c -> Int in c += 1; return c }
        name = "skvm-test-\(getpid())-\(n)"
        try Self.ip(["netns", "add", name])
        try Self.ip(["-n", name, "link", "set", "lo", "up"])
        if let tap {
            try Self.ip(["-n", name, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
            try Self.ip(["-n", name, "addr", "add", "\(Self.hostAddress)/24", "dev", tap])
            try Self.ip(["-n", name, "link", "set", tap, "up"])
        }
    }

    deinit { _ = try? Self.run(Self.ip ?? "ip", ["netns", "del", name]) }

    /// `ip netns exec NAME`: the prefix that runs a command inside.
    var exec: [String] { [Self.ip ?? "ip", "netns", "exec", name] }

    /// Runs `command` inside the namespace; returns (status, stdout + stderr).
    @discardableResult
    func run(_ command: [String]) throws -> (status: Int32, output: String) {
        try Self.run(exec[0], Array(exec.dropFirst()) + command)
    }

    /// The interfaces in the namespace (`ip -o link` names).
    func links() throws -> [String] {
        let r = try run([Self.ip ?? "ip", "-o", "link"])
        return r.output.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2)
            return parts.count >= 2 ? parts[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first.map(String.init) : nil
        }
    }

    private static func ip(_ arguments: [String]) throws {
        let r = try run(ip ?? "ip", arguments)
        try #require(r.status == 0, "ip \(arguments.joined(separator: " ")) failed: \(r.output)")
    }

    static func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

import Synchronization
