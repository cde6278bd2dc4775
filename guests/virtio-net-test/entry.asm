; =============================================================================
; virtio-net-test/entry.asm -- the CPL 0 part of virtio-net-test: from the
; Multiboot entry to a C program running in 64-bit user mode (CPL 3)
; =============================================================================
;
; This is virtio-blk-test/entry.asm with three names changed (the guest's
; name in messages, the C entry point vnt_main, the linker script); read
; that one first. Nothing else differs: the network driver needs the same
; ports (COM1, PCI configuration, debug-exit) and the same uncached 3-4 GiB.
;
; What this file does
; -------------------
; virtio-net-test is a virtio network driver and a test suite, written in C
; (virtio-net-test.c explains it). This file is everything the C code
; needs underneath it, and it is deliberately small, because on the host
; this was written on (KVM is PVM) every CPL 0 instruction is emulated, at
; about 1.5 million instructions per second, while CPL 3 code runs natively:
;
;  1. Multiboot entry, stack, GDT (common/boot32.inc), then 64-bit long mode
;     (common/longmode.inc) with an identity map of the first 4 GiB
;     (PT_GIB 4) whose pages are all user pages (PT_USER): the C program
;     reaches RAM, the Multiboot structures and the PCI MMIO hole from CPL 3.
;  2. The 3-4 GiB page directory is made uncacheable (PCD = PWT = 1), as
;     device registers must be: the virtio BARs live there (skvm and QEMU's
;     firmware place them in 0xC000_0000-0xFFFF_FFFF, and the C program
;     assigns unprogrammed BARs from 0xC000_0000 itself).
;  3. A GDT with user segments and a 64-bit TSS, and an IDT for the 32
;     exception vectors. The TSS carries RSP0 (the stack an exception from
;     CPL 3 switches to) and the I/O permission bitmap that lets CPL 3 use
;     exactly these ports (SDM Vol. 1, "I/O Permission Bit Map"):
;         0x0F4-0x0F7   isa-debug-exit (the verdict)
;         0x3F8-0x3FF   COM1 (output)
;         0xCF8-0xCFF   PCI configuration mechanism #1 (address, data)
;     RFLAGS.IOPL stays 0, so the bitmap is the only permission, on every
;     host alike (on PVM the guest's IOPL does not reach user mode anyway;
;     see cpl3/cpl3.asm).
;  4. IRETQ to CPL 3 with interrupts off (IF = 0): the driver polls and
;     never takes an interrupt. At CPL 3 it zeroes the C program's .bss
;     (natively: fast) and calls vnt_main(multiboot info address). The C
;     program ends the VM itself through port 0xF4.
;
; An exception anywhere lands in `unexpected` (CPL 0), which prints
;     virtio-net-test: FAIL (unexpected exception V, error code E, at RIP R)
; (V, E decimal and hex; R as 16 hex digits) and ends the VM with v = 2
; (exit status 5). No interrupt can arrive (IF = 0 at CPL 3, and the CPL 0
; part never sets it), so only vectors 0-31 have gates.
;
; Why 64-bit: the C code is compiled with gcc -m64 and linked into an ELF32
; file (ld --oformat elf32-i386: see guests/Makefile), because Multiboot
; loaders (QEMU's and skvm's) load ELF32 only. The 32-bit code of boot32.inc
; and longmode.inc assembles into this elf64 object unchanged (BITS 32 and
; 32-bit absolute addresses, everything below 2 GiB).
; =============================================================================

%define GUEST_NAME "virtio-net-test"
%define PT_USER                 ; every page-table level US = 1 (CPL 3 access)
%define PT_GIB 4                ; identity map 0-4 GiB: RAM and the MMIO hole
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"

KCODE_SEL           equ 0x08
KDATA_SEL           equ 0x10
UDATA_SEL           equ 0x18 | 3        ; RPL 3
UCODE_SEL           equ 0x20 | 3
TSS_SEL             equ 0x28

USER_RFLAGS         equ 0x0002          ; IOPL = 0, IF = 0, DF = 0, bit 1
USER_STACK_SIZE     equ 65536
TSS_RSP0            equ 4               ; offset of RSP0 in the 64-bit TSS

PTE_PWT             equ 1 << 3
PTE_PCD             equ 1 << 4

; HAS_ERROR_CODE(v): the CPU pushes an error code for these vectors (SDM
; Vol. 3A, "Exception and Interrupt Reference").
%define HAS_ERROR_CODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

    extern vnt_main                     ; virtio-net-test.c
    extern __c_bss_start, __c_bss_end   ; virtio-net-test/kernel64.ld

; ---- descriptor tables --------------------------------------------------------
    section .data
    align 16
gdt64:
    dq 0                                ; 0x00 null
    dq 0x00AF9A000000FFFF               ; 0x08 kernel code, L = 1, DPL 0
    dq 0x00CF92000000FFFF               ; 0x10 kernel data, DPL 0
    dq 0x00CFF2000000FFFF               ; 0x18 user data, DPL 3
    dq 0x00AFFA000000FFFF               ; 0x20 user code, L = 1, DPL 3
gdt64_tss:                              ; 0x28 64-bit TSS descriptor (16 bytes)
    dw tss_end - tss - 1                ;   limit 15:0
    dw 0                                ;   base 15:0   } split in at run time
    db 0                                ;   base 23:16  }
    db 0x89                             ;   P = 1, DPL 0, type 9 = available 64-bit TSS
    db 0x00                             ;   G = 0, limit 19:16 = 0
    db 0                                ;   base 31:24  }
    dd 0                                ;   base 63:32
    dd 0                                ;   reserved
gdt64_end:

    align 4
    dw 0
gdt64_descriptor:                       ; LGDT operand in 64-bit mode
    dw gdt64_end - gdt64 - 1
    dd gdt64, 0

    align 4
    dw 0
idt_descriptor:                         ; LIDT operand: 32 gates of 16 bytes
    dw 32 * 16 - 1
    dd idt, 0

    align 16
tss:
    dd 0                                ; 0   reserved
    dq 0                                ; 4   RSP0 (filled in at run time)
    dq 0, 0                             ; 12  RSP1, RSP2
    dq 0                                ; 28  reserved
    times 7 dq 0                        ; 36  IST1..IST7 (unused)
    dq 0                                ; 92  reserved
    dw 0                                ; 100 reserved
    dw iomap - tss                      ; 102 I/O map base address
; Bit n = port n, 0 = allowed; byte k holds ports 8k..8k+7. Ports past the
; map (and the TSS limit) are denied. The CPU reads two bytes per check, so
; one all-ones byte must follow the map.
iomap:
    times 0xF0 / 8 db 0xFF              ; 0x000-0x0EF denied
    db 0x0F                             ; 0x0F0-0x0F3 denied, 0x0F4-0x0F7 allowed
    times 0x3F8 / 8 - 0xF8 / 8 db 0xFF  ; 0x0F8-0x3F7 denied
    db 0x00                             ; 0x3F8-0x3FF (COM1) allowed
    times 0xCF8 / 8 - 0x400 / 8 db 0xFF ; 0x400-0xCF7 denied
    db 0x00                             ; 0xCF8-0xCFF (PCI config) allowed
    db 0xFF                             ; the required terminating byte
tss_end:

    align 4
isr_table:                              ; the handler of each exception vector
%assign v 0
%rep 32
    dd isr_%[v]
%assign v v + 1
%endrep

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
    ; 3-4 GiB (the fourth page directory): PCD | PWT = uncacheable.
    lea rdi, [rel pd + 3 * 4096]
    mov ecx, 512
.uncache:
    or dword [rdi], PTE_PCD | PTE_PWT
    add rdi, 8
    dec ecx
    jnz .uncache
    mov rax, cr3
    mov cr3, rax                        ; flush the TLB

    ; The TSS: its base into the descriptor (three fields), RSP0.
    mov eax, tss
    mov [rel gdt64_tss + 2], ax
    shr eax, 16
    mov [rel gdt64_tss + 4], al
    mov [rel gdt64_tss + 7], ah
    mov eax, boot_stack_top
    mov [rel tss + TSS_RSP0], rax

    lgdt [rel gdt64_descriptor]
    push KCODE_SEL                      ; reload CS: far return to .new_cs
    lea rax, [rel .new_cs]
    push rax
    retfq
.new_cs:
    mov ax, KDATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov ax, TSS_SEL
    ltr ax

    ; 32 interrupt gates (16 bytes each: offset 15:0, selector, IST 0 and
    ; type 0x8E = present, DPL 0, 64-bit interrupt gate, offset 31:16,
    ; offset 63:32 = 0, reserved).
    lea rdi, [rel idt]
    lea rsi, [rel isr_table]
    mov ecx, 32
.gate:
    mov eax, [rsi]
    mov [rdi], ax
    mov word [rdi + 2], KCODE_SEL
    mov word [rdi + 4], 0x8E00
    shr eax, 16
    mov [rdi + 6], ax
    mov qword [rdi + 8], 0
    add rsi, 4
    add rdi, 16
    dec ecx
    jnz .gate
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
    call vnt_main                       ; RSP is 16-byte aligned here
    ud2                                 ; vnt_main never returns

; ---- exceptions (entered at CPL 0) ---------------------------------------------
%assign v 0
%rep 32
isr_%[v]:
  %if !HAS_ERROR_CODE(v)
    push 0                              ; a dummy error code
  %endif
    push v
    jmp unexpected
%assign v v + 1
%endrep

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
