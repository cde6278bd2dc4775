// HostFile.swift: reading whole input files (kernels, initrds) with errors a user can act on.

#if canImport(Glibc)
import Glibc
#endif

/// Reads the regular file at `path`, at most `limit` bytes, or throws a ConfigError naming it.
func readInputFile(_ path: String, what: String, limit: Int = 1 << 30, allowEmpty: Bool = false) throws(ConfigError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ConfigError("cannot open \(what) '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ConfigError("cannot stat \(what) '\(path)': \(String(cString: strerror(errno)))") }
    guard st.st_mode & S_IFMT == S_IFREG else { throw ConfigError("\(what) '\(path)' is not a regular file") }
    guard st.st_size > 0 || allowEmpty else { throw ConfigError("\(what) '\(path)' is empty") }
    guard st.st_size <= limit else { throw ConfigError("\(what) '\(path)' is larger than \(limit >> 20) MiB") }
    // Read to the end rather than trusting st_size, with the same limit.
    guard let bytes = readToEnd(fd, limit: limit) else {
        throw ConfigError("cannot read \(what) '\(path)': \(String(cString: strerror(errno)))")
    }
    guard !bytes.isEmpty || allowEmpty else { throw ConfigError("\(what) '\(path)' is empty") }
    return bytes
}

/// The first `count` bytes of the file at `path` (fewer if it is shorter; empty if it cannot be read).
func readInputFileHead(_ path: String, count: Int) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    let n = readSome(fd, into: &buffer)
    return n > 0 ? Array(buffer.prefix(n)) : []
}
