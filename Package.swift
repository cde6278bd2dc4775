// swift-tools-version:6.0
// skvm: a small, fast, readable KVM hypervisor. The layering (dependencies
// point down only) is described in docs/architecture.md.
import PackageDescription

let package = Package(
    name: "skvm",
    platforms: [.macOS(.v15)],  // only so that SwiftPM resolves; skvm runs on Linux
    products: [
        .executable(name: "skvm", targets: ["skvm"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // The C shim: request numbers and glibc APIs Swift cannot import. No logic.
        .target(name: "CKVM"),
        // Guest physical memory: the only place guest addresses become host pointers.
        .target(name: "Memory", dependencies: ["CKVM"]),
        // Typed handles for /dev/kvm, a VM and a vCPU; one method per ioctl.
        .target(name: "KVM", dependencies: ["CKVM", "Memory"]),
        // Kernel loaders and the boot-time CPU state, computed as plain values.
        .target(name: "Boot", dependencies: ["CKVM", "Memory"]),
        // The bus and the legacy devices (UART, i8042, debug-exit). No KVM here.
        .target(name: "Devices", dependencies: ["Memory"]),
        // The split virtqueue, descriptor chains, feature bits, the VirtioDevice protocol.
        .target(name: "VirtioQueue", dependencies: ["Memory"]),
        // The PCI host bridge (ports 0xCF8-0xCFF), configuration spaces, BARs, MSI-X.
        .target(name: "PCI", dependencies: ["Devices"]),
        // zlib and zstd for qcow2's compressed clusters. No logic.
        .target(name: "CCompression", linkerSettings: [.linkedLibrary("z"), .linkedLibrary("zstd")]),
        // Disk images: the BlockBackend protocol, the raw and qcow2 backends, `skvm img`'s logic.
        .target(name: "Storage", dependencies: ["CKVM", "CCompression"]),
        // Host network endpoints: the NetBackend protocol and tap devices.
        .target(name: "Network", dependencies: ["CKVM"]),
        // Virtio device models and transports.
        .target(name: "Virtio", dependencies: ["Memory", "VirtioQueue", "Storage", "Network", "PCI", "Devices"]),
        // Builds a machine from a configuration and runs it.
        .target(name: "VMM", dependencies: ["CKVM", "KVM", "Memory", "Boot", "Devices", "PCI", "Storage", "Network", "Virtio", "VirtioQueue"]),
        // The benchmark's floor: a bare KVM_RUN loop in C.
        .target(name: "CFloor"),
        // Per-thread allocation counts (interposes malloc in the skvm executable).
        .target(name: "CAllocationCounter"),
        // `skvm bench exits`: what each kind of VM exit costs.
        .target(name: "Bench", dependencies: [
            "VMM", "KVM", "CKVM", "Boot", "Devices", "CFloor", "CAllocationCounter",
            .product(name: "Histogram", package: "hdrhistogram-swift"),
        ]),
        .executableTarget(
            name: "skvm",
            dependencies: [
                "VMM", "KVM", "CKVM", "Boot", "Bench", "CAllocationCounter", "Storage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(name: "TestSupport", dependencies: ["Memory", "Devices", "VirtioQueue", "Storage"], path: "Tests/TestSupport"),
        .testTarget(name: "MemoryTests", dependencies: ["Memory"]),
        .testTarget(name: "BootTests", dependencies: ["Boot", "Memory", "TestSupport"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "TestSupport"]),
        .testTarget(name: "VirtioQueueTests", dependencies: ["VirtioQueue", "TestSupport", "Memory"]),
        .testTarget(name: "PCITests", dependencies: ["PCI", "Devices"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage"]),
        .testTarget(name: "VirtioTests", dependencies: ["Virtio", "VirtioQueue", "Storage", "Network", "Memory", "PCI", "Devices", "TestSupport"]),
        .testTarget(name: "NetworkTests", dependencies: ["Network"]),
        .testTarget(name: "VMMTests", dependencies: ["VMM", "KVM", "Devices", "TestSupport"]),
        .testTarget(name: "BenchTests", dependencies: ["Bench"]),
        .testTarget(name: "IntegrationTests", dependencies: ["TestSupport"]),
    ]
)
