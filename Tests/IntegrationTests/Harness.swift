// Harness.swift: running the built `skvm` binary on the test kernels.
//
// Integration tests drive skvm exactly as a user does: a child process with
// arguments, stdin, stdout, stderr and an exit status. KVM tests need a
// usable /dev/kvm; without one they skip, unless SKVM_REQUIRE_KVM=1 (CI),
// where they run and fail.

import Foundation
import Testing

enum Harness {
    /// The package root (two levels above this file's folder).
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The skvm executable: $SKVM_BIN, or the one built beside this test bundle.
    static var skvm: String {
        if let path = ProcessInfo.processInfo.environment["SKVM_BIN"] { return path }
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let p = candidate.appendingPathComponent("skvm").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return root.appendingPathComponent(".build/debug/skvm").path
    }

    /// The release build of skvm ($SKVM_RELEASE_BIN, or .build/release/skvm),
    /// for tests that measure what only optimised code promises (no heap
    /// allocation per request: a debug build's unspecialised generics allocate).
    static var releaseSkvm: String {
        ProcessInfo.processInfo.environment["SKVM_RELEASE_BIN"] ?? root.appendingPathComponent(".build/release/skvm").path
    }
    /// Whether tests that need the release build run: it exists, or CI requires every test.
    static var runReleaseTests: Bool { FileManager.default.isExecutableFile(atPath: releaseSkvm) || kvmRequired }

    /// A built guest, by file name (guests/build/NAME).
    static func guest(_ name: String) -> String {
        root.appendingPathComponent("guests/build").appendingPathComponent(name).path
    }

    /// True when /dev/kvm (or $SKVM_KVM_DEVICE) opens read-write.
    static let kvmUsable: Bool = {
        let path = ProcessInfo.processInfo.environment["SKVM_KVM_DEVICE"] ?? "/dev/kvm"
        let fd = open(path, O_RDWR)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }()

    /// CI sets SKVM_REQUIRE_KVM=1: KVM tests must run (and fail if KVM is unusable).
    static let kvmRequired = ProcessInfo.processInfo.environment["SKVM_REQUIRE_KVM"] == "1"

    /// Whether KVM tests run: KVM usable, or required.
    static let runKVMTests = kvmUsable || kvmRequired

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        /// stderr without the informational "skvm: ..." start line.
        var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
    }

    /// A running skvm, as `whileRunning` sees it.
    struct Running {
        let process: Process
        /// Everything the guest printed so far.
        let stdoutSoFar: () -> String
        var processIdentifier: Int32 { process.processIdentifier }
        func terminate() { process.terminate() }
        /// Waits (at most `timeout` s) until stdout contains `text`.
        @discardableResult
        func waitForOutput(_ text: String, timeout: TimeInterval = 60) -> Bool {
            let ok = Harness.waitFor({ stdoutSoFar().contains(text) }, timeout: timeout)
            if !ok { Issue.record("the guest did not print \"\(text)\" within \(timeout) s") }
            return ok
        }
    }

    /// Runs skvm with `arguments`, feeding `input` on stdin (then closing it,
    /// unless `keepInputOpen`), and waits at most `timeout` seconds.
    /// `whileRunning` is called with the process once it started.
    /// With `prefix` (e.g. `ip netns exec NS`), skvm runs under that command.
    @discardableResult
    static func run(_ arguments: [String], input: Data? = nil, keepInputOpen: Bool = false,
                    environment: [String: String] = [:], timeout: TimeInterval = 120, prefix: [String] = [],
                    executable: String? = nil, whileRunning: ((Running) -> Void)? = nil) throws -> Result {
        let p = Process()
        let binary = executable ?? skvm
        if let first = prefix.first {
            p.executableURL = URL(fileURLWithPath: first)
            p.arguments = Array(prefix.dropFirst()) + [binary] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = arguments
        }
        p.currentDirectoryURL = root
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let stdinPipe = Pipe(), stdoutPipe = Pipe(), stderrPipe = Pipe()
        p.standardInput = stdinPipe
        p.standardOutput = stdoutPipe
        p.standardError = stderrPipe
        // Read both pipes concurrently so a chatty child never blocks on a full pipe.
        let outBox = DataBox(), errBox = DataBox()
        let group = DispatchGroup()
        for (pipe, box) in [(stdoutPipe, outBox), (stderrPipe, errBox)] {
            group.enter()
            DispatchQueue.global().async {
                while true {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    box.append(chunk)
                }
                group.leave()
            }
        }
        try p.run()
        if let input { try stdinPipe.fileHandleForWriting.write(contentsOf: input) }
        if !keepInputOpen { try stdinPipe.fileHandleForWriting.close() }
        whileRunning?(Running(process: p, stdoutSoFar: { String(decoding: outBox.data, as: UTF8.self) }))
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning {
            p.terminate()
            usleep(200_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            Issue.record("skvm \(arguments.joined(separator: " ")) did not finish within \(timeout) s")
        }
        p.waitUntilExit()
        if keepInputOpen { try? stdinPipe.fileHandleForWriting.close() }
        group.wait()
        return Result(status: p.terminationStatus,
                      stdout: String(decoding: outBox.data, as: UTF8.self),
                      stderr: String(decoding: errBox.data, as: UTF8.self))
    }

    /// Waits until `file`'s collected output contains `text` (polling), at most `timeout` s.
    static func waitFor(_ condition: () -> Bool, timeout: TimeInterval = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return false
    }
}

/// Bytes collected by one thread and read by another.
final class DataBox: @unchecked Sendable {
    private let lock = NSLock()
    private var storage = Data()
    var data: Data {
        get { lock.lock(); defer { lock.unlock() }; return storage }
        set { lock.lock(); storage = newValue; lock.unlock() }
    }
    func append(_ d: Data) { lock.lock(); storage.append(d); lock.unlock() }
}

/// Fails the current test with a useful message when a guest is not built.
func requireGuest(_ name: String) throws -> String {
    let path = Harness.guest(name)
    try #require(FileManager.default.fileExists(atPath: path), "guest \(name) is not built: run 'make guests'")
    return path
}
