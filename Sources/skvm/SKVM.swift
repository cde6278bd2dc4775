// SKVM.swift: the `skvm` command line.

import ArgumentParser
import CKVM
import VMM

#if canImport(Glibc)
import Glibc
#endif

@main
struct SKVM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "skvm",
        abstract: "A small, fast, readable KVM hypervisor.",
        discussion: """
            Start with 'skvm check' to see whether this machine can run VMs and what kind of \
            KVM it has, then 'skvm run --kernel FILE'. Each subcommand has its own --help.
            """,
        subcommands: [Run.self, Check.self, BenchCommand.self, Img.self])

    /// Runs the command, printing errors as one line: "skvm: <problem>".
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let e as ExitWithStatus {
            Glibc.exit(e.status)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help and --version print to stdout.
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            // Argument errors: one line naming the problem, status 2 (skvm's statuses are even; odd ones belong to guests).
            let message = message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            printError("skvm: \(message) (see 'skvm --help')")
            Glibc.exit(ExitStatus.usage)
        }
    }
}

/// Ends the process with `status` after the command printed what it had to.
struct ExitWithStatus: Error {
    let status: Int32
}

/// The KVM device to use: --kvm-device, else $SKVM_KVM_DEVICE, else /dev/kvm.
func kvmDevicePath(_ option: String?) -> String {
    if let option { return option }
    if let env = getenv("SKVM_KVM_DEVICE"), env.pointee != 0 { return String(cString: env) }
    return "/dev/kvm"
}

/// The host CPUs this process may run on, into `cpus`; returns how many.
func ckvm_allowed_cpus_bridge(_ cpus: inout [Int32]) -> Int32 {
    let capacity = Int32(cpus.count)
    return cpus.withUnsafeMutableBufferPointer { ckvm_allowed_cpus($0.baseAddress, capacity) }
}

/// Writes `text` to `path` through a temporary file and rename(2), so a
/// failure never leaves a half-written file behind.
func writeFileAtomically(_ path: String, _ text: String) throws(KVMErrorLike) {
    let temporary = path + ".tmp-\(getpid())"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw KVMErrorLike(String(cString: strerror(errno))) }
    guard writeAll(fd, Array(text.utf8)) else {
        let e = errno
        close(fd)
        unlink(temporary)
        throw KVMErrorLike(String(cString: strerror(e)))
    }
    guard fsync(fd) == 0, close(fd) == 0, rename(temporary, path) == 0 else {
        let e = errno
        unlink(temporary)
        throw KVMErrorLike(String(cString: strerror(e)))
    }
}

struct KVMErrorLike: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
