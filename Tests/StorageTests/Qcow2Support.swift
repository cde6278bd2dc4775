// Qcow2Support.swift: QEMU's own tools as the reference for the qcow2 tests.
//
// Images are made by qemu-img and written by qemu-io, then read by
// Qcow2Image and compared with `qemu-img convert -O raw`; images skvm writes
// are checked by `qemu-img check` and `qemu-img compare`. Without qemu-img
// (Debian's qemu-utils) these tests skip, unless SKVM_REQUIRE_KVM=1 (CI),
// which makes them run and fail.

import Foundation
import Storage
import Testing

enum QemuTools {
    static let img = "/usr/bin/qemu-img"
    static let io = "/usr/bin/qemu-io"
    static let available = access(img, X_OK) == 0 && access(io, X_OK) == 0
    static let required = ProcessInfo.processInfo.environment["SKVM_REQUIRE_KVM"] == "1"
    /// Whether the interop tests run: the tools are here, or CI demands them.
    static let shouldRun = available || required
    static let skipReason: Comment = "qemu-img/qemu-io not installed (apt install qemu-utils; SKVM_REQUIRE_KVM=1 fails instead)"

    /// Runs `tool` with `arguments`; returns its exit status and stdout.
    @discardableResult
    static func run(_ tool: String, _ arguments: [String], cwd: String? = nil) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs qemu-img and requires exit status 0.
    @discardableResult
    static func qemuImg(_ arguments: String..., cwd: String? = nil) throws -> String {
        let r = try run(img, arguments, cwd: cwd)
        try #require(r.status == 0, "qemu-img \(arguments.joined(separator: " ")): \(r.output)")
        return r.output
    }

    /// Runs qemu-io with the commands, each a `-c`, and requires success.
    static func qemuIO(_ image: String, _ commands: [String], format: String = "qcow2") throws {
        var args = ["-f", format]
        for c in commands { args += ["-c", c] }
        args.append(image)
        let r = try run(io, args)
        try #require(r.status == 0 && !r.output.contains("error") && !r.output.contains("failed"), "qemu-io \(commands): \(r.output)")
    }

    /// `qemu-img check`'s exit status and report.
    static func check(_ image: String) throws -> (status: Int32, output: String) {
        try run(img, ["check", image])
    }
}

/// A temporary folder, removed with its contents when the value goes away.
final class TempFolder {
    let path: String

    init() throws {
        var template = Array("/tmp/skvm-qcow2-XXXXXX".utf8CString)
        let made = try #require(mkdtemp(&template))
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The path of `name` inside the folder.
    func file(_ name: String) -> String { path + "/" + name }
}

/// The whole contents of a file.
func fileBytes(_ path: String) throws -> [UInt8] {
    let data = try #require(FileManager.default.contents(atPath: path), "cannot read \(path)")
    return [UInt8](data)
}

/// Writes `bytes` to a new file at `path`.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try #require(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
}

/// Reads [offset, offset + count) of `image` through the backend.
func backendBytes(_ image: any BlockBackend, at offset: UInt64, count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0xEE, count: count)
    try bytes.withUnsafeMutableBytes { b in try image.read(at: offset, into: b) }
    return bytes
}

/// Writes `bytes` at `offset` through the backend.
func backendWrite(_ image: any BlockBackend, _ bytes: [UInt8], at offset: UInt64) throws {
    try bytes.withUnsafeBytes { b in try image.write(at: offset, from: b) }
}

/// Opens `path` with Qcow2Image and compares every byte with the raw file
/// `raw` (made by `qemu-img convert -O raw`), in pieces of `chunk` bytes.
func expectSameContents(qcow2 path: String, raw: String, chunk: Int = 1 << 20, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let image = try Qcow2Image(path: path, readOnly: true)
    defer { image.close() }
    let reference = try fileBytes(raw)
    #expect(image.size == UInt64(reference.count), sourceLocation: sourceLocation)
    var offset = 0
    while offset < reference.count {
        let n = min(chunk, reference.count - offset)
        let got = try backendBytes(image, at: UInt64(offset), count: n)
        if let m = mismatch(got, Array(reference[offset..<(offset + n)])) {
            Issue.record("\(path) at \(offset): \(m)", sourceLocation: sourceLocation)
            return
        }
        offset += n
    }
}

/// A small deterministic random generator (SplitMix64), so failures replay.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
