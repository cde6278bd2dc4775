// ImageFormat.swift: which backend an image file needs, and opening it.
//
// The one place that decides raw against qcow2 (by the "QFI\xfb" magic when
// the user did not say), shared by `--disk` in the VMM and by `skvm img`.

#if canImport(Glibc)
import Glibc
#endif

/// A disk image format skvm reads and writes.
public enum ImageFormat: String, Sendable, Equatable, CaseIterable {
    case raw
    case qcow2

    /// The format of the file at `path`: qcow2 when it starts with the
    /// qcow2 magic, else raw. Throws when the file cannot be opened.
    public static func detect(path: String) throws(BlockError) -> ImageFormat {
        try Qcow2Backing.probeQcow2(path) ? .qcow2 : .raw
    }
}

/// Opens the image at `path` as `format` (nil: detect it).
///
/// qcow2 images ignore `cache` beyond the default (they are read and
/// written through the page cache; flush makes them durable).
public func openImage(path: String, format: ImageFormat? = nil, readOnly: Bool = false, cache: CacheMode = .writeback) throws(BlockError) -> any BlockBackend {
    let kind: ImageFormat
    if let format { kind = format } else { kind = try ImageFormat.detect(path: path) }
    switch kind {
    case .raw: return try RawImage(path: path, readOnly: readOnly, cache: cache)
    case .qcow2: return try Qcow2Image(path: path, readOnly: readOnly)
    }
}
