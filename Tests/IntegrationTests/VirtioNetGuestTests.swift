// VirtioNetGuestTests.swift: skvm's virtio-net device driven by a guest with
// its own minimal virtio-pci network driver (guests/virtio-net-test), on a
// tap inside a network namespace the runner creates and deletes
// (guests/tools/net-test.sh): ARP and ICMP echo both ways with the host's
// kernel, every frame length from 60 to 1514 bytes both ways checked byte
// for byte by a host peer on an AF_PACKET socket, the same through merged
// 1024-byte receive buffers, and TCPv4 GSO frames up to 65535 bytes both
// ways with the offload header. Where QEMU is installed the same guest runs
// under QEMU's virtio-net-pci in the same test: the guest's transcript must
// be identical line for line (timing lines aside).

import Foundation
import Testing

@Suite("virtio-net guest", .enabled(if: Harness.runKVMTests && NetNamespace.runTests, "needs /dev/kvm, root and iproute2"), .serialized)
struct VirtioNetGuestTests {
    static let script = Harness.root.appendingPathComponent("guests/tools/net-test.sh").path

    /// Runs net-test.sh for `vmm` ("qemu" or "skvm:PATH"); returns its status and the guest's lines.
    static func run(_ vmm: String, _ arguments: [String], skvmArguments: String = "") throws -> (status: Int32, guest: [String], all: String) {
        let r = try NetNamespace.run("/usr/bin/env", ["SKVM_ARGS=\(skvmArguments)", "/bin/bash", script, vmm] + arguments)
        let guest = r.output.split(separator: "\n").map(String.init)
            .filter { $0.hasPrefix("virtio-net-test:") && !$0.contains("TSC cycles") }
        return (r.status, guest, r.output)
    }

    @Test("each mode passes under skvm, the peer checks every byte, and QEMU's virtio-net-pci prints the same transcript",
          arguments: [["info"], ["ping"], ["frames"], ["frames", "mrg=1"], ["frames", "offload=1"]])
    func mode(_ arguments: [String]) throws {
        _ = try requireGuest("virtio-net-test.elf")
        let skvm = try Self.run("skvm:" + Harness.skvm, arguments)
        #expect(skvm.status == 0, "net-test.sh under skvm:\n\(skvm.all)")
        #expect(skvm.guest.last?.hasPrefix("virtio-net-test: all ") == true, "\(skvm.all)")
        if arguments.first == "frames" {
            #expect(skvm.all.contains("peer: phase 1 guest->host raw: received 1455 of 1455 frames, 60..1514 bytes, every byte ok"))
            #expect(skvm.all.contains("peer: PASS"))
        }
        if arguments.contains("offload=1") {
            #expect(skvm.all.contains("peer: phase 3 guest->host GSO TCPv4: received 64 of 64 frames, 1503..65535 bytes, every byte ok"))
        }
        guard Qemu.path != nil else { return }
        let qemu = try Self.run("qemu", arguments)
        #expect(qemu.status == 0, "net-test.sh under QEMU:\n\(qemu.all)")
        #expect(skvm.guest == qemu.guest, "skvm and QEMU transcripts differ")
    }

    @Test("every GSO frame length from 1503 to 65535 bytes, both ways, each byte checked (64033 frames each way)")
    func everyLength() throws {
        _ = try requireGuest("virtio-net-test.elf")
        let skvm = try Self.run("skvm:" + Harness.skvm, ["frames", "offload=1", "gso_step=1"])
        #expect(skvm.status == 0, "\(skvm.all)")
        #expect(skvm.all.contains("peer: phase 3 guest->host GSO TCPv4: received 64033 of 64033 frames, 1503..65535 bytes, every byte ok"))
        #expect(skvm.all.contains("virtio-net-test: frames: host->guest, TCPv4 GSO 1503..65535 bytes, step 1: received all 64033 in order, every byte as sent: ok"))
    }

    @Test("the data path allocates nothing per frame: thousands of frames each way, a handful of I/O-thread allocations (release build)",
          .enabled(if: Harness.runReleaseTests, "needs the release build (make release); make test builds it"))
    func noAllocationPerFrame() throws {
        _ = try requireGuest("virtio-net-test.elf")
        let skvm = try Self.run("skvm:" + Harness.releaseSkvm, ["frames", "offload=1"], skvmArguments: "--stats")
        #expect(skvm.status == 0, "\(skvm.all)")
        let io = try #require(skvm.all.split(separator: "\n").first { $0.contains("I/O thread: ") }, "no --stats line:\n\(skvm.all)")
        let allocations = Int(io.split(separator: ",").last?.split(separator: " ").first ?? "") ?? -1
        #expect(allocations >= 0 && allocations < 100, "\(io)")
        #expect(skvm.all.contains("(0 dropped), received"), "\(skvm.all)")
    }
}
