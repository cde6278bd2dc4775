// Bench.swift: `skvm bench exits`, what each kind of VM exit costs here.

import ArgumentParser
import Bench
import VMM

#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure this host.",
        subcommands: [Exits.self])
}

struct Exits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What each kind of VM exit costs on this host, next to the floor of a bare KVM_RUN loop.",
        discussion: """
            Runs the exit-bench guest (guests/exit-bench) once per kind of exit and privilege level: a loop \
            whose every iteration causes one exit, timed by the guest with rdtsc in batches. Kinds: \
            \(ExitKind.allCases.map(\.rawValue).joined(separator: ", ")). The userspace kinds (pio-*, mmio-*) \
            also run under a bare KVM_RUN loop written in C (the floor), so the table shows what skvm's own \
            run loop adds. Every count is checked: the exits skvm saw must equal the iterations the guest \
            reports. See docs/benchmarking-exits.md for what each kind exercises and how to read the table.
            """)

    @Option(help: ArgumentHelp("Iterations per run (default: 20000; 2000 for hlt).", valueName: "n"))
    var iterations: Int?

    @Option(help: ArgumentHelp("Timed batches per run: the median and p99 are over these.", valueName: "n"))
    var batches: Int = 100

    @Option(help: ArgumentHelp("Runs per kind and loop, alternating skvm and the C floor, merged (so drifting load hits both alike).", valueName: "n"))
    var rounds: Int = 3

    @Option(help: ArgumentHelp("Comma-separated kinds to run (default: all).", valueName: "kinds"))
    var kinds: String?

    @Option(help: ArgumentHelp("Comma-separated privilege levels: 0, 3 or both (default: 0,3).", valueName: "cpls"))
    var cpls: String = "0,3"

    @Option(help: ArgumentHelp("Pin the vCPU to this host CPU.", valueName: "n"))
    var cpu: Int?

    @Flag(help: "Print the results as JSON (schema in docs/benchmarking-exits.md).")
    var json = false

    @Option(help: ArgumentHelp("Write a latency histogram per run, as SVG.", valueName: "file"))
    var svg: String?

    @Flag(name: .customLong("no-floor"), help: "Skip the C floor loop runs.")
    var noFloor = false

    @Option(help: ArgumentHelp("The exit-bench guest (default: guests/build/exit-bench.elf beside skvm or in the current folder).", valueName: "file"))
    var guest: String?

    @Option(name: .customLong("kvm-device"), help: ArgumentHelp("The KVM device (default: $SKVM_KVM_DEVICE or /dev/kvm).", valueName: "path"))
    var kvmDevice: String?

    func fail(_ message: String) -> ExitWithStatus {
        printError("skvm: \(message)")
        return ExitWithStatus(status: ExitStatus.usage)
    }

    mutating func run() throws {
        guard let guestPath = guest ?? Self.findGuest() else {
            throw fail("cannot find the exit-bench guest guests/build/exit-bench.elf (run 'make guests', or pass --guest FILE)")
        }
        var st = stat()
        guard stat(guestPath, &st) == 0 else { throw fail("cannot open the exit-bench guest '\(guestPath)': \(String(cString: strerror(errno)))") }
        guard st.st_mode & S_IFMT == S_IFREG else { throw fail("the exit-bench guest '\(guestPath)' is not a regular file") }
        var options = BenchOptions(guestPath: guestPath)
        if let kinds {
            var list: [ExitKind] = []
            for name in kinds.split(separator: ",") {
                guard let k = ExitKind(rawValue: String(name)) else {
                    throw fail("--kinds: unknown kind '\(name)' (known: \(ExitKind.allCases.map(\.rawValue).joined(separator: ", ")))")
                }
                list.append(k)
            }
            options.kinds = list
        }
        options.cpls = []
        for c in cpls.split(separator: ",") {
            guard let n = Int(c), n == 0 || n == 3 else { throw fail("--cpls: '\(c)' is not 0 or 3") }
            options.cpls.append(n)
        }
        if let iterations {
            guard iterations >= 1, iterations < 1 << 31 else { throw fail("--iterations must be between 1 and 2^31 - 1") }
            options.iterations = iterations
        }
        guard batches >= 1, batches <= 100_000 else { throw fail("--batches must be between 1 and 100000") }
        options.batches = batches
        guard rounds >= 1, rounds <= 100 else { throw fail("--rounds must be between 1 and 100") }
        options.rounds = rounds
        if let cpu {
            var allowed = [Int32](repeating: 0, count: 4096)
            let n = Int(ckvm_allowed_cpus_bridge(&allowed))
            guard allowed.prefix(max(0, n)).contains(Int32(cpu)) else { throw fail("--cpu: host CPU \(cpu) does not exist or is not available to skvm") }
        }
        options.hostCPU = cpu
        options.floor = !noFloor
        options.kvmDevicePath = kvmDevicePath(kvmDevice)

        let results: [BenchResult]
        do {
            results = try ExitBench.run(options) { printError("skvm bench: running \($0)") }
        } catch {
            printError("skvm: \(error.message)")
            throw ExitWithStatus(status: error.status)
        }
        let report = HostCheck.run(devicePath: options.kvmDevicePath)
        let cpuModel = (readTextFile("/proc/cpuinfo") ?? "").split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":", maxSplits: 1).last.map { String($0.drop { $0 == " " }) } ?? "unknown CPU"
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        let context = BenchContext(virtualization: report.virtualization.rawValue, cpuModel: cpuModel, hostCPU: cpu,
                                   tscKHz: results.first { $0.tscKHz > 0 }?.tscKHz ?? 0, buildConfiguration: build)
        print(json ? BenchReport.json(results, context: context) : BenchReport.table(results, context: context), terminator: json ? "\n" : "")
        if let svg {
            do { try writeFileAtomically(svg, BenchReport.svg(results)) } catch {
                printError("skvm: cannot write \(svg): \(error)")
                throw ExitWithStatus(status: ExitStatus.hostFailure)
            }
        }
        // A run whose counts do not match is a failed measurement.
        if results.contains(where: { $0.skipped == nil && $0.check == .mismatched }) { throw ExitWithStatus(status: ExitStatus.kvmFailure) }
    }

    /// guests/build/exit-bench.elf in the current folder or beside the executable's package.
    static func findGuest() -> String? {
        var candidates = ["guests/build/exit-bench.elf"]
        if let env = getenv("SKVM_GUESTS") { candidates.insert(String(cString: env) + "/exit-bench.elf", at: 0) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 {
            let exe = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            // .build/<config>/skvm -> package root
            let root = exe.split(separator: "/").dropLast(3).joined(separator: "/")
            candidates.append("/" + root + "/guests/build/exit-bench.elf")
        }
        return candidates.first { access($0, R_OK) == 0 }
    }
}
