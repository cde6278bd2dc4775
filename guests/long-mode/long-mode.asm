; =============================================================================
; long-mode.asm -- lesson 4: from 32-bit protected mode to 64-bit long mode
; =============================================================================
;
; What this guest does
; --------------------
; Boots as a Multiboot ELF32 kernel (32-bit protected mode, paging off),
; switches the CPU into 64-bit long mode by itself -- CPUID check, identity
; page tables, CR4.PAE, EFER.LME, CR0.PG, far jump to a 64-bit code
; segment; all of it is in common/longmode.inc, read that next -- and then,
; from 64-bit code:
;   1. prints "Hello from 64-bit long mode!";
;   2. reads the EFER MSR and prints its LME and LMA bits. LMA ("long mode
;      active") is set by the CPU itself, never by software: LMA=1 is the
;      hardware confirming the switch;
;   3. computes 20! = 2432902008176640000 = 0x21C3677C82B40000 with 64-bit
;      multiplications (IMUL RAX, RCX) and prints it. 20! needs 62 bits: a
;      32-bit register cannot hold it. More to the point, the bytes of this
;      code, if executed in 32-bit mode, would not compute it at all: the
;      REX.W prefix (0x48) that makes IMUL 64-bit decodes as `dec eax` in
;      32-bit mode. Printing the right number proves the CPU decoded the
;      instructions as 64-bit code;
;   4. checks both facts (LMA = 1, 20! correct). If either is wrong it
;      prints FAIL and ends through the debug-exit port with v = 2 (exit
;      status 5); otherwise it resets through the i8042 (exit status 0).
;
; Why it exists
; -------------
; It tests everything a VMM must get right for a 64-bit guest that does its
; own mode switch: CPUID (KVM_SET_CPUID2 must advertise LM and PAE, or step
; 0 in longmode.inc reports "no long mode" with exit status 5), the EFER
; MSR being writable, CR0/CR4/CR3 writes, paging through guest page tables,
; and far jumps through the guest's own GDT.
;
; Expected serial output (skvm and QEMU alike):
;     long-mode: multiboot OK, switching to long mode
;     Hello from 64-bit long mode!
;     long-mode: EFER.LME=1 EFER.LMA=1
;     long-mode: 20! = 2432902008176640000 = 0x21C3677C82B40000
;     long-mode: done, resetting via i8042
; Exit status: 0 (3: bad Multiboot magic; 5: no long mode, or a check failed).
; =============================================================================

%define GUEST_NAME "long-mode"
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"

FACT20              equ 0x21C3677C82B40000      ; 20! = 2432902008176640000

    section .text
    bits 32

kmain32:
    PRINT "long-mode: multiboot OK, switching to long mode", 10
    jmp enter_long_mode         ; continues at kmain64, in 64-bit mode

    bits 64

kmain64:
    PRINT "Hello from 64-bit long mode!", 10

    ; ---- EFER: LME (we set it) and LMA (the CPU set it) ----
    mov ecx, MSR_EFER
    rdmsr                       ; EDX:EAX = EFER (a CPL 0 instruction)
    mov ebx, eax                ; keep the low half (LME = bit 8, LMA = bit 10)
    PRINT "long-mode: EFER.LME="
    mov eax, ebx
    shr eax, 8
    and eax, 1
    call lm_putdec64
    PRINT " EFER.LMA="
    mov eax, ebx
    shr eax, 10
    and eax, 1                  ; writing EAX zero-extends into RAX
    call lm_putdec64
    PRINT 10
    test ebx, EFER_LMA
    jz .fail

    ; ---- 20! with 64-bit arithmetic ----
    mov eax, 1                  ; RAX = 1 (the running product)
    mov ecx, 1                  ; RCX = 1 .. 20
.multiply:
    imul rax, rcx               ; 64 x 64 -> low 64 bits
    inc ecx
    cmp ecx, 20
    jbe .multiply
    PRINT "long-mode: 20! = "
    call lm_putdec64
    PRINT " = 0x"
    call lm_puthex64
    PRINT 10
    mov rdx, FACT20             ; a 64-bit immediate (MOV r64, imm64)
    cmp rax, rdx
    jne .fail

    PRINT "long-mode: done, resetting via i8042", 10
    I8042_RESET

.fail:
    PRINT "long-mode: FAIL: not really in 64-bit long mode", 10
    mov al, 2
    out DEBUG_EXIT_PORT, al     ; exit status (2 << 1) | 1 = 5
.hang:
    cli
    hlt
    jmp .hang
