// BookTests.swift: every ```console runnable block in docs/ is run and its
// output checked, so the book cannot rot.
//
// The format (docs/book/README conventions): each "$ " line is a command, run
// with bash from the repository root with .build/debug first on PATH; the
// lines after it up to the next "$ " are its expected stdout; "..." matches
// any number of lines; the exit status must be 0 unless the last expected
// line is "[exit N]".

import Foundation
import Testing

struct RunnableCommand: CustomStringConvertible, Sendable {
    let file: String
    let line: Int
    let command: String
    let expected: [String]
    var description: String { "\(file):\(line): \(command)" }
}

enum Book {
    /// Every runnable command in docs/**/*.md, in file order.
    static func commands() -> [RunnableCommand] {
        let docs = Harness.root.appendingPathComponent("docs")
        guard let walker = FileManager.default.enumerator(atPath: docs.path) else { return [] }
        var result: [RunnableCommand] = []
        for case let relative as String in walker where relative.hasSuffix(".md") {
            let path = docs.appendingPathComponent(relative).path
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            var inBlock = false
            var current: (line: Int, command: String, expected: [String])? = nil
            for (i, line) in lines.enumerated() {
                if !inBlock {
                    if line.trimmingCharacters(in: .whitespaces) == "```console runnable" { inBlock = true }
                    continue
                }
                if line.trimmingCharacters(in: .whitespaces) == "```" {
                    if let c = current { result.append(RunnableCommand(file: "docs/" + relative, line: c.line, command: c.command, expected: c.expected)) }
                    current = nil
                    inBlock = false
                } else if line.hasPrefix("$ ") {
                    if let c = current { result.append(RunnableCommand(file: "docs/" + relative, line: c.line, command: c.command, expected: c.expected)) }
                    current = (i + 1, String(line.dropFirst(2)), [])
                } else {
                    current?.expected.append(line)
                }
            }
        }
        return result.sorted { ($0.file, $0.line) < ($1.file, $1.line) }
    }

    /// Whether `actual` lines match `expected` lines, where "..." matches any run of lines.
    static func matches(_ actual: [String], _ expected: [String]) -> Bool {
        func strip(_ s: String) -> String { var s = s; while s.last == " " || s.last == "\t" { s.removeLast() }; return s }
        let a = actual.map(strip), e = expected.map(strip)
        func match(_ i: Int, _ j: Int) -> Bool {
            if j == e.count { return i == a.count }
            if e[j] == "..." { return (i...a.count).contains { match($0, j + 1) } }
            return i < a.count && a[i] == e[j] && match(i + 1, j + 1)
        }
        return match(0, 0)
    }
}

@Suite("The book's runnable commands", .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"), .serialized)
struct BookTests {
    @Test("the book has runnable commands in every chapter")
    func thereAreCommands() {
        let commands = Book.commands()
        let chapters = Set(commands.map(\.file).filter { $0.hasPrefix("docs/book/") })
        #expect(commands.count >= 10, "found \(commands.count) runnable commands")
        #expect(chapters.count >= 8, "chapters with runnable commands: \(chapters.sorted())")
    }

    @Test("the \"...\" matcher")
    func matcher() {
        #expect(Book.matches(["a", "b", "c"], ["a", "...", "c"]))
        #expect(Book.matches(["a", "c"], ["a", "...", "c"]))
        #expect(!Book.matches(["a", "b"], ["a", "...", "c"]))
        #expect(Book.matches(["a  "], ["a"]))
        #expect(!Book.matches(["a", "x"], ["a"]))
    }

    @Test("every runnable command prints what the book says", arguments: Book.commands())
    func command(_ c: RunnableCommand) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", c.command]
        p.currentDirectoryURL = Harness.root
        var env = ProcessInfo.processInfo.environment
        let binDir = URL(fileURLWithPath: Harness.skvm).deletingLastPathComponent().path
        env["PATH"] = binDir + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        var expected = c.expected
        while expected.last?.isEmpty == true { expected.removeLast() }
        var status: Int32 = 0
        if let last = expected.last, last.hasPrefix("[exit "), last.hasSuffix("]"), let n = Int32(last.dropFirst(6).dropLast()) {
            status = n
            expected.removeLast()
        }
        var actual = String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        while actual.last?.isEmpty == true { actual.removeLast() }
        #expect(p.terminationStatus == status, "\(c): exit status")
        #expect(Book.matches(actual, expected), "\(c)\nexpected:\n\(expected.joined(separator: "\n"))\nactual:\n\(actual.joined(separator: "\n"))")
    }
}
