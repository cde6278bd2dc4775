// HostResourceTests.swift: what skvm does to the host, seen from the host:
// vCPU threads pinned to the CPUs asked for, guest RAM from the hugetlb pool.

import Foundation
import Testing

/// The lines of /proc/PID/task/*/status for each thread of `pid`, keyed by thread name.
func threadStatus(_ pid: Int32) -> [String: String] {
    let dir = "/proc/\(pid)/task"
    var result: [String: String] = [:]
    for tid in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
        guard let status = try? String(contentsOfFile: "\(dir)/\(tid)/status", encoding: .utf8) else { continue }
        let name = status.split(separator: "\n").first { $0.hasPrefix("Name:") }.map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) } ?? tid
        result[name] = status
    }
    return result
}

func field(_ name: String, in status: String) -> String? {
    status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map { $0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces) }
}

@Suite("Host resources", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct HostResourceTests {
    @Test("--pin puts vCPU i on host CPU list[i], visible in /proc/PID/task/*/status")
    func pinning() throws {
        _ = try requireGuest("echo.elf")
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let list = cpus >= 2 ? [1, 0] : [0, 0]
        try #require(cpus >= 2, "needs two host CPUs")
        var seen: [String: String] = [:]
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--cpus", "2", "--pin", "\(list[0]),\(list[1])"],
                                keepInputOpen: true) { p in
            p.waitForOutput("echo: ready")
            for (name, status) in threadStatus(p.processIdentifier) { seen[name] = field("Cpus_allowed_list", in: status) }
            p.terminate()
        }
        #expect(seen["skvm-vcpu0"] == "\(list[0])", "threads: \(seen)")
        #expect(seen["skvm-vcpu1"] == "\(list[1])")
        #expect(r.status == 143)
    }

    @Test("--pin with the wrong number of CPUs, or a CPU the host lacks, starts nothing")
    func badPinning() throws {
        _ = try requireGuest("echo.elf")
        let few = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--cpus", "2", "--pin", "0"])
        BadInputTests.expectOneLineError(few, containing: "--pin lists 1 host CPU for 2 vCPUs")
        let absent = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--pin", "4095"])
        BadInputTests.expectOneLineError(absent, containing: "host CPU 4095 does not exist or is not available")
        let garbage = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--pin", "1-x"])
        BadInputTests.expectOneLineError(garbage, containing: "is not a CPU list")
        let zero = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--cpus", "0"])
        BadInputTests.expectOneLineError(zero, containing: "--cpus must be at least 1")
        let many = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--cpus", "255"])
        BadInputTests.expectOneLineError(many, containing: "--cpus 255 is more than the 254 vCPUs")
    }

    /// A HugePages_* field of /proc/meminfo.
    static func hugepages(_ field: String) -> Int {
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        return meminfo.split(separator: "\n").first { $0.hasPrefix("HugePages_\(field):") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
    }

    /// Pages neither in use nor reserved: hugetlb pages are reserved at mmap
    /// and leave HugePages_Free only when first touched.
    static func availableHugepages() -> Int { hugepages("Free") - hugepages("Rsvd") }

    @Test("--hugepages takes guest RAM from the hugetlb pool; a short pool starts nothing",
          .enabled(if: getuid() == 0, "needs root to size /proc/sys/vm/nr_hugepages"))
    func hugepages() throws {
        _ = try requireGuest("echo.elf")
        let path = "/proc/sys/vm/nr_hugepages"
        let original = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        defer { try? (original + "\n").write(toFile: path, atomically: false, encoding: .utf8) }

        // A pool too small for 64 MiB (32 pages): refused before anything runs.
        try "4\n".write(toFile: path, atomically: false, encoding: .utf8)
        let short = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--memory", "64M", "--hugepages"])
        BadInputTests.expectOneLineError(short, status: 4, containing: "--hugepages needs 32 free 2 MiB hugepages for 64 MiB, the host pool has")

        try "40\n".write(toFile: path, atomically: false, encoding: .utf8)
        let before = Self.availableHugepages(), freeBefore = Self.hugepages("Free")
        try #require(before >= 32, "the host could not reserve 40 hugepages (only \(before) free)")
        // Without --prefault the 32 pages are reserved at once; with it, also faulted in (HugePages_Free drops).
        for prefault in [false, true] {
            var during = -1, freeDuring = -1
            let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--memory", "64M", "--hugepages"] + (prefault ? ["--prefault"] : []),
                                    keepInputOpen: true) { p in
                p.waitForOutput("echo: ready")
                during = Self.availableHugepages()
                freeDuring = Self.hugepages("Free")
                p.terminate()
            }
            #expect(r.status == 143)
            #expect(r.stdout.hasPrefix("echo: ready"))
            #expect(before - during == 32, "available hugepages went from \(before) to \(during) while the guest ran")
            if prefault { #expect(freeBefore - freeDuring == 32, "HugePages_Free went from \(freeBefore) to \(freeDuring) with --prefault") }
            #expect(Self.availableHugepages() == before, "pages are returned when skvm exits")
        }
    }
}
