// HostCheck.swift: can skvm run here, and what kind of KVM is this?
//
// What `kvm-ok` does and more: the device, its permissions, the API version,
// each capability skvm needs, vCPU limits, hugepages, and whether KVM itself
// runs on hardware virtualisation (VT-x/AMD-V), nested inside another
// hypervisor, or paravirtualised (PVM), because that changes what guests can
// do and how much every exit costs.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import KVM

/// The result of checking the host.
public struct HostReport: Sendable {
    public enum Status: String, Sendable { case ok, warning, fail }

    public struct Check: Sendable {
        public let name: String
        public let status: Status
        public let detail: String
    }

    /// How KVM itself runs on this machine.
    public enum Virtualization: String, Sendable {
        case hardware = "hardware"          // VT-x or AMD-V on bare metal
        case nested = "nested"              // KVM inside a VM with virtualisation extensions exposed
        case paravirtual = "pvm"            // PVM: no VT-x/AMD-V, guest kernels emulated
        case unavailable = "unavailable"
    }

    public let devicePath: String
    public private(set) var checks: [Check] = []
    public var virtualization: Virtualization = .unavailable
    public var virtualizationDetail = ""
    public var recommendedVCPUs: Int32 = 0
    public var maximumVCPUs: Int32 = 0

    /// skvm can run VMs here when no check failed.
    public var canRun: Bool { !checks.contains { $0.status == .fail } }

    mutating func add(_ name: String, _ status: Status, _ detail: String) {
        checks.append(Check(name: name, status: status, detail: detail))
    }

    /// Guests whose kernel code KVM emulates cannot finish a stock Linux boot.
    public var canBootStockLinux: Bool { canRun && virtualization != .paravirtual }
}

/// Examines the host.
public enum HostCheck {
    /// Capabilities `skvm check` reports: the ones `run` requires, plus those virtio devices need.
    static var checkedCapabilities: [(capability: Int32, name: String, why: String)] {
        Machine.requiredCapabilities + [
            (KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD", "virtqueue notifications without a userspace exit"),
            (KVM_CAP_IRQFD, "KVM_CAP_IRQFD", "device interrupts from the I/O thread"),
        ]
    }

    public static func run(devicePath: String, procRoot: String = "") -> HostReport {
        var report = HostReport(devicePath: devicePath)
        let cpuFlags = Set((readTextFile(procRoot + "/proc/cpuinfo") ?? "")
            .split(separator: "\n").first { $0.hasPrefix("flags") }?
            .split(separator: ":").last?.split(separator: " ").map(String.init) ?? [])
        let modules = ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"].filter { access(procRoot + "/sys/module/" + $0, F_OK) == 0 }
        classify(&report, cpuFlags: cpuFlags, modules: modules, procRoot: procRoot)

        // The device.
        let kvm: KVMSystem
        do {
            kvm = try KVMSystem(path: devicePath)
        } catch {
            report.add("device", .fail, deviceFailure(devicePath, errno: error.errno, cpuFlags: cpuFlags, modules: modules))
            hugepages(&report, procRoot: procRoot)
            return report
        }
        report.add("device", .ok, "\(devicePath) opened read-write")

        let version = (try? kvm.apiVersion()) ?? -1
        report.add("API version", version == KVMSystem.expectedAPIVersion ? .ok : .fail,
                   version == KVMSystem.expectedAPIVersion ? "\(version)" : "\(version), skvm needs \(KVMSystem.expectedAPIVersion)")

        for c in checkedCapabilities {
            let present = kvm.checkExtension(c.capability) > 0
            report.add(c.name, present ? .ok : .fail, present ? c.why : "missing: needed for \(c.why)")
        }

        // Create a VM and a vCPU: the proof that this KVM really works for us.
        do {
            let vm = try kvm.createVM()
            _ = try vm.createVCPU(id: 0)
            let entries = try kvm.supportedCPUID()
            report.add("VM and vCPU", .ok, "KVM_CREATE_VM and KVM_CREATE_VCPU work; \(entries.count) CPUID leaves supported")
            report.recommendedVCPUs = max(kvm.checkExtension(KVM_CAP_NR_VCPUS), 1)
            report.maximumVCPUs = max(kvm.checkExtension(KVM_CAP_MAX_VCPUS), report.recommendedVCPUs)
            report.add("vCPUs", .ok, "up to \(report.maximumVCPUs) per VM (\(report.recommendedVCPUs) recommended)")
        } catch {
            report.add("VM and vCPU", .fail, "\(error)")
        }
        hugepages(&report, procRoot: procRoot)
        return report
    }

    /// Hardware, nested or PVM, from CPU flags and the loaded modules.
    static func classify(_ report: inout HostReport, cpuFlags: Set<String>, modules: [String], procRoot: String) {
        let hasVMX = cpuFlags.contains("vmx"), hasSVM = cpuFlags.contains("svm")
        let underHypervisor = cpuFlags.contains("hypervisor")
        if modules.contains("kvm_pvm") {
            report.virtualization = .paravirtual
            report.virtualizationDetail = "KVM is PVM (module kvm_pvm), running without VT-x/AMD-V"
                + (underHypervisor ? " inside another hypervisor" : "")
                + ". Guest user code (CPL3) runs natively; real-mode and kernel (CPL0) code is emulated by KVM's instruction emulator (about 1.5 M instructions/s here), and every exit costs several µs. Tiny test kernels run; a stock Linux kernel cannot finish booting (see docs/pvm.md)."
        } else if hasVMX || hasSVM {
            let tech = hasVMX ? "Intel VT-x" : "AMD-V"
            if underHypervisor {
                report.virtualization = .nested
                report.virtualizationDetail = "KVM uses \(tech) inside another hypervisor (nested virtualisation): guests run at full speed between exits, but every exit goes through the outer hypervisor and costs several times more."
            } else {
                report.virtualization = .hardware
                report.virtualizationDetail = "KVM uses \(tech) on bare metal."
            }
        } else {
            report.virtualization = .unavailable
            report.virtualizationDetail = underHypervisor
                ? "This machine is a VM and its CPU shows no VT-x/AMD-V: enable nested virtualisation in the outer hypervisor."
                : "The CPU shows no VT-x/AMD-V: it lacks them, or they are disabled in the firmware settings."
        }
    }

    /// Why the device could not be opened, and what to do about it.
    static func deviceFailure(_ path: String, errno e: Int32, cpuFlags: Set<String>, modules: [String]) -> String {
        switch e {
        case ENOENT:
            if !modules.contains("kvm") {
                let module = cpuFlags.contains("vmx") ? "kvm_intel" : cpuFlags.contains("svm") ? "kvm_amd" : "kvm_intel or kvm_amd"
                let why = cpuFlags.contains("vmx") || cpuFlags.contains("svm") ? ""
                    : cpuFlags.contains("hypervisor") ? "; this machine is a VM whose CPU shows no VT-x/AMD-V, so enable nested virtualisation in the outer hypervisor first"
                    : "; the CPU shows no VT-x/AMD-V (absent, or disabled in the firmware)"
                return "\(path) does not exist: the KVM module is not loaded (modprobe \(module))\(why)"
            }
            return "\(path) does not exist although the kvm module is loaded (is /dev mounted? mknod \(path) c 10 232)"
        case EACCES, EPERM:
            return "\(path): permission denied: run as root, or add your user to the kvm group (usermod -aG kvm $USER) and log in again"
        case ENXIO, ENODEV:
            return "\(path) exists but no KVM driver answers (the module for this CPU is not loaded?)"
        default:
            return "cannot open \(path): \(String(cString: strerror(e)))"
        }
    }

    static func hugepages(_ report: inout HostReport, procRoot: String) {
        let meminfo = readTextFile(procRoot + "/proc/meminfo") ?? ""
        func field(_ name: String) -> Int? {
            meminfo.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
        }
        let total = field("HugePages_Total") ?? 0, free = field("HugePages_Free") ?? 0
        let size = field("Hugepagesize") ?? 0
        let thp = (readTextFile(procRoot + "/sys/kernel/mm/transparent_hugepage/enabled") ?? "")
            .split(separator: " ").first { $0.hasPrefix("[") }.map { String($0.dropFirst().prefix { $0 != "]" }) } ?? "unavailable"
        let detail = "\(free) of \(total) hugetlb pages of \(size) KiB free (--hugepages needs them: echo N > /proc/sys/vm/nr_hugepages); transparent hugepages: \(thp)"
        report.add("hugepages", total > 0 || thp == "always" || thp == "madvise" ? .ok : .warning, detail)
    }

    // MARK: Output

    /// The report as text for people.
    public static func text(_ r: HostReport) -> String {
        var out = ""
        for c in r.checks {
            out += pad(c.status == .ok ? "ok" : c.status == .warning ? "warn" : "FAIL", 6) + pad(c.name, 24) + c.detail + "\n"
        }
        out += "\nvirtualisation: \(r.virtualization.rawValue): \(r.virtualizationDetail)\n"
        out += r.canRun ? "\nskvm can run virtual machines here.\n" : "\nskvm cannot run virtual machines here.\n"
        return out
    }

    /// The report as JSON (schema in docs/cli.md).
    public static func json(_ r: HostReport) -> String {
        let checks = r.checks.map {
            "{\"name\": \(jsonString($0.name)), \"status\": \(jsonString($0.status.rawValue)), \"detail\": \(jsonString($0.detail))}"
        }
        return """
            {"canRun": \(r.canRun), "device": \(jsonString(r.devicePath)), \
            "virtualization": \(jsonString(r.virtualization.rawValue)), \
            "virtualizationDetail": \(jsonString(r.virtualizationDetail)), \
            "canBootStockLinux": \(r.canBootStockLinux), \
            "recommendedVCPUs": \(r.recommendedVCPUs), "maximumVCPUs": \(r.maximumVCPUs), \
            "checks": [\(checks.joined(separator: ", "))]}
            """
    }
}

/// A JSON string literal for `s`.
public func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += "\\u" + leftPad(String(u.value, radix: 16), 4).replacingSpaces()
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// The whole text of a (possibly /proc) file, read with read(2) until EOF:
/// /proc files report size 0, so stat-sized reads truncate them (SWIFT-ON-KVM.md, pitfall 11).
public func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readToEnd(fd, limit: 16 << 20).map { String(decoding: $0, as: UTF8.self) }
}
