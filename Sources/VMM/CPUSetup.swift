// CPUSetup.swift: applying a loader's BootCPUState to a KVM vCPU.

import Boot
import CKVM
import KVM

extension VCPU {
    /// Sets segments, control registers and general registers from `state`;
    /// everything else keeps KVM's reset values.
    func apply(_ state: BootCPUState) throws(KVMError) {
        var s = try specialRegisters()
        s.cs = kvmSegment(state.cs)
        let data = kvmSegment(state.data)
        s.ds = data
        s.es = data
        s.fs = data
        s.gs = data
        s.ss = data
        if let gdt = state.gdt {
            s.gdt.base = gdt.base
            s.gdt.limit = gdt.limit
        }
        if let idt = state.idt {
            s.idt.base = idt.base
            s.idt.limit = idt.limit
        }
        s.cr0 = state.cr0
        s.cr3 = state.cr3
        s.cr4 = state.cr4
        s.efer = state.efer
        try setSpecialRegisters(s)

        var r = kvm_regs()
        r.rip = state.rip
        r.rsp = state.rsp
        r.rflags = state.rflags
        r.rax = state.rax
        r.rbx = state.rbx
        r.rsi = state.rsi
        try setRegisters(r)

        // x87 and SSE as after FNINIT / reset: all exceptions masked.
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        try setFPU(fpu)
    }
}

func kvmSegment(_ s: SegmentState) -> kvm_segment {
    var k = kvm_segment()
    k.base = s.base
    k.limit = s.limit
    k.selector = s.selector
    k.type = s.type
    k.present = s.present ? 1 : 0
    k.dpl = s.dpl
    k.db = s.db ? 1 : 0
    k.s = s.s ? 1 : 0
    k.l = s.l ? 1 : 0
    k.g = s.g ? 1 : 0
    return k
}
