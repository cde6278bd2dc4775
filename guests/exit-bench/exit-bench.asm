; =============================================================================
; exit-bench.asm -- the guest half of `skvm bench exits`: timing VM exits
; =============================================================================
;
; What this guest does
; --------------------
; Runs ONE tight loop, many times, and times it with the time-stamp counter.
; The loop body is a single instruction (or a tiny group) chosen by the
; command line; most bodies cause a VM exit on every iteration, so the time
; per iteration is the cost of one exit of that kind: a port write that
; skvm's userspace must handle, one that KVM absorbs in the kernel through
; an ioeventfd, a CPUID that KVM answers without leaving the kernel, and so
; on. The host side (`skvm bench exits`) boots this guest once per kind,
; collects the timings through a tiny port protocol, and prints a table.
;
; Command line (the Multiboot command line after the kernel path),
; space-separated key=value pairs, numbers in decimal:
;     kind=NAME      which loop body (required; the table below)
;     cpl=0|3        privilege level the loop runs at   (default 3)
;     batches=B      how many timed batches             (default 100)
;     batch=M        loop iterations per batch          (default 1000)
; B and M must be at least 1, and B * M below 2^32 (the guest counts the
; iterations in a 32-bit register). For example:
;     skvm run --kernel guests/build/exit-bench.elf --append "kind=pio-out cpl=3 batches=3 batch=10"
;
; The kinds (the loop is `.loop: BODY ; dec r8d ; jnz .loop`, R8 is the
; counter for every kind because CPUID and RDMSR clobber RCX):
;
;   kind                     CPL   BODY                          exit handled by
;   noop                     0, 3  nop                           (no exit)
;   pio-out                  0, 3  out dx, al    dx = 0x5F0      skvm userspace
;   pio-in                   0, 3  in al, dx     dx = 0x5F0      skvm userspace
;   mmio-write               0, 3  mov [rdi], eax  rdi = 0xD000_0000   userspace
;   mmio-read                0, 3  mov eax, [rdi]  rdi = 0xD000_0000   userspace
;   ioeventfd-pio            0, 3  out dx, al    dx = 0x5F4      KVM (ioeventfd)
;   ioeventfd-pio-datamatch  0, 3  out dx, ax    dx = 0x5F6, ax = 0x5A5A  KVM (ioeventfd)
;   ioeventfd-mmio           0, 3  mov [rdi], eax  rdi = 0xD000_1000, eax = 0  KVM (ioeventfd)
;   cpuid                    0, 3  xor eax, eax ; cpuid          KVM
;   rdmsr                    0     mov ecx, 0x277 ; rdmsr        KVM (IA32_PAT)
;   wrmsr                    0     mov ecx, 0x277 ; (PAT value) ; wrmsr   KVM
;   vmcall                   0, 3  mov eax, 0xFFFF ; vmcall (Intel) / vmmcall (AMD)  KVM
;   hlt                      0     sti ; hlt ; cli               KVM (LAPIC timer)
;
; "noop" is the loop alone: subtract it from the others to get the cost of
; the body. RDMSR, WRMSR and HLT are privileged (#GP at CPL 3), so they
; only run at CPL 0.
;
; The report protocol (the VMM's side of it is in guests/README.md)
; ------------------------------------------------------------------
;  1. One line at CPL 0, before anything is timed:
;         exit-bench: kind=NAME cpl=C batches=B batch=M
;  2. B times:
;         lfence ; rdtsc                      start = TSC
;         M iterations of the loop
;         lfence ; rdtsc                      end = TSC
;         out 0x5F8, eax  <- low 32 bits of (end - start)
;         out 0x5FC, eax  <- high 32 bits; this write completes the sample
;     (both 32-bit OUTs, through DX, outside the timed region).
;  3. out 0x5E8, eax  <- B * M, the iterations the guest counted.
;  4. out 0xF4, al    <- 0: the VM ends with exit status 1.
; A VMM without the bench device simply ignores ports 0x5E8-0x5FF (unclaimed
; writes are dropped), so the guest also runs under plain `skvm run` and
; under QEMU.
;
; Timing with the TSC (Intel SDM Vol. 2B, RDTSC; Vol. 3B, "Time-Stamp
; Counter"): RDTSC is not a serializing instruction: the CPU may execute it
; before earlier instructions have finished, or let later ones start before
; it. LFENCE before it waits until every earlier instruction has completed
; locally, so the second read happens after the loop's last exit returned
; (the SDM's RDTSC page: software that needs RDTSC to wait for all previous
; instructions "can execute LFENCE immediately before RDTSC"). The measured
; region also holds a CALL/RET into the loop's function and a couple of
; setup MOVs: a constant cost per batch, which "noop" measures too.
; Under a hypervisor the guest's TSC is the host's TSC plus an offset (and
; possibly scaled), so cycle counts are comparable with the host's.
;
; Why these ports and addresses
; -----------------------------
; 0x5E0-0x5FF is a free block of the PC's I/O space (nothing standard lives
; there), and 0xD000_0000 / 0xD000_1000 are in the PCI hole below 4 GiB,
; where skvm has no RAM. The I/O permission bitmap in our TSS allows CPL 3
; code exactly these ports plus COM1 (0x3F8-0x3FF) and debug-exit
; (0xF4-0xF7); see cpl3.asm for why PVM needs the bitmap. RFLAGS.IOPL stays
; 0 at CPL 3 here, so the bitmap is the ONLY thing that lets user mode do
; port I/O, on every host alike.
;
; What the guest builds, at CPL 0 (it is all setup for the one loop):
;   - long mode with a 4 GiB identity map of 2 MiB pages, U/S = 1 at every
;     level (common/longmode.inc with PT_USER and PT_GIB = 4), so CPL 3 can
;     reach its code, data, stack and the MMIO pages; the top GiB (the MMIO
;     hole) is then made uncacheable (PCD = PWT = 1), as MMIO must be;
;   - a GDT with kernel and user segments and a 64-bit TSS (RSP0 and the
;     I/O permission bitmap), as in cpl3.asm (common/usermode.inc);
;   - an IDT with all 256 vectors: vector 0x40 is the APIC timer (for
;     kind=hlt), 0xFF the APIC spurious vector (ignored), and every other
;     vector prints
;         exit-bench: unexpected exception N at RIP 0x................
;     and ends the VM with v = 2 (exit status 5). So a body that faults --
;     say VMCALL raising #UD (vector 6) on some host -- is reported, not a
;     silent triple fault.
;
; kind=hlt: the local APIC timer (Intel SDM Vol. 3A, "APIC Timer", and the
; "Local APIC Register Address Map" table). We program the xAPIC at its
; default physical address 0xFEE0_0000 (KVM emulates it in the kernel):
;     SVR (0x0F0)          = 0x1FF: bit 8 = APIC software enable, spurious
;                            vector 0xFF
;     Divide config (0x3E0) = 0xB: divide the bus clock by 1
;     LVT timer (0x320)    = bit 17 (periodic) | vector 0x40
;     Initial count (0x380) = 10000: starts the timer
; KVM's emulated APIC timer counts at 1 GHz (its "bus" clock: 1 ns per
; tick), so 10000 ticks ask for a 10 us period. KVM however clamps periodic
; timers to the kvm module parameter min_timer_period_us (200 us by
; default; /sys/module/kvm/parameters/min_timer_period_us), so on a stock
; host each iteration takes about 200 us: the figure is the timer period,
; and the exit cost is what exceeds it. The handler writes 0 to EOI (0x0B0)
; and returns. We also mask both 8259 PICs (ports 0x21 and 0xA1 <- 0xFF):
; under QEMU the BIOS leaves the PIT ticking on IRQ 0, which would arrive as
; vector 8 and look like a double fault. After the last batch the timer is
; stopped (initial count 0) and masked. A tick that arrives while the
; reports are being sent waits in the APIC until the next STI, so the first
; HLT of a batch may return early: at most one short iteration per batch.
;
; kind=vmcall: the hypercall instruction is VMCALL on Intel and VMMCALL on
; AMD (and Hygon); we choose by the CPUID vendor string at CPL 0. KVM
; answers hypercall number 0xFFFF (unknown) with RAX = -KVM_ENOSYS (-1000)
; at CPL 0 and -KVM_EPERM (-1) at CPL 3 (Linux Documentation/virt/kvm/
; x86/hypercalls.rst), without leaving the kernel. On a PVM host (see
; guests/README.md) a hypercall at CPL 0 never completes: KVM's emulator,
; which runs all CPL 0 code there, spins on it inside the kernel. So
; kind=vmcall cpl=0 must not be run on PVM; at CPL 3 it works. If the
; instruction raises #UD (or #GP) on some host, the IDT reports it.
;
; Expected serial output, any kind, for example
; --append "kind=pio-out cpl=3 batches=3 batch=10" (skvm and QEMU alike):
;     exit-bench: kind=pio-out cpl=3 batches=3 batch=10
; Exit status: 1. Errors (exit status 3, v = 1):
;     exit-bench: unknown kind NAME
;     exit-bench: kind NAME cannot run at CPL 3
;     exit-bench: no kind=NAME argument
;     exit-bench: bad argument TEXT (expected kind=NAME cpl=0|3 batches=B batch=M)
;     exit-bench: batches * batch must be below 2^32
; An unexpected exception: exit status 5 (v = 2), as is "no long mode".
; =============================================================================

%define GUEST_NAME "exit-bench"
%define PT_USER                 ; U/S = 1 at every level (longmode.inc)
%define PT_GIB 4                ; identity-map 4 GiB: the MMIO pages and the APIC
%include "boot32.inc"
%include "longmode.inc"
%include "serial64.inc"
%include "idt64.inc"

; ---- segments: common/usermode.inc (the layout of cpl3.asm) ------------------
; The I/O permission bitmap (usermode.inc explains the format and adds the
; final 0xFF byte): it covers 0x000-0x5FF; ports past its end are denied.
%macro IO_PERMISSION_BITMAP 0
    times 0xF0 / 8 db 0xFF              ; 0x000-0x0EF denied
    db 0x0F                             ; 0x0F0-0x0F3 denied, 0x0F4-0x0F7 (debug-exit) allowed
    times 0x3F8 / 8 - 0xF8 / 8 db 0xFF  ; 0x0F8-0x3F7 denied
    db 0x00                             ; 0x3F8-0x3FF (COM1) allowed
    times 0x5E0 / 8 - 0x400 / 8 db 0xFF ; 0x400-0x5DF denied
    times 0x600 / 8 - 0x5E0 / 8 db 0x00 ; 0x5E0-0x5FF (bench ports) allowed
%endmacro
%include "usermode.inc"                 ; KCODE_SEL ... TSS_SEL, load_user_tables
USER_RFLAGS         equ 0x0002          ; IOPL = 0, IF = 0, reserved bit 1
USER_STACK_SIZE     equ 16384

; ---- the report protocol ------------------------------------------------------
REPORT_LOW_PORT     equ 0x5F8           ; low half of a batch's cycles
REPORT_HIGH_PORT    equ 0x5FC           ; high half: completes the sample
REPORT_TOTAL_PORT   equ 0x5E8           ; total iterations, after the batches

; ---- what the loop bodies touch -----------------------------------------------
BENCH_PORT          equ 0x5F0           ; userspace PIO (no device: reads 0xFF)
IOEVENTFD_PORT      equ 0x5F4           ; 1-byte ioeventfd, any value
DATAMATCH_PORT      equ 0x5F6           ; 2-byte ioeventfd with datamatch
DATAMATCH_VALUE     equ 0x5A5A
BENCH_MMIO          equ 0xD0000000      ; userspace MMIO (no device: reads ~0)
IOEVENTFD_MMIO      equ 0xD0001000      ; 4-byte MMIO ioeventfd
MSR_PAT             equ 0x277           ; IA32_PAT
HYPERCALL_NR        equ 0xFFFF          ; no such KVM hypercall: -KVM_ENOSYS

; ---- local APIC (xAPIC, MMIO) -------------------------------------------------
APIC_BASE           equ 0xFEE00000
APIC_EOI            equ 0x0B0
APIC_SVR            equ 0x0F0
APIC_LVT_TIMER      equ 0x320
APIC_TIMER_INIT     equ 0x380
APIC_TIMER_DIV      equ 0x3E0
APIC_SVR_ENABLE     equ 1 << 8
LVT_MASKED          equ 1 << 16
LVT_PERIODIC        equ 1 << 17
TIMER_DIV_BY_1      equ 0xB
TIMER_COUNT         equ 10000           ; 10 us at KVM's 1 GHz APIC clock
TIMER_VECTOR        equ 0x40
SPURIOUS_VECTOR     equ 0xFF
PIC1_DATA           equ 0x21            ; 8259 interrupt mask registers
PIC2_DATA           equ 0xA1


; ---- command-line defaults ------------------------------------------------------
DEFAULT_CPL         equ 3
DEFAULT_BATCHES     equ 100
DEFAULT_BATCH       equ 1000

; ---- the kind table: one 20-byte entry per kind -------------------------------
KIND_NAME           equ 0               ; address of the NUL-terminated name
KIND_BATCH          equ 4               ; runs one batch: R8D iterations
KIND_PREPARE        equ 8               ; CPL 0 setup before the batches, or 0
KIND_FINISH         equ 12              ; CPL 0 cleanup after them, or 0
KIND_FLAGS          equ 16
KIND_SIZE           equ 20
CPL3_OK             equ 1               ; KIND_FLAGS bit 0: may run at CPL 3

; KIND "name", batch, prepare, finish, flags: one table entry. The name goes
; to .rodata; the addresses are 32-bit (everything lives below 2 GiB).
%macro KIND 5
    [section .rodata]
%%name:
    db %1, 0
    __?SECT?__
    dd %%name, %2, %3, %4, %5
%endmacro

    section .data
    align 4
kinds:
    KIND "noop",                    batch_noop,         0,               0,          CPL3_OK
    KIND "pio-out",                 batch_pio_out,      0,               0,          CPL3_OK
    KIND "pio-in",                  batch_pio_in,       0,               0,          CPL3_OK
    KIND "mmio-write",              batch_mmio_write,   0,               0,          CPL3_OK
    KIND "mmio-read",               batch_mmio_read,    0,               0,          CPL3_OK
    KIND "ioeventfd-pio",           batch_ioeventfd_pio, 0,              0,          CPL3_OK
    KIND "ioeventfd-pio-datamatch", batch_datamatch,    0,               0,          CPL3_OK
    KIND "ioeventfd-mmio",          batch_ioeventfd_mmio, 0,             0,          CPL3_OK
    KIND "cpuid",                   batch_cpuid,        0,               0,          CPL3_OK
    KIND "rdmsr",                   batch_rdmsr,        0,               0,          0
    KIND "wrmsr",                   batch_wrmsr,        prepare_wrmsr,   0,          0
    KIND "vmcall",                  batch_vmcall,       prepare_vmcall,  0,          CPL3_OK
    KIND "hlt",                     batch_hlt,          prepare_hlt,     finish_hlt, 0
    dd 0                                ; end of the table

; ---- the parameters (read at CPL 3 too: all pages are user pages) ----------------
    align 8
bench_kind:     dq 0                    ; address of the kind's table entry
bench_batch_fn: dq 0                    ; its batch function (vmcall may swap it)
bench_finish:   dq 0                    ; its finish function, or 0
bench_cpl:      dd 0
bench_batches:  dd 0
bench_batch:    dd 0
pat_low:        dd 0                    ; IA32_PAT as read before the loop
pat_high:       dd 0

; ---- the IDT --------------------------------------------------------------------
    align 4
    dw 0
idt_descriptor:                         ; LIDT operand: 256 gates of 16 bytes
    dw 256 * 16 - 1
    dd idt, 0

; isr_table[v] = the handler for vector v, copied into the IDT at run time.
; Every vector without a purpose of its own gets a 2- or 3-instruction stub
; (idt64.inc's EXCEPTION_STUBS) that pushes the vector number (and a dummy
; 0 where the CPU pushes no error code) and jumps to `unexpected`.

    align 4
isr_table:
%assign v 0
%rep 256
  %if v == TIMER_VECTOR
    dd timer_isr
  %elif v == SPURIOUS_VECTOR
    dd spurious_isr
  %else
    dd isr_%[v]
  %endif
%assign v v + 1
%endrep

    section .bss
    alignb 16
idt:    resb 256 * 16                   ; filled in by build_idt
user_stack:
    resb USER_STACK_SIZE
user_stack_top:

; =============================================================================
; CPL 0: setup
; =============================================================================
    section .text
    bits 32

kmain32:
    jmp enter_long_mode                 ; continues at kmain64

    bits 64

kmain64:
    call load_tables                    ; GDT, TSS, IDT: faults are reported from now on
    call uncache_top_gib                ; the MMIO hole uncached (longmode.inc)
    call parse_command_line             ; fills bench_*; exits with v = 1 on errors

    ; ---- the start line ----
    PRINT "exit-bench: kind="
    mov rbx, [rel bench_kind]
    mov esi, [rbx + KIND_NAME]
    call lm_puts
    PRINT " cpl="
    mov eax, [rel bench_cpl]
    call lm_putdec64
    PRINT " batches="
    mov eax, [rel bench_batches]
    call lm_putdec64
    PRINT " batch="
    mov eax, [rel bench_batch]
    call lm_putdec64
    PRINT 10

    ; ---- the kind's CPL 0 preparation, then run at the chosen CPL ----
    mov eax, [rbx + KIND_BATCH]
    mov [rel bench_batch_fn], rax
    mov eax, [rbx + KIND_FINISH]
    mov [rel bench_finish], rax
    mov eax, [rbx + KIND_PREPARE]
    test eax, eax
    jz .prepared
    call rax
.prepared:
    cmp dword [rel bench_cpl], 0
    je bench_run                        ; CPL 0: just go

    ; CPL 3: an IRETQ frame, as in cpl3.asm (pushed in reverse order).
    push UDATA_SEL                      ; SS
    push user_stack_top                 ; RSP
    push USER_RFLAGS                    ; RFLAGS: IOPL 0, IF 0
    push UCODE_SEL                      ; CS: RPL 3 -> CPL 3
    push bench_run                      ; RIP
    iretq

; load_tables: our GDT (with user segments and the TSS) and TR
; (usermode.inc's load_user_tables), and the IDT: 256 interrupt gates
; (idt64.inc's BUILD_IDT; SDM Vol. 3A, "64-Bit Mode IDT").
load_tables:
    call load_user_tables
    BUILD_IDT idt, isr_table, 256, KCODE_SEL
    lidt [rel idt_descriptor]
    ret

; =============================================================================
; CPL 0: the command line
; =============================================================================

    section .rodata
key_kind:       db "kind=", 0
key_cpl:        db "cpl=", 0
key_batches:    db "batches=", 0
key_batch:      db "batch=", 0

    section .text

; parse_command_line: read key=value arguments after the kernel path and
; fill bench_kind, bench_cpl, bench_batches, bench_batch. Returns only if
; they are valid; otherwise prints why and ends the VM with v = 1.
; A separator is any byte from 1 to ' ' (space, tab, newline...).
parse_command_line:
    mov dword [rel bench_cpl], DEFAULT_CPL
    mov dword [rel bench_batches], DEFAULT_BATCHES
    mov dword [rel bench_batch], DEFAULT_BATCH
    mov qword [rel bench_kind], 0

    mov ebx, [rel mb_info]              ; the Multiboot information structure
    test dword [rbx + MBI_FLAGS], MBI_FLAG_CMDLINE
    jz .check                           ; no command line: defaults, no kind
    mov esi, [rbx + MBI_CMDLINE]        ; RSI = the command line

    call skip_token                     ; skip the kernel path
.next:
    mov al, [rsi]
    test al, al
    jz .check                           ; end of the command line
    cmp al, ' '
    ja .argument
    inc rsi                             ; a separator: skip it
    jmp .next

.argument:
    mov rbp, rsi                        ; RBP = start of the argument (for errors)
    lea rdi, [rel key_kind]
    call match_key                      ; ZF = 1 and RSI past "kind=" if it is one
    je .kind
    lea rdi, [rel key_cpl]
    call match_key
    je .cpl
    lea rdi, [rel key_batches]          ; "batches=" before "batch=" matters
    call match_key                      ; not: "batch=" is not a prefix of
    je .batches                         ; "batches=" (the '=' differs)
    lea rdi, [rel key_batch]
    call match_key
    je .batch
    jmp bad_argument

.kind:
    call find_kind                      ; RAX = table entry, or 0
    test rax, rax
    jz unknown_kind
    mov [rel bench_kind], rax
    call skip_token
    jmp .next
.cpl:
    call parse_u32                      ; EAX = value, CF = 1 if not a number
    jc bad_argument
    cmp eax, 0
    je .cpl_ok
    cmp eax, 3
    jne bad_argument
.cpl_ok:
    mov [rel bench_cpl], eax
    jmp .next
.batches:
    call parse_u32
    jc bad_argument
    test eax, eax
    jz bad_argument                     ; zero batches: nothing to measure
    mov [rel bench_batches], eax
    jmp .next
.batch:
    call parse_u32
    jc bad_argument
    test eax, eax
    jz bad_argument                     ; DEC/JNZ would run 2^32 times
    mov [rel bench_batch], eax
    jmp .next

.check:
    mov rbx, [rel bench_kind]
    test rbx, rbx
    jz .no_kind
    cmp dword [rel bench_cpl], 3
    jne .cpl_fine
    test dword [rbx + KIND_FLAGS], CPL3_OK
    jz .not_at_cpl3
.cpl_fine:
    mov eax, [rel bench_batches]
    mul dword [rel bench_batch]         ; EDX:EAX = B * M
    test edx, edx
    jnz .too_many                       ; does not fit the 32-bit count
    ret

.no_kind:
    PRINT "exit-bench: no kind=NAME argument", 10
    jmp exit_usage
.not_at_cpl3:
    PRINT "exit-bench: kind "
    mov esi, [rbx + KIND_NAME]
    call lm_puts
    PRINT " cannot run at CPL 3", 10
    jmp exit_usage
.too_many:
    PRINT "exit-bench: batches * batch must be below 2^32", 10
    jmp exit_usage

; unknown_kind: RSI = the value after "kind=".
unknown_kind:
    PRINT "exit-bench: unknown kind "
    call lm_puttoken
    PRINT 10
    jmp exit_usage

; bad_argument: RBP = the start of the offending argument.
bad_argument:
    PRINT "exit-bench: bad argument "
    mov rsi, rbp
    call lm_puttoken
    PRINT " (expected kind=NAME cpl=0|3 batches=B batch=M)", 10
    ; fall through
exit_usage:
    mov al, 1
    out DEBUG_EXIT_PORT, al             ; exit status (1 << 1) | 1 = 3
.hang:
    cli
    hlt
    jmp .hang

; skip_token: advance RSI to the first byte <= ' ' (a separator or the NUL).
skip_token:
    cmp byte [rsi], ' '
    jbe .done
    inc rsi
    jmp skip_token
.done:
    ret

; match_key: if the argument at RSI starts with the NUL-terminated key at
; RDI, then ZF = 1 and RSI points just past the key; otherwise ZF = 0 and
; RSI is unchanged. Preserves the other registers.
match_key:
    push rax
    push rcx
    xor ecx, ecx                        ; RCX = index into both strings
.compare:
    mov al, [rdi + rcx]
    test al, al
    jz .match                           ; the whole key matched
    cmp al, [rsi + rcx]
    jne .done                           ; ZF = 0: a different key
    inc ecx
    jmp .compare
.match:
    add rsi, rcx                        ; past the key
    cmp eax, eax                        ; ZF = 1 (ADD's flags say nothing)
.done:
    pop rcx                             ; POP leaves the flags alone
    pop rax
    ret

; find_kind: RAX = the table entry whose name equals the token at RSI
; (which ends at a byte <= ' '), or 0. Preserves the other registers.
find_kind:
    push rcx
    push rdx
    push rdi
    lea rax, [rel kinds]                ; RAX = the entry being compared
.entry:
    mov edi, [rax + KIND_NAME]
    test edi, edi
    jz .none                            ; end of the table
    xor ecx, ecx                        ; RCX = index into name and token
.compare:
    mov dl, [rdi + rcx]
    test dl, dl
    jz .name_ended
    cmp dl, [rsi + rcx]
    jne .next_entry
    inc ecx
    jmp .compare
.name_ended:
    cmp byte [rsi + rcx], ' '           ; equal only if the token ends here
    jbe .found                          ;   too ("pio-in" vs "pio-inx")
.next_entry:
    add rax, KIND_SIZE
    jmp .entry
.none:
    xor eax, eax
.found:
    pop rdi
    pop rdx
    pop rcx
    ret

; parse_u32: read a decimal number at RSI, up to a byte <= ' '.
; Returns EAX = the value, RSI past it, CF = 0; or CF = 1 if it is empty,
; has a non-digit, or is 2^32 or more. Clobbers RDX.
parse_u32:
    push rcx
    xor eax, eax                        ; RAX = value so far (64-bit)
    xor ecx, ecx                        ; ECX = digits seen
.digit:
    movzx edx, byte [rsi]
    cmp dl, ' '
    jbe .end
    sub dl, '0'
    cmp dl, 9
    ja .bad                             ; not '0'..'9' (unsigned compare
    imul rax, rax, 10                   ;   catches bytes below '0' too)
    add rax, rdx
    mov rdx, rax
    shr rdx, 32
    jnz .bad                            ; grew past 32 bits
    inc ecx
    inc rsi
    jmp .digit
.end:
    test ecx, ecx
    jz .bad                             ; "cpl=" with nothing after it
    pop rcx
    clc
    ret
.bad:
    pop rcx
    stc
    ret

; =============================================================================
; CPL 0: per-kind preparation and cleanup
; =============================================================================

; prepare_wrmsr: read IA32_PAT once; the loop writes the same value back, so
; the benchmark changes nothing about memory types.
prepare_wrmsr:
    mov ecx, MSR_PAT
    rdmsr                               ; EDX:EAX = IA32_PAT
    mov [rel pat_low], eax
    mov [rel pat_high], edx
    ret

; prepare_vmcall: Intel's VMCALL and AMD's VMMCALL are different opcodes
; (0F 01 C1 and 0F 01 D9); each is #UD on the other vendor's hardware
; (KVM patches or emulates the "wrong" one, at extra cost we don't want to
; measure). CPUID leaf 0 returns the vendor string in EBX, EDX, ECX:
; "GenuineIntel", "AuthenticAMD", "HygonGenuine" (Hygon is AMD's design).
VENDOR_AMD_EBX      equ 0x68747541      ; "Auth" (little endian)
VENDOR_HYGON_EBX    equ 0x6F677948      ; "Hygo"
prepare_vmcall:
    xor eax, eax
    cpuid
    cmp ebx, VENDOR_AMD_EBX
    je .amd
    cmp ebx, VENDOR_HYGON_EBX
    je .amd
    ret                                 ; Intel (and anyone else): VMCALL
.amd:
    lea rax, [rel batch_vmmcall]
    mov [rel bench_batch_fn], rax
    ret

; prepare_hlt: mask the 8259s, then start the local APIC timer (see the
; header for the values and why).
prepare_hlt:
    mov al, 0xFF                        ; OCW1: mask all eight lines
    out PIC1_DATA, al
    out PIC2_DATA, al
    mov edi, APIC_BASE                  ; MOV to EDI zero-extends into RDI
    mov dword [rdi + APIC_SVR], APIC_SVR_ENABLE | SPURIOUS_VECTOR
    mov dword [rdi + APIC_TIMER_DIV], TIMER_DIV_BY_1
    mov dword [rdi + APIC_LVT_TIMER], LVT_PERIODIC | TIMER_VECTOR
    mov dword [rdi + APIC_TIMER_INIT], TIMER_COUNT  ; writing it starts the timer
    ret

; finish_hlt: stop the timer (initial count 0 stops it) and mask its LVT.
finish_hlt:
    mov edi, APIC_BASE
    mov dword [rdi + APIC_TIMER_INIT], 0
    mov dword [rdi + APIC_LVT_TIMER], LVT_MASKED | TIMER_VECTOR
    ret

; =============================================================================
; The benchmark: runs at CPL 0 or CPL 3
; =============================================================================
;
; bench_run keeps its state in R12-R15, which no loop body touches:
;   R12D = batches still to run     R14 = TSC at the start of the batch
;   R15D = iterations counted so far
; Each batch function runs R8D (>= 1) iterations of its body and returns;
; it may clobber RAX, RBX, RCX, RDX, RDI, R8-R11.

bench_run:
    mov r12d, [rel bench_batches]
    xor r15d, r15d
.batch:
    lfence                              ; earlier instructions done...
    rdtsc                               ; ...then read the TSC: EDX:EAX
    shl rdx, 32                         ; (RDTSC zeroes the upper halves of
    or rax, rdx                         ;  RAX and RDX in 64-bit mode)
    mov r14, rax                        ; R14 = start
    mov r8d, [rel bench_batch]          ; R8D = M, the loop counter
    call [rel bench_batch_fn]           ; M iterations
    lfence                              ; the loop has completed...
    rdtsc                               ; ...before this read
    shl rdx, 32
    or rax, rdx
    sub rax, r14                        ; RAX = cycles for this batch
    add r15d, [rel bench_batch]         ; count what we ran

    ; Report the sample (outside the timed region): low half, then high.
    mov edx, REPORT_LOW_PORT
    out dx, eax
    shr rax, 32
    mov edx, REPORT_HIGH_PORT
    out dx, eax                         ; completes the sample

    dec r12d
    jnz .batch

    mov rax, [rel bench_finish]         ; kind=hlt: stop the timer (CPL 0
    test rax, rax                       ;   only, like the kind itself)
    jz .report_total
    call rax
.report_total:
    mov eax, r15d
    mov edx, REPORT_TOTAL_PORT
    out dx, eax                         ; B * M
    xor eax, eax
    out DEBUG_EXIT_PORT, al             ; v = 0: exit status 1

    ; Only reached if nothing listens on port 0xF4. At CPL 3 we can't HLT,
    ; so fault on purpose: the IDT reports it and exits with v = 2.
    PRINT "exit-bench: port 0xF4 did not end the VM", 10
    ud2

; ---- the loops ------------------------------------------------------------------
; One function per kind, so that each loop is exactly `BODY ; dec r8d ;
; jnz`, with its setup (port number, address, value) before the loop. Each
; loop starts on a 16-byte boundary so that its timing does not depend on
; where the assembler happened to put it.

batch_noop:
    align 16
.loop:
    nop
    dec r8d
    jnz .loop
    ret

batch_pio_out:
    mov edx, BENCH_PORT
    xor eax, eax
    align 16
.loop:
    out dx, al                          ; KVM_EXIT_IO, out, size 1, port 0x5F0
    dec r8d
    jnz .loop
    ret

batch_pio_in:
    mov edx, BENCH_PORT
    align 16
.loop:
    in al, dx                           ; KVM_EXIT_IO, in, size 1, port 0x5F0
    dec r8d
    jnz .loop
    ret

batch_mmio_write:
    mov edi, BENCH_MMIO
    xor eax, eax
    align 16
.loop:
    mov [rdi], eax                      ; KVM_EXIT_MMIO, write, len 4
    dec r8d
    jnz .loop
    ret

batch_mmio_read:
    mov edi, BENCH_MMIO
    align 16
.loop:
    mov eax, [rdi]                      ; KVM_EXIT_MMIO, read, len 4
    dec r8d
    jnz .loop
    ret

batch_ioeventfd_pio:
    mov edx, IOEVENTFD_PORT
    xor eax, eax
    align 16
.loop:
    out dx, al                          ; 1 byte to 0x5F4: an ioeventfd's
    dec r8d                             ;   eventfd_signal(), in the kernel
    jnz .loop
    ret

batch_datamatch:
    mov edx, DATAMATCH_PORT
    mov eax, DATAMATCH_VALUE
    align 16
.loop:
    out dx, ax                          ; 2 bytes 0x5A5A to 0x5F6: matches
    dec r8d                             ;   the ioeventfd's datamatch
    jnz .loop
    ret

batch_ioeventfd_mmio:
    mov edi, IOEVENTFD_MMIO
    xor eax, eax
    align 16
.loop:
    mov [rdi], eax                      ; 4 bytes to 0xD000_1000
    dec r8d
    jnz .loop
    ret

batch_cpuid:
    align 16
.loop:
    xor eax, eax                        ; leaf 0 (CPUID clobbers EAX-EDX)
    cpuid                               ; always a VM exit on VT-x/AMD-V
    dec r8d
    jnz .loop
    ret

batch_rdmsr:
    align 16
.loop:
    mov ecx, MSR_PAT
    rdmsr                               ; EDX:EAX = IA32_PAT, from KVM
    dec r8d
    jnz .loop
    ret

batch_wrmsr:
    mov r9d, [rel pat_low]
    mov r10d, [rel pat_high]
    align 16
.loop:
    mov ecx, MSR_PAT
    mov eax, r9d
    mov edx, r10d
    wrmsr                               ; IA32_PAT <- the value it had
    dec r8d
    jnz .loop
    ret

batch_vmcall:
    align 16
.loop:
    mov eax, HYPERCALL_NR
    vmcall                              ; Intel; RAX <- -KVM_ENOSYS / -KVM_EPERM
    dec r8d
    jnz .loop
    ret

batch_vmmcall:
    align 16
.loop:
    mov eax, HYPERCALL_NR
    vmmcall                             ; AMD
    dec r8d
    jnz .loop
    ret

batch_hlt:
    align 16
.loop:
    sti                                 ; interrupts on, but only after the
    hlt                                 ;   next instruction ("STI shadow"):
    cli                                 ;   no tick can slip in before HLT
    dec r8d                             ;   and leave it asleep until the
    jnz .loop                           ;   next one. The tick's handler runs
    ret                                 ;   between HLT and CLI.

; =============================================================================
; Interrupt and exception handlers (always entered at CPL 0)
; =============================================================================

; The APIC timer (kind=hlt): acknowledge with a write to EOI, return.
timer_isr:
    push rax
    mov eax, APIC_BASE + APIC_EOI       ; zero-extends: 0xFEE000B0 (as a
    mov dword [rax], 0                  ;   disp32 it would sign-extend)
    pop rax
    iretq

; The APIC's spurious vector: no EOI for it (SDM Vol. 3A, "Spurious
; Interrupt"), just return.
spurious_isr:
    iretq

; One stub per other vector: make the stack look the same for all of them
; (error code, or a dummy 0, then the vector), then `unexpected`.
    EXCEPTION_STUBS 256, unexpected

; unexpected: stack = vector, error code, then the CPU's frame: RIP, CS,
; RFLAGS, RSP, SS (SDM Vol. 3A, "64-Bit Mode Stack Frame"). Print which
; vector hit at which RIP and end the VM with v = 2.
unexpected:
    PRINT "exit-bench: unexpected exception "
    mov rax, [rsp]                      ; the vector
    call lm_putdec64
    PRINT " at RIP 0x"
    mov rax, [rsp + 16]                 ; the faulting (or next) RIP
    call lm_puthex64
    PRINT 10
    mov al, 2
    out DEBUG_EXIT_PORT, al             ; exit status (2 << 1) | 1 = 5
.hang:
    cli
    hlt
    jmp .hang
