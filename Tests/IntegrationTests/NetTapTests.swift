// NetTapTests.swift: --net on real tap devices, inside a network namespace
// of the test's own: creating and removing a tap, attaching to an existing
// one, and the errors a user can run into. (Frames through the device:
// VirtioNetGuestTests, with guests/virtio-net-test.)

import Foundation
import Testing

@Suite("--net on a tap", .enabled(if: Harness.runKVMTests && NetNamespace.runTests, "needs /dev/kvm, root and iproute2"), .serialized)
struct NetTapTests {
    @Test("tap=NAME creates the tap when it does not exist and removes it when skvm exits")
    func createsAndRemoves() throws {
        _ = try requireGuest("echo.elf")
        let ns = try NetNamespace(tap: nil)
        var seen: [String] = []
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=skvmnew0"], keepInputOpen: true, prefix: ns.exec) { running in
            running.waitForOutput("echo: ready")
            seen = (try? ns.links()) ?? []
            running.terminate()
        }
        #expect(r.status == 143)
        #expect(seen.contains("skvmnew0"), "while skvm ran: \(seen)")
        #expect(try !ns.links().contains("skvmnew0"), "the tap skvm created is gone after it exits")
    }

    @Test("an existing tap is attached (carrier up while skvm runs) and left in place")
    func attachesExisting() throws {
        _ = try requireGuest("echo.elf")
        let ns = try NetNamespace()
        var carrier = ""
        let r = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=tap0,mac=52:54:00:00:00:01"], keepInputOpen: true, prefix: ns.exec) { running in
            running.waitForOutput("echo: ready")
            carrier = (try? ns.run(["cat", "/sys/class/net/tap0/carrier"]).output) ?? ""
            running.terminate()
        }
        #expect(r.status == 143)
        #expect(carrier.hasPrefix("1"), "tap0's carrier while skvm is attached: \(carrier)")
        #expect(try ns.links().contains("tap0"))
    }

    @Test("a tap another skvm holds, and a name that is not a tap, are one clear line")
    func errors() throws {
        _ = try requireGuest("echo.elf")
        let ns = try NetNamespace()
        let first = try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=tap0"], keepInputOpen: true, prefix: ns.exec) { running in
            running.waitForOutput("echo: ready")
            if let r = try? Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=tap0"], prefix: ns.exec) {
                BadInputTests.expectOneLineError(r, containing: "--net tap=tap0: the tap is in use by another process")
            }
            running.terminate()
        }
        #expect(first.status == 143)
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=lo"], prefix: ns.exec),
                                         containing: "--net tap=lo: an interface named lo exists and is not a tap")
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "tap=tap0,mac=ff:ff:ff:ff:ff:ff"]),
                                         containing: "--net mac 'ff:ff:ff:ff:ff:ff' is not a unicast MAC address")
        BadInputTests.expectOneLineError(try Harness.run(["run", "--kernel", "guests/build/echo.elf", "--net", "fd=99"]),
                                         containing: "--net fd=99: not an open tap descriptor")
    }
}

@Suite("--net fd=N", .enabled(if: Harness.runKVMTests && NetNamespace.runTests, "needs /dev/kvm, root and iproute2"), .serialized)
struct NetFDTests {
    @Test("a tap descriptor opened by the parent (libvirt's way) is adopted: the guest's driver finds the NIC with the MAC given and link up")
    func adoptsParentDescriptor() throws {
        _ = try requireGuest("virtio-net-test.elf")
        let ns = try NetNamespace()
        // The parent: open /dev/net/tun, TUNSETIFF tap0 with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, then exec skvm with the descriptor.
        let parent = """
            import fcntl, os, struct, sys
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"tap0", 0x0002 | 0x1000 | 0x4000))
            os.set_inheritable(fd, True)
            skvm = sys.argv[1]
            os.execv(skvm, [skvm, "run", "--no-input", "--quiet", "--kernel", "guests/build/virtio-net-test.elf",
                            "--append", "test=info", "--net", "fd=%d,mac=52:54:00:aa:bb:cc" % fd])
            """
        let r = try NetNamespace.run("/usr/bin/env", ["-C", Harness.root.path] + ns.exec + ["python3", "-c", parent, Harness.skvm])
        #expect(r.status == 1, "\(r.output)")
        #expect(r.output.contains("virtio-net-test: config: MAC 52:54:00:aa:bb:cc"), "\(r.output)")
        #expect(r.output.contains("link up"), "\(r.output)")
        #expect(try ns.links().contains("tap0"), "the pre-created tap is left in place")
    }
}
