; =============================================================================
; cpl3.asm -- lesson 5: dropping to user mode (CPL 3) in 64-bit long mode
; =============================================================================
;
; What this guest does
; --------------------
;  1. Boots via Multiboot and enters 64-bit long mode (common/longmode.inc),
;     with PT_USER defined so every page-table level has US = 1: user code
;     may touch all of the first 1 GiB. (A real kernel would of course keep
;     its own pages supervisor-only; this is a test, not an OS.)
;  2. At CPL 0, builds the descriptor tables user mode needs and loads them
;     (the code and the tables are in common/usermode.inc, shared with the
;     other user-mode guests; its opening comment has the details):
;       a new GDT: kernel code/data (DPL 0), user data/code (DPL 3) and a
;                  64-bit TSS descriptor;
;       the TSS:   its RSP0 field = the kernel stack. When an interrupt or
;                  exception arrives while the CPU runs at CPL 3, the CPU
;                  switches to the stack in TSS.RSP0 before pushing anything
;                  (SDM Vol. 3A, "Stack Switching in IA-32e Mode"). Without
;                  a TSS with a valid RSP0, no event could ever bring the
;                  CPU back from CPL 3 to CPL 0. The TSS also carries an
;                  I/O permission bitmap: see "Letting CPL 3 do I/O";
;       TR:        LTR loads the TSS selector (and marks it busy in the GDT,
;                  so the GDT must be in writable memory);
;       an empty IDT: see "The guard" below.
;  3. Drops to CPL 3 with IRETQ. IRETQ pops RIP, CS, RFLAGS, RSP, SS; if the
;     new CS has RPL 3 the CPU changes privilege level. We push
;       SS = user data selector | 3, RSP = top of the user stack,
;       RFLAGS = 0x3002: IOPL = 3 (bits 13:12), IF = 0, bit 1 (always 1),
;       CS = user code selector | 3, RIP = user_main.
;     IOPL = 3 lets CPL 3 code execute IN/OUT, so user mode can print and
;     can end the VM through the debug-exit port itself.
;  4. At CPL 3:
;       - reads CS and prints its low two bits (the RPL of CS is the current
;         privilege level, CPL), which must be 3;
;       - runs 10,000,000 steps of Marsaglia's xorshift64 generator
;         (x ^= x << 13; x ^= x >> 7; x ^= x << 17) from the seed
;         88172645463325252 and prints the result, 0x2A2EDEEF160A3819;
;       - ends the VM with an 8-bit OUT to port 0xF4: v = 0 (exit status 1)
;         if CPL = 3 and the result matches, v = 1 (exit status 3) if not.
;
; Why it exists
; -------------
; It exercises what a VMM must get right for user-mode guests: guest
; privilege levels, a TSS and TR (KVM tracks them in the segment registers
; it reports with KVM_GET_SREGS), IRETQ across privilege levels, page
; tables with user pages, and I/O exits from CPL 3 allowed by IOPL. And it
; is the one guest with a real workload: on the host this was written on,
; KVM emulates CPL 0 code instruction by instruction, but runs CPL 3 code
; natively, so the 10-million-step loop (70 million instructions) runs at
; CPL 3 and takes milliseconds.
;
; Letting CPL 3 do I/O: IOPL and the I/O permission bitmap
; ---------------------------------------------------------
; IN/OUT are "I/O-sensitive": the CPU allows them outright when CPL <= IOPL
; (RFLAGS bits 13:12). Otherwise it looks the port up in the I/O permission
; bitmap of the current TSS and raises #GP unless every bit for the accessed
; bytes is 0 (SDM Vol. 1, "I/O Privilege Level" and "I/O Permission Bit
; Map"). We use BOTH mechanisms:
;   - RFLAGS.IOPL = 3, so on a normal VT-x/AMD-V host (and in QEMU's
;     emulator) user mode may use every port;
;   - a bitmap granting exactly the ports we use (0xF4-0xF7 and COM1's
;     0x3F8-0x3FF), everything else denied: IO_PERMISSION_BITMAP below,
;     placed in the TSS by common/usermode.inc.
; The bitmap is not decoration. On the host this book was written on, KVM
; is PVM (a "pagetable-based" KVM that runs guest user mode as an ordinary
; host process at hardware CPL 3). Hardware IOPL there always stays 0 --
; giving a host process IOPL 3 would let it disable host interrupts -- and
; the guest's IOPL = 3 does not survive the trip into user mode, so every
; guest IN/OUT at CPL 3 traps into KVM. KVM's instruction emulator then
; applies the architectural rule above: IOPL fails, so it reads the GUEST's
; TSS bitmap (found through the TR that LTR loaded). With IOPL alone this
; guest triple-faults at its first IN there; with the bitmap it passes
; everywhere. Lesson for a VMM author: a virtual CPU's "architectural" state
; is only as faithful as the layer that implements it, and guests that use
; the architecture's official mechanisms survive such differences best.

; The guard: faults at CPL 3 become a triple fault
; ------------------------------------------------
; We load an IDT with limit 0 (LIDT with a zero-length table). Then any
; exception -- say a #GP because user code executed a privileged
; instruction -- cannot find its IDT gate, which raises #GP; delivering that
; fails the same way, giving a double fault (#DF), whose delivery fails too:
; a TRIPLE FAULT. The CPU enters shutdown, and KVM reports it to the VMM as
; KVM_EXIT_SHUTDOWN, which skvm reports as a guest triple fault (QEMU with
; -no-reboot simply exits). An explicitly empty IDT makes this deterministic:
; without LIDT, the IDTR would still hold whatever the loader left (often
; the real-mode vector table at address 0), and an exception would jump
; through garbage. Interrupts cannot arrive: RFLAGS.IF = 0 at CPL 3.
;
; Segment layout: common/usermode.inc has the table (kernel code 0x08 and
; data 0x10 at DPL 0, user data 0x1B and code 0x23 at DPL 3, the TSS at
; 0x28) and the descriptor values, explained.
;
; Expected serial output (skvm and QEMU alike):
;     cpl3: multiboot OK, switching to long mode
;     cpl3: in 64-bit long mode at CPL 0, loading GDT, TSS and an empty IDT
;     cpl3: hello from user mode, CPL = 3
;     cpl3: xorshift64 x 10000000 = 0x2A2EDEEF160A3819
;     cpl3: result OK, exiting via port 0xF4 with v = 0
; Exit status: 1 (pass). 3: bad Multiboot magic, wrong CPL or wrong result;
; 5: no long mode. A triple fault means something faulted.
; =============================================================================

%define GUEST_NAME "cpl3"
%define PT_USER                 ; user-accessible page tables (longmode.inc)
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"

; The I/O permission bitmap: one bit per port, 0 = allowed, 1 = #GP. It
; covers ports 0x000-0x3FF (128 bytes); ports beyond the TSS limit are
; denied. usermode.inc puts it in the TSS and adds the extra byte of all
; ones the SDM requires (the CPU may read two bytes at a time).
%macro IO_PERMISSION_BITMAP 0
    times 0xF4 / 8 db 0xFF              ; ports 0x000-0x0EF: denied
    db 0x0F                             ; 0x0F0-0x0F3 denied, 0x0F4-0x0F7 allowed
    times 0x3F8 / 8 - 0xF4 / 8 - 1 db 0xFF  ; ports 0x0F8-0x3F7: denied
    db 0x00                             ; ports 0x3F8-0x3FF (COM1): allowed
%endmacro
%include "usermode.inc"                 ; the GDT, the TSS, load_user_tables

USER_RFLAGS         equ 0x3002          ; IOPL = 3, IF = 0, reserved bit 1
USER_STACK_SIZE     equ 16384

XORSHIFT_SEED       equ 88172645463325252       ; Marsaglia (2003), 0x0139408DCBBF7A44
XORSHIFT_STEPS      equ 10000000
XORSHIFT_EXPECTED   equ 0x2A2EDEEF160A3819

; ---- the empty IDT ----------------------------------------------------------
    section .data
    align 4
    dw 0
empty_idt_descriptor:                   ; limit 0: no gate is valid
    dw 0
    dq 0

    section .bss
    alignb 16
user_stack:
    resb USER_STACK_SIZE
user_stack_top:

; ---- CPL 0 ------------------------------------------------------------------
    section .text
    bits 32

kmain32:
    PRINT "cpl3: multiboot OK, switching to long mode", 10
    jmp enter_long_mode         ; continues at kmain64, in 64-bit mode

    bits 64

kmain64:
    PRINT "cpl3: in 64-bit long mode at CPL 0, loading GDT, TSS and an empty IDT", 10

    ; The GDT with user segments, the TSS (RSP0 = the kernel stack, the I/O
    ; bitmap) and TR: see common/usermode.inc, which explains each step (the
    ; TSS base split over three descriptor fields, the far return that
    ; reloads CS, LTR marking the TSS busy).
    call load_user_tables

    lidt [rel empty_idt_descriptor]   ; the guard: any fault = triple fault

    ; Build the IRETQ frame (pushed in reverse order of popping) and go.
    push UDATA_SEL              ; SS
    push user_stack_top         ; RSP
    push USER_RFLAGS            ; RFLAGS: IOPL = 3, IF = 0
    push UCODE_SEL              ; CS  (RPL 3 -> CPL becomes 3)
    push user_main              ; RIP
    iretq

; ---- CPL 3 ------------------------------------------------------------------
user_main:
    ; The privilege level we run at is the RPL field of CS (bits 1:0).
    ; Reading CS is allowed at any privilege level. We print only those two
    ; bits, not the whole selector: on the PVM host mentioned above, user
    ; mode really runs in the HOST's user code segment, so `mov ax, cs`
    ; reads the host's selector 0x33 instead of our 0x23. Its RPL is 3 all
    ; the same.
    mov ax, cs
    movzx ebx, ax
    and ebx, 3                  ; EBX = CPL
    PRINT "cpl3: hello from user mode, CPL = "
    mov eax, ebx
    call lm_putdec64
    PRINT 10

    ; xorshift64, entirely in registers: runs natively at CPL 3.
    mov rax, XORSHIFT_SEED
    mov ecx, XORSHIFT_STEPS
.step:
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx                ; x ^= x << 13
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx                ; x ^= x >> 7
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx                ; x ^= x << 17
    dec ecx
    jnz .step

    PRINT "cpl3: xorshift64 x 10000000 = 0x"
    call lm_puthex64
    PRINT 10

    cmp ebx, 3
    jne .fail
    mov rdx, XORSHIFT_EXPECTED
    cmp rax, rdx
    jne .fail

    PRINT "cpl3: result OK, exiting via port 0xF4 with v = 0", 10
    mov al, 0
    out DEBUG_EXIT_PORT, al     ; exit status (0 << 1) | 1 = 1
    jmp .no_exit

.fail:
    PRINT "cpl3: FAIL (expected CPL 3 and 0x2A2EDEEF160A3819), exiting with v = 1", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al     ; exit status (1 << 1) | 1 = 3

.no_exit:
    ; Only reached if nothing listens on port 0xF4. User mode may not HLT,
    ; so end things the only way CPL 3 can: fault on purpose (UD2 = invalid
    ; opcode) and let the empty IDT turn it into a triple fault.
    PRINT "cpl3: port 0xF4 did not end the VM; forcing a triple fault", 10
    ud2
