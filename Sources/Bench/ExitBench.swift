// ExitBench.swift: running the exit benchmark.
//
// For each kind and privilege level: build a VM with the exit-bench guest
// (the same machine `skvm run` builds, plus the benchmark ports and
// ioeventfds), run it with skvm's own run loop, and, for the kinds skvm
// handles in userspace, run it again with the C floor loop. The guest times
// every batch with rdtsc; KVM_GET_TSC_KHZ turns cycles into nanoseconds.

#if canImport(Glibc)
import Glibc
#endif
import CFloor
import CKVM
import Devices
import Synchronization
import Histogram
import KVM
import VMM

/// What to measure.
public struct BenchOptions: Sendable {
    public var guestPath: String
    public var kinds: [ExitKind] = ExitKind.allCases
    /// Privilege levels to run at (each kind runs at those it allows).
    public var cpls: [Int] = [0, 3]
    /// Iterations per run (nil: each kind's default).
    public var iterations: Int? = nil
    /// Batches per run: each batch is one timed sample.
    public var batches: Int = 100
    /// Host CPU to pin the vCPU to.
    public var hostCPU: Int? = nil
    /// Also run the C floor loop for the userspace kinds.
    public var floor: Bool = true
    /// Runs per kind, CPL and loop, alternating skvm and C loops, merged: a
    /// load that drifts during the benchmark then affects both loops alike.
    public var rounds: Int = 3
    public var kvmDevicePath: String = "/dev/kvm"
    /// Longest a single run may take.
    public var timeout: Double = 120

    public init(guestPath: String) { self.guestPath = guestPath }
}

/// One measured run.
public struct BenchResult: Sendable {
    public enum Loop: String, Sendable { case skvm, cFloor = "c-floor" }
    public enum Check: String, Sendable {
        /// The exits skvm (or the eventfd) saw equal the guest's iteration count.
        case matched
        case mismatched
        /// Handled inside KVM: userspace sees none of them.
        case notApplicable = "n/a"
    }

    public let kind: ExitKind
    public let cpl: Int
    public let loop: Loop
    /// Set when the run did not happen or did not complete.
    public var skipped: String? = nil
    public var iterations = 0
    public var batches = 0
    public var batchSize = 0
    /// Per-iteration times, one value per batch, in picoseconds.
    public var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 1_000_000_000_000, numberOfSignificantValueDigits: .three)
    public var exitsSeen: UInt64? = nil
    public var check: Check = .notApplicable
    /// Heap allocations on the vCPU thread between the first and the last report (skvm loop only).
    public var allocations: UInt64? = nil
    public var tscKHz: UInt64 = 0

    public var medianNs: Double { Double(histogram.median) / 1000 }
    public var p99Ns: Double { Double(histogram.valueAtPercentile(99)) / 1000 }
    public var minNs: Double { Double(histogram.min) / 1000 }
    public var maxNs: Double { Double(histogram.max) / 1000 }
    public var exitsPerSecond: Double { medianNs > 0 ? 1e9 / medianNs : 0 }

    init(kind: ExitKind, cpl: Int, loop: Loop) {
        self.kind = kind
        self.cpl = cpl
        self.loop = loop
    }

    /// This run and `other` (the same kind, CPL and loop) as one: samples
    /// and counts added; a skip or a mismatch in either is kept.
    func merging(_ other: BenchResult) -> BenchResult {
        if skipped != nil { return self }
        if other.skipped != nil { return other }
        var m = self
        m.iterations += other.iterations
        m.batches += other.batches
        m.histogram.add(other.histogram)
        m.exitsSeen = exitsSeen.flatMap { a in other.exitsSeen.map { a + $0 } }
        m.check = check == .mismatched || other.check == .mismatched ? .mismatched : check
        m.allocations = allocations.flatMap { a in other.allocations.map { a + $0 } }
        return m
    }
}

/// A failure that stops the whole benchmark.
public struct BenchError: Error, CustomStringConvertible {
    public let message: String
    /// skvm's exit status for it (2: bad input, 4: the host failed).
    public var status: Int32 = ExitStatus.hostFailure
    public var description: String { message }
}

/// Runs the benchmark.
public enum ExitBench {
    /// Runs every requested kind at every requested CPL; `progress` gets a line per run.
    public static func run(_ options: BenchOptions, progress: (String) -> Void) throws(BenchError) -> [BenchResult] {
        let onPVM = access("/sys/module/kvm_pvm", F_OK) == 0
        var results: [BenchResult] = []
        for kind in options.kinds {
            for cpl in options.cpls where kind.cpls.contains(cpl) {
                if let why = kind.skipReason(cpl: cpl, onPVM: onPVM) {
                    var r = BenchResult(kind: kind, cpl: cpl, loop: .skvm)
                    r.skipped = why
                    results.append(r)
                    continue
                }
                let loops: [BenchResult.Loop] = options.floor && kind.handler == .skvm ? [.skvm, .cFloor] : [.skvm]
                var merged: [BenchResult.Loop: BenchResult] = [:]
                for round in 1...max(1, options.rounds) {
                    for loop in loops {
                        progress("\(kind.rawValue) CPL\(cpl) \(loop.rawValue) (round \(round) of \(options.rounds))")
                        let r = try runOne(kind: kind, cpl: cpl, loop: loop, options: options)
                        merged[loop] = merged[loop].map { $0.merging(r) } ?? r
                    }
                }
                results += loops.compactMap { merged[$0] }
            }
        }
        return results
    }

    static func runOne(kind: ExitKind, cpl: Int, loop: BenchResult.Loop, options: BenchOptions) throws(BenchError) -> BenchResult {
        let total = max(options.iterations ?? kind.defaultIterations, 1)
        let batches = max(1, min(options.batches, total))
        let batchSize = max(1, total / batches)
        var result = BenchResult(kind: kind, cpl: cpl, loop: loop)
        result.batches = batches
        result.batchSize = batchSize

        var config = MachineConfig(kernelPath: options.guestPath)
        config.memorySize = 32 << 20
        config.append = "kind=\(kind.rawValue) cpl=\(cpl) batches=\(batches) batch=\(batchSize)"
        config.quiet = true
        config.consoleInput = false
        let console = LastLineCapture()
        config.serialOutput = console
        config.kvmDevicePath = options.kvmDevicePath
        config.pinning = options.hostCPU.map { [$0] }
        let device = ExitBenchDevice(capacity: batches)
        let mmioTarget = MMIOTarget()
        let machine: Machine
        do {
            machine = try Machine(
                config: config,
                extraPortDevices: [.init(device, base: UInt64(BenchPorts.deviceBase), length: BenchPorts.deviceLength)],
                extraMMIODevices: [.init(mmioTarget, base: BenchPorts.targetMMIO, length: 0x1000)])
        } catch {
            throw BenchError(message: error.message, status: error.status)
        }

        // The ioeventfds: the guest's writes to these signal an eventfd in the kernel.
        let eventFDs = (0..<3).map { _ in eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
        defer { for fd in eventFDs where fd >= 0 { close(fd) } }
        do {
            guard !eventFDs.contains(where: { $0 < 0 }) else { throw KVMError(operation: "eventfd", errno: errno) }
            try machine.registerIOEventFD(eventFDs[0], address: UInt64(BenchPorts.ioeventfd), length: 1, pio: true)
            try machine.registerIOEventFD(eventFDs[1], address: UInt64(BenchPorts.ioeventfdDatamatch), length: 2, pio: true,
                                          datamatch: BenchPorts.datamatchValue)
            try machine.registerIOEventFD(eventFDs[2], address: BenchPorts.ioeventfdMMIO, length: 4, pio: false)
            result.tscKHz = try machine.vcpus[0].tscKHz()
        } catch {
            throw BenchError(message: "\(error)")
        }
        guard result.tscKHz > 0 else { throw BenchError(message: "KVM reports a guest TSC frequency of 0") }

        // Run.
        let floorBox = FloorOutcome(capacity: batches)
        let reason: StopReason
        switch loop {
        case .skvm:
            reason = machine.run(timeout: options.timeout)
        case .cFloor:
            reason = machine.run(timeout: options.timeout) { vcpu in runFloor(vcpu: vcpu, machine: machine, outcome: floorBox) }
        }
        guard reason == .guest(.debugExit(0)) else {
            let said = console.lastLine
            result.skipped = "the guest did not finish: \(reason.summary)" + (said.isEmpty ? "" : "; it last said: \(said)")
            return result
        }

        // Collect.
        let samples: [UInt64]
        let guestTotal: UInt32?
        var seen: UInt64? = nil
        switch loop {
        case .skvm:
            let s = device.state.withLock { $0 }
            samples = Array(s.samples.prefix(s.count))
            guestTotal = s.total
            if let a = s.allocationsAtFirstSample, let b = s.allocationsAtTotal { result.allocations = b &- a }
            switch kind {
            case .pioOut, .pioIn: seen = s.targetExits
            case .mmioWrite, .mmioRead: seen = mmioTarget.exits.load(ordering: .relaxed)
            case .ioeventfdPIO: seen = readEventFD(eventFDs[0])
            case .ioeventfdPIODatamatch: seen = readEventFD(eventFDs[1])
            case .ioeventfdMMIO: seen = readEventFD(eventFDs[2])
            default: seen = nil
            }
        case .cFloor:
            let r = floorBox.result
            samples = Array(floorBox.samples.prefix(Int(r.count)))
            guestTotal = r.total
            seen = r.target_exits
        }
        guard let guestTotal else {
            result.skipped = "the guest never reported its iteration count"
            return result
        }
        result.iterations = Int(guestTotal)
        result.exitsSeen = seen
        if let seen { result.check = seen == UInt64(guestTotal) ? .matched : .mismatched }
        for cycles in samples {
            // cycles / kHz = ms; * 1e9 -> ps, per iteration.
            let ps = Double(cycles) * 1e9 / Double(result.tscKHz) / Double(batchSize)
            result.histogram.record(UInt64(max(1, min(ps, 1e12))))
        }
        return result
    }

    /// Reads (and resets) an eventfd's counter.
    static func readEventFD(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        return read(fd, &value, 8) == 8 ? value : 0
    }

    /// The C floor loop on this vCPU thread; ends the machine when the guest is done.
    static func runFloor(vcpu: VCPU, machine: Machine, outcome: FloorOutcome) {
        var ports = cfloor_ports(target_port: BenchPorts.target, sample_low_port: BenchPorts.sampleLow,
                                 sample_high_port: BenchPorts.sampleHigh, total_port: BenchPorts.total,
                                 exit_port: UInt16(truncatingIfNeeded: 0xF4), target_mmio: BenchPorts.targetMMIO)
        outcome.run { result in
            while !machine.isStopping {
                let r = vcpu.runPage.withUnsafeRunPointer { run in
                    cfloor_run(vcpu.rawFileDescriptor, run.assumingMemoryBound(to: kvm_run.self), &ports, &result)
                }
                if r == 0 {
                    machine.stop(.guest(.debugExit(result.exit_value)))
                } else if r == -EINTR || r == -EAGAIN {
                    continue  // kicked: the loop condition decides
                } else if r < 0 {
                    machine.stop(.hostError("KVM_RUN failed: \(String(cString: strerror(-r)))"))
                } else {
                    machine.stop(.kvmFailure(diagnosis: "the C floor loop met exit reason \(r)"))
                }
            }
        }
    }
}

/// Keeps the guest's last line of serial output (for failure reports), in a
/// buffer allocated up front: the guest prints only outside the timed batches,
/// but nothing on the exit path should allocate.
final class LastLineCapture: SerialOutput {
    private let state = Mutex<(line: [UInt8], finished: [UInt8])>(([UInt8](), [UInt8]()))

    init() { state.withLock { $0.line.reserveCapacity(256); $0.finished.reserveCapacity(256) } }

    func write(_ byte: UInt8) {
        state.withLock { s in
            if byte == UInt8(ascii: "\n") {
                s.finished.removeAll(keepingCapacity: true)
                s.finished.append(contentsOf: s.line)
                s.line.removeAll(keepingCapacity: true)
            } else if s.line.count < 256 {
                s.line.append(byte)
            }
        }
    }

    var lastLine: String {
        state.withLock { s in String(decoding: s.line.isEmpty ? s.finished : s.line, as: UTF8.self) }
    }
}

/// The floor loop's buffers, owned outside the loop so nothing allocates in it.
final class FloorOutcome: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): written only by the vCPU thread inside
    // `run`, read by the main thread after that thread was joined.
    private(set) var samples: [UInt64]
    private(set) var result = cfloor_result()

    init(capacity: Int) { samples = [UInt64](repeating: 0, count: capacity) }

    /// Calls `body` with the result block pointing at `samples` (valid during the call only).
    func run(_ body: (inout cfloor_result) -> Void) {
        var block = cfloor_result()
        samples.withUnsafeMutableBufferPointer { buffer in
            block.samples = buffer.baseAddress
            block.capacity = UInt32(buffer.count)
            body(&block)
        }
        block.samples = nil
        result = block
    }
}
