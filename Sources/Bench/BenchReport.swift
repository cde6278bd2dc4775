// BenchReport.swift: the benchmark's results as a table, JSON and SVG.

import VMM

/// Facts about the run printed above the table and stored in the JSON.
public struct BenchContext: Sendable {
    public var virtualization: String
    public var cpuModel: String
    public var hostCPU: Int?
    public var tscKHz: UInt64
    public var buildConfiguration: String
    public init(virtualization: String, cpuModel: String, hostCPU: Int?, tscKHz: UInt64, buildConfiguration: String) {
        (self.virtualization, self.cpuModel, self.hostCPU, self.tscKHz, self.buildConfiguration) = (virtualization, cpuModel, hostCPU, tscKHz, buildConfiguration)
    }
}

public enum BenchReport {
    /// The floor for `cpl`: the C loop's median for a userspace PIO write, the
    /// cheapest round trip through userspace there is.
    static func floor(_ results: [BenchResult], cpl: Int) -> Double? {
        results.first { $0.kind == .pioOut && $0.cpl == cpl && $0.loop == .cFloor && $0.skipped == nil }?.medianNs
    }

    /// The C loop's median for the same kind and CPL as `r`, when there is one.
    static func cLoop(_ results: [BenchResult], for r: BenchResult) -> Double? {
        results.first { $0.kind == r.kind && $0.cpl == r.cpl && $0.loop == .cFloor && $0.skipped == nil }?.medianNs
    }

    /// The table for people.
    public static func table(_ results: [BenchResult], context: BenchContext) -> String {
        var out = "skvm bench exits: \(context.cpuModel); KVM: \(context.virtualization); "
        out += context.hostCPU.map { "vCPU pinned to host CPU \($0)" } ?? "vCPU not pinned"
        out += "; guest TSC \(context.tscKHz) kHz; \(context.buildConfiguration) build\n\n"
        let header = ["kind", "cpl", "handled by", "iters", "median", "p99", "exits/s", "x floor", "C loop", "skvm vs C", "allocs", "check"]
        var rows: [[String]] = []
        for r in results where r.loop == .skvm {
            if let why = r.skipped {
                rows.append([r.kind.rawValue, "\(r.cpl)", r.kind.handler.rawValue, "-", "skipped: \(why)"])
                continue
            }
            let floor = Self.floor(results, cpl: r.cpl)
            let c = Self.cLoop(results, for: r)
            rows.append([
                r.kind.rawValue, "\(r.cpl)", r.kind.handler.rawValue, "\(r.iterations)",
                duration(r.medianNs), duration(r.p99Ns),
                r.kind.handler == .none ? "-" : compact(r.exitsPerSecond),
                floor.map { String(format2(r.medianNs / $0)) } ?? "-",
                c.map(duration) ?? "-",
                c.map { percent((r.medianNs - $0) / $0) } ?? "-",
                r.allocations.map { "\($0)" } ?? "-",
                r.check.rawValue,
            ])
        }
        let widths = header.indices.map { i in max(header[i].count, rows.map { i < $0.count && $0.count == header.count ? $0[i].count : 0 }.max() ?? 0) }
        func line(_ cells: [String]) -> String {
            if cells.count < header.count { return cells[0..<4].enumerated().map { pad($0.element, widths[$0.offset]) }.joined(separator: "  ") + "  " + cells[4] }
            return cells.enumerated().map { i, c in i < 3 ? pad(c, widths[i]) : leftPad(c, widths[i]) }.joined(separator: "  ")
        }
        out += line(header) + "\n"
        for r in rows { out += line(r) + "\n" }
        let failed = results.filter { $0.skipped == nil && $0.check == .mismatched }
        out += """

            median and p99 are per round trip (one loop iteration), over \(results.first?.batches ?? 0) timed batches per kind and loop.
            x floor: median / the C loop's userspace PIO write at the same CPL. C loop: the same guest run by a bare
            KVM_RUN loop in C (userspace kinds). allocs: heap allocations on the vCPU thread during the measured batches.
            check: exits skvm (or the eventfd) saw == iterations the guest reports.

            """
        if !failed.isEmpty {
            out += "COUNT MISMATCH: " + failed.map { "\($0.kind.rawValue) CPL\($0.cpl) \($0.loop.rawValue): saw \($0.exitsSeen ?? 0), guest ran \($0.iterations)" }.joined(separator: "; ") + "\n"
        }
        return out
    }

    /// JSON (schema in docs/benchmarking-exits.md).
    public static func json(_ results: [BenchResult], context: BenchContext) -> String {
        func num(_ d: Double?) -> String {
            guard let d, d.isFinite else { return "null" }
            return String(format3(d))
        }
        var items: [String] = []
        for r in results {
            var f: [String] = [
                "\"kind\": \(jsonString(r.kind.rawValue))", "\"cpl\": \(r.cpl)", "\"loop\": \(jsonString(r.loop.rawValue))",
                "\"handledBy\": \(jsonString(r.kind.handler.rawValue))", "\"instruction\": \(jsonString(r.kind.instruction))",
            ]
            if let why = r.skipped {
                f.append("\"skipped\": \(jsonString(why))")
            } else {
                let floor = Self.floor(results, cpl: r.cpl)
                let c = r.loop == .skvm ? Self.cLoop(results, for: r) : nil
                f += [
                    "\"skipped\": null", "\"iterations\": \(r.iterations)", "\"batches\": \(r.batches)", "\"batchSize\": \(r.batchSize)",
                    "\"medianNs\": \(num(r.medianNs))", "\"p99Ns\": \(num(r.p99Ns))", "\"minNs\": \(num(r.minNs))", "\"maxNs\": \(num(r.maxNs))",
                    "\"exitsPerSecond\": \(num(r.kind.handler == .none ? nil : r.exitsPerSecond))",
                    "\"floorRatio\": \(num(floor.map { r.medianNs / $0 }))",
                    "\"cLoopMedianNs\": \(num(c))", "\"skvmVsCLoop\": \(num(c.map { (r.medianNs - $0) / $0 }))",
                    "\"allocations\": \(r.allocations.map { "\($0)" } ?? "null")",
                    "\"exitsSeen\": \(r.exitsSeen.map { "\($0)" } ?? "null")", "\"check\": \(jsonString(r.check.rawValue))",
                ]
            }
            items.append("{" + f.joined(separator: ", ") + "}")
        }
        return """
            {"schema": 1, "tool": "skvm bench exits", "virtualization": \(jsonString(context.virtualization)), \
            "cpuModel": \(jsonString(context.cpuModel)), "hostCPU": \(context.hostCPU.map { "\($0)" } ?? "null"), \
            "tscKHz": \(context.tscKHz), "build": \(jsonString(context.buildConfiguration)), \
            "results": [\(items.joined(separator: ",\n  "))]}
            """
    }

    /// A latency histogram per run, on one shared logarithmic time axis, each
    /// panel labelled with its kind, so no legend is needed.
    public static func svg(_ results: [BenchResult]) -> String {
        let runs = results.filter { $0.skipped == nil && $0.histogram.totalCount > 0 }
        let width = 900.0, panelHeight = 46.0, left = 250.0, right = 40.0, top = 30.0, axis = 40.0
        let height = top + Double(runs.count) * panelHeight + axis
        // Axis: decades of nanoseconds covering every run.
        let lo = max(0.1, runs.map(\.minNs).min() ?? 1), hi = max(lo * 10, runs.map(\.maxNs).max() ?? 10)
        let first = (log10(lo)).rounded(.down), last = (log10(hi)).rounded(.up)
        func x(_ ns: Double) -> Double { left + (log10(max(ns, 1e-3)) - first) / (last - first) * (width - left - right) }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(Int(left))\" y=\"18\" font-size=\"14\">Time per round trip (log scale), one bar per 1/20 decade; height: share of batches</text>\n"
        for (i, r) in runs.enumerated() {
            let y0 = top + Double(i) * panelHeight
            let colour = r.loop == .cFloor ? "#888888" : (r.kind.handler == .skvm ? "#d95f02" : r.kind.handler == .ioeventfd ? "#1b9e77" : "#7570b3")
            s += "<text x=\"8\" y=\"\(Int(y0 + panelHeight / 2 + 4))\">\(xmlEscape("\(r.kind.rawValue) CPL\(r.cpl) \(r.loop == .cFloor ? "C loop" : "skvm") \(duration(r.medianNs))"))</text>\n"
            s += "<line x1=\"\(Int(left))\" y1=\"\(Int(y0 + panelHeight - 4))\" x2=\"\(Int(width - right))\" y2=\"\(Int(y0 + panelHeight - 4))\" stroke=\"#ccc\"/>\n"
            // Buckets of 1/20 decade.
            var buckets: [Int: UInt64] = [:]
            for v in r.histogram.recordedValues() {
                let ns = Double(v.value) / 1000
                buckets[Int((log10(max(ns, 1e-3)) * 20).rounded(.down)), default: 0] += UInt64(v.count)
            }
            let most = Double(buckets.values.max() ?? 1)
            for (b, count) in buckets {
                let x0 = x(pow(10, Double(b) / 20)), x1 = x(pow(10, Double(b + 1) / 20))
                let h = (panelHeight - 10) * Double(count) / most
                s += "<rect x=\"\(f1(x0))\" y=\"\(f1(y0 + panelHeight - 4 - h))\" width=\"\(f1(max(1, x1 - x0 - 0.5)))\" height=\"\(f1(h))\" fill=\"\(colour)\"/>\n"
            }
            let m = x(r.medianNs)
            s += "<line x1=\"\(f1(m))\" y1=\"\(Int(y0 + 2))\" x2=\"\(f1(m))\" y2=\"\(Int(y0 + panelHeight - 4))\" stroke=\"black\" stroke-dasharray=\"2,2\"/>\n"
        }
        let axisY = top + Double(runs.count) * panelHeight
        var d = first
        while d <= last {
            let xv = x(pow(10, d))
            s += "<line x1=\"\(f1(xv))\" y1=\"\(Int(top))\" x2=\"\(f1(xv))\" y2=\"\(Int(axisY + 4))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f1(xv))\" y=\"\(Int(axisY + 18))\" text-anchor=\"middle\">\(decadeLabel(Int(d)))</text>\n"
            d += 1
        }
        s += "<text x=\"\(Int(left))\" y=\"\(Int(axisY + 34))\" fill=\"#555\">dashed line: median. orange: exits skvm handles; green: ioeventfd; purple: in KVM; grey: the C floor loop</text>\n"
        return s + "</svg>\n"
    }

    // MARK: Formatting

    /// "812 ns", "24.9 µs", "1.20 ms", "3.2 ns".
    static func duration(_ ns: Double) -> String {
        if ns >= 1e6 { return String(format2(ns / 1e6)) + " ms" }
        if ns >= 1e4 { return String(format1(ns / 1e3)) + " µs" }
        if ns >= 1e3 { return String(format2(ns / 1e3)) + " µs" }
        if ns >= 10 { return "\(Int(ns.rounded())) ns" }
        return String(format1(ns)) + " ns"
    }

    /// 10^exponent ns as "0.1 ns", "1 ns", "10 µs", "1 ms".
    static func decadeLabel(_ exponent: Int) -> String {
        if exponent < 0 { return "0." + String(repeating: "0", count: -exponent - 1) + "1 ns" }
        let units = ["ns", "µs", "ms", "s"]
        let unit = min(exponent / 3, units.count - 1)
        return "1" + String(repeating: "0", count: exponent - unit * 3) + " " + units[unit]
    }

    static func compact(_ v: Double) -> String {
        if v >= 1e6 { return String(format2(v / 1e6)) + "M" }
        if v >= 1e3 { return String(format1(v / 1e3)) + "k" }
        return "\(Int(v.rounded()))"
    }

    static func percent(_ fraction: Double) -> String {
        (fraction >= 0 ? "+" : "") + String(format1(fraction * 100)) + "%"
    }

    static func xmlEscape(_ s: String) -> String {
        s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;")
    }
}

// Fixed-point formatting without Foundation.
func formatFixed(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return "nan" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int64((abs(v) * scale).rounded())
    let whole = n / Int64(scale), frac = n % Int64(scale)
    var f = String(frac)
    while f.count < digits { f = "0" + f }
    return (v < 0 && n != 0 ? "-" : "") + "\(whole)" + (digits > 0 ? "." + f : "")
}
func format1(_ v: Double) -> String { formatFixed(v, 1) }
func format2(_ v: Double) -> String { formatFixed(v, 2) }
func format3(_ v: Double) -> String { formatFixed(v, 3) }
func f1(_ v: Double) -> String { formatFixed(v, 1) }
func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
func leftPad(_ s: String, _ w: Int) -> String { s.count >= w ? s : String(repeating: " ", count: w - s.count) + s }

extension String {
    func replacingAll(_ a: String, _ b: String) -> String {
        split(separator: a, omittingEmptySubsequences: false).joined(separator: b)
    }
}

#if canImport(Glibc)
import Glibc
#endif
