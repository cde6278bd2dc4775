// BenchTests.swift: `skvm bench exits` end to end with tiny iteration counts
// (no timing is asserted: only that every kind ran and every count checks out).

import Foundation
import Testing

@Suite("skvm bench exits", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
struct BenchIntegrationTests {
    @Test("Every kind runs at every allowed CPL; counts match; the skvm loop allocates nothing")
    func everyKind() throws {
        _ = try requireGuest("exit-bench.elf")
        let svg = FileManager.default.temporaryDirectory.appendingPathComponent("skvm-bench-\(getpid()).svg").path
        defer { try? FileManager.default.removeItem(atPath: svg) }
        let r = try Harness.run(["bench", "exits", "--iterations", "100", "--batches", "5", "--rounds", "2", "--json", "--svg", svg], timeout: 300)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let results = try #require(object["results"] as? [[String: Any]])
        let kinds = ["noop", "pio-out", "pio-in", "mmio-write", "mmio-read", "ioeventfd-pio", "ioeventfd-pio-datamatch",
                     "ioeventfd-mmio", "cpuid", "rdmsr", "wrmsr", "hlt", "vmcall"]
        for kind in kinds {
            let cpls = ["rdmsr", "wrmsr", "hlt"].contains(kind) ? [0] : [0, 3]
            for cpl in cpls {
                let rows = results.filter { $0["kind"] as? String == kind && $0["cpl"] as? Int == cpl }
                let skvm = try #require(rows.first { $0["loop"] as? String == "skvm" }, "\(kind) CPL\(cpl) missing")
                if let why = skvm["skipped"] as? String {
                    #expect(kind == "vmcall" && cpl == 0, "\(kind) CPL\(cpl) skipped: \(why)")
                    continue
                }
                #expect(skvm["iterations"] as? Int == 200, "two rounds of 100: \(kind) CPL\(cpl)")
                #expect(skvm["allocations"] as? Int == 0, "\(kind) CPL\(cpl) allocated on the vCPU thread")
                #expect((skvm["medianNs"] as? Double ?? 0) > 0)
                let handler = skvm["handledBy"] as? String
                if handler == "skvm" || handler == "ioeventfd" {
                    #expect(skvm["check"] as? String == "matched", "\(kind) CPL\(cpl): saw \(skvm["exitsSeen"] ?? "?")")
                    #expect(skvm["exitsSeen"] as? Int == 200)
                }
                if handler == "skvm" {
                    let floor = try #require(rows.first { $0["loop"] as? String == "c-floor" }, "\(kind) CPL\(cpl) has no C floor run")
                    #expect(floor["check"] as? String == "matched")
                    #expect(skvm["cLoopMedianNs"] as? Double != nil)
                }
            }
        }
        let picture = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(picture.hasPrefix("<svg") && picture.contains("pio-out CPL3"))
    }

    @Test("Bad options: one line, status 2")
    func badOptions() throws {
        BadInputTests.expectOneLineError(try Harness.run(["bench", "exits", "--kinds", "pio-out,warp"]), containing: "unknown kind 'warp'")
        BadInputTests.expectOneLineError(try Harness.run(["bench", "exits", "--cpls", "1"]), containing: "'1' is not 0 or 3")
        BadInputTests.expectOneLineError(try Harness.run(["bench", "exits", "--iterations", "0"]), containing: "--iterations must be")
        BadInputTests.expectOneLineError(try Harness.run(["bench", "exits", "--guest", "/nonexistent.elf"]), containing: "cannot open the exit-bench guest '/nonexistent.elf': No such file or directory")
    }
}
