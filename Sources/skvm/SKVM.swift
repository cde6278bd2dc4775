// SKVM.swift: the `skvm` command line.

import ArgumentParser
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
        subcommands: [Run.self, Check.self])

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
