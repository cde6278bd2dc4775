// Qcow2Compressed.swift: reading compressed clusters (qcow2.txt,
// "Compressed Clusters Descriptor"; the header's compression_type).
//
// A compressed cluster is a deflate stream (raw, no zlib header) or, when
// compression_type is 1, zstd frames, starting at an unaligned host offset
// and running to the end of a 512-byte sector; decompression stops once it
// has produced one cluster. Its length comes from the descriptor, at most
// two clusters (the sector count has cluster_bits - 8 bits), so the input
// buffer is bounded whatever the image says. The last cluster decompressed
// is kept: a guest reading a compressed cluster 4 KiB at a time decompresses
// it once.

import CCompression

/// Decompresses clusters into a reused buffer. Not thread-safe.
final class Qcow2Decompressor {
    let clusterSize: Int
    /// 0 zlib (deflate), 1 zstd.
    let compressionType: UInt8
    private var input: [UInt8] = []
    /// The last cluster produced.
    private(set) var output: [UInt8]
    private var cached: UInt64?

    init(clusterSize: Int, compressionType: UInt8) {
        self.clusterSize = clusterSize
        self.compressionType = compressionType
        output = []
    }

    /// Decompresses the cluster at byte `offset` (`length` bytes as the
    /// descriptor says, cut at the end of the file) into `output`.
    func decompress(offset: UInt64, length: UInt64, file: Qcow2File) throws(BlockError) {
        if cached == offset { return }
        cached = nil
        guard offset < file.length, length <= 2 * UInt64(clusterSize) + 512 else {
            throw .invalidImage(path: file.path, reason: "compressed cluster at offset \(offset) (\(length) bytes) lies past the end of the file")
        }
        // QEMU may end the file inside the last sector of compressed data.
        let count = Int(min(length, file.length - offset))
        if input.count < 2 * clusterSize + 512 { input = [UInt8](repeating: 0, count: 2 * clusterSize + 512) }
        if output.count < clusterSize { output = [UInt8](repeating: 0, count: clusterSize) }
        try input.withMutableBytes { (b: UnsafeMutableRawBufferPointer) throws(BlockError) in
            try file.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: b[0..<count]))
        }
        let cs = clusterSize
        let r = input.withUnsafeBytes { src in
            output.withUnsafeMutableBytes { dst in
                compressionType == 1
                    ? ccomp_zstd_decompress(src.baseAddress, count, dst.baseAddress, cs)
                    : ccomp_inflate_raw(src.baseAddress, count, dst.baseAddress, cs)
            }
        }
        guard r == 0 else {
            let kind = compressionType == 1 ? "zstd" : "deflate"
            throw .invalidImage(path: file.path, reason: "compressed cluster at offset \(offset) is not a valid \(kind) stream of one cluster")
        }
        cached = offset
    }

    /// Forgets the cached cluster (its host clusters may be rewritten).
    func invalidate() { cached = nil }
}
