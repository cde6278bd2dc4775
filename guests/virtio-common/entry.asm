; =============================================================================
; virtio-common/entry.asm -- the CPL 0 part of the C guests (virtio-blk-test,
; virtio-net-test): from the Multiboot entry to a C program running in
; 64-bit user mode (CPL 3)
; =============================================================================
;
; What this file does
; -------------------
; virtio-blk-test and virtio-net-test are virtio drivers and test suites,
; written in C (virtio-blk-test.c explains virtio). This file is everything
; the C code needs underneath it, and it is deliberately small, because on
; the host this was written on (KVM is PVM) every CPL 0 instruction is
; emulated, at about 1.5 million instructions per second, while CPL 3 code
; runs natively:
;
;  1. Multiboot entry, stack, GDT (common/boot32.inc), then 64-bit long mode
;     (common/longmode.inc) with an identity map of the first 4 GiB
;     (PT_GIB 4) whose pages are all user pages (PT_USER): the C program
;     reaches RAM, the Multiboot structures and the PCI MMIO hole from CPL 3.
;  2. The 3-4 GiB page directory is made uncacheable (PCD = PWT = 1), as
;     device registers must be: the virtio BARs live there (skvm and QEMU's
;     firmware place them in 0xC000_0000-0xFFFF_FFFF, and the C program
;     assigns unprogrammed BARs from 0xC000_0000 itself).
;  3. A GDT with user segments and a 64-bit TSS (common/usermode.inc), and
;     an IDT for the 32 exception vectors (common/idt64.inc). The TSS
;     carries RSP0 (the stack an exception from CPL 3 switches to) and the
;     I/O permission bitmap that lets CPL 3 use exactly these ports (SDM
;     Vol. 1, "I/O Permission Bit Map"):
;         0x0F4-0x0F7   isa-debug-exit (the verdict)
;         0x3F8-0x3FF   COM1 (output)
;         0xCF8-0xCFF   PCI configuration mechanism #1 (address, data)
;     RFLAGS.IOPL stays 0, so the bitmap is the only permission, on every
;     host alike (on PVM the guest's IOPL does not reach user mode anyway;
;     see cpl3/cpl3.asm).
;  4. IRETQ to CPL 3 with interrupts off (IF = 0): the driver polls and
;     never takes an interrupt. At CPL 3 it zeroes the C program's .bss
;     (natively: fast) and calls guest_main(multiboot info address). The C
;     program ends the VM itself through port 0xF4.
;
; An exception anywhere lands in `unexpected` (CPL 0), which prints
;     GUEST: FAIL (unexpected exception V, error code E, at RIP R)
; (V, E decimal and hex; R as 16 hex digits) and ends the VM with v = 2
; (exit status 5). No interrupt can arrive (IF = 0 at CPL 3, and the CPL 0
; part never sets it), so only vectors 0-31 have gates.
;
; Why 64-bit: the C code is compiled with gcc -m64 and linked into an ELF32
; file (ld --oformat elf32-i386 with kernel64.ld: see guests/Makefile),
; because Multiboot loaders (QEMU's and skvm's) load ELF32 only. The 32-bit
; code of boot32.inc and longmode.inc assembles into this elf64 object
; unchanged (BITS 32 and 32-bit absolute addresses, everything below 2 GiB).
;
; One file, one object per guest: guests/Makefile assembles it once for
; each C guest with -DGUEST_NAME='"virtio-blk-test"' (or "virtio-net-test"),
; the GUEST of the messages above and of boot32.inc's and longmode.inc's.
; Every C guest's entry point is called guest_main. Both guests need the
; same ports (COM1, PCI configuration, debug-exit) and the same uncached
; 3-4 GiB, so nothing else differs.
; =============================================================================

%ifndef GUEST_NAME
  %error "define GUEST_NAME on nasm's command line (-D: see guests/Makefile)"
%endif
%define PT_USER                 ; every page-table level US = 1 (CPL 3 access)
%define PT_GIB 4                ; identity map 0-4 GiB: RAM and the MMIO hole
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"
%include "idt64.inc"

; The ports CPL 3 may use: the TSS's I/O permission bitmap (usermode.inc
; explains the format; it adds the terminating byte).
%macro IO_PERMISSION_BITMAP 0
    times 0xF0 / 8 db 0xFF              ; 0x000-0x0EF denied
    db 0x0F                             ; 0x0F0-0x0F3 denied, 0x0F4-0x0F7 allowed
    times 0x3F8 / 8 - 0xF8 / 8 db 0xFF  ; 0x0F8-0x3F7 denied
    db 0x00                             ; 0x3F8-0x3FF (COM1) allowed
    times 0xCF8 / 8 - 0x400 / 8 db 0xFF ; 0x400-0xCF7 denied
    db 0x00                             ; 0xCF8-0xCFF (PCI config) allowed
%endmacro
%include "usermode.inc"                 ; the GDT, the TSS, load_user_tables

USER_RFLAGS         equ 0x0002          ; IOPL = 0, IF = 0, DF = 0, bit 1
USER_STACK_SIZE     equ 65536


    extern guest_main                   ; the guest's C program
    extern __c_bss_start, __c_bss_end   ; virtio-common/kernel64.ld

; ---- the IDT --------------------------------------------------------------------
    section .data
    align 4
    dw 0
idt_descriptor:                         ; LIDT operand: 32 gates of 16 bytes
    dw 32 * 16 - 1
    dd idt, 0

    align 4
isr_table:                              ; the handler of each exception vector
    ISR_TABLE 32

    section .bss
    alignb 16
idt:    resb 32 * 16
    alignb 16
user_stack:
    resb USER_STACK_SIZE
user_stack_top:

; ---- CPL 0 --------------------------------------------------------------------
    section .text
    bits 32
kmain32:
    jmp enter_long_mode                 ; continues at kmain64 (64-bit, CPL 0)

    bits 64
kmain64:
    ; 3-4 GiB (the fourth page directory): PCD | PWT = uncacheable
    ; (longmode.inc).
    call uncache_top_gib

    ; The GDT with user segments, the TSS (RSP0, the I/O bitmap), TR
    ; (usermode.inc), then 32 exception gates (idt64.inc).
    call load_user_tables
    BUILD_IDT idt, isr_table, 32, KCODE_SEL
    lidt [rel idt_descriptor]

    ; To CPL 3: IRETQ pops RIP, CS, RFLAGS, RSP, SS.
    push UDATA_SEL
    push user_stack_top
    push USER_RFLAGS
    push UCODE_SEL
    push user_entry
    iretq

; ---- CPL 3 --------------------------------------------------------------------
user_entry:
    ; Zero the C program's .bss (C assumes it; these guests never rely on
    ; the loader for it). At CPL 3 REP STOSB runs natively.
    mov edi, __c_bss_start
    mov ecx, __c_bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb
    mov edi, [rel mb_info]              ; argument 1: Multiboot info address
    call guest_main                     ; RSP is 16-byte aligned here
    ud2                                 ; guest_main never returns

; ---- exceptions (entered at CPL 0) ---------------------------------------------
    EXCEPTION_STUBS 32, unexpected      ; isr_0..isr_31: push (0,) v, jmp unexpected

; Stack: vector, error code, RIP, CS, RFLAGS, RSP, SS.
unexpected:
    PRINT GUEST_NAME, ": FAIL (unexpected exception "
    mov rax, [rsp]
    call lm_putdec64
    PRINT ", error code 0x"
    mov rax, [rsp + 8]
    call lm_puthex64
    PRINT ", at RIP 0x"
    mov rax, [rsp + 16]
    call lm_puthex64
    PRINT ")", 10
    mov al, 2
    out DEBUG_EXIT_PORT, al             ; exit status (2 << 1) | 1 = 5
.hang:
    cli
    hlt
    jmp .hang
