// KVMSystem.swift: the /dev/kvm handle (Documentation/virt/kvm/api.rst §4, "system ioctls").
//
// Opening /dev/kvm gives a "system" fd. It answers questions about this host's
// KVM (API version, capabilities, the CPUID it can virtualise) and creates VMs.

#if canImport(Glibc)
import Glibc
#endif
import CKVM

/// The /dev/kvm device.
public final class KVMSystem: Sendable {
    /// The only KVM API version there has ever been (api.rst: "KVM_GET_API_VERSION ... returns 12").
    public static let expectedAPIVersion: Int32 = 12

    /// The device path (normally "/dev/kvm").
    public let path: String
    private let fd: OwnedFileDescriptor

    /// Opens the KVM device at `path`.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        self.path = path
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw KVMError(operation: "open", errno: errno, context: path) }
        self.fd = OwnedFileDescriptor(fd)
    }

    /// KVM_GET_API_VERSION.
    public func apiVersion() throws(KVMError) -> Int32 {
        try check("KVM_GET_API_VERSION") { ckvm_ioctl(fd.rawValue, CKVM_GET_API_VERSION, 0) }
    }

    /// KVM_CHECK_EXTENSION: 0 when `capability` is absent, otherwise a positive
    /// value whose meaning depends on the capability (often a count or limit).
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, ckvm_ioctl(fd.rawValue, CKVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's shared `kvm_run` area.
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try check("KVM_GET_VCPU_MMAP_SIZE") { ckvm_ioctl(fd.rawValue, CKVM_GET_VCPU_MMAP_SIZE, 0) })
    }

    /// KVM_GET_SUPPORTED_CPUID: every CPUID leaf KVM can present to a guest.
    public func supportedCPUID() throws(KVMError) -> [kvm_cpuid_entry2] {
        // The ioctl fails with E2BIG when the buffer is too small: grow and retry.
        var capacity = 128
        while true {
            var block = FlexibleArray<kvm_cpuid_entry2>(capacity: capacity)
            let fd = self.fd.rawValue
            let r = block.withPointer { p in ckvm_ioctl_ptr(fd, CKVM_GET_SUPPORTED_CPUID, p) }
            if r >= 0 { return block.entries }
            guard -r == E2BIG, capacity < 4096 else {
                throw KVMError(operation: "KVM_GET_SUPPORTED_CPUID", errno: -r)
            }
            capacity *= 2
        }
    }

    /// KVM_CREATE_VM: a new, empty virtual machine.
    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmfd = try check("KVM_CREATE_VM") { ckvm_ioctl(fd.rawValue, CKVM_CREATE_VM, 0) }
        return VirtualMachine(fd: OwnedFileDescriptor(vmfd), runSize: try vcpuMmapSize())
    }
}
