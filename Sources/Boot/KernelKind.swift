// KernelKind.swift: which loader a kernel file needs, decided from its bytes.

/// The kinds of kernel skvm boots.
public enum KernelKind: Equatable, Sendable {
    /// A raw real-mode binary (only when the user says so with --flat).
    case flat
    /// A Multiboot (v1) kernel: a header in the first 8 KiB.
    case multiboot
    /// A Linux bzImage, or an x86-64 ELF vmlinux.
    case linux

    /// Detects the kind, or throws a BootError saying what the file looks like instead.
    public static func detect(_ image: [UInt8], flat: Bool) throws(BootError) -> KernelKind {
        if flat { return .flat }
        if try MultibootHeader.find(in: image) != nil { return .multiboot }
        if LinuxLoader.isBzImage(image) || LinuxLoader.isELFKernel(image) { return .linux }
        if ELFImage.isELF(image) {
            throw BootError("an ELF file that is neither a 64-bit Linux kernel nor a multiboot kernel")
        }
        throw BootError("not a kernel skvm can boot: no multiboot header in the first 8 KiB and no Linux setup header (for a raw real-mode binary, add --flat)")
    }
}
