// BenchReportTests.swift: the exit benchmark's kinds, formatting and report
// rendering, with synthetic results (no KVM needed).

import Foundation
import Testing
@testable import Bench

@Suite("Exit kinds")
struct ExitKindTests {
    @Test("privileged kinds run at CPL0 only; the rest at both")
    func cpls() {
        #expect(ExitKind.rdmsr.cpls == [0])
        #expect(ExitKind.wrmsr.cpls == [0])
        #expect(ExitKind.hlt.cpls == [0])
        #expect(ExitKind.pioOut.cpls == [0, 3])
        #expect(ExitKind.vmcall.cpls == [0, 3])
    }

    @Test("who handles each kind")
    func handlers() {
        #expect(ExitKind.noop.handler == .none)
        for k in [ExitKind.pioOut, .pioIn, .mmioWrite, .mmioRead] { #expect(k.handler == .skvm) }
        for k in [ExitKind.ioeventfdPIO, .ioeventfdPIODatamatch, .ioeventfdMMIO] { #expect(k.handler == .ioeventfd) }
        for k in [ExitKind.cpuid, .rdmsr, .wrmsr, .hlt, .vmcall] { #expect(k.handler == .kernel) }
    }

    @Test("a CPL0 hypercall is skipped on PVM only")
    func skips() {
        #expect(ExitKind.vmcall.skipReason(cpl: 0, onPVM: true) != nil)
        #expect(ExitKind.vmcall.skipReason(cpl: 3, onPVM: true) == nil)
        #expect(ExitKind.vmcall.skipReason(cpl: 0, onPVM: false) == nil)
        #expect(ExitKind.pioOut.skipReason(cpl: 0, onPVM: true) == nil)
    }
}

@Suite("Bench report")
struct BenchReportTests {
    /// A result with `values` (ns per iteration, one per batch) recorded.
    static func result(_ kind: ExitKind, cpl: Int, loop: BenchResult.Loop, ns values: [Double], check: BenchResult.Check = .matched) -> BenchResult {
        var r = BenchResult(kind: kind, cpl: cpl, loop: loop)
        r.iterations = values.count * 10
        r.batches = values.count
        r.batchSize = 10
        r.check = check
        r.allocations = loop == .skvm ? 0 : nil
        r.exitsSeen = UInt64(r.iterations)
        for v in values { r.histogram.record(UInt64(v * 1000)) }
        return r
    }

    static let context = BenchContext(virtualization: "pvm", cpuModel: "Test CPU", hostCPU: 1, tscKHz: 2_000_000, buildConfiguration: "release")

    static var sample: [BenchResult] {
        var skipped = BenchResult(kind: .vmcall, cpl: 0, loop: .skvm)
        skipped.skipped = "spins"
        return [
            result(.pioOut, cpl: 3, loop: .skvm, ns: [25_000, 25_500, 26_000, 40_000]),
            result(.pioOut, cpl: 3, loop: .cFloor, ns: [24_000, 24_500, 25_000, 30_000]),
            result(.cpuid, cpl: 3, loop: .skvm, ns: [3_000, 3_100, 3_200, 3_300], check: .notApplicable),
            skipped,
        ]
    }

    @Test("durations and decade labels read naturally")
    func formatting() {
        #expect(BenchReport.duration(3.21) == "3.2 ns")
        #expect(BenchReport.duration(812.4) == "812 ns")
        #expect(BenchReport.duration(2_345) == "2.35 µs")
        #expect(BenchReport.duration(24_930) == "24.9 µs")
        #expect(BenchReport.duration(1_200_000) == "1.20 ms")
        #expect(BenchReport.decadeLabel(-1) == "0.1 ns")
        #expect(BenchReport.decadeLabel(0) == "1 ns")
        #expect(BenchReport.decadeLabel(4) == "10 µs")
        #expect(BenchReport.decadeLabel(6) == "1 ms")
        #expect(BenchReport.percent(0.0512) == "+5.1%")
        #expect(BenchReport.percent(-0.014) == "-1.4%")
        #expect(formatFixed(-0.04, 1) == "0.0")
    }

    @Test("the table shows the floor ratio, the C loop and the skip reason")
    func table() {
        let t = BenchReport.table(Self.sample, context: Self.context)
        #expect(t.contains("Test CPU; KVM: pvm; vCPU pinned to host CPU 1"))
        let pio = t.split(separator: "\n").first { $0.hasPrefix("pio-out") }.map(String.init) ?? ""
        // HdrHistogram's median of an even count is the lower middle value.
        #expect(pio.contains("25.5 µs"), "median of 25.0/25.5/26.0/40.0 µs: \(pio)")
        #expect(pio.contains("24.5 µs"), "the C loop's median: \(pio)")
        #expect(pio.contains("+4.1%"))
        #expect(pio.contains("matched"))
        #expect(t.contains("vmcall") && t.contains("skipped: spins"))
        #expect(!t.contains("COUNT MISMATCH"))
    }

    @Test("rounds merge: samples and counts add up; a mismatch or a skip in any round is kept")
    func merging() {
        let a = Self.result(.pioOut, cpl: 0, loop: .skvm, ns: [10_000, 10_000])
        let b = Self.result(.pioOut, cpl: 0, loop: .skvm, ns: [20_000, 20_000], check: .mismatched)
        let m = a.merging(b)
        #expect(m.iterations == 40)
        #expect(m.batches == 4)
        #expect(m.histogram.totalCount == 4)
        #expect(m.exitsSeen == 40)
        #expect(m.allocations == 0)
        #expect(m.check == .mismatched)
        #expect(a.merging(a).check == .matched)
        var skipped = BenchResult(kind: .pioOut, cpl: 0, loop: .skvm)
        skipped.skipped = "the guest did not finish"
        #expect(a.merging(skipped).skipped == "the guest did not finish")
    }

    @Test("a count mismatch is called out")
    func mismatch() {
        let t = BenchReport.table([Self.result(.pioIn, cpl: 0, loop: .skvm, ns: [9_000], check: .mismatched)], context: Self.context)
        #expect(t.contains("COUNT MISMATCH: pio-in CPL0 skvm"))
    }

    @Test("the JSON parses and carries every field")
    func json() throws {
        let text = BenchReport.json(Self.sample, context: Self.context)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["schema"] as? Int == 1)
        #expect(object["virtualization"] as? String == "pvm")
        let results = try #require(object["results"] as? [[String: Any]])
        #expect(results.count == 4)
        let pio = try #require(results.first { $0["kind"] as? String == "pio-out" && $0["loop"] as? String == "skvm" })
        #expect(pio["allocations"] as? Int == 0)
        #expect(pio["check"] as? String == "matched")
        #expect(abs((pio["skvmVsCLoop"] as? Double ?? 0) - 0.0408) < 0.002)
        #expect((pio["floorRatio"] as? Double ?? 0) > 1)
        let cpuid = try #require(results.first { $0["kind"] as? String == "cpuid" })
        #expect(cpuid["cLoopMedianNs"] is NSNull)
        let vmcall = try #require(results.first { $0["kind"] as? String == "vmcall" })
        #expect(vmcall["skipped"] as? String == "spins")
    }

    @Test("the SVG has one labelled panel per completed run")
    func svg() {
        let s = BenchReport.svg(Self.sample)
        #expect(s.hasPrefix("<svg"))
        #expect(s.contains("pio-out CPL3 skvm 25.5 µs"))
        #expect(s.contains("pio-out CPL3 C loop 24.5 µs"))
        #expect(!s.contains("vmcall"))
        #expect(s.contains(">10 µs<"))
    }
}
