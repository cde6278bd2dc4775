// PropertyTests.swift: random chains round-trip their bytes exactly.
//
// A seeded generator (the same sequence on every run) makes the driver mock
// offer random batches of random chains: 1 to 6 segments, readable ones
// first (§2.7.4.2), lengths 0 to 300 bytes, direct or through an indirect
// table (§2.7.5.3). The device pops them, checks every buffer against what
// the driver placed, reads the request, writes a response derived from it,
// and completes the chains in a random order. The driver then checks each
// used element's id and len, the response bytes, and that nothing past len
// was touched. Thousands of chains through a size-16 queue also run both
// free-running indexes well past several laps of the ring.

import Memory
import Testing
import TestSupport
import VirtioQueue

/// One random chain's segments.
private func randomSegments(_ rng: inout SeededGenerator) -> [VirtqueueDriver.Segment] {
    let count = Int.random(in: 1...6, using: &rng)
    let readable = Int.random(in: 0...count, using: &rng)
    return (0..<count).map { i in
        let length = Int.random(in: 0...300, using: &rng)
        if i < readable {
            return .readable((0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
        return .writable(length)
    }
}

/// The response a device computes from a request: the bytes reversed, each
/// XORed with its position, then the request length as 4 little-endian bytes.
private func response(to request: [UInt8]) -> [UInt8] {
    var out = request.reversed().enumerated().map { $0.element ^ UInt8(truncatingIfNeeded: $0.offset) }
    for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: request.count >> (8 * i))) }
    return out
}

@Suite("Virtqueue: property-style round trips")
struct PropertyTests {
    @Test("random chains round-trip their bytes exactly", arguments: [UInt64(1), 0x5EED, 0xDEAD_BEEF])
    func roundTrip(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        var (driver, q) = try makePair(size: 16, features: [.ringIndirectDesc, .ringEventIdx], memory: 4 << 20)
        var chainsDone = 0
        var indirectSeen = 0
        while chainsDone < 2000 {
            // The driver offers a batch, as far as free descriptors allow.
            var offered: [UInt16: (chain: VirtqueueDriver.Chain, request: [UInt8], capacity: Int)] = [:]
            let batch = Int.random(in: 1...6, using: &rng)
            for _ in 0..<batch {
                let segments = randomSegments(&rng)
                let indirect = Bool.random(using: &rng)
                guard let c = try? driver.addChain(segments, indirect: indirect, publish: false) else { break }
                let request = segments.flatMap { s -> [UInt8] in
                    if case .readable(let bytes) = s { return bytes }
                    return []
                }
                let capacity = segments.reduce(0) { sum, s in
                    if case .writable(let n) = s { return sum + n }
                    return sum
                }
                offered[c.head] = (c, request, capacity)
            }
            try driver.publish()

            // The device pops everything and checks it against the driver's view.
            var popped: [DescriptorChain] = []
            while let chain = try q.popAvailable() {
                let sent = try #require(offered[chain.headIndex])
                #expect(chain.buffers == expectedBuffers(sent.chain))
                #expect(chain.readableByteCount == sent.request.count)
                #expect(chain.writableByteCount == sent.capacity)
                #expect(chain.usedIndirectTable == (sent.chain.indirectTable != nil))
                if chain.usedIndirectTable { indirectSeen += 1 }
                #expect(try chain.readReadable(maxCount: Int.max) == sent.request)
                // A random window of the request reads back as the same slice.
                let from = Int.random(in: 0...sent.request.count, using: &rng)
                let count = Int.random(in: 0...(sent.request.count - from + 3), using: &rng)
                let window = Array(sent.request[from..<min(from + count, sent.request.count)])
                #expect(try chain.readReadable(from: from, maxCount: count) == window)
                popped.append(chain)
            }
            #expect(popped.count == offered.count)

            // Complete in a random order; the used length is what was written.
            popped.shuffle(using: &rng)
            var written: [UInt16: Int] = [:]
            for chain in popped {
                let sent = try #require(offered[chain.headIndex])
                let n = try chain.writeWritable(response(to: sent.request))
                #expect(n == min(sent.request.count + 4, sent.capacity))
                written[chain.headIndex] = n
                try q.addUsed(head: chain.headIndex, length: UInt32(n))
            }
            #expect(q.inFlight == 0)

            // The driver reads the used ring in completion order.
            for chain in popped {
                let used = try #require(try driver.popUsed())
                #expect(used.element.id == UInt32(chain.headIndex))
                let sent = try #require(offered[chain.headIndex])
                let n = try #require(written[chain.headIndex])
                #expect(used.element.len == UInt32(n))
                let all = try driver.readWritten(sent.chain, count: sent.capacity)
                #expect(Array(all.prefix(n)) == Array(response(to: sent.request).prefix(n)))
                #expect(all.dropFirst(n).allSatisfy { $0 == VirtqueueDriver.poison })
                // The request is untouched by the device.
                var request: [UInt8] = []
                for b in sent.chain.buffers where !b.writable {
                    request += try driver.memory.readBytes(at: b.address, count: Int(b.length))
                }
                #expect(request == sent.request)
            }
            #expect(try driver.popUsed() == nil)
            chainsDone += popped.count
        }
        #expect(driver.outstanding.isEmpty)
        #expect(q.nextAvail == q.nextUsed)
        #expect(Int(q.nextAvail) == chainsDone % 65536)
        #expect(indirectSeen > 500)  // both kinds were exercised
    }
}
