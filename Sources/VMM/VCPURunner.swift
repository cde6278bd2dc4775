// VCPURunner.swift: one vCPU's run loop, and what it does with each exit.
//
// KVM_RUN returns when the guest did something the kernel leaves to us. On
// x86 the everyday exits are port I/O (KVM_EXIT_IO) and MMIO to addresses
// that are not RAM (KVM_EXIT_MMIO); both go to a bus. Everything else either
// ends the VM (triple fault, entry failure, emulation failure) or is a signal
// that we were interrupted. The loop allocates nothing and takes no lock on
// the I/O path; devices take their own short locks.

#if canImport(Glibc)
import Glibc
#endif
import CKVM
import Devices
import KVM
import Memory
import Synchronization

/// Runs one vCPU until the machine stops.
final class VCPURunner: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): after `run()` starts, only the vCPU's own
    // thread touches `statistics` and `unhandled`; the main thread reads
    // `statistics` after joining that thread.
    public let vcpu: VCPU
    let pio: Bus
    let mmio: Bus
    let stopController: StopController
    let diagnostics: Diagnostics
    private(set) var statistics = ExitStatistics()
    /// Unhandled accesses seen, to log each port/address only once.
    private var unhandled = AddressCounter(capacity: 256)

    /// The host CPU to pin this vCPU's thread to, if any.
    let hostCPU: Int?
    /// What to trace (empty: nothing; one test per exit).
    let trace: TraceOptions
    let tracer: Tracer?

    init(vcpu: VCPU, pio: Bus, mmio: Bus, stopController: StopController, diagnostics: Diagnostics, hostCPU: Int? = nil,
         tracer: Tracer? = nil) {
        self.hostCPU = hostCPU
        self.tracer = tracer
        self.trace = tracer?.options ?? []
        self.vcpu = vcpu
        self.pio = pio
        self.mmio = mmio
        self.stopController = stopController
        self.diagnostics = diagnostics
    }

    /// The loop: run, handle the exit, repeat until someone stops the machine.
    /// On the vCPU's own thread: name it, pin it, then run skvm's loop, or
    /// `replacement` instead (the benchmark's C floor).
    func run(replacingLoopWith replacement: (@Sendable (VCPU) -> Void)? = nil) {
        _ = ckvm_set_thread_name("skvm-vcpu\(vcpu.id)")
        // Pin before the first KVM_RUN, so the vCPU never runs anywhere else.
        if let cpu = hostCPU {
            let r = ckvm_pin_current_thread(Int32(cpu))
            guard r == 0 else {
                stopController.stop(.hostError("cannot pin vCPU \(vcpu.id) to host CPU \(cpu): \(errnoString(-r))"))
                return
            }
        }
        if let replacement { return replacement(vcpu) }
        runLoop()
    }

    private func runLoop() {
        let page = vcpu.runPage
        while !stopController.isStopping {
            let exited: Bool
            do { exited = try vcpu.run() } catch {
                stopController.stop(.hostError(error.description))
                return
            }
            guard exited else { continue }  // EINTR: re-check whether we are stopping
            let reason = page.exitReason
            statistics.count(reason: reason)
            if !trace.isEmpty { traceExit(reason) }
            switch Int32(bitPattern: reason) {
            case KVM_EXIT_IO: handlePortIO(page)
            case KVM_EXIT_MMIO: handleMMIO(page)
            case KVM_EXIT_INTR: continue
            case KVM_EXIT_HLT:
                // Only without an in-kernel irqchip (skvm always has one).
                stopController.stop(.kvmFailure(diagnosis: "vCPU \(vcpu.id) halted with no interrupt controller to wake it" + where_()))
            case KVM_EXIT_SHUTDOWN:
                stopController.stop(.tripleFault(diagnosis: "vCPU \(vcpu.id)" + where_()))
            case KVM_EXIT_FAIL_ENTRY:
                stopController.stop(.kvmFailure(diagnosis: "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason \(hex(page.failEntryReason))) on vCPU \(vcpu.id)" + where_()))
            case KVM_EXIT_INTERNAL_ERROR:
                stopController.stop(.kvmFailure(diagnosis: internalErrorDiagnosis(page)))
            case KVM_EXIT_SYSTEM_EVENT:
                stopController.stop(.systemEvent(page.systemEventType))
            case KVM_EXIT_UNKNOWN:
                stopController.stop(.kvmFailure(diagnosis: "KVM_EXIT_UNKNOWN (hardware exit reason \(hex(page.hardwareExitReason))) on vCPU \(vcpu.id)" + where_()))
            default:
                stopController.stop(.kvmFailure(diagnosis: "unexpected exit \(exitReasonName(reason)) on vCPU \(vcpu.id)" + where_()))
            }
        }
    }

    // MARK: Port I/O

    @inline(__always)
    private func handlePortIO(_ page: RunPage) {
        guard page.ioDataInBounds else {
            diagnostics.warn("KVM reported port I/O with an impossible size or data offset; ignored")
            return
        }
        let port = UInt64(page.ioPort)
        let isWrite = page.ioIsWrite
        let size = page.ioSize
        if diagnostics.collectStatistics { statistics.pio.increment(port, isWrite: isWrite) }
        guard let entry = pio.entry(containing: port) else {
            if !isWrite { for i in 0..<page.ioCount { page.setIOData(i, UInt32.max) } }
            if trace.contains(.pio) { tracePIO(port, isWrite: isWrite, size: size, value: UInt64(page.ioData(0)), device: nil) }
            logUnhandled("port", port, isWrite: isWrite, size: size, value: isWrite ? UInt64(page.ioData(0)) : nil)
            return
        }
        let offset = port - entry.base
        // `rep outs`/`rep ins` arrive as count > 1 items at consecutive offsets in the page.
        for i in 0..<page.ioCount {
            if isWrite {
                entry.device.write(offset: offset, size: size, value: UInt64(page.ioData(i)))
            } else {
                page.setIOData(i, UInt32(truncatingIfNeeded: entry.device.read(offset: offset, size: size)))
            }
            if trace.contains(.pio) { tracePIO(port, isWrite: isWrite, size: size, value: UInt64(page.ioData(i)), device: entry.device.name) }
        }
    }

    // MARK: MMIO

    @inline(__always)
    private func handleMMIO(_ page: RunPage) {
        let address = page.mmioAddress
        let isWrite = page.mmioIsWrite
        let size = page.mmioLength
        if diagnostics.collectStatistics { statistics.mmio.increment(address, isWrite: isWrite) }
        // Widths a CPU can produce: 1, 2, 4, 8 (KVM may split wider accesses).
        guard size == 1 || size == 2 || size == 4 || size == 8, let entry = mmio.entry(containing: address) else {
            if !isWrite { page.setMMIOData(UInt64.max) }
            if trace.contains(.mmio) { traceMMIO(address, isWrite: isWrite, size: size, value: isWrite ? page.mmioData : allOnes(min(max(size, 1), 8)), device: nil) }
            logUnhandled("MMIO address", address, isWrite: isWrite, size: size, value: isWrite ? page.mmioData : nil)
            return
        }
        let offset = address - entry.base
        if isWrite {
            entry.device.write(offset: offset, size: size, value: page.mmioData)
            if trace.contains(.mmio) { traceMMIO(address, isWrite: true, size: size, value: page.mmioData, device: entry.device.name) }
        } else {
            let value = entry.device.read(offset: offset, size: size)
            page.setMMIOData(value)
            if trace.contains(.mmio) { traceMMIO(address, isWrite: false, size: size, value: value, device: entry.device.name) }
        }
    }

    // MARK: Tracing (cold: only with --trace)

    private func traceExit(_ reason: UInt32) {
        // IO and MMIO exits get a line of their own when those are traced.
        let r = Int32(bitPattern: reason)
        if r == KVM_EXIT_IO && trace.contains(.pio) || r == KVM_EXIT_MMIO && trace.contains(.mmio) { return }
        guard trace.contains(.exits) else { return }
        tracer?.emit("vcpu \(vcpu.id): exit \(exitReasonName(reason))")
    }

    private func tracePIO(_ port: UInt64, isWrite: Bool, size: Int, value: UInt64, device: String?) {
        let arrow = isWrite ? "->" : "<-"
        tracer?.emit("vcpu \(vcpu.id): pio \(isWrite ? "out" : "in ") \(hex4(port)) \(size) byte\(size == 1 ? " " : "s") \(Tracer.data(value, size: size)) \(arrow) \(device ?? "(none)")")
    }

    private func traceMMIO(_ address: UInt64, isWrite: Bool, size: Int, value: UInt64, device: String?) {
        let arrow = isWrite ? "->" : "<-"
        tracer?.emit("vcpu \(vcpu.id): mmio \(isWrite ? "write" : "read ") \(hex(address)) \(size) byte\(size == 1 ? " " : "s") \(Tracer.data(value, size: size)) \(arrow) \(device ?? "(none)")")
    }

    /// Logs an access no device claimed, once per address and direction.
    private func logUnhandled(_ kind: String, _ address: UInt64, isWrite: Bool, size: Int, value: UInt64?) {
        guard unhandled.increment(address, isWrite: isWrite) == 1 else { return }
        let what = isWrite ? "write of \(hex(value ?? 0)) to" : "read from"
        diagnostics.warn("vCPU \(vcpu.id): unhandled \(size)-byte \(what) \(kind) \(hex(address)) "
            + (isWrite ? "ignored" : "returned all ones") + " (logged once)")
    }

    // MARK: Diagnoses (cold paths)

    private func internalErrorDiagnosis(_ page: RunPage) -> String {
        let (suberror, data) = page.internalError
        let kinds: [Int32: String] = [
            KVM_INTERNAL_ERROR_EMULATION: "KVM's instruction emulator failed",
            KVM_INTERNAL_ERROR_SIMUL_EX: "an exception occurred while delivering another",
            KVM_INTERNAL_ERROR_DELIVERY_EV: "an event could not be delivered",
            KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "the hardware exited for an unexpected reason",
        ]
        var d = (kinds[Int32(bitPattern: suberror)] ?? "KVM internal error \(suberror)") + " on vCPU \(vcpu.id)" + where_()
        if let bytes = page.emulationFailureInstruction {
            d += "; instruction bytes: " + bytes.map { leftPad(String($0, radix: 16), 2).replacingSpaces() }.joined(separator: " ")
        } else if !data.isEmpty {
            d += "; data: " + data.map { hex($0) }.joined(separator: " ")
        }
        return d
    }

    /// " at RIP 0x... (CPL n, mode)" from the vCPU's registers, or "" if they cannot be read.
    private func where_() -> String {
        guard let r = try? vcpu.registers(), let s = try? vcpu.specialRegisters() else { return "" }
        let mode: String
        if s.cr0 & 1 == 0 { mode = "real mode" }
        else if s.efer & 0x400 != 0 { mode = s.cs.l != 0 ? "64-bit mode" : "compatibility mode" }
        else { mode = "32-bit protected mode" }
        let cpl = s.cr0 & 1 == 0 ? 0 : Int(s.cs.selector & 3)
        return " at RIP \(hex(r.rip)) (CS \(hex(s.cs.selector)), CPL \(cpl), \(mode), CR0 \(hex(s.cr0)), RSP \(hex(r.rsp)))"
    }
}

func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

/// skvm's own messages to stderr: warnings (suppressed by --quiet) and info.
public final class Diagnostics: Sendable {
    public let quiet: Bool
    public let collectStatistics: Bool
    /// Notes gathered while the machine is built, printed only once it runs:
    /// a start that fails prints its one error line and nothing else.
    private let deferred = Mutex<[String]>([])

    public init(quiet: Bool, collectStatistics: Bool) {
        self.quiet = quiet
        self.collectStatistics = collectStatistics
    }

    /// A line prefixed "skvm: " on stderr, unless --quiet.
    public func info(_ message: String) {
        guard !quiet else { return }
        printError("skvm: " + message)
    }

    /// Like `info`, but held back until `flushNotes()`.
    public func note(_ message: String) {
        deferred.withLock { $0.append(message) }
    }

    /// Prints the held-back notes.
    public func flushNotes() {
        for m in deferred.withLock({ n -> [String] in defer { n.removeAll() }; return n }) { info(m) }
    }

    /// A warning on stderr, unless --quiet.
    public func warn(_ message: String) {
        guard !quiet else { return }
        printError("skvm: warning: " + message)
    }
}

/// Writes `line` and a newline to stderr in one write(2).
public func printError(_ line: String) {
    writeAll(STDERR_FILENO, Array((line + "\n").utf8))
}
