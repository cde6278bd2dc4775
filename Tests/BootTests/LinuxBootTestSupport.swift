// LinuxBootTestSupport.swift: shared helpers for the Linux boot tests
// (LinuxSetupHeaderTests, ZeroPageTests, LinuxLoaderTests, MPTableTests).

import Boot
import Foundation
import Testing
import TestSupport

/// The package root, found from this file's path (Tests/BootTests/<file>).
let linuxTestPackageRoot: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A file under guests/build/linux (built by `make guests`), or nil when absent.
func linuxGuestAsset(_ name: String) -> [UInt8]? {
    let path = linuxTestPackageRoot.appendingPathComponent("guests/build/linux/\(name)").path
    return FileManager.default.contents(atPath: path).map { [UInt8]($0) }
}

/// True when guests/build/linux/`name` exists.
func linuxGuestAssetExists(_ name: String) -> Bool {
    FileManager.default.fileExists(atPath: linuxTestPackageRoot.appendingPathComponent("guests/build/linux/\(name)").path)
}

/// Expects `body` to throw a `BootError` whose message contains `phrase`;
/// returns the error (nil when none or another type was thrown).
@discardableResult
func expectBootError<T>(
    containing phrase: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T
) -> BootError? {
    let error = #expect(throws: BootError.self, sourceLocation: sourceLocation) { _ = try body() }
    if let error {
        #expect(error.message.contains(phrase), "message was: \(error.message)", sourceLocation: sourceLocation)
    }
    return error
}

/// Little-endian reads from a byte array, for comparing against spec offsets.
extension Array where Element == UInt8 {
    func le16(_ o: Int) -> UInt16 { loadLittleEndian(UInt16.self, at: o) }
    func le32(_ o: Int) -> UInt32 { loadLittleEndian(UInt32.self, at: o) }
    func le64(_ o: Int) -> UInt64 { loadLittleEndian(UInt64.self, at: o) }
}
