// HostCheckTests.swift: `skvm check` without /dev/kvm: a fake /proc and /sys
// under a temporary root (HostCheck.run's procRoot), a device path that does
// not exist, the classification of hardware/nested/PVM KVM from CPU flags and
// loaded modules, the advice for each open(2) failure, and the JSON encoding
// (RFC 8259 §7: quote, backslash and control characters escaped).

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
@testable import VMM

/// A temporary directory laid out like / for `procRoot`, removed on deinit.
private final class FakeRoot {
    let path: String

    init(cpuFlags: [String], modules: [String], meminfo: String? = nil, thp: String? = nil) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-hostcheck-\(UUID().uuidString)").path
        let fm = FileManager.default
        try fm.createDirectory(atPath: path + "/proc", withIntermediateDirectories: true)
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: \(cpuFlags.joined(separator: " "))\nbugs\t\t: spectre_v1\n\n"
        try cpuinfo.write(toFile: path + "/proc/cpuinfo", atomically: true, encoding: .utf8)
        for m in modules { try fm.createDirectory(atPath: path + "/sys/module/" + m, withIntermediateDirectories: true) }
        if let meminfo { try meminfo.write(toFile: path + "/proc/meminfo", atomically: true, encoding: .utf8) }
        if let thp {
            try fm.createDirectory(atPath: path + "/sys/kernel/mm/transparent_hugepage", withIntermediateDirectories: true)
            try thp.write(toFile: path + "/sys/kernel/mm/transparent_hugepage/enabled", atomically: true, encoding: .utf8)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

private let meminfo = "MemTotal:        8000000 kB\nHugePages_Total:       4\nHugePages_Free:        2\nHugePages_Rsvd:        0\nHugepagesize:       2048 kB\n"

@Suite("HostCheck.run without a KVM device")
struct HostCheckRunTests {
    @Test("a missing device fails the device check with a reason naming the path")
    func missingDevice() throws {
        let root = try FakeRoot(cpuFlags: ["fpu", "vmx", "lm"], modules: [], meminfo: meminfo, thp: "always [madvise] never\n")
        let report = HostCheck.run(devicePath: "/nonexistent/kvm", procRoot: root.path)
        #expect(!report.canRun)
        #expect(!report.canBootStockLinux)
        #expect(report.devicePath == "/nonexistent/kvm")
        #expect(report.checks.map(\.name) == ["device", "hugepages"])
        let device = try #require(report.checks.first)
        #expect(device.status == .fail)
        #expect(device.detail == "/nonexistent/kvm does not exist: the KVM module is not loaded (modprobe kvm_intel)")
        let hugepages = try #require(report.checks.last)
        #expect(hugepages.status == .ok)
        #expect(hugepages.detail == "2 of 4 hugetlb pages of 2048 KiB free (--hugepages needs them: echo N > /proc/sys/vm/nr_hugepages); transparent hugepages: madvise")
        #expect(report.virtualization == .hardware)
    }

    @Test("the real host's /proc with a missing device still fails the device check")
    func realProc() throws {
        let report = HostCheck.run(devicePath: "/nonexistent/kvm")
        #expect(!report.canRun)
        let device = try #require(report.checks.first { $0.name == "device" })
        #expect(device.status == .fail)
        #expect(device.detail.hasPrefix("/nonexistent/kvm does not exist"))
    }

    @Test("no hugetlb pages and THP off is a warning")
    func hugepagesWarning() throws {
        let root = try FakeRoot(cpuFlags: [], modules: [], meminfo: "HugePages_Total:       0\nHugePages_Free:        0\nHugepagesize:       2048 kB\n",
                                thp: "always madvise [never]\n")
        let report = HostCheck.run(devicePath: "/nonexistent/kvm", procRoot: root.path)
        let hugepages = try #require(report.checks.last)
        #expect(hugepages.name == "hugepages")
        #expect(hugepages.status == .warning)
        #expect(hugepages.detail.hasSuffix("transparent hugepages: never"))
    }

    @Test("text and JSON reports")
    func output() throws {
        let root = try FakeRoot(cpuFlags: ["svm", "hypervisor"], modules: ["kvm", "kvm_amd"], meminfo: meminfo, thp: "[always] madvise never\n")
        let report = HostCheck.run(devicePath: "/nonexistent/kvm", procRoot: root.path)
        #expect(report.virtualization == .nested)

        let text = HostCheck.text(report)
        #expect(text.hasPrefix("FAIL  device                  /nonexistent/kvm does not exist although the kvm module is loaded"))
        #expect(text.contains("\nok    hugepages               2 of 4 hugetlb pages"))
        #expect(text.contains("\nvirtualisation: nested: KVM uses AMD-V inside another hypervisor"))
        #expect(text.hasSuffix("\nskvm cannot run virtual machines here.\n"))

        let json = HostCheck.json(report)
        #expect(json.hasPrefix("{\"canRun\": false, \"device\": \"/nonexistent/kvm\", \"virtualization\": \"nested\", "))
        #expect(json.contains("\"canBootStockLinux\": false, \"recommendedVCPUs\": 0, \"maximumVCPUs\": 0, \"checks\": [{\"name\": \"device\", \"status\": \"fail\", \"detail\": \"/nonexistent/kvm does not exist although the kvm module is loaded (is /dev mounted? mknod /nonexistent/kvm c 10 232)\"}, {\"name\": \"hugepages\", \"status\": \"ok\", "))
        #expect(json.hasSuffix("]}"))
        // Valid JSON, as another program reads it.
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(object?["canRun"] as? Bool == false)
        #expect((object?["checks"] as? [[String: Any]])?.count == 2)
    }
}

@Suite("HostCheck.classify")
struct HostCheckClassifyTests {
    /// A report to classify into (from a run that found no device).
    private func classified(flags: Set<String>, modules: [String]) -> HostReport {
        var report = HostCheck.run(devicePath: "/nonexistent/kvm", procRoot: "/nonexistent-root")
        HostCheck.classify(&report, cpuFlags: flags, modules: modules, procRoot: "/nonexistent-root")
        return report
    }

    @Test("the kvm_pvm module means paravirtual KVM, whatever the flags say")
    func paravirtual() {
        let bare = classified(flags: [], modules: ["kvm", "kvm_pvm"])
        #expect(bare.virtualization == .paravirtual)
        #expect(bare.virtualizationDetail.hasPrefix("KVM is PVM (module kvm_pvm), running without VT-x/AMD-V. Guest user code"))
        let nested = classified(flags: ["vmx", "hypervisor"], modules: ["kvm", "kvm_pvm"])
        #expect(nested.virtualization == .paravirtual)
        #expect(nested.virtualizationDetail.hasPrefix("KVM is PVM (module kvm_pvm), running without VT-x/AMD-V inside another hypervisor."))
        #expect(HostReport.Virtualization.paravirtual.rawValue == "pvm")
    }

    @Test("vmx without the hypervisor flag is hardware virtualisation")
    func hardware() {
        let r = classified(flags: ["vmx", "lm"], modules: ["kvm", "kvm_intel"])
        #expect(r.virtualization == .hardware)
        #expect(r.virtualizationDetail == "KVM uses Intel VT-x on bare metal.")
        #expect(classified(flags: ["svm"], modules: []).virtualizationDetail == "KVM uses AMD-V on bare metal.")
    }

    @Test("svm with the hypervisor flag is nested")
    func nested() {
        let r = classified(flags: ["svm", "hypervisor"], modules: ["kvm", "kvm_amd"])
        #expect(r.virtualization == .nested)
        #expect(r.virtualizationDetail.hasPrefix("KVM uses AMD-V inside another hypervisor (nested virtualisation)"))
    }

    @Test("neither vmx nor svm: unavailable, with advice for VMs and for bare metal")
    func unavailable() {
        let vm = classified(flags: ["hypervisor"], modules: [])
        #expect(vm.virtualization == .unavailable)
        #expect(vm.virtualizationDetail == "This machine is a VM and its CPU shows no VT-x/AMD-V: enable nested virtualisation in the outer hypervisor.")
        let metal = classified(flags: ["fpu"], modules: ["kvm"])
        #expect(metal.virtualization == .unavailable)
        #expect(metal.virtualizationDetail == "The CPU shows no VT-x/AMD-V: it lacks them, or they are disabled in the firmware settings.")
    }
}

@Suite("HostCheck.deviceFailure")
struct DeviceFailureTests {
    @Test("ENOENT without the kvm module: modprobe the module for this CPU")
    func noModule() {
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: ENOENT, cpuFlags: ["vmx"], modules: [])
            == "/dev/kvm does not exist: the KVM module is not loaded (modprobe kvm_intel)")
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: ENOENT, cpuFlags: ["svm"], modules: [])
            == "/dev/kvm does not exist: the KVM module is not loaded (modprobe kvm_amd)")
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: ENOENT, cpuFlags: [], modules: [])
            == "/dev/kvm does not exist: the KVM module is not loaded (modprobe kvm_intel or kvm_amd); the CPU shows no VT-x/AMD-V (absent, or disabled in the firmware)")
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: ENOENT, cpuFlags: ["hypervisor"], modules: [])
            == "/dev/kvm does not exist: the KVM module is not loaded (modprobe kvm_intel or kvm_amd); this machine is a VM whose CPU shows no VT-x/AMD-V, so enable nested virtualisation in the outer hypervisor first")
    }

    @Test("ENOENT with the kvm module loaded: the device node is missing")
    func noNode() {
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: ENOENT, cpuFlags: ["vmx"], modules: ["kvm", "kvm_intel"])
            == "/dev/kvm does not exist although the kvm module is loaded (is /dev mounted? mknod /dev/kvm c 10 232)")
    }

    @Test("EACCES and EPERM: root or the kvm group", arguments: [EACCES, EPERM])
    func permission(_ e: Int32) {
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: e, cpuFlags: ["vmx"], modules: ["kvm"])
            == "/dev/kvm: permission denied: run as root, or add your user to the kvm group (usermod -aG kvm $USER) and log in again")
    }

    @Test("ENXIO and ENODEV: no driver behind the node", arguments: [ENXIO, ENODEV])
    func noDriver(_ e: Int32) {
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: e, cpuFlags: [], modules: [])
            == "/dev/kvm exists but no KVM driver answers (the module for this CPU is not loaded?)")
    }

    @Test("other errors: strerror")
    func other() {
        #expect(HostCheck.deviceFailure("/dev/kvm", errno: EIO, cpuFlags: [], modules: [])
            == "cannot open /dev/kvm: \(String(cString: strerror(EIO)))")
    }
}

@Suite("jsonString")
struct JSONStringTests {
    @Test(
        "escapes quotes, backslashes and control characters; passes everything else",
        arguments: [
            ("plain", #""plain""#),
            ("", #""""#),
            ("say \"hi\"", #""say \"hi\"""#),
            (#"C:\path"#, #""C:\\path""#),
            ("a\nb\rc\td", #""a\nb\rc\td""#),
            ("\u{01}\u{1F}\u{00}", #""\u0001\u001f\u0000""#),
            ("\u{7F}é✓😀", "\"\u{7F}é✓😀\""),
        ] as [(String, String)])
    func escaping(_ input: String, _ expected: String) {
        #expect(jsonString(input) == expected)
    }
}
