; =============================================================================
; testdev.asm -- lesson: QEMU's pc-testdev, the KVM unit tests' helper device
; =============================================================================
;
; What this guest does
; --------------------
; Exercises every function of QEMU's `-device pc-testdev` (QEMU
; hw/misc/pc-testdev.c; the kvm-unit-tests x86 tests rely on it) and prints
; each value it reads, so the output under QEMU and under skvm's
; `--test-device` can be compared byte for byte:
;
;   port 0xE0-0xE3     a 32-bit scratch register. An access of any width at
;                      0xE0 + k uses byte lanes: a 16-bit IN at 0xE2 returns
;                      bits 31:16, an 8-bit OUT at 0xE1 replaces bits 15:8.
;                      It reads 0 before anything is written.
;   port 0xE4          "flush page", write-only, 32 bits: QEMU takes the
;                      value as a guest-physical address, and drops and
;                      re-creates its host mapping of that 4 KiB page
;                      (mprotect PROT_NONE, then read/write). The guest must
;                      see its data unchanged afterwards.
;   port 0xE8-0xEB     the same scratch register as 0xE0, through a region
;                      QEMU splits into 1-byte accesses: a 32-bit IN at 0xE8
;                      is four byte reads, so the result is the same.
;   port 0x2000-0x2017 "IRQ lines", 8-bit OUTs only: writing v to 0x2000 + n
;                      sets ISA interrupt line n to (v != 0). Write 1 then
;                      0 to give an edge-triggered line one edge.
;   MMIO 0xFF000000    64 KiB of scratch memory behind a device (every
;                      access is an MMIO exit, unlike RAM); reads 0 until
;                      written.
;
; The interrupt test
; ------------------
; To see an interrupt arrive, the guest needs an IDT and a programmed 8259
; PIC pair (the PC's interrupt controllers: Intel 8259A data sheet;
; ports 0x20/0x21 master, 0xA0/0xA1 slave):
;     ICW1 0x11   edge triggered, cascade, ICW4 follows   (to 0x20 and 0xA0)
;     ICW2 0x20 / 0x28   vector base: IRQ 0-7 -> 0x20-0x27, IRQ 8-15 -> 0x28-0x2F
;     ICW3 0x04 / 0x02   the slave hangs on the master's IRQ 2
;     ICW4 0x01   8086 mode, normal EOI
;     OCW1 0xDF / 0xFF   masks: only IRQ 5 is let through
; The BIOS (QEMU) or nobody (skvm) programmed the PICs before; ICW1
; restarts the initialisation either way. The LAPIC's LINT0 must pass
; ExtINT (the PIC's output) to the CPU: SeaBIOS leaves it so under QEMU, and
; KVM's reset state of the boot CPU's LAPIC does the same under skvm.
; The IDT has 48 32-bit interrupt gates: 0-31 (exceptions: a FAIL, then the
; verdict) and 32-47 (the PIC's 16 vectors: each counts its arrivals and
; sends a non-specific EOI, 0x20 to port 0x20, and to 0xA0 first for the
; slave's). With STI:
;     out 0x2005, 1 ; (wait for vector 0x25) ; out 0x2005, 0   -> 1 interrupt
;     out 0x2006, 1 ; (wait) ; out 0x2006, 0                   -> 0: IRQ 6 is masked
; and no other vector may arrive at all.
;
; Returning without IRET
; ----------------------
; The handler does not end with IRETD. On hosts whose KVM is PVM, every
; instruction a 32-bit guest runs at CPL 0 goes through KVM's instruction
; emulator (arch/x86/kvm/emulate.c), and its em_iret implements IRET in
; real mode only: in protected mode it gives up ("iret from protected mode
; unimplemented yet"), and the VMM gets KVM_EXIT_INTERNAL_ERROR (QEMU
; prints "KVM internal error. Suberror: 1 ... emulation failure"). For a
; return to the same privilege level with a flat code segment -- the only
; kind this guest has -- IRETD does three things: pop EIP, pop CS (the same
; selector), pop EFLAGS. So the handler does
;     push dword [esp + 8]   ; a copy of the saved EFLAGS
;     popfd                  ; restores IF (and the rest)
;     ret 8                  ; pops EIP, then discards CS and EFLAGS
; which the emulator knows, and which real CPUs and other KVMs run as well.
; (An interrupt arriving between POPFD and RET nests one level deeper and
; returns the same way.)
;
; Every value is checked (common/check.inc); the expected ones follow from
; pc-testdev.c. Expected serial output (QEMU 7.2 and skvm): see
; guests/README.md (49 lines, "testdev: all 33 checks passed", exit
; status 1). An unexpected exception prints
;     testdev: FAIL: unexpected exception V (stack 0x........ 0x........)
; (the two dwords above the vector: the error code and EIP, or EIP and CS,
; depending on the vector) and ends the test (v = 1, exit status 3).
; =============================================================================

%define GUEST_NAME "testdev"
%include "boot32.inc"
%include "check.inc"

TESTDEV_PORT        equ 0xE0
TESTDEV_FLUSH       equ 0xE4
TESTDEV_BYTE_PORT   equ 0xE8
TESTDEV_IRQ         equ 0x2000
TESTDEV_MMIO        equ 0xFF000000

FLUSH_PAGE          equ 0x200000            ; RAM above the kernel: our choice
PATTERN_MULTIPLIER  equ 0x9E3779B9          ; dword i of the page = i * this + 1

PIC1_CMD            equ 0x20
PIC1_DATA           equ 0x21
PIC2_CMD            equ 0xA0
PIC2_DATA           equ 0xA1
PIC_EOI             equ 0x20
IRQ_BASE            equ 0x20
IDT_ENTRIES         equ 48

IRQ_WAIT_POLLS      equ 100000              ; bound on waiting for IRQ 5
QUIET_LOOPS         equ 20000               ; time for a stray interrupt to show

    section .text
    bits 32

; ---- the printing and checking macros ----------------------------------------
; IN_CHECK port, width, expected: IN of `width` bytes, print, check.
%macro IN_CHECK 3
    %defstr %%port %1
    xor eax, eax
    mov dx, %1
  %if %2 == 1
    in al, dx
    PRINT "testdev: in ", %%port, " (1 byte) = "
  %elif %2 == 2
    in ax, dx
    PRINT "testdev: in ", %%port, " (2 bytes) = "
  %else
    in eax, dx
    PRINT "testdev: in ", %%port, " (4 bytes) = "
  %endif
    mov edx, %3
    mov ecx, %2 * 2
    call check_hex
%endmacro

; OUT_PRINT port, width, value: print, then OUT of `width` bytes.
%macro OUT_PRINT 3
    %defstr %%port %1
    %defstr %%value %3
    mov eax, %3
    mov dx, %1
  %if %2 == 1
    PRINT "testdev: out ", %%port, " (1 byte) ", %%value, 10
    out dx, al
  %elif %2 == 2
    PRINT "testdev: out ", %%port, " (2 bytes) ", %%value, 10
    out dx, ax
  %else
    PRINT "testdev: out ", %%port, " (4 bytes) ", %%value, 10
    out dx, eax
  %endif
%endmacro

; MMIO_WRITE offset, width, value / MMIO_CHECK offset, width, expected:
; the same for the scratch memory at TESTDEV_MMIO + offset.
%macro MMIO_WRITE 3
    %defstr %%offset %1
    %defstr %%value %3
  %if %2 == 1
    PRINT "testdev: write [0xff000000 + ", %%offset, "] (1 byte) ", %%value, 10
    mov byte [TESTDEV_MMIO + %1], %3
  %elif %2 == 2
    PRINT "testdev: write [0xff000000 + ", %%offset, "] (2 bytes) ", %%value, 10
    mov word [TESTDEV_MMIO + %1], %3
  %else
    PRINT "testdev: write [0xff000000 + ", %%offset, "] (4 bytes) ", %%value, 10
    mov dword [TESTDEV_MMIO + %1], %3
  %endif
%endmacro

%macro MMIO_CHECK 3
    %defstr %%offset %1
    xor eax, eax
  %if %2 == 1
    mov al, [TESTDEV_MMIO + %1]
    PRINT "testdev: read [0xff000000 + ", %%offset, "] (1 byte) = "
  %elif %2 == 2
    mov ax, [TESTDEV_MMIO + %1]
    PRINT "testdev: read [0xff000000 + ", %%offset, "] (2 bytes) = "
  %else
    mov eax, [TESTDEV_MMIO + %1]
    PRINT "testdev: read [0xff000000 + ", %%offset, "] (4 bytes) = "
  %endif
    mov edx, %3
    mov ecx, %2 * 2
    call check_hex
%endmacro

kmain32:
    ; ---- the scratch register through port 0xE0 ----
    IN_CHECK 0xe0, 4, 0                         ; nothing written yet
    OUT_PRINT 0xe0, 4, 0x12345678
    IN_CHECK 0xe0, 4, 0x12345678
    IN_CHECK 0xe0, 2, 0x5678
    IN_CHECK 0xe2, 2, 0x1234
    IN_CHECK 0xe0, 1, 0x78
    IN_CHECK 0xe1, 1, 0x56
    IN_CHECK 0xe2, 1, 0x34
    IN_CHECK 0xe3, 1, 0x12

    ; ---- the same register through the byte-lane port 0xE8 ----
    IN_CHECK 0xe8, 4, 0x12345678
    IN_CHECK 0xe8, 2, 0x5678
    IN_CHECK 0xea, 2, 0x1234
    IN_CHECK 0xe8, 1, 0x78
    IN_CHECK 0xe9, 1, 0x56
    IN_CHECK 0xea, 1, 0x34
    IN_CHECK 0xeb, 1, 0x12

    ; ---- narrow writes land in their byte lanes ----
    OUT_PRINT 0xe9, 1, 0xAB
    IN_CHECK 0xe0, 4, 0x1234AB78
    OUT_PRINT 0xeb, 1, 0xCD
    IN_CHECK 0xe8, 4, 0xCD34AB78
    OUT_PRINT 0xe2, 2, 0xBEEF
    IN_CHECK 0xe0, 4, 0xBEEFAB78
    OUT_PRINT 0xe8, 2, 0x1122
    IN_CHECK 0xe0, 4, 0xBEEF1122
    OUT_PRINT 0xe0, 1, 0x99
    IN_CHECK 0xe8, 4, 0xBEEF1199

    ; ---- flush page ----
    call flush_page_test

    ; ---- interrupts ----
    call irq_test

    ; ---- MMIO scratch memory ----
    MMIO_CHECK 0x8000, 4, 0                     ; nothing written yet
    MMIO_WRITE 0x0, 1, 0x5A
    MMIO_CHECK 0x0, 1, 0x5A
    MMIO_WRITE 0x10, 2, 0xBEEF
    MMIO_CHECK 0x10, 2, 0xBEEF
    MMIO_CHECK 0x10, 1, 0xEF
    MMIO_WRITE 0x100, 4, 0xDEADBEEF
    MMIO_CHECK 0x100, 4, 0xDEADBEEF
    MMIO_CHECK 0x101, 1, 0xBE
    MMIO_CHECK 0x102, 2, 0xDEAD
    MMIO_WRITE 0x103, 1, 0x11
    MMIO_CHECK 0x100, 4, 0x11ADBEEF
    MMIO_WRITE 0xfffc, 4, 0xCAFEF00D
    MMIO_CHECK 0xfffc, 4, 0xCAFEF00D

    jmp checks_finish

; -----------------------------------------------------------------------------
; flush_page_test: fill a page, have pc-testdev flush it, compare.
; -----------------------------------------------------------------------------
flush_page_test:
    pushad
    mov edi, FLUSH_PAGE
    xor ecx, ecx
.fill:
    mov eax, ecx
    imul eax, eax, PATTERN_MULTIPLIER
    inc eax                             ; i * K + 1: never 0, every dword differs
    mov [edi + ecx * 4], eax
    inc ecx
    cmp ecx, 1024
    jb .fill
    PRINT "testdev: out 0xe4 (4 bytes) 0x200000, after filling that page with a pattern", 10
    mov eax, FLUSH_PAGE
    mov dx, TESTDEV_FLUSH
    out dx, eax
    xor ecx, ecx
    xor ebx, ebx                        ; EBX = dwords that changed
.compare:
    mov eax, ecx
    imul eax, eax, PATTERN_MULTIPLIER
    inc eax
    cmp [edi + ecx * 4], eax
    je .same
    inc ebx
.same:
    inc ecx
    cmp ecx, 1024
    jb .compare
    PRINT "testdev: flushed page still holds the pattern: "
    test ebx, ebx
    jnz .changed
    PRINT "yes", 10
    call check_pass
    popad
    ret
.changed:
    PRINT "no", 10
    PRINT GUEST_NAME, ": FAIL: "
    mov eax, ebx
    call serial_putdec32
    PRINT " of 1024 dwords changed", 10
    call check_fail
    popad
    ret

; -----------------------------------------------------------------------------
; irq_test: IDT, PICs, then IRQ 5 (unmasked) and IRQ 6 (masked).
; -----------------------------------------------------------------------------
irq_test:
    pushad
    ; Build the IDT: gate i -> isr_stubs + i * STUB_SIZE.
    mov edi, idt
    mov ebx, isr_stubs
    xor ecx, ecx
.gate:
    mov eax, ebx
    mov [edi], ax                       ; offset 15:0
    mov word [edi + 2], CODE32_SEL
    mov word [edi + 4], 0x8E00          ; P, DPL 0, 32-bit interrupt gate
    shr eax, 16
    mov [edi + 6], ax                   ; offset 31:16
    add edi, 8
    add ebx, STUB_SIZE
    inc ecx
    cmp ecx, IDT_ENTRIES
    jb .gate
    lidt [idt_descriptor]
    mov edi, irq_counts
    xor eax, eax
    mov ecx, 16
    rep stosd

    ; The PICs: ICW1-ICW4, then the masks.
    mov al, 0x11
    out PIC1_CMD, al
    out PIC2_CMD, al
    mov al, IRQ_BASE
    out PIC1_DATA, al
    mov al, IRQ_BASE + 8
    out PIC2_DATA, al
    mov al, 0x04
    out PIC1_DATA, al
    mov al, 0x02
    out PIC2_DATA, al
    mov al, 0x01
    out PIC1_DATA, al
    out PIC2_DATA, al
    mov al, ~(1 << 5) & 0xFF            ; only IRQ 5
    out PIC1_DATA, al
    mov al, 0xFF
    out PIC2_DATA, al
    PRINT "testdev: 8259 PICs at vectors 0x20/0x28, only irq 5 unmasked; sti", 10
    sti

    ; IRQ 5: raise, wait for the handler, lower, give it time to misbehave.
    PRINT "testdev: out 0x2005 (1 byte) 1, then 0", 10
    mov dx, TESTDEV_IRQ + 5
    mov al, 1
    out dx, al
    mov ecx, IRQ_WAIT_POLLS
.wait5:
    cmp dword [irq_counts + 5 * 4], 0
    jne .got5
    dec ecx
    jnz .wait5
.got5:
    mov al, 0
    out dx, al
    call quiet
    PRINT "testdev: vector 0x25 (irq 5) arrived "
    mov eax, [irq_counts + 5 * 4]
    call serial_putdec32
    PRINT " time(s)", 10
    cmp eax, 1
    je .once
    FAIL "irq 5 must interrupt exactly once"
    jmp .irq6
.once:
    call check_pass

    ; IRQ 6: masked, so nothing may happen.
.irq6:
    PRINT "testdev: out 0x2006 (1 byte) 1, then 0 (irq 6 is masked)", 10
    mov dx, TESTDEV_IRQ + 6
    mov al, 1
    out dx, al
    call quiet
    mov al, 0
    out dx, al
    call quiet
    cli
    PRINT "testdev: vector 0x26 (irq 6) arrived "
    mov eax, [irq_counts + 6 * 4]
    call serial_putdec32
    PRINT " time(s)", 10
    test eax, eax
    jz .never
    FAIL "a masked irq must not interrupt"
    jmp .others
.never:
    call check_pass

    ; Nothing else either.
.others:
    PRINT "testdev: other vectors 0x20-0x2f arrived "
    xor eax, eax
    xor ecx, ecx
.sum:
    cmp ecx, 5
    je .skip
    cmp ecx, 6
    je .skip
    add eax, [irq_counts + ecx * 4]
.skip:
    inc ecx
    cmp ecx, 16
    jb .sum
    call serial_putdec32
    PRINT " time(s)", 10
    test eax, eax
    jz .quiet_ok
    FAIL "only irq 5 may interrupt"
    popad
    ret
.quiet_ok:
    call check_pass
    popad
    ret

; quiet: a short wait with interrupts as they are. Preserves all.
quiet:
    push ecx
    mov ecx, QUIET_LOOPS
.loop:
    dec ecx
    jnz .loop
    pop ecx
    ret

; -----------------------------------------------------------------------------
; Interrupt entry: one 8-byte stub per vector pushes its number.
; -----------------------------------------------------------------------------
STUB_SIZE           equ 8
    align 8
isr_stubs:
%assign v 0
%rep IDT_ENTRIES
    push byte v                         ; 6A ib: 2 bytes
    jmp near isr_common                 ; E9 rel32: 5 bytes
    times (v + 1) * STUB_SIZE - ($ - isr_stubs) nop   ; pad to 8 (fails if over)
%assign v v + 1
%endrep

isr_common:
    pushad
    mov eax, [esp + 32]                 ; the vector
    cmp eax, IRQ_BASE
    jb .exception
    inc dword [irq_counts - IRQ_BASE * 4 + eax * 4]
    mov ebx, eax
    mov al, PIC_EOI
    cmp ebx, IRQ_BASE + 8
    jb .master
    out PIC2_CMD, al                    ; the slave's first
.master:
    out PIC1_CMD, al
    popad
    add esp, 4                          ; the vector
    ; Return to the interrupted code: what IRETD does for a same-privilege
    ; return (see "Returning without IRET" at the top of this file).
    push dword [esp + 8]                ; the saved EFLAGS...
    popfd                               ; ...restored (IF = 1 again)
    ret 8                               ; EIP; then drop CS and EFLAGS
.exception:
    ; [esp + 36] is the error code for vectors that push one, else EIP.
    PRINT GUEST_NAME, ": FAIL: unexpected exception "
    call serial_putdec32
    PRINT " (stack 0x"
    mov eax, [esp + 36]
    call serial_puthex32
    PRINT " 0x"
    mov eax, [esp + 40]
    call serial_puthex32
    PRINT ")", 10
    call check_fail
    jmp checks_finish

    section .data
    align 4
    dw 0
idt_descriptor:
    dw IDT_ENTRIES * 8 - 1
    dd idt

    section .bss
    alignb 8
idt:        resq IDT_ENTRIES
irq_counts: resd 16
