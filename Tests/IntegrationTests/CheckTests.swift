// CheckTests.swift: `skvm check` tells the truth, with and without a KVM device.

import Foundation
import Testing

@Suite("skvm check")
struct CheckTests {
    @Test("Without a KVM device: non-zero status and the reason")
    func noDevice() throws {
        let r = try Harness.run(["check", "--kvm-device", "/nonexistent/kvm"])
        #expect(r.status == 4)
        #expect(r.stdout.contains("FAIL  device"))
        #expect(r.stdout.contains("/nonexistent/kvm does not exist"))
        #expect(r.stdout.contains("skvm cannot run virtual machines here."))
    }

    @Test("SKVM_KVM_DEVICE points check and run at another device")
    func environmentDevice() throws {
        let r = try Harness.run(["check", "--json"], environment: ["SKVM_KVM_DEVICE": "/nonexistent/kvm"])
        #expect(r.status == 4)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(json["canRun"] as? Bool == false)
        #expect(json["device"] as? String == "/nonexistent/kvm")
        let run = try Harness.run(["run", "--flat", "--kernel", "guests/build/hello-real.bin"],
                                  environment: ["SKVM_KVM_DEVICE": "/nonexistent/kvm"])
        if FileManager.default.fileExists(atPath: Harness.guest("hello-real.bin")) {
            BadInputTests.expectOneLineError(run, status: 4, containing: "cannot open /nonexistent/kvm")
        }
    }

    @Test("With KVM: every check passes and the JSON has them all",
          .enabled(if: Harness.runKVMTests, "no usable /dev/kvm"))
    func withKVM() throws {
        let text = try Harness.run(["check"])
        #expect(text.status == 0)
        #expect(text.stdout.contains("skvm can run virtual machines here."))
        #expect(!text.stdout.contains("FAIL"))
        let r = try Harness.run(["check", "--json"])
        #expect(r.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(json["canRun"] as? Bool == true)
        let checks = try #require(json["checks"] as? [[String: Any]])
        let names = Set(checks.compactMap { $0["name"] as? String })
        for required in ["device", "API version", "KVM_CAP_IRQCHIP", "KVM_CAP_PIT2", "KVM_CAP_IOEVENTFD", "KVM_CAP_IRQFD",
                         "KVM_CAP_USER_MEMORY", "KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_EXT_CPUID", "VM and vCPU", "vCPUs", "hugepages"] {
            #expect(names.contains(required), "missing check \(required)")
        }
        #expect((json["maximumVCPUs"] as? Int ?? 0) >= 1)
        // This host's kind of KVM, as the kernel shows it.
        let pvm = FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm")
        #expect((json["virtualization"] as? String == "pvm") == pvm)
        #expect(json["canBootStockLinux"] as? Bool == !pvm)
    }
}
