// Qcow2Snapshots.swift: the internal snapshot table (qcow2.txt, "Snapshots").
//
// skvm reads snapshots (for `skvm img info` and `check`) and preserves
// them: writes to the active layer copy shared clusters first (see
// Qcow2Writer.swift). It neither creates, applies nor deletes snapshots.

/// One entry of the snapshot table.
public struct Qcow2Snapshot: Equatable, Sendable {
    public var l1TableOffset: UInt64
    public var l1Size: UInt32
    public var id: String
    public var name: String
    /// Seconds and nanoseconds since the Epoch when it was taken.
    public var dateSeconds: UInt32
    public var dateNanoseconds: UInt32
    /// Guest run time in nanoseconds when it was taken.
    public var vmClockNanoseconds: UInt64
    /// Bytes of saved VM state (0 for a disk-only snapshot).
    public var vmStateSize: UInt64
    /// The virtual disk size when it was taken (extra data; else the image's size).
    public var diskSize: UInt64?
}

extension Qcow2Snapshot {
    /// Reads the `count` entries of the snapshot table at `offset` of `file`.
    /// Every length is bounded by the file, and the table by 64 MiB.
    static func readTable(file: Qcow2File, offset: UInt64, count: UInt32, clusterSize: UInt64) throws(BlockError) -> [Qcow2Snapshot] {
        guard count > 0 else { return [] }
        func invalid(_ reason: String) -> BlockError { .invalidImage(path: file.path, reason: reason) }
        guard offset & (clusterSize - 1) == 0, offset < file.length else {
            throw invalid("the snapshot table at offset \(offset) is unaligned or past the end of the file")
        }
        let limit = Int(min(file.length - offset, 64 << 20))
        let bytes = try file.readArray(at: offset, count: limit)
        var snapshots: [Qcow2Snapshot] = []
        var at = 0
        for i in 0..<Int(count) {
            guard at + 40 <= bytes.count else { throw invalid("snapshot \(i) runs past the end of the snapshot table") }
            let idLength = Int(bytes.be16(at + 12)), nameLength = Int(bytes.be16(at + 14))
            let extra = Int(bytes.be32(at + 36))
            let end = at + 40 + extra + idLength + nameLength
            guard extra <= 1024, end <= bytes.count else { throw invalid("snapshot \(i) runs past the end of the snapshot table") }
            var s = Qcow2Snapshot(
                l1TableOffset: bytes.be64(at), l1Size: bytes.be32(at + 8), id: "", name: "",
                dateSeconds: bytes.be32(at + 16), dateNanoseconds: bytes.be32(at + 20),
                vmClockNanoseconds: bytes.be64(at + 24), vmStateSize: UInt64(bytes.be32(at + 32)), diskSize: nil)
            if extra >= 8 { s.vmStateSize = bytes.be64(at + 40) }
            if extra >= 16 { s.diskSize = bytes.be64(at + 48) }
            let idStart = at + 40 + extra
            s.id = String(decoding: bytes[idStart..<(idStart + idLength)], as: UTF8.self)
            s.name = String(decoding: bytes[(idStart + idLength)..<end], as: UTF8.self)
            snapshots.append(s)
            at = (end + 7) & ~7
        }
        return snapshots
    }
}
