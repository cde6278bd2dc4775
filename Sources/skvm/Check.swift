// Check.swift: `skvm check`, can this machine run VMs?

import ArgumentParser
import VMM

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check whether this machine can run skvm, and what kind of KVM it has.",
        discussion: """
            Checks the KVM device and its permissions, the API version, every capability skvm \
            needs, that a VM and a vCPU can be created, vCPU limits and hugepages, and tells \
            whether KVM runs on hardware virtualisation, nested in another hypervisor, or \
            paravirtualised (PVM), and what that means for guests. Exits 0 when skvm can run \
            VMs here, 4 otherwise.
            """)

    @Flag(name: .long, help: "Print the report as JSON (schema in docs/cli.md).")
    var json = false

    @Option(name: .customLong("kvm-device"), help: ArgumentHelp(
        "The KVM device (default: $SKVM_KVM_DEVICE or /dev/kvm).", valueName: "path"))
    var kvmDevice: String?

    mutating func run() throws {
        let report = HostCheck.run(devicePath: kvmDevicePath(kvmDevice))
        print(json ? HostCheck.json(report) : HostCheck.text(report), terminator: json ? "\n" : "")
        throw ExitWithStatus(status: report.canRun ? 0 : ExitStatus.hostFailure)
    }
}
