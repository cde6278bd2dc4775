; =============================================================================
; triple-fault.asm -- lesson: how a CPU gives up (and how a VMM hears of it)
; =============================================================================
;
; What this guest does
; --------------------
; Prints one line, loads an Interrupt Descriptor Table whose limit is 0,
; and divides by zero. Nothing else: the CPU shuts down, KVM returns
; KVM_EXIT_SHUTDOWN from KVM_RUN, and skvm reports "guest triple-faulted"
; and exits with status 6.
;
; Why it exists
; -------------
; Every guest here that goes wrong in its first instructions ends in a
; triple fault (cpl3 even relies on it as a guard), so a VMM must turn
; KVM_EXIT_SHUTDOWN into a clear message instead of hanging or looping.
; This guest produces one on purpose, so that path has a test.
;
; The escalation, step by step
; ----------------------------
; (Intel SDM Vol. 3A, chapter "Interrupt and Exception Handling": section
; 6.10 "Interrupt Descriptor Table (IDT)", and section 6.15 "Exception and
; Interrupt Reference", entries "Interrupt 0 -- Divide Error Exception
; (#DE)", "Interrupt 8 -- Double Fault Exception (#DF)" with its table
; "Conditions for Generating a Double Fault", and "Interrupt 13 -- General
; Protection Exception (#GP)". AMD APM Vol. 2, section 8.2.9 "#DF" says the
; same.)
;
;  1. DIV with a zero divisor raises #DE, vector 0.
;  2. To deliver vector 0 the CPU reads the 8-byte gate at IDT base + 0*8.
;     The gate's last byte is at offset 7, beyond our limit of 0, so the
;     gate is "outside the IDT limit": the CPU raises #GP instead of
;     calling a handler (its error code names IDT entry 0, with the IDT
;     bit and the EXT bit set: it happened while delivering an event).
;  3. #DE and #GP are both "contributory" exceptions. A contributory
;     exception raised while delivering another contributory exception
;     becomes a DOUBLE FAULT, #DF, vector 8.
;  4. Delivering #DF needs gate 8, also beyond the limit, so delivery fails
;     again. The SDM (interrupt 8, "Description"): "If another exception
;     occurs while attempting to call the double-fault handler, the
;     processor enters shutdown mode." That is
;     the TRIPLE FAULT. A shutdown CPU stops executing; on a PC the chipset
;     notices the shutdown cycle and resets the machine, which is why a
;     broken kernel "reboots" on its own.
;
; Under KVM the VM exit for a triple fault (VMX exit reason 2 "triple
; fault", SVM's SHUTDOWN intercept) reaches userspace as KVM_EXIT_SHUTDOWN.
; The VMM decides what a shutdown means: QEMU resets the guest, or with
; -no-reboot simply exits (status 0); skvm ends the VM and exits with
; status 6 ("the guest triple-faulted"), naming the vCPU and its RIP.
;
; Why an IDT with limit 0 rather than no LIDT at all: right after Multiboot
; the IDTR holds whatever the loader left behind (skvm: KVM's reset value,
; base 0 limit 0xFFFF, i.e. the real-mode vector table at address 0), and a
; #DE would then jump through whatever bytes are at address 0. LIDT with a
; zero limit makes the outcome the same on every loader.
;
; Expected serial output (skvm and QEMU alike):
;     triple-fault: loading an empty IDT and dividing by zero
; Exit status under skvm: 6 (KVM_EXIT_SHUTDOWN). Under QEMU -no-reboot: 0.
; If the division somehow returns, the guest says so and exits with v = 1
; (status 3).
; =============================================================================

%define GUEST_NAME "triple-fault"
%include "boot32.inc"

    section .data
    align 4
    dw 0                        ; padding so the base below is 4-aligned
empty_idt_descriptor:           ; the 6-byte operand of LIDT in 32-bit mode
    dw 0                        ; limit 0: not even gate 0 fits
    dd 0                        ; base (irrelevant: nothing is in bounds)

    section .text
    bits 32

kmain32:
    PRINT "triple-fault: loading an empty IDT and dividing by zero", 10
    lidt [empty_idt_descriptor]
    xor eax, eax                ; dividend EDX:EAX = 0
    xor edx, edx
    xor ecx, ecx                ; divisor 0
    div ecx                     ; #DE -> #GP -> #DF -> shutdown (see above)

    ; Not reached on a correct CPU or VMM.
    PRINT "triple-fault: FAIL: the division by zero returned", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al     ; exit status (1 << 1) | 1 = 3
.hang:
    hlt
    jmp .hang
