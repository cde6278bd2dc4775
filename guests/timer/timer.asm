; =============================================================================
; timer.asm -- lesson guest: taking a timer interrupt
; =============================================================================
;
; What this guest teaches
; -----------------------
; How an interrupt reaches a guest under KVM, end to end, with nothing in the
; VMM's userspace involved at all:
;
;   i8254 PIT channel 0  --IRQ 0-->  8259 PIC (master)  --INTR-->  local APIC
;   LINT0 (ExtINT, "virtual wire")  -->  the CPU  -->  IDT vector 0x20
;
; All three chips are KVM's in-kernel models (KVM_CREATE_PIT2 and
; KVM_CREATE_IRQCHIP): the PIT's timer fires inside the kernel, KVM raises
; the PIC's line, and KVM injects the vector into the vCPU when it is
; interruptible. skvm only set LINT0 to ExtINT at start (as a BIOS does);
; `skvm run --stats` shows no IO exits for any of it, only for our own
; port writes below.
;
; The steps (Intel 8259A datasheet "Initialization Command Words"; i8254
; datasheet "Mode 2: rate generator"; Intel SDM Vol. 3A 6.11 "IDT
; Descriptors"):
;   0. Enter 64-bit long mode (common/longmode.inc). Why not stay in 32-bit
;      protected mode? On a PVM host KVM emulates guest kernel code, and its
;      instruction emulator cannot run a 32-bit protected-mode IRET (skvm
;      reports "instruction bytes: cf ..."); 64-bit IRETQ works. On VT-x or
;      AMD-V either would do.
;   1. An IDT whose 48 entries are 64-bit interrupt gates (16 bytes each):
;      vector 0x20 -> the tick handler; every other vector -> a handler that
;      reports it and ends the VM (a guest with no IDT would triple-fault).
;   2. Remap the PICs: ICW1 0x11 (edge, cascade, ICW4 follows), ICW2 the
;      vector base (master 0x20, slave 0x28: vectors 0-31 are the CPU's own
;      exceptions), ICW3 the cascade wiring (slave on IRQ 2), ICW4 0x01
;      (8086 mode). Then mask everything but IRQ 0.
;   3. Program PIT channel 0 in mode 2 with divisor 11932: 1193182 Hz /
;      11932 = 100 interrupts per second.
;   4. `sti`, then `hlt` until 10 ticks have been counted. HLT with an
;      in-kernel LAPIC does not exit to userspace: the vCPU sleeps in KVM
;      until the next interrupt.
;   5. Each tick: count it, send a non-specific EOI (0x20 to port 0x20) so
;      the PIC delivers the next one, `iretq`.
;
; Expected serial output:
;     timer: PIC at vector 0x20, PIT channel 0 at 100 Hz, waiting for 10 ticks
;     timer: 10 ticks arrived through PIT -> PIC -> LAPIC LINT0 -> IDT vector 0x20
; Exit status: 1 (debug-exit v = 0). An unexpected vector: status 3.
; =============================================================================

%define GUEST_NAME "timer"
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"

PIC_MASTER_CMD  equ 0x20
PIC_MASTER_DATA equ 0x21
PIC_SLAVE_CMD   equ 0xA0
PIC_SLAVE_DATA  equ 0xA1
PIT_CHANNEL0    equ 0x40
PIT_MODE        equ 0x43
TIMER_VECTOR    equ 0x20
VECTORS         equ 48
TICKS_WANTED    equ 10

    section .text
    bits 32

kmain32:
    jmp enter_long_mode         ; continues at kmain64, in 64-bit mode

    bits 64

kmain64:
    ; ---- 1. the IDT: 48 interrupt gates of 16 bytes ----
    lea rdi, [rel idt]
    xor ecx, ecx
.gate:
    lea rax, [rel unexpected]
    cmp ecx, TIMER_VECTOR
    jne .set
    lea rax, [rel tick]
.set:
    mov [rdi], ax               ; offset 15:0
    mov word [rdi + 2], 0x18    ; the 64-bit code selector (common/boot32.inc)
    mov byte [rdi + 4], 0       ; IST 0
    mov byte [rdi + 5], 0x8E    ; present, DPL 0, 64-bit interrupt gate
    shr rax, 16
    mov [rdi + 6], ax           ; offset 31:16
    shr rax, 16
    mov [rdi + 8], eax          ; offset 63:32
    mov dword [rdi + 12], 0
    add rdi, 16
    inc ecx
    cmp ecx, VECTORS
    jb .gate
    lidt [rel idt_descriptor]
    ; ---- 2. remap and mask the PICs ----
    mov al, 0x11
    out PIC_MASTER_CMD, al
    out PIC_SLAVE_CMD, al
    mov al, TIMER_VECTOR
    out PIC_MASTER_DATA, al     ; ICW2: master vectors 0x20-0x27
    mov al, TIMER_VECTOR + 8
    out PIC_SLAVE_DATA, al      ; ICW2: slave vectors 0x28-0x2F
    mov al, 0x04
    out PIC_MASTER_DATA, al     ; ICW3: a slave on IRQ 2
    mov al, 0x02
    out PIC_SLAVE_DATA, al      ; ICW3: the slave's cascade identity
    mov al, 0x01
    out PIC_MASTER_DATA, al     ; ICW4: 8086 mode
    out PIC_SLAVE_DATA, al
    mov al, 0xFE
    out PIC_MASTER_DATA, al     ; OCW1: only IRQ 0 unmasked
    mov al, 0xFF
    out PIC_SLAVE_DATA, al

    ; ---- 3. PIT channel 0, mode 2, 100 Hz ----
    mov al, 0x34                ; channel 0, lobyte/hibyte, mode 2, binary
    out PIT_MODE, al
    mov ax, 11932
    out PIT_CHANNEL0, al
    mov al, ah
    out PIT_CHANNEL0, al

    PRINT "timer: PIC at vector 0x20, PIT channel 0 at 100 Hz, waiting for 10 ticks", 10

    ; ---- 4. sleep until enough ticks ----
    sti
.wait:
    hlt
    cmp dword [rel ticks], TICKS_WANTED
    jb .wait
    cli

    PRINT "timer: 10 ticks arrived through PIT -> PIC -> LAPIC LINT0 -> IDT vector 0x20", 10
    xor eax, eax
    out DEBUG_EXIT_PORT, al     ; status 1
.hang:
    hlt
    jmp .hang

; ---- 5. the tick handler ----
tick:
    push rax
    inc dword [rel ticks]
    mov al, 0x20
    out PIC_MASTER_CMD, al      ; non-specific EOI
    pop rax
    iretq

; Any other vector: say so and end the VM with status 3.
unexpected:
    cli
    PRINT "timer: unexpected interrupt or exception", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al
    jmp .hang2
.hang2:
    hlt
    jmp .hang2

    section .data
    align 8
idt_descriptor:
    dw VECTORS * 16 - 1
    dd idt, 0                   ; a 64-bit base; the guest lives below 4 GiB (ELF32 relocation)
ticks:
    dd 0

    section .bss
    align 8
idt:
    resb VECTORS * 16
