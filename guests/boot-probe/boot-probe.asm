; =============================================================================
; boot-probe.asm -- a test kernel that checks what a Linux boot loader left
; =============================================================================
;
; What this guest does
; --------------------
; It looks like a Linux kernel to the loader, is entered the way Linux is
; entered, and then checks, one line at a time, everything the loader
; promised. skvm boots Linux with the 64-bit boot protocol (Linux
; Documentation/arch/x86/boot.rst, section "64-bit Boot Protocol"): no
; real-mode setup code runs; the loader fills in `struct boot_params` (the
; "zero page", Documentation/arch/x86/zero-page.rst) and jumps to the
; kernel's 64-bit entry point in long mode. A real kernel trusts all of that
; and crashes somewhere deep inside if any of it is wrong. This probe checks
; it first and says exactly what is wrong.
;
; One source, two images (see the Makefile and the two linker scripts):
;   build/boot-probe.bzimage  a bzImage: boot sector, one setup sector with
;                             the setup header, then the protected-mode part
;                             (boot.rst, "The Real-Mode Kernel Header");
;   build/boot-probe.vmlinux  an ELF64 x86-64 executable, like the vmlinux a
;                             kernel build leaves behind (no setup header:
;                             the loader invents the boot_params fields).
; Both contain the same protected-mode code, linked for 0x100_0000 (16 MiB):
; the bzImage's pref_address and the vmlinux's PT_LOAD address. The probe
; is position-dependent, so it first checks that it runs there.
;
; Every check prints one line on COM1:
;     boot-probe: <what>: ok
;     boot-probe: <what>: FAIL (<why>)
;     boot-probe: <what>: skipped (<why>)     (not counted)
; plus a few information lines (the command line, the E820 map, the MP
; table summary). At the end: `boot-probe: all N checks passed` and v = 0 on
; the debug-exit port (exit status 1), or `boot-probe: K of N checks failed`
; and v = 1 (exit status 3). An unexpected CPU exception prints one FAIL line
; and ends with v = 2 (exit status 5).
;
; The checks, in order
; --------------------
;  1. The CPU at the 64-bit entry point (boot.rst, "64-bit Boot Protocol"):
;     "the CPU must be in 64-bit mode with paging enabled" (EFER.LMA, CR0.PG,
;     CR0.PE, CR4.PAE); "a GDT must be loaded with the descriptors for
;     selectors __BOOT_CS(0x10) and __BOOT_DS(0x18); both descriptors must
;     be 4G flat segment; __BOOT_CS must have execute/read permission, and
;     __BOOT_DS must have read/write permission; CS must be __BOOT_CS and
;     DS, ES, SS must be __BOOT_DS; interrupt must be disabled; %rsi must
;     hold the base address of the struct boot_params"; and "the range with
;     setup_header.init_size from start address of loaded kernel and zero
;     page and command line buffer get ident mapping" (we walk the page
;     tables CR3 points at: Intel SDM Vol. 3A, "4-Level Paging and 5-Level
;     Paging", section 5.5 in current editions). skvm puts boot_params at
;     0x7000.
;  2. boot_params (zero-page.rst; the setup header part is boot.rst's
;     table "The Real-Mode Kernel Header"): boot_flag 0xAA55 (0x1FE), "HdrS"
;     (0x202), type_of_loader 0xFF ("undefined", 0x210), cmd_line_ptr
;     (0x228, plus ext_cmd_line_ptr at 0x0C8), and for the bzImage that the
;     read-only header fields were copied from the image ("the setup header
;     at offset 0x01f1 of kernel image on should be loaded into struct
;     boot_params"). Then the E820 map: e820_entries (0x1E8) entries of 20
;     bytes at e820_table (0x2D0), printed like Linux prints them, checked
;     to be sorted and non-overlapping, and the usable total compared with
;     probe.mem.
;  3. The command line, printed verbatim, with the probe's own parameters:
;        probe.cpus=N          the machine has N vCPUs
;        probe.mem=M           it has M MiB of RAM: the usable E820 total
;                              must be M MiB - 0x60400 (skvm reserves
;                              0x9FC00-0xFFFFF, the PC's legacy hole)
;        probe.initrd=SIZE:SUM an initrd of SIZE bytes whose bytes add up
;                              to SUM (mod 2^32; decimal, or hex with 0x)
;     A check whose parameter is missing is skipped.
;  4. The MP table (Intel MultiProcessor Specification 1.4, chapter 4): the
;     floating pointer "_MP_" in the last KiB of base memory (4.1), its
;     checksum, the configuration table "PCMP" (4.2) and its checksum, and
;     the entries: processors (4.3.1), the ISA bus (4.3.2), the IOAPIC
;     (4.3.3), the 16 ISA interrupts (4.3.4), LINT0/LINT1 (4.3.5).
;  5. CPUID on the boot CPU (SDM Vol. 2A, "CPUID"): leaf 1 EBX[31:24] =
;     initial APIC id 0, EBX[23:16] = logical processor count; leaf 0xB
;     EDX = x2APIC id; AMD leaf 0x8000_001E EAX = extended APIC id.
;  6. SMP: every application processor (AP) listed in the MP table is
;     started with INIT-SIPI-SIPI (MP spec, appendix B.4 "Application
;     Processor Startup"; SDM Vol. 3A, section 9.4 "Multiple-Processor (MP)
;     Initialization") and must report itself (see "Starting the APs").
;
; Entering at the right door
; --------------------------
; A bzImage has three entry points, and a loader picks one by protocol:
;   file offset 0x200 (setup + 0x200)  16-bit real mode: the setup code
;                                      (the boot protocols before 64-bit);
;   protected-mode part + 0            32-bit: "32-bit Boot Protocol";
;   protected-mode part + 0x200        64-bit: "64-bit Boot Protocol" (and
;                                      only if xloadflags has XLF_KERNEL_64).
; skvm must use the last. The other two print which door was used and end
; the VM with v = 1, so a loader that takes the wrong one is caught at once.
;
; Starting the APs
; ----------------
; After reset every AP waits in its local APIC for a Startup IPI (KVM keeps
; all vCPUs but the first in that state). The boot CPU (BSP) sends, through
; its xAPIC's Interrupt Command Register at 0xFEE0_0300 (high half at
; 0x310: destination APIC id in bits 31:24; SDM Vol. 3A, section 11.6.1
; "Interrupt Command Register (ICR)"):
;     INIT        0x4500  delivery mode 101b, level assert
;     (wait)
;     STARTUP     0x4600 | vector, twice with a wait between
; The STARTUP vector VV starts the AP in REAL MODE at CS:IP = VV00:0000,
; i.e. physical address VV000. So the AP's first code must be 16-bit and
; below 1 MiB: the "trampoline", which the BSP copies to 0x10000 (vector
; 0x10; skvm leaves 0x10000-0x1FFFF alone: boot_params is at 0x7000, the
; page tables at 0x9000-0xEFFF, the command line at 0x20000). The
; trampoline climbs real mode -> 32-bit protected mode -> long mode (the
; same steps as common/longmode.inc) with the BSP's CR0, CR3 and CR4, which
; the BSP writes into it: the APs share the page tables skvm built. Each
; AP then reads its APIC id, which must be the same in the local APIC's ID
; register (0xFEE0_0020, bits 31:24), CPUID leaf 1 EBX[31:24], leaf 0xB EDX
; and leaf 0x8000_001E EAX, and prints `boot-probe: cpu N online (apic id
; A): ok` under a spinlock (XCHG, SDM Vol. 3A, section 9.1.2.1 "Automatic
; Locking"), counts itself online and halts with interrupts off. The BSP
; starts the APs one at a time, in APIC id order, and waits for each, so
; the output is deterministic. The waits are plain loops: under KVM the
; IPIs are delivered at once, and the SDM's 10 ms / 200 us delays only
; matter on real hardware. An AP that does not answer within AP_WAIT_POLLS
; polls (about 10 s on a PVM host) is a FAIL. APIC id 255 is never
; started: in xAPIC physical destination mode 0xFF means "every CPU", so an
; INIT sent to it would reset the BSP as well.
; (SDM section numbers are those of current editions, which inserted a
; chapter before "Paging": older editions number chapters 4-11 one lower.)
;
; A note on PVM hosts: there, KVM emulates all CPL 0 code one instruction
; at a time (about 1.5 M instructions/s), so every loop here is short. The
; initrd checksum adds 8 bytes per step (a "SIMD within a register" trick)
; instead of one. The probe uses no instruction KVM's emulator lacks
; (cmpxchg16b, xsave/xrstor, int3...).
; =============================================================================

%include "serial.inc"                   ; PRINT, 32-bit serial_puts
%include "serial64.inc"                 ; lm_putc, lm_puts, lm_puthex64, lm_putdec64, lm_puttoken
%include "idt64.inc"                    ; BUILD_IDT, EXCEPTION_STUBS, ISR_TABLE

; ---- where things are --------------------------------------------------------
PM_BASE             equ 0x1000000       ; pref_address / PT_LOAD: 16 MiB
ENTRY64_OFFSET      equ 0x200           ; boot.rst: the 64-bit entry is +0x200
SETUP_SECTS         equ 1               ; setup sectors after the boot sector
KERNEL_VERSION_OFFSET equ 0x3C0         ; the version string in the setup sector
HEADER_END          equ 0x26C           ; our header ends after kernel_info_offset

LOADED_HIGH         equ 0x01            ; loadflags bit 0: protected mode at 1 MiB+
XLF_KERNEL_64       equ 0x01            ; xloadflags bit 0: 64-bit entry at +0x200

TRAMPOLINE          equ 0x10000         ; where the AP trampoline is copied
SIPI_VECTOR         equ TRAMPOLINE >> 12

; boot_params offsets (zero-page.rst, and boot.rst's header table)
BP_EXT_RAMDISK_IMAGE equ 0x0C0
BP_EXT_RAMDISK_SIZE equ 0x0C4
BP_EXT_CMD_LINE_PTR equ 0x0C8
BP_E820_ENTRIES     equ 0x1E8
BP_SETUP_HEADER     equ 0x1F1
BP_BOOT_FLAG        equ 0x1FE
BP_HEADER           equ 0x202
BP_VERSION          equ 0x206
BP_TYPE_OF_LOADER   equ 0x210
BP_RAMDISK_IMAGE    equ 0x218
BP_RAMDISK_SIZE     equ 0x21C
BP_CMD_LINE_PTR     equ 0x228
BP_CMDLINE_SIZE     equ 0x238
BP_E820_TABLE       equ 0x2D0
E820_ENTRY_SIZE     equ 20
E820_MAX_ENTRIES    equ 128             ; E820_MAX_ENTRIES_ZEROPAGE
E820_USABLE         equ 1

EXPECTED_BOOT_PARAMS equ 0x7000         ; skvm's choice (MachineMap.zeroPage)
EXPECTED_CMDLINE    equ 0x20000         ; skvm's choice (MachineMap.linuxCommandLine)
LEGACY_HOLE         equ 0x100000 - 0x9FC00  ; what skvm's E820 map reserves below 1 MiB
INITRD_ADDR_MAX     equ 0x7FFFFFFF      ; our header's initrd_addr_max
CMDLINE_SIZE        equ 2047            ; our header's cmdline_size

; control registers and MSRs (SDM Vol. 3A, 2.5 "Control Registers"; Vol. 4)
CR0_PE              equ 1 << 0
CR0_PG              equ 1 << 31
CR4_PAE             equ 1 << 5
CR4_LA57            equ 1 << 12
MSR_EFER            equ 0xC0000080
EFER_LME            equ 1 << 8
EFER_LMA            equ 1 << 10
MSR_APIC_BASE       equ 0x1B
APIC_BASE_BSP       equ 1 << 8
APIC_BASE_ENABLE    equ 1 << 11
RFLAGS_IF           equ 1 << 9

; the xAPIC (SDM Vol. 3A, table 11-1 "Local APIC Register Address Map")
LAPIC               equ 0xFEE00000
LAPIC_ID            equ LAPIC + 0x020
LAPIC_SVR           equ LAPIC + 0x0F0
LAPIC_ICR_LOW       equ LAPIC + 0x300
LAPIC_ICR_HIGH      equ LAPIC + 0x310
ICR_BUSY            equ 1 << 12         ; delivery status: send pending
ICR_INIT            equ 0x4500          ; INIT, level assert, physical destination
ICR_STARTUP         equ 0x4600          ; Start-Up, level assert; | vector
IOAPIC              equ 0xFEC00000

; our GDT (the same selectors as the boot protocol's, so nothing changes
; for code that looks at CS or DS)
CODE32_SEL          equ 0x08            ; for the AP trampoline's 32-bit step
CODE64_SEL          equ 0x10            ; __BOOT_CS
DATA_SEL            equ 0x18            ; __BOOT_DS

MAX_APIC_ID         equ 255
AP_STACK_SHIFT      equ 10              ; 1 KiB per AP, indexed by APIC id
BSP_STACK_SIZE      equ 8192

DELAY_LOOPS         equ 3000            ; "wait" between INIT and SIPIs
ICR_POLLS           equ 100000          ; bound on delivery-status polls
AP_WAIT_POLLS       equ 2000000         ; bound on waiting for one AP (~10 s on PVM)

; ---- linker-script symbols (boot-probe/vmlinux.ld, boot-probe/bzimage.ld) ----
extern _syssize                         ; protected-mode part in 16-byte units
extern _init_size                       ; bytes from PM_BASE to the end of .bss
extern _kernel_info_offset              ; kernel_info - PM_BASE
extern _image_kind                      ; 0 = vmlinux, 1 = bzImage
extern _bss_start, _bss_qwords          ; what startup_64 zeroes
global startup_32, startup_64, kernel_info

; ---- small macros ------------------------------------------------------------
; OK, FAIL "why" and SKIPPED "why" end a check line that PRINT started.
%macro OK 0
    call say_ok
%endmacro
%macro FAIL 1+
    call fail_begin
    PRINT %1
    call fail_end
%endmacro
%macro SKIPPED 1+
    PRINT ": skipped (", %1, ")", 10
%endmacro

; The bzImage setup header (boot.rst, "The Real-Mode Kernel Header"; the
; offsets in the comments are file offsets, which are also the offsets in
; boot_params). It is assembled twice: in the setup sector, and as
; `expected_header` in .rodata, so that the probe can check what the loader
; copied.
%macro SETUP_HEADER 0
    db SETUP_SECTS                      ; 0x1F1 setup_sects
    dw 0                                ; 0x1F2 root_flags
    dd _syssize                         ; 0x1F4 syssize (16-byte paragraphs)
    dw 0                                ; 0x1F8 ram_size (obsolete)
    dw 0xFFFF                           ; 0x1FA vid_mode: "normal"
    dw 0                                ; 0x1FC root_dev
    dw 0xAA55                           ; 0x1FE boot_flag
    db 0xEB, HEADER_END - 0x202         ; 0x200 jump: JMP SHORT over the header;
                                        ;       0x202 + this byte = header end
    db "HdrS"                           ; 0x202 header
    dw 0x020F                           ; 0x206 version: protocol 2.15
    dd 0                                ; 0x208 realmode_swtch
    dw 0                                ; 0x20C start_sys_seg (obsolete)
    dw KERNEL_VERSION_OFFSET - 0x200    ; 0x20E kernel_version: string - 0x200
    db 0                                ; 0x210 type_of_loader (loader writes)
    db LOADED_HIGH                      ; 0x211 loadflags
    dw 0                                ; 0x212 setup_move_size
    dd 0x100000                         ; 0x214 code32_start
    dd 0                                ; 0x218 ramdisk_image (loader writes)
    dd 0                                ; 0x21C ramdisk_size (loader writes)
    dd 0                                ; 0x220 bootsect_kludge
    dw 0                                ; 0x224 heap_end_ptr
    db 0                                ; 0x226 ext_loader_ver
    db 0                                ; 0x227 ext_loader_type
    dd 0                                ; 0x228 cmd_line_ptr (loader writes)
    dd INITRD_ADDR_MAX                  ; 0x22C initrd_addr_max
    dd 0x200000                         ; 0x230 kernel_alignment
    db 1                                ; 0x234 relocatable_kernel (see below)
    db 21                               ; 0x235 min_alignment: 2^21
    dw XLF_KERNEL_64                    ; 0x236 xloadflags
    dd CMDLINE_SIZE                     ; 0x238 cmdline_size
    dd 0                                ; 0x23C hardware_subarch: PC
    dq 0                                ; 0x240 hardware_subarch_data
    dd 0                                ; 0x248 payload_offset (nothing compressed)
    dd 0                                ; 0x24C payload_length
    dq 0                                ; 0x250 setup_data
    dq PM_BASE                          ; 0x258 pref_address
    dd _init_size                       ; 0x260 init_size
    dd 0                                ; 0x264 handover_offset (no EFI)
    dd _kernel_info_offset              ; 0x268 kernel_info_offset
%endmacro
; relocatable_kernel = 1 says "load me at any kernel_alignment boundary", as
; every modern bzImage does. This probe is not really relocatable: it checks
; at run time that it runs at pref_address, which is where skvm loads it.

; =============================================================================
; The real-mode part of the bzImage: boot sector + one setup sector
; =============================================================================
; Only the bzImage has this section; vmlinux.ld discards it. Nothing in it
; runs under skvm. Its code only says "wrong door" (see above).
    section .setup progbits alloc exec nowrite align=1
    bits 16
bootsect:
    ; Booted from a disk by a BIOS (CS:IP = 0000:7C00 or 07C0:0000).
    ; Like Linux, refuse politely.
    jmp 0x07C0:(.start - bootsect)
.start:
    mov ax, cs
    mov ds, ax
    mov si, bootsect_msg - bootsect
    call rm_puts
.halt:
    cli
    hlt
    jmp .halt

; rm_puts: print the NUL-terminated string at DS:SI on COM1 (16-bit code).
rm_puts:
    mov dx, COM1_LSR
.wait:
    in al, dx
    test al, LSR_THRE
    jz .wait
    lodsb
    test al, al
    jz .done
    mov dx, COM1_THR
    out dx, al
    jmp rm_puts
.done:
    ret

bootsect_msg:
    db "boot-probe: this is a Linux bzImage, not a boot disk: boot it with a Linux boot loader", 10, 0

    times BP_SETUP_HEADER - ($ - bootsect) db 0
setup_header:
    SETUP_HEADER
    times HEADER_END - ($ - bootsect) db 0  ; (an error if the header grew)

setup_start:
    ; The 16-bit entry (boot.rst, "Running the Kernel"): a loader jumps to
    ; setup segment + 0x20, offset 0, i.e. file offset 0x200, with the
    ; setup code loaded at some segment X, so CS = X + 0x20 here. The JMP
    ; SHORT at 0x200 brought us to this, file offset HEADER_END. rm_puts
    ; lies in the boot sector, BELOW CS's base, where no near CALL reaches
    ; (IP wraps around inside the 64 KiB segment), so first make CS = X:
    ; then offsets are file offsets again.
    cli
    mov ax, cs
    sub ax, 0x20
    mov ds, ax
    push ax
    push word .file_offsets - bootsect
    retf                                ; CS:IP = X:.file_offsets
.file_offsets:
    mov si, realmode_msg - bootsect
    call rm_puts
    mov al, 1
    out DEBUG_EXIT_PORT, al             ; v = 1: exit status 3
.halt:
    cli
    hlt
    jmp .halt

realmode_msg:
    db "boot-probe: entered at the 16-bit setup entry point (file offset 0x200): FAIL (this probe implements only the 64-bit boot protocol)", 10, 0

    times KERNEL_VERSION_OFFSET - ($ - bootsect) db 0
    db "boot-probe (skvm boot-protocol probe)", 0  ; what kernel_version points at
    times (SETUP_SECTS + 1) * 512 - ($ - bootsect) db 0

; =============================================================================
; The protected-mode part: entry points (linked first, at PM_BASE)
; =============================================================================
    section .head progbits alloc exec nowrite align=16
    bits 32
startup_32:
    ; +0: the 32-bit boot protocol's entry. skvm never comes here.
    PRINT "boot-probe: entered at the 32-bit entry point (protected-mode part + 0): FAIL (this probe implements only the 64-bit boot protocol, at + 0x200)", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al             ; v = 1: exit status 3
.halt:
    cli
    hlt
    jmp .halt

    times ENTRY64_OFFSET - ($ - startup_32) db 0
    bits 64
startup_64:
    ; +0x200: the 64-bit entry. Record the CPU state before changing any of
    ; it. No stack yet: boot.rst promises none, so nothing may push until
    ; RSP points at ours. RIP-relative stores work wherever we were loaded.
    mov [rel entry_rsi], rsi
    mov [rel entry_rsp], rsp
    mov [rel entry_cs], cs
    mov [rel entry_ds], ds
    mov [rel entry_es], es
    mov [rel entry_ss], ss
    sgdt [rel entry_gdtr]
    lea rsp, [rel bsp_stack_top]
    pushfq
    pop rax
    mov [rel entry_rflags], rax
    mov rax, cr0
    mov [rel entry_cr0], rax
    mov rax, cr3
    mov [rel entry_cr3], rax
    mov rax, cr4
    mov [rel entry_cr4], rax
    mov ecx, MSR_EFER
    rdmsr
    shl rdx, 32
    or rax, rdx
    mov [rel entry_efer], rax
    cld

    ; Are we where we were linked? (Only RIP-relative code until we know.)
    lea rax, [rel startup_64]
    mov rbx, PM_BASE + ENTRY64_OFFSET
    cmp rax, rbx
    je .placed
    PRINT "boot-probe: 64-bit entry at "
    call put_hex
    PRINT ": FAIL (the probe is linked for 0x1000200: load it at pref_address 0x1000000)", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al
.halt:
    cli
    hlt
    jmp .halt

.placed:
    ; Zero .bss: boot.rst does not promise it (an ELF loader zeroes the
    ; p_memsz tail, but a bzImage loader copies only the file).
    mov rdi, _bss_start
    mov ecx, _bss_qwords
    xor eax, eax
    rep stosq
    call build_idt
    call load_tables
    jmp kmain

; =============================================================================
; Read-only data
; =============================================================================
    section .rodata
    align 8
; kernel_info (boot.rst, "The Kernel_info"), required from protocol 2.15 on;
; the setup header's kernel_info_offset points here (from PM_BASE).
kernel_info:
    db "LToP"                           ; header
    dd kernel_info_end - kernel_info    ; size
    dd kernel_info_end - kernel_info    ; size_total (no variable part)
    dd 0                                ; setup_type_max
kernel_info_end:

; What the setup header in boot_params must look like, and which of its
; fields the loader must have copied unchanged: (offset, size) pairs, the
; fields boot.rst marks "read" (for the loader) that we set.
expected_header:
    SETUP_HEADER
readonly_fields:
    dw 0x1F1, 1                         ; setup_sects
    dw 0x1F4, 4                         ; syssize
    dw 0x1FE, 2                         ; boot_flag
    dw 0x200, 2                         ; jump
    dw 0x202, 4                         ; header
    dw 0x206, 2                         ; version
    dw 0x20E, 2                         ; kernel_version
    dw 0x22C, 4                         ; initrd_addr_max
    dw 0x230, 4                         ; kernel_alignment
    dw 0x234, 1                         ; relocatable_kernel
    dw 0x235, 1                         ; min_alignment
    dw 0x236, 2                         ; xloadflags
    dw 0x238, 4                         ; cmdline_size
    dw 0x258, 8                         ; pref_address
    dw 0x260, 4                         ; init_size
    dw 0x268, 4                         ; kernel_info_offset
    dw 0, 0

; The descriptors' 64-bit values (SDM Vol. 3A, 3.4.5 "Segment Descriptors").
; The boot protocol's GDT entries are checked against these under a mask
; that ignores Accessed (bit 40), AVL (52), and for code Conforming (42)
; and for data L (53).
FLAT_CODE64         equ 0x00AF9A000000FFFF  ; G, L, P, S, execute/read, 4 GiB
FLAT_DATA           equ 0x00CF92000000FFFF  ; G, B, P, S, read/write, 4 GiB
CODE64_MASK         equ ~((1 << 40) | (1 << 42) | (1 << 52))
DATA_MASK           equ ~((1 << 40) | (1 << 52) | (1 << 53))

key_cpus:   db "probe.cpus=", 0
key_mem:    db "probe.mem=", 0
key_initrd: db "probe.initrd=", 0
key_probe:  db "probe.", 0
isa_name:   db "ISA   "

; =============================================================================
; Data
; =============================================================================
    section .data
    align 8
; Our GDT, used by the BSP after entry and by the APs from the trampoline on.
; Accessed bits preset, so loading a selector never writes to it.
gdt:
    dq 0
    dq 0x00CF9B000000FFFF               ; 0x08: 32-bit code, 4 GiB
    dq 0x00AF9B000000FFFF               ; 0x10: 64-bit code (L = 1, D = 0)
    dq 0x00CF93000000FFFF               ; 0x18: data, 4 GiB
gdt_end:
    align 8
    dw 0
gdt_descriptor:                         ; LGDT operand (64-bit base)
    dw gdt_end - gdt - 1
    dq gdt
    align 8
    dw 0
idt_descriptor:                         ; 32 exception gates of 16 bytes
    dw 32 * 16 - 1
    dq idt

; The CPU state at the 64-bit entry point, stored before anything changes it.
    align 8
entry_rsi:      dq 0
entry_rsp:      dq 0
entry_rflags:   dq 0
entry_cr0:      dq 0
entry_cr3:      dq 0
entry_cr4:      dq 0
entry_efer:     dq 0
entry_cs:       dw 0
entry_ds:       dw 0
entry_es:       dw 0
entry_ss:       dw 0
    align 8
    dw 0, 0, 0
entry_gdtr:     dw 0                    ; SGDT: 2-byte limit, 8-byte base
                dq 0

; =============================================================================
; Zeroed data (.bss) and stacks (.stacks, not zeroed)
; =============================================================================
    section .bss
    alignb 16
idt:                resb 32 * 16
boot_params:        resq 1              ; = entry RSI
checks_ok:          resd 1
checks_failed:      resd 1
print_lock:         resd 1              ; 0 free, 1 taken
cpus_online:        resd 1              ; APs that reported in
ap_target:          resd 1              ; APIC id the BSP is starting
cmdline:            resq 1
cmdline_length:     resq 1
have_cpus:          resb 1
have_mem:           resb 1
have_initrd:        resb 1
                    resb 1
param_cpus:         resq 1
param_mem:          resq 1              ; MiB
param_initrd_size:  resq 1
param_initrd_sum:   resq 1
e820_count:         resq 1
e820_usable:        resq 1
e820_ok:            resb 1              ; the table passed its check
                    alignb 8
mp_fp:              resq 1              ; floating pointer address, 0 if none
mp_table:           resq 1
mp_cpu_count:       resq 1              ; enabled processor entries
mp_bp_count:        resq 1
mp_bp_id:           resq 1
mp_duplicate:       resq 1              ; an APIC id was listed twice
mp_broadcast:       resq 1              ; a processor has APIC id 0xFF
mp_ioapic_count:    resq 1
mp_ioapic_id:       resq 1
mp_ioapic_addr:     resq 1
mp_isa_bus:         resq 1              ; bus id + 1 (0: no ISA bus entry)
mp_isa_irqs:        resq 1              ; bit n: ISA IRQ n -> our IOAPIC
mp_lint0_extint:    resq 1
mp_lint1_nmi:       resq 1
mp_bad_entry:       resq 1              ; address of an unknown entry, or 0
mp_ids:             resb 256            ; APIC ids of enabled processors
ap_ids:             resb 256            ; the APs, sorted
ap_count:           resq 1
bsp_apic_id:        resq 1
cpu_number:         resb 256            ; APIC id -> "cpu N"
    alignb 8
_bss_zero_end:

    section .stacks nobits alloc noexec write align=16
bsp_stack:          resb BSP_STACK_SIZE
bsp_stack_top:
ap_stacks:          resb (MAX_APIC_ID + 1) << AP_STACK_SHIFT

; Mark the stack non-executable for ld (its ELF convention; no effect here).
    section .note.GNU-stack noalloc noexec nowrite progbits

; =============================================================================
; Reporting
; =============================================================================
    section .text
    bits 64

; say_ok: end a check line with ": ok" and count it.
say_ok:
    PRINT ": ok", 10
    lock inc dword [rel checks_ok]
    ret

; fail_begin / fail_end: ": FAIL (" ... ")" around the details; counts it.
fail_begin:
    PRINT ": FAIL ("
    lock inc dword [rel checks_failed]
    ret
fail_end:
    PRINT ")", 10
    ret

; put_hex: print RAX as "0x" and hex digits without leading zeros.
put_hex:
    push rax
    push rcx
    push rdx
    PRINT "0x"
    mov rdx, rax
    mov ecx, 16
.skip:
    cmp ecx, 1
    je .digit
    mov rax, rdx
    shr rax, 60
    jnz .digit
    shl rdx, 4
    dec ecx
    jmp .skip
.digit:
    rol rdx, 4
    mov al, dl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .emit
    add al, 'A' - '9' - 1
.emit:
    call lm_putc
    dec ecx
    jnz .digit
    pop rdx
    pop rcx
    pop rax
    ret

; put_hex16: print RAX as "0x" and exactly 16 hex digits.
put_hex16:
    PRINT "0x"
    jmp lm_puthex64

; put_dec: print RAX in decimal.
put_dec:
    jmp lm_putdec64

; lock_acquire / lock_release: the print lock, so the lines of CPUs running
; at the same time do not interleave. XCHG with a memory operand is always
; atomic (the LOCK prefix is implied; we write it anyway, for the reader).
lock_acquire:
    push rax
.try:
    mov eax, 1
    lock xchg [rel print_lock], eax
    test eax, eax
    jz .taken
.spin:
    pause                               ; spin-wait hint (SDM Vol. 2B, PAUSE)
    cmp dword [rel print_lock], 0
    jne .spin
    jmp .try
.taken:
    pop rax
    ret

lock_release:
    mov dword [rel print_lock], 0       ; a plain store releases (x86 TSO)
    ret

; =============================================================================
; Descriptor tables and exceptions
; =============================================================================

; build_idt: 32 interrupt gates for the exceptions (SDM Vol. 3A, 7.14.1
; "64-Bit Mode IDT"): offset 15:0, selector, IST 0, type 0x8E (present,
; DPL 0, 64-bit interrupt gate), offset 31:16, offset 63:32 (idt64.inc).
build_idt:
    BUILD_IDT idt, isr_table, 32, CODE64_SEL
    ret

; load_tables: our GDT (reloading every segment register) and the IDT.
load_tables:
    lgdt [rel gdt_descriptor]
    push CODE64_SEL                     ; reload CS with a far return
    lea rax, [rel .new_cs]
    push rax
    retfq
.new_cs:
    mov eax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lidt [rel idt_descriptor]
    ret

; The exception stubs push a dummy error code where the CPU pushes none
; (it does for 8, 10-14, 17, 21, 29, 30), then the vector (idt64.inc).
    EXCEPTION_STUBS 32, exception

    section .rodata
    align 4
isr_table:
    ISR_TABLE 32
    section .text

; exception: [RSP] = vector, [RSP+8] = error code, [RSP+16] = RIP.
; One FAIL line, then v = 2 (exit status 5). No print lock: the CPU that
; faulted might hold it.
exception:
    PRINT "boot-probe: no unexpected exceptions"
    call fail_begin
    PRINT "exception "
    mov rax, [rsp]
    call put_dec
    PRINT ", error code "
    mov rax, [rsp + 8]
    call put_hex
    PRINT ", at RIP "
    mov rax, [rsp + 16]
    call put_hex
    PRINT ", on local APIC id "
    mov edi, LAPIC_ID
    mov eax, [rdi]
    shr eax, 24
    call put_dec
    call fail_end
    mov al, 2
    out DEBUG_EXIT_PORT, al             ; exit status 5
.halt:
    cli
    hlt
    jmp .halt

; =============================================================================
; The boot CPU
; =============================================================================
kmain:
    PRINT "boot-probe: started at the 64-bit entry point 0x1000200 of the "
    mov eax, _image_kind
    test eax, eax
    jnz .bz
    PRINT "vmlinux (ELF)", 10
    jmp .go
.bz:
    PRINT "bzImage", 10
.go:
    call check_entry_state
    call check_boot_params
    call read_cmdline
    call check_e820
    call check_initrd
    call check_mp_table
    call check_bsp_cpuid
    call start_aps
    ; fall through

; finish: the verdict line and the exit port.
finish:
    mov eax, [rel checks_failed]
    mov ebx, [rel checks_ok]
    add ebx, eax                        ; N = all checks
    test eax, eax
    jnz .failed
    PRINT "boot-probe: all "
    mov eax, ebx
    call put_dec
    PRINT " checks passed", 10
    xor eax, eax
    out DEBUG_EXIT_PORT, al             ; v = 0: exit status 1
    jmp .halt
.failed:
    PRINT "boot-probe: "
    call put_dec
    PRINT " of "
    mov eax, ebx
    call put_dec
    PRINT " checks failed", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al             ; v = 1: exit status 3
.halt:
    cli
    hlt
    jmp .halt

; -----------------------------------------------------------------------------
; 1. The CPU state at the entry point
; -----------------------------------------------------------------------------
check_entry_state:
    PRINT "boot-probe: long mode (EFER "
    mov rax, [rel entry_efer]
    call put_hex
    PRINT ")"
    and eax, EFER_LME | EFER_LMA
    cmp eax, EFER_LME | EFER_LMA
    jne .efer_bad
    OK
    jmp .cr0
.efer_bad:
    FAIL "EFER.LME (bit 8) and EFER.LMA (bit 10) must be 1"

.cr0:
    PRINT "boot-probe: paging and protected mode (CR0 "
    mov rax, [rel entry_cr0]
    call put_hex
    PRINT ")"
    and eax, CR0_PG | CR0_PE
    cmp eax, CR0_PG | CR0_PE
    jne .cr0_bad
    OK
    jmp .cr4
.cr0_bad:
    FAIL "CR0.PG (bit 31) and CR0.PE (bit 0) must be 1"

.cr4:
    PRINT "boot-probe: PAE paging (CR4 "
    mov rax, [rel entry_cr4]
    call put_hex
    PRINT ")"
    test eax, CR4_PAE
    jz .cr4_bad
    OK
    jmp .cs
.cr4_bad:
    FAIL "CR4.PAE (bit 5) must be 1"

.cs:
    PRINT "boot-probe: CS "
    movzx eax, word [rel entry_cs]
    call put_hex
    PRINT " (__BOOT_CS)"
    cmp eax, CODE64_SEL
    jne .cs_bad
    OK
    jmp .ds
.cs_bad:
    FAIL "expected 0x10"

.ds:
    PRINT "boot-probe: DS ES SS "
    movzx eax, word [rel entry_ds]
    call put_hex
    PRINT " "
    movzx eax, word [rel entry_es]
    call put_hex
    PRINT " "
    movzx eax, word [rel entry_ss]
    call put_hex
    PRINT " (__BOOT_DS)"
    cmp word [rel entry_ds], DATA_SEL
    jne .ds_bad
    cmp word [rel entry_es], DATA_SEL
    jne .ds_bad
    cmp word [rel entry_ss], DATA_SEL
    jne .ds_bad
    OK
    jmp .rflags
.ds_bad:
    FAIL "expected 0x18 in all three"

.rflags:
    PRINT "boot-probe: interrupts off (RFLAGS "
    mov rax, [rel entry_rflags]
    call put_hex
    PRINT ")"
    test eax, RFLAGS_IF
    jnz .if_bad
    OK
    jmp .rsi
.if_bad:
    FAIL "RFLAGS.IF (bit 9) must be 0"

.rsi:
    PRINT "boot-probe: RSI "
    mov rax, [rel entry_rsi]
    call put_hex
    PRINT " (boot_params)"
    mov [rel boot_params], rax
    cmp rax, EXPECTED_BOOT_PARAMS
    jne .rsi_bad
    OK
    jmp .gdt
.rsi_bad:
    FAIL "skvm puts boot_params at 0x7000"
    ; Use it anyway, as Linux would, if we can read it at all.
    mov rax, [rel boot_params]
    mov rbx, 0x100000000 - 4096
    cmp rax, rbx
    jbe .gdt
    PRINT "boot-probe: boot_params above 4 GiB: cannot continue", 10
    jmp finish

.gdt:
    ; The boot GDT: GDTR must cover selectors 0x10 and 0x18, and those
    ; descriptors must be flat 64-bit code and flat data.
    PRINT "boot-probe: boot GDT at "
    mov rax, [rel entry_gdtr + 2]
    call put_hex
    PRINT " (limit "
    movzx eax, word [rel entry_gdtr]
    call put_hex
    PRINT "; 0x10 flat 64-bit code, 0x18 flat data)"
    cmp word [rel entry_gdtr], DATA_SEL + 7
    jb .gdt_short
    mov rbx, [rel entry_gdtr + 2]
    mov rax, [rbx + CODE64_SEL]
    mov rcx, CODE64_MASK
    and rax, rcx
    mov rcx, FLAT_CODE64 & CODE64_MASK
    cmp rax, rcx
    jne .gdt_code
    mov rax, [rbx + DATA_SEL]
    mov rcx, DATA_MASK
    and rax, rcx
    mov rcx, FLAT_DATA & DATA_MASK
    cmp rax, rcx
    jne .gdt_data
    OK
    jmp .idmap
.gdt_short:
    FAIL "the GDT limit does not cover selector 0x18"
    jmp .idmap
.gdt_code:
    call fail_begin
    PRINT "descriptor 0x10 is "
    mov rax, [rbx + CODE64_SEL]
    call put_hex16
    PRINT ", expected like 0x00AF9A000000FFFF"
    call fail_end
    jmp .idmap
.gdt_data:
    call fail_begin
    PRINT "descriptor 0x18 is "
    mov rax, [rbx + DATA_SEL]
    call put_hex16
    PRINT ", expected like 0x00CF92000000FFFF"
    call fail_end

.idmap:
    ; Identity mapping of the kernel (PM_BASE + init_size), boot_params
    ; (4 KiB) and the command line buffer (cmdline_size + 1).
    PRINT "boot-probe: identity map (kernel 0x1000000 + init_size, boot_params, command line)"
    mov rax, [rel entry_cr4]
    test eax, CR4_LA57
    jnz .la57
    mov rdi, PM_BASE
    mov esi, _init_size
    call check_identity
    jc .idmap_bad
    mov rdi, [rel boot_params]
    mov esi, 4096
    call check_identity
    jc .idmap_bad
    mov rbx, [rel boot_params]
    mov edi, [rbx + BP_CMD_LINE_PTR]
    mov eax, [rbx + BP_EXT_CMD_LINE_PTR]
    shl rax, 32
    or rdi, rax
    mov esi, CMDLINE_SIZE + 1
    call check_identity
    jc .idmap_bad
    OK
    ret
.la57:
    FAIL "CR4.LA57 is set: 5-level paging, expected 4-level"
    ret
.idmap_bad:
    ; RDI = the virtual address, RAX = what it maps to (-1: not mapped)
    call fail_begin
    push rax
    mov rax, rdi
    call put_hex
    pop rax
    cmp rax, -1
    je .unmapped
    PRINT " maps to "
    call put_hex
    call fail_end
    ret
.unmapped:
    PRINT " is not mapped"
    call fail_end
    ret

; translate: RDI = virtual address -> RAX = physical address, or CF = 1 if
; not present. Walks the 4-level tables at CR3 (SDM Vol. 3A, 5.5; entries:
; bit 0 P, bit 7 PS in a PDPTE (1 GiB page) or PDE (2 MiB page); address
; bits 51:12). The tables are read through their physical addresses, which
; the identity map covers (skvm's are at 0x9000). Clobbers RCX, RDX.
PTE_ADDR equ 0x000FFFFFFFFFF000
translate:
    mov rax, cr3
    mov rdx, PTE_ADDR
    and rax, rdx
    mov rcx, rdi
    shr rcx, 39
    and ecx, 511
    mov rax, [rax + rcx * 8]            ; PML4E
    test al, 1
    jz .absent
    and rax, rdx
    mov rcx, rdi
    shr rcx, 30
    and ecx, 511
    mov rax, [rax + rcx * 8]            ; PDPTE
    test al, 1
    jz .absent
    test al, 0x80
    jnz .page_1g
    and rax, rdx
    mov rcx, rdi
    shr rcx, 21
    and ecx, 511
    mov rax, [rax + rcx * 8]            ; PDE
    test al, 1
    jz .absent
    test al, 0x80
    jnz .page_2m
    and rax, rdx
    mov rcx, rdi
    shr rcx, 12
    and ecx, 511
    mov rax, [rax + rcx * 8]            ; PTE
    test al, 1
    jz .absent
    and rax, rdx
    mov rcx, rdi
    and ecx, 0xFFF
    add rax, rcx
    clc
    ret
.page_2m:
    and rax, rdx
    and rax, ~0x1FFFFF
    mov rcx, rdi
    and ecx, 0x1FFFFF
    add rax, rcx
    clc
    ret
.page_1g:
    and rax, rdx
    and rax, ~0x3FFFFFFF
    mov rcx, rdi
    and ecx, 0x3FFFFFFF
    add rax, rcx
    clc
    ret
.absent:
    mov rax, -1
    stc
    ret

; check_identity: every 4 KiB page of [RDI, RDI + RSI) (RSI > 0) must map
; to itself. CF = 1 on the first that does not: RDI = it, RAX = its
; translation (-1: unmapped).
check_identity:
    push rcx
    push rdx
    push rbx
    lea rbx, [rdi + rsi - 1]            ; the last byte
.page:
    call translate
    jc .bad
    cmp rax, rdi
    jne .bad
    cmp rdi, rbx
    je .good
    and rdi, ~0xFFF
    add rdi, 0x1000                     ; the next page...
    cmp rdi, rbx
    jbe .page
    mov rdi, rbx                        ; ...or the last byte
    jmp .page
.good:
    clc
    jmp .out
.bad:
    stc
.out:
    pop rbx
    pop rdx
    pop rcx
    ret

; -----------------------------------------------------------------------------
; 2. boot_params: the setup header fields the loader writes or copies
; -----------------------------------------------------------------------------
check_boot_params:
    mov rbx, [rel boot_params]

    PRINT "boot-probe: boot_params boot_flag "
    movzx eax, word [rbx + BP_BOOT_FLAG]
    call put_hex
    cmp eax, 0xAA55
    jne .flag_bad
    OK
    jmp .hdrs
.flag_bad:
    FAIL "expected 0xAA55"

.hdrs:
    PRINT "boot-probe: boot_params header "
    cmp dword [rbx + BP_HEADER], 'HdrS'
    jne .hdrs_bad
    PRINT '"HdrS", protocol '
    movzx eax, byte [rbx + BP_VERSION + 1]
    call put_dec
    PRINT "."
    movzx eax, byte [rbx + BP_VERSION]
    cmp eax, 10
    jae .minor
    PRINT "0"
.minor:
    call put_dec
    OK
    jmp .loader
.hdrs_bad:
    mov eax, [rbx + BP_HEADER]
    call put_hex
    FAIL 'expected "HdrS" (0x53726448)'

.loader:
    PRINT "boot-probe: boot_params type_of_loader "
    movzx eax, byte [rbx + BP_TYPE_OF_LOADER]
    call put_hex
    cmp eax, 0xFF
    jne .loader_bad
    OK
    jmp .cmdline
.loader_bad:
    FAIL "expected 0xFF, a boot loader without an assigned id"

.cmdline:
    PRINT "boot-probe: boot_params cmd_line_ptr "
    mov eax, [rbx + BP_CMD_LINE_PTR]
    mov ecx, [rbx + BP_EXT_CMD_LINE_PTR]
    shl rcx, 32
    or rax, rcx
    mov [rel cmdline], rax
    call put_hex
    cmp rax, EXPECTED_CMDLINE
    jne .cmdline_bad
    OK
    jmp .header_copy
.cmdline_bad:
    FAIL "skvm puts the command line at 0x20000"

.header_copy:
    PRINT "boot-probe: boot_params setup header copied from the bzImage"
    mov eax, _image_kind
    test eax, eax
    jnz .compare
    SKIPPED "a vmlinux has no setup header: the loader makes one up"
    ret
.compare:
    lea rsi, [rel readonly_fields]
    lea rdi, [rel expected_header - BP_SETUP_HEADER]
.field:
    movzx edx, word [rsi]               ; offset
    movzx ecx, word [rsi + 2]           ; size
    test ecx, ecx
    jz .copied
.byte:
    mov al, [rbx + rdx]
    cmp al, [rdi + rdx]
    jne .differs
    inc edx
    dec ecx
    jnz .byte
    add rsi, 4
    jmp .field
.copied:
    OK
    ret
.differs:
    call fail_begin
    PRINT "the field at "
    movzx eax, word [rsi]
    call put_hex
    PRINT " differs from the image's"
    call fail_end
    ret

; -----------------------------------------------------------------------------
; 3. The command line: print it, then find the probe.* parameters
; -----------------------------------------------------------------------------
read_cmdline:
    mov rsi, [rel cmdline]
    PRINT "boot-probe: cmdline: "
    xor ecx, ecx
.print:
    mov al, [rsi + rcx]
    test al, al
    jz .end
    call lm_putc
    inc ecx
    cmp ecx, CMDLINE_SIZE + 1
    jb .print
.end:
    mov [rel cmdline_length], rcx
    PRINT 10
    PRINT "boot-probe: cmdline length "
    mov eax, ecx
    call put_dec
    PRINT ", NUL-terminated within cmdline_size 2047"
    cmp ecx, CMDLINE_SIZE
    ja .too_long
    OK
    jmp parse_params
.too_long:
    FAIL "no NUL in the first 2048 bytes"
    ret                                 ; do not parse an unterminated line

; parse_params: probe.cpus=N, probe.mem=M, probe.initrd=SIZE:SUM. Words are
; separated by any byte from 1 to ' '. A bad probe.* word is a failed check.
parse_params:
    mov rsi, [rel cmdline]
.next:
    mov al, [rsi]
    test al, al
    jz .done
    cmp al, ' '
    ja .word
    inc rsi
    jmp .next
.word:
    mov rbp, rsi                        ; RBP = the word, for messages
    lea rdi, [rel key_cpus]
    call match_prefix
    je .cpus
    lea rdi, [rel key_mem]
    call match_prefix
    je .mem
    lea rdi, [rel key_initrd]
    call match_prefix
    je .initrd
    lea rdi, [rel key_probe]
    call match_prefix
    je .bad                             ; probe.something-else
.skip:
    mov al, [rsi]
    cmp al, ' '
    jbe .next
    inc rsi
    jmp .skip
.cpus:
    call parse_number
    jc .bad
    call at_word_end
    jne .bad
    test rax, rax
    jz .bad
    cmp rax, MAX_APIC_ID
    ja .bad
    mov [rel param_cpus], rax
    mov byte [rel have_cpus], 1
    jmp .next
.mem:
    call parse_number
    jc .bad
    call at_word_end
    jne .bad
    test rax, rax
    jz .bad
    mov rcx, rax
    shr rcx, 40                         ; M MiB must fit in 64 bits of bytes
    jnz .bad
    mov [rel param_mem], rax
    mov byte [rel have_mem], 1
    jmp .next
.initrd:
    call parse_number
    jc .bad
    cmp byte [rsi], ':'
    jne .bad
    inc rsi
    mov rbx, rax
    call parse_number
    jc .bad
    call at_word_end
    jne .bad
    mov rcx, rax
    shr rcx, 32
    jnz .bad                            ; the sum is 32 bits
    mov [rel param_initrd_size], rbx
    mov [rel param_initrd_sum], rax
    mov byte [rel have_initrd], 1
    jmp .next
.bad:
    PRINT "boot-probe: probe parameter "
    mov rsi, rbp
    call lm_puttoken
    FAIL "expected probe.cpus=1..255, probe.mem=MIB or probe.initrd=SIZE:SUM"
    jmp .skip
.done:
    ret

; match_prefix: ZF = 1 if the text at RSI starts with the NUL-terminated
; string at RDI; then RSI points past it. Otherwise RSI is unchanged.
match_prefix:
    push rsi
    push rdi
.char:
    mov al, [rdi]
    test al, al
    jz .match
    cmp al, [rsi]
    jne .no
    inc rsi
    inc rdi
    jmp .char
.match:
    pop rdi
    add rsp, 8                          ; keep the advanced RSI
    xor eax, eax                        ; ZF = 1
    ret
.no:
    pop rdi
    pop rsi
    or eax, 1                           ; ZF = 0
    ret

; at_word_end: ZF = 1 if [RSI] ends a word (NUL or a byte <= ' ').
at_word_end:
    cmp byte [rsi], ' '
    ja .no
    cmp al, al                          ; ZF = 1
    ret
.no:
    push rax
    or eax, 1                           ; ZF = 0
    pop rax
    ret

; parse_number: a decimal number, or hex after "0x", at RSI -> RAX; RSI
; past it. CF = 1 if there is no digit or it overflows 64 bits.
parse_number:
    push rcx
    push rdx
    push rdi
    xor eax, eax
    xor ecx, ecx                        ; digits seen
    cmp byte [rsi], '0'
    jne .decimal
    mov dl, [rsi + 1]
    or dl, 0x20                         ; 'X' -> 'x'
    cmp dl, 'x'
    je .hex
.decimal:
    movzx edx, byte [rsi]
    sub edx, '0'
    cmp edx, 9
    ja .end
    push rdx
    mov edx, 10
    mul rdx                             ; RDX:RAX = RAX * 10
    pop rdx
    jc .overflow                        ; (MUL: CF = 1 if RDX != 0)
    add rax, rdx
    jc .overflow
    inc rsi
    inc ecx
    jmp .decimal
.hex:
    add rsi, 2
.hex_digit:
    movzx edx, byte [rsi]
    sub edx, '0'
    cmp edx, 9
    jbe .nibble
    movzx edx, byte [rsi]
    or edx, 0x20                        ; lower case
    sub edx, 'a'
    cmp edx, 5
    ja .end
    add edx, 10
.nibble:
    mov rdi, rax
    shr rdi, 60
    jnz .overflow
    shl rax, 4
    or rax, rdx
    inc rsi
    inc ecx
    jmp .hex_digit
.end:
    test ecx, ecx
    jz .overflow                        ; no digits
    pop rdi
    pop rdx
    pop rcx
    clc
    ret
.overflow:
    pop rdi
    pop rdx
    pop rcx
    stc
    ret

; -----------------------------------------------------------------------------
; 2b. The E820 map
; -----------------------------------------------------------------------------
check_e820:
    mov rbx, [rel boot_params]
    movzx ecx, byte [rbx + BP_E820_ENTRIES]
    mov [rel e820_count], rcx
    cmp ecx, E820_MAX_ENTRIES
    jbe .count_ok
    mov ecx, E820_MAX_ENTRIES           ; print no more than the table holds
.count_ok:
    lea rsi, [rbx + BP_E820_TABLE]
    test ecx, ecx
    jz .printed
.print:
    PRINT "boot-probe: e820 "
    mov rax, [rsi]
    call put_hex16
    PRINT "-"
    add rax, [rsi + 8]
    dec rax                             ; the last byte, as Linux prints it
    call put_hex16
    PRINT " "
    mov eax, [rsi + 16]
    call put_dec
    call put_e820_type
    PRINT 10
    add rsi, E820_ENTRY_SIZE
    dec ecx
    jnz .print
.printed:

    ; Sorted, non-overlapping, no empty or wrapping entry.
    PRINT "boot-probe: e820 table: "
    mov rax, [rel e820_count]
    call put_dec
    PRINT " entries, sorted, non-overlapping"
    mov rcx, [rel e820_count]
    test ecx, ecx
    jz .empty
    cmp ecx, E820_MAX_ENTRIES
    ja .too_many
    lea rsi, [rbx + BP_E820_TABLE]
    xor edx, edx                        ; RDX = end of the previous entry
    xor r8d, r8d                        ; R8 = usable bytes
    xor r9d, r9d                        ; R9 = entry index
.entry:
    mov rax, [rsi]
    mov rdi, [rsi + 8]
    test rdi, rdi
    jz .zero_size
    cmp rax, rdx
    jb .overlap
    add rax, rdi
    jc .wraps
    mov rdx, rax
    cmp dword [rsi + 16], E820_USABLE
    jne .not_usable
    add r8, rdi
.not_usable:
    add rsi, E820_ENTRY_SIZE
    inc r9d
    cmp r9, rcx
    jb .entry
    mov [rel e820_usable], r8
    mov byte [rel e820_ok], 1
    OK
    jmp check_usable
.empty:
    FAIL "e820_entries is 0"
    ret
.too_many:
    FAIL "e820_entries is above 128, the size of e820_table"
    ret
.zero_size:
    call fail_begin
    PRINT "entry "
    mov eax, r9d
    call put_dec
    PRINT " is empty"
    call fail_end
    ret
.overlap:
    call fail_begin
    PRINT "entry "
    mov eax, r9d
    call put_dec
    PRINT " starts below the end of the one before"
    call fail_end
    ret
.wraps:
    call fail_begin
    PRINT "entry "
    mov eax, r9d
    call put_dec
    PRINT " wraps around 2^64"
    call fail_end
    ret

; put_e820_type: " (name)" for the type in EAX (Linux's names).
put_e820_type:
    cmp eax, 1
    jne .t2
    PRINT " (usable)"
    ret
.t2:
    cmp eax, 2
    jne .t3
    PRINT " (reserved)"
    ret
.t3:
    cmp eax, 3
    jne .t4
    PRINT " (ACPI data)"
    ret
.t4:
    cmp eax, 4
    jne .t5
    PRINT " (ACPI NVS)"
    ret
.t5:
    cmp eax, 5
    jne .other
    PRINT " (unusable)"
    ret
.other:
    PRINT " (unknown)"
    ret

; check_usable: the usable total against probe.mem, and the kernel's place.
check_usable:
    PRINT "boot-probe: e820 usable RAM "
    mov rax, [rel e820_usable]
    call put_hex
    PRINT " bytes"
    cmp byte [rel have_mem], 0
    jne .compare
    SKIPPED "no probe.mem=MIB on the command line"
    jmp .kernel
.compare:
    PRINT " (probe.mem="
    mov rax, [rel param_mem]
    call put_dec
    PRINT ")"
    shl rax, 20
    sub rax, LEGACY_HOLE
    cmp rax, [rel e820_usable]
    jne .mem_bad
    OK
    jmp .kernel
.mem_bad:
    call fail_begin
    PRINT "expected "
    call put_hex
    PRINT " = probe.mem MiB - 0x60400, the hole at 0x9FC00-0xFFFFF"
    call fail_end

.kernel:
    PRINT "boot-probe: kernel 0x1000000-"
    mov eax, _init_size
    add eax, PM_BASE - 1
    call put_hex
    PRINT " (init_size) in usable RAM"
    mov rdi, PM_BASE
    mov esi, _init_size
    call in_usable
    jc .kernel_bad
    OK
    ret
.kernel_bad:
    FAIL "not inside one usable E820 entry"
    ret

; in_usable: CF = 0 if [RDI, RDI + RSI) lies inside one usable E820 entry.
in_usable:
    push rax
    push rbx
    push rcx
    push rdx
    mov rbx, [rel boot_params]
    mov rcx, [rel e820_count]
    lea rdx, [rbx + BP_E820_TABLE]
    lea rbx, [rdi + rsi]                ; RBX = end
.entry:
    test rcx, rcx
    jz .no
    cmp dword [rdx + 16], E820_USABLE
    jne .next
    cmp rdi, [rdx]
    jb .next
    mov rax, [rdx]
    add rax, [rdx + 8]
    cmp rbx, rax
    ja .next
    clc
    jmp .out
.next:
    add rdx, E820_ENTRY_SIZE
    dec rcx
    jmp .entry
.no:
    stc
.out:
    pop rdx
    pop rcx
    pop rbx
    pop rax
    ret

; -----------------------------------------------------------------------------
; 3b. The initrd
; -----------------------------------------------------------------------------
check_initrd:
    mov rbx, [rel boot_params]
    mov r12d, [rbx + BP_RAMDISK_IMAGE]  ; R12 = address (64 bits, with ext_)
    mov eax, [rbx + BP_EXT_RAMDISK_IMAGE]
    shl rax, 32
    or r12, rax
    mov r13d, [rbx + BP_RAMDISK_SIZE]   ; R13 = size
    mov eax, [rbx + BP_EXT_RAMDISK_SIZE]
    shl rax, 32
    or r13, rax

    cmp byte [rel have_initrd], 0
    jne .placement
    PRINT "boot-probe: initrd"
    test r13, r13
    jz .none
    PRINT " at "
    mov rax, r12
    call put_hex
    PRINT ", "
    mov rax, r13
    call put_dec
    PRINT " bytes"
.none:
    SKIPPED "no probe.initrd=SIZE:SUM on the command line"
    ret

.placement:
    PRINT "boot-probe: initrd at "
    mov rax, r12
    call put_hex
    PRINT " (page aligned, below initrd_addr_max, in usable RAM, clear of the kernel)"
    test r13, r13
    jz .no_initrd
    test r12d, 0xFFF
    jnz .unaligned
    lea rax, [r12 + r13 - 1]
    mov ecx, INITRD_ADDR_MAX
    cmp rax, rcx
    ja .too_high
    mov rdi, r12
    mov rsi, r13
    call in_usable
    jc .not_ram
    lea rax, [r12 + r13]                ; overlaps [PM_BASE, PM_BASE + init_size)?
    cmp rax, PM_BASE
    jbe .placed
    mov eax, _init_size
    add eax, PM_BASE
    cmp r12, rax
    jb .overlaps
.placed:
    OK
    mov r14b, 1                         ; readable: the sum may be checked
    jmp .size
.no_initrd:
    FAIL "ramdisk_size is 0: the loader passed no initrd"
    jmp .size_fail
.unaligned:
    FAIL "ramdisk_image is not a multiple of 4096"
    jmp .size_fail
.too_high:
    FAIL "it ends above initrd_addr_max 0x7FFFFFFF"
    jmp .size_fail
.not_ram:
    FAIL "not inside one usable E820 entry"
    jmp .size_fail
.overlaps:
    FAIL "it overlaps the kernel's init_size area"
.size_fail:
    xor r14d, r14d

.size:
    PRINT "boot-probe: initrd size "
    mov rax, r13
    call put_dec
    PRINT " bytes"
    cmp r13, [rel param_initrd_size]
    jne .size_bad
    OK
    jmp .sum
.size_bad:
    call fail_begin
    PRINT "probe.initrd says "
    mov rax, [rel param_initrd_size]
    call put_dec
    call fail_end
    xor r14d, r14d

.sum:
    PRINT "boot-probe: initrd byte sum"
    test r14b, r14b
    jnz .add
    SKIPPED "the initrd's place or size is wrong"
    ret
.add:
    mov rsi, r12
    mov rcx, r13
    call byte_sum
    PRINT " "
    call put_dec
    cmp rax, [rel param_initrd_sum]
    jne .sum_bad
    OK
    ret
.sum_bad:
    call fail_begin
    PRINT "probe.initrd says "
    mov rax, [rel param_initrd_sum]
    call put_dec
    call fail_end
    ret

; byte_sum: EAX = the sum of the RCX bytes at RSI, mod 2^32 (RAX's high
; half 0). Clobbers RSI, RCX, RDX, R8-R11.
; Eight bytes per step: split a qword into its even and odd bytes, each
; in the low half of a 16-bit lane (AND with 0x00FF00FF00FF00FF), and add
; both into four 16-bit lane sums. A lane gains at most 2 * 255 = 510 per
; qword, so 128 qwords (65280) cannot overflow it; after each block of
; 128 the lanes are folded into the 64-bit total. About 10 instructions per
; 8 bytes instead of 5 per byte: that matters when every instruction is
; emulated.
byte_sum:
    xor r8d, r8d                        ; total
    mov r11, 0x00FF00FF00FF00FF
.block:
    mov rdx, rcx
    shr rdx, 3                          ; qwords left
    jz .tail
    cmp rdx, 128
    jbe .count
    mov edx, 128
.count:
    mov rax, rdx
    shl rax, 3
    sub rcx, rax
    xor r9d, r9d                        ; four 16-bit lane sums
.qword:
    mov rax, [rsi]
    mov r10, rax
    and rax, r11                        ; bytes 0, 2, 4, 6
    shr r10, 8
    and r10, r11                        ; bytes 1, 3, 5, 7
    add r9, rax
    add r9, r10
    add rsi, 8
    dec rdx
    jnz .qword
    mov rax, r9                         ; fold the lanes:
    shr rax, 16
    mov r10, 0x0000FFFF0000FFFF
    and r9, r10
    and rax, r10
    add r9, rax                         ; two 32-bit lanes
    mov eax, r9d
    shr r9, 32
    add r8, rax
    add r8, r9
    jmp .block
.tail:
    test rcx, rcx
    jz .done
.byte:
    movzx eax, byte [rsi]
    add r8, rax
    inc rsi
    dec rcx
    jnz .byte
.done:
    mov eax, r8d
    ret

; -----------------------------------------------------------------------------
; 4. The MP table
; -----------------------------------------------------------------------------
; sum8: AL = the sum of the RCX bytes at RSI, mod 256 (0 = valid checksum).
sum8:
    push rcx
    push rsi
    xor eax, eax
    test rcx, rcx
    jz .done
.byte:
    add al, [rsi]
    inc rsi
    dec rcx
    jnz .byte
.done:
    pop rsi
    pop rcx
    ret

check_mp_table:
    ; The floating pointer (MP spec 4.1): "_MP_" on a 16-byte boundary,
    ; length in 16-byte units at +8, and all its bytes sum to 0.
    mov esi, 0x9FC00
.scan:
    cmp dword [rsi], '_MP_'
    jne .next
    movzx ecx, byte [rsi + 8]
    shl ecx, 4
    jz .next
    call sum8
    test al, al
    jz .found
.next:
    add esi, 16
    cmp esi, 0xA0000
    jb .scan
    PRINT "boot-probe: mp floating pointer"
    FAIL 'no "_MP_" with a valid checksum in 0x9FC00-0x9FFFF'
    ret
.found:
    mov [rel mp_fp], rsi
    PRINT 'boot-probe: mp floating pointer "_MP_" at '
    mov rax, rsi
    call put_hex
    PRINT " (spec 1."
    movzx eax, byte [rsi + 9]
    call put_dec
    PRINT ", checksum ok)"
    mov al, [rsi + 9]
    cmp al, 1
    je .revision_ok
    cmp al, 4
    jne .revision_bad
.revision_ok:
    cmp byte [rsi + 11], 0
    jne .default_config
    mov eax, [rsi + 4]
    test eax, eax
    jz .no_table
    mov [rel mp_table], rax
    OK
    jmp check_mp_config
.revision_bad:
    FAIL "spec revision must be 1 (1.1) or 4 (1.4)"
    ret
.default_config:
    FAIL "feature byte 1 selects a default configuration: no table"
    ret
.no_table:
    FAIL "the configuration table pointer is 0"
    ret

check_mp_config:
    ; The configuration table header (MP spec 4.2): "PCMP", base table
    ; length (+4), revision (+6), checksum (+7), entry count (+34), local
    ; APIC address (+36); 44 bytes, then the entries.
    mov rbx, [rel mp_table]
    PRINT 'boot-probe: mp config table "PCMP" at '
    mov rax, rbx
    call put_hex
    cmp dword [rbx], 'PCMP'
    jne .signature_bad
    PRINT " ("
    movzx eax, word [rbx + 4]
    call put_dec
    PRINT " bytes, "
    movzx eax, word [rbx + 34]
    call put_dec
    PRINT " entries, local APIC "
    mov eax, [rbx + 36]
    call put_hex
    PRINT ", checksum)"
    movzx ecx, word [rbx + 4]
    cmp ecx, 44
    jb .length_bad
    mov rsi, rbx
    call sum8
    test al, al
    jnz .checksum_bad
    cmp dword [rbx + 36], LAPIC
    jne .lapic_bad
    call parse_mp_entries
    mov rax, [rel mp_bad_entry]
    test rax, rax
    jnz .entry_bad
    OK
    jmp check_mp_contents
.signature_bad:
    FAIL 'no "PCMP" signature'
    ret
.length_bad:
    FAIL "base table length below the 44-byte header"
    ret
.checksum_bad:
    FAIL "the bytes of the base table do not sum to 0"
    ret
.lapic_bad:
    FAIL "local APIC address must be 0xFEE00000"
    ret
.entry_bad:
    call fail_begin
    PRINT "unknown entry type, or an entry past the table's end, at "
    call put_hex
    call fail_end
    ret

; parse_mp_entries: walk the base table's entries (MP spec 4.3) and fill
; in the mp_* variables. Entries come sorted by type: processors (20
; bytes), buses, IOAPICs, I/O interrupts, local interrupts (8 bytes each).
parse_mp_entries:
    mov rbx, [rel mp_table]
    movzx ecx, word [rbx + 34]          ; entries
    movzx edx, word [rbx + 4]
    add rdx, rbx                        ; RDX = end of the base table
    lea rsi, [rbx + 44]
.entry:
    test ecx, ecx
    jz .done
    movzx eax, byte [rsi]
    mov edi, 8
    test eax, eax
    jnz .sized
    mov edi, 20
.sized:
    lea r8, [rsi + rdi]
    cmp r8, rdx
    ja .bad
    cmp eax, 4
    ja .bad
    lea r8, [rel .handlers]
    jmp [r8 + rax * 8]
.next:
    add rsi, rdi
    dec ecx
    jmp .entry
.done:
    ret
.bad:
    mov [rel mp_bad_entry], rsi
    ret

.processor:                             ; 4.3.1: id +1, flags +3 (EN 1, BP 2)
    test byte [rsi + 3], 1
    jz .next
    movzx eax, byte [rsi + 1]
    cmp eax, 0xFF
    jne .not_broadcast
    mov qword [rel mp_broadcast], 1
.not_broadcast:
    mov r8, [rel mp_cpu_count]
    lea r9, [rel mp_ids]
    xor r10d, r10d
.dup:
    cmp r10, r8
    je .new
    cmp [r9 + r10], al
    je .duplicate
    inc r10
    jmp .dup
.duplicate:
    mov qword [rel mp_duplicate], 1
    jmp .flags
.new:
    cmp r8, 256
    jae .flags
    mov [r9 + r8], al
    inc qword [rel mp_cpu_count]
.flags:
    test byte [rsi + 3], 2
    jz .next
    inc qword [rel mp_bp_count]
    mov [rel mp_bp_id], rax
    jmp .next

.bus:                                   ; 4.3.2: id +1, type string +2 (6 bytes)
    mov eax, [rsi + 2]
    lea r8, [rel isa_name]
    cmp eax, [r8]
    jne .next
    mov ax, [rsi + 6]
    cmp ax, [r8 + 4]
    jne .next
    movzx eax, byte [rsi + 1]
    inc eax
    mov [rel mp_isa_bus], rax
    jmp .next

.ioapic:                                ; 4.3.3: id +1, flags +3 (EN 1), address +4
    test byte [rsi + 3], 1
    jz .next
    inc qword [rel mp_ioapic_count]
    movzx eax, byte [rsi + 1]
    mov [rel mp_ioapic_id], rax
    mov eax, [rsi + 4]
    mov [rel mp_ioapic_addr], rax
    jmp .next

.io_interrupt:                          ; 4.3.4: type +1, bus +4, IRQ +5, IOAPIC +6, pin +7
    movzx eax, byte [rsi + 4]
    inc eax
    cmp rax, [rel mp_isa_bus]
    jne .next
    movzx eax, byte [rsi + 6]
    cmp rax, [rel mp_ioapic_id]
    je .to_our_ioapic
    cmp eax, 0xFF                       ; "all IOAPICs"
    jne .next
.to_our_ioapic:
    movzx eax, byte [rsi + 5]
    cmp eax, 16
    jae .next
    bts [rel mp_isa_irqs], rax
    jmp .next

.local_interrupt:                       ; 4.3.5: type +1, LINTIN# +7
    mov al, [rsi + 1]
    mov ah, [rsi + 7]
    cmp ax, 0x0003                      ; ExtINT (3) on LINT0
    jne .nmi
    mov qword [rel mp_lint0_extint], 1
    jmp .next
.nmi:
    cmp ax, 0x0101                      ; NMI (1) on LINT1
    jne .next
    mov qword [rel mp_lint1_nmi], 1
    jmp .next

    section .rodata
    align 8
.handlers:
    dq .processor, .bus, .ioapic, .io_interrupt, .local_interrupt
    section .text

check_mp_contents:
    PRINT "boot-probe: mp table: "
    mov rax, [rel mp_cpu_count]
    call put_dec
    PRINT " cpus, "
    cmp qword [rel mp_ioapic_count], 0
    je .no_ioapic
    PRINT "ioapic id "
    mov rax, [rel mp_ioapic_id]
    call put_dec
    PRINT 10
    jmp .count
.no_ioapic:
    PRINT "no ioapic", 10

.count:
    PRINT "boot-probe: mp processor entries: "
    mov rax, [rel mp_cpu_count]
    call put_dec
    cmp byte [rel have_cpus], 0
    jne .compare
    SKIPPED "no probe.cpus=N on the command line"
    jmp .bsp
.compare:
    PRINT " (probe.cpus="
    mov rax, [rel param_cpus]
    call put_dec
    PRINT ")"
    cmp rax, [rel mp_cpu_count]
    jne .count_bad
    OK
    jmp .bsp
.count_bad:
    call fail_begin
    PRINT "expected "
    call put_dec
    PRINT ", one per vCPU"
    call fail_end

.bsp:
    ; Exactly one processor has the BP flag, and it is this CPU.
    mov edi, LAPIC_ID
    mov eax, [rdi]
    shr eax, 24
    mov [rel bsp_apic_id], rax
    PRINT "boot-probe: mp bootstrap processor: apic id "
    mov rax, [rel mp_bp_id]
    call put_dec
    PRINT ", this CPU (local APIC id "
    mov rax, [rel bsp_apic_id]
    call put_dec
    PRINT "), ids unique and below 255"
    cmp qword [rel mp_bp_count], 1
    jne .bp_count_bad
    mov rax, [rel mp_bp_id]
    cmp rax, [rel bsp_apic_id]
    jne .bp_bad
    cmp qword [rel mp_duplicate], 0
    jne .dup_bad
    cmp qword [rel mp_broadcast], 0
    jne .broadcast_bad
    OK
    jmp .others
.broadcast_bad:
    FAIL "a processor has APIC id 255, the xAPIC broadcast id"
    jmp .others
.bp_count_bad:
    call fail_begin
    mov rax, [rel mp_bp_count]
    call put_dec
    PRINT " entries have the BP flag, expected 1"
    call fail_end
    jmp .others
.bp_bad:
    FAIL "the BP entry is not this CPU"
    jmp .others
.dup_bad:
    FAIL "an APIC id appears twice"

.others:
    PRINT "boot-probe: mp bus, ioapic and interrupt entries (ISA bus, IOAPIC at 0xFEC00000, ISA IRQs 0-15, LINT0 ExtINT, LINT1 NMI)"
    cmp qword [rel mp_isa_bus], 0
    je .no_isa
    cmp qword [rel mp_ioapic_count], 1
    jne .ioapics_bad
    mov eax, IOAPIC                     ; (zero-extended: a CMP immediate
    cmp [rel mp_ioapic_addr], rax       ;  would be sign-extended)
    jne .ioapic_addr_bad
    mov rax, [rel mp_ioapic_id]         ; APIC ids are one name space:
    lea rsi, [rel mp_ids]               ; the IOAPIC's must differ from
    mov rcx, [rel mp_cpu_count]         ; every processor's
.ioapic_vs_cpu:
    test rcx, rcx
    jz .ioapic_id_unique
    cmp [rsi + rcx - 1], al
    je .ioapic_id_bad
    dec rcx
    jmp .ioapic_vs_cpu
.ioapic_id_unique:
    cmp qword [rel mp_isa_irqs], 0xFFFF
    jne .irqs_bad
    cmp qword [rel mp_lint0_extint], 0
    je .lint0_bad
    cmp qword [rel mp_lint1_nmi], 0
    je .lint1_bad
    OK
    jmp .ap_list
.no_isa:
    FAIL 'no bus entry of type "ISA   "'
    jmp .ap_list
.ioapics_bad:
    call fail_begin
    mov rax, [rel mp_ioapic_count]
    call put_dec
    PRINT " enabled IOAPIC entries, expected 1"
    call fail_end
    jmp .ap_list
.ioapic_addr_bad:
    call fail_begin
    PRINT "the IOAPIC is at "
    mov rax, [rel mp_ioapic_addr]
    call put_hex
    call fail_end
    jmp .ap_list
.ioapic_id_bad:
    FAIL "the IOAPIC id is also a processor's APIC id"
    jmp .ap_list
.irqs_bad:
    call fail_begin
    PRINT "ISA IRQs routed to the IOAPIC: mask "
    mov rax, [rel mp_isa_irqs]
    call put_hex
    PRINT ", expected 0xFFFF"
    call fail_end
    jmp .ap_list
.lint0_bad:
    FAIL "no local interrupt entry ExtINT -> LINT0"
    jmp .ap_list
.lint1_bad:
    FAIL "no local interrupt entry NMI -> LINT1"

.ap_list:
    ; The APs: every listed processor but this one, sorted by APIC id
    ; (insertion sort: at most 255 of them).
    lea rsi, [rel mp_ids]
    lea rdi, [rel ap_ids]
    mov rcx, [rel mp_cpu_count]
    xor r8d, r8d                        ; APs so far
    mov rbx, [rel bsp_apic_id]
.each:
    test rcx, rcx
    jz .sorted
    movzx eax, byte [rsi]
    inc rsi
    dec rcx
    cmp rax, rbx
    je .each
    mov r9, r8                          ; insert AL into ap_ids[0..r8)
.shift:
    test r9, r9
    jz .put
    cmp [rdi + r9 - 1], al
    jbe .put
    mov dl, [rdi + r9 - 1]
    mov [rdi + r9], dl
    dec r9
    jmp .shift
.put:
    mov [rdi + r9], al
    inc r8
    jmp .each
.sorted:
    mov [rel ap_count], r8
    ret

; -----------------------------------------------------------------------------
; 5. CPUID and the local APIC on the boot CPU
; -----------------------------------------------------------------------------
; expected_cpus: RAX = the number of CPUs the machine should have
; (probe.cpus, else the MP table's count), CF = 1 if neither is known.
expected_cpus:
    mov rax, [rel param_cpus]
    cmp byte [rel have_cpus], 0
    jne .known
    mov rax, [rel mp_cpu_count]
    test rax, rax
    jz .unknown
.known:
    clc
    ret
.unknown:
    stc
    ret

; cpuid_x2apic_id: EAX = CPUID.0BH:EDX (the x2APIC id), or -1 if leaf 0xB
; does not exist (SDM: max leaf >= 0xB and CPUID.0BH:EBX[15:0] != 0).
; Clobbers EBX, ECX, EDX.
cpuid_x2apic_id:
    xor eax, eax
    cpuid
    cmp eax, 0xB
    jb .none
    mov eax, 0xB
    xor ecx, ecx
    cpuid
    test bx, bx
    jz .none
    mov eax, edx
    ret
.none:
    mov eax, -1
    ret

; cpuid_ext_apic_id: EAX = CPUID.8000_001EH:EAX (AMD's extended APIC id),
; or -1 unless the CPU has TOPOEXT (CPUID.8000_0001H:ECX bit 22).
; Clobbers EBX, ECX, EDX.
cpuid_ext_apic_id:
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x8000001E
    jb .none
    mov eax, 0x80000001
    cpuid
    bt ecx, 22
    jnc .none
    mov eax, 0x8000001E
    cpuid
    ret
.none:
    mov eax, -1
    ret

check_bsp_cpuid:
    mov eax, 1
    cpuid
    mov r12d, ebx
    PRINT "boot-probe: cpuid 1 on the BSP: apic id "
    mov eax, r12d
    shr eax, 24
    call put_dec
    PRINT ", "
    mov eax, r12d
    shr eax, 16
    movzx eax, al
    call put_dec
    PRINT " logical processors"
    mov eax, r12d
    shr eax, 24
    jnz .id_bad
    call expected_cpus
    jc .count_unknown
    mov ecx, r12d
    shr ecx, 16
    movzx ecx, cl
    cmp rax, rcx
    jne .count_bad
    OK
    jmp .leaf_b
.id_bad:
    FAIL "EBX[31:24] must be 0 on the boot CPU"
    jmp .leaf_b
.count_unknown:
    SKIPPED "neither probe.cpus nor an MP table says how many"
    jmp .leaf_b
.count_bad:
    call fail_begin
    PRINT "EBX[23:16] should be "
    call put_dec
    call fail_end

.leaf_b:
    PRINT "boot-probe: cpuid 0xB on the BSP: x2apic id"
    call cpuid_x2apic_id
    cmp eax, -1
    jne .have_b
    SKIPPED "no leaf 0xB"
    jmp .leaf_1e
.have_b:
    PRINT " "
    call put_dec
    test eax, eax
    jnz .b_bad
    OK
    jmp .leaf_1e
.b_bad:
    FAIL "EDX must be 0 on the boot CPU"

.leaf_1e:
    PRINT "boot-probe: cpuid 0x8000001E on the BSP: extended apic id"
    call cpuid_ext_apic_id
    cmp eax, -1
    jne .have_1e
    SKIPPED "no TOPOEXT"
    jmp .apic
.have_1e:
    PRINT " "
    call put_dec
    test eax, eax
    jnz .e_bad
    OK
    jmp .apic
.e_bad:
    FAIL "EAX must be 0 on the boot CPU"

.apic:
    ; IA32_APIC_BASE (SDM Vol. 3A, 11.4.4): base 0xFEE00000, bit 11 global
    ; enable, bit 8 BSP. And the ID register.
    mov ecx, MSR_APIC_BASE
    rdmsr
    mov r12d, eax
    PRINT "boot-probe: local APIC on the BSP: IA32_APIC_BASE "
    mov eax, r12d
    call put_hex
    PRINT ", ID register "
    mov edi, LAPIC_ID
    mov eax, [rdi]
    shr eax, 24
    call put_dec
    test eax, eax
    jnz .lapic_id_bad
    mov eax, r12d
    and eax, 0xFFFFF000
    cmp eax, LAPIC
    jne .base_bad
    test r12d, APIC_BASE_ENABLE
    jz .disabled
    test r12d, APIC_BASE_BSP
    jz .not_bsp
    OK
    ret
.lapic_id_bad:
    FAIL "the boot CPU's APIC id must be 0"
    ret
.base_bad:
    FAIL "the xAPIC must be at 0xFEE00000"
    ret
.disabled:
    FAIL "bit 11 (APIC global enable) is 0"
    ret
.not_bsp:
    FAIL "bit 8 (BSP) is 0"
    ret

; -----------------------------------------------------------------------------
; 6. Starting the APs
; -----------------------------------------------------------------------------
; send_ipi: EDI = destination APIC id, ESI = ICR low (the command). Waits
; until the local APIC has sent it (delivery status 0, bounded).
send_ipi:
    push rax
    push rcx
    push rdx
    mov edx, LAPIC_ICR_LOW
    call .wait_idle
    mov eax, edi
    shl eax, 24
    mov ecx, LAPIC_ICR_HIGH
    mov [rcx], eax                      ; destination first...
    mov [rdx], esi                      ; ...writing the low half sends it
    call .wait_idle
    pop rdx
    pop rcx
    pop rax
    ret
.wait_idle:
    mov ecx, ICR_POLLS
.poll:
    test dword [rdx], ICR_BUSY
    jz .idle
    pause
    dec ecx
    jnz .poll
.idle:
    ret

; delay: a short busy loop (the "wait"s of the INIT-SIPI-SIPI sequence).
delay:
    push rcx
    mov ecx, DELAY_LOOPS
.loop:
    dec ecx
    jnz .loop
    pop rcx
    ret

start_aps:
    mov rcx, [rel ap_count]
    test rcx, rcx
    jz .summary
    ; The trampoline goes to 0x10000, with this CPU's control registers.
    lea rsi, [rel trampoline]
    mov edi, TRAMPOLINE
    mov ecx, trampoline_end - trampoline
    rep movsb
    mov rax, [rel entry_cr0]
    mov [TRAMPOLINE + tr_cr0 - trampoline], eax
    mov rax, [rel entry_cr3]
    mov [TRAMPOLINE + tr_cr3 - trampoline], eax
    mov rax, [rel entry_cr4]
    mov [TRAMPOLINE + tr_cr4 - trampoline], eax
    ; Software-enable our local APIC (SVR bit 8; spurious vector 0xFF), as
    ; the SDM's BSP sequence does before sending IPIs.
    mov edi, LAPIC_SVR
    mov dword [rdi], 0x1FF

    xor r15d, r15d                      ; index into ap_ids
.next_ap:
    cmp r15, [rel ap_count]
    jae .summary
    lea rax, [rel ap_ids]
    movzx r12d, byte [rax + r15]        ; R12 = the AP's APIC id
    lea rax, [rel cpu_number]
    lea ecx, [r15d + 1]
    mov [rax + r12], cl                 ; it will call itself "cpu r15 + 1"
    cmp r12d, 0xFF
    je .broadcast
    mov [rel ap_target], r12d
    mov r13d, [rel cpus_online]
    inc r13d                            ; the count once it is up

    mov edi, r12d
    mov esi, ICR_INIT
    call send_ipi
    call delay
    mov esi, ICR_STARTUP | SIPI_VECTOR
    call send_ipi
    call delay
    call send_ipi                       ; the second STARTUP (ignored by an
                                        ; AP that already runs)
    mov ecx, AP_WAIT_POLLS
.wait:
    cmp [rel cpus_online], r13d
    jae .up
    pause
    dec ecx
    jnz .wait
    call lock_acquire
    PRINT "boot-probe: cpu "
    lea eax, [r15d + 1]
    call put_dec
    PRINT " online (apic id "
    mov eax, r12d
    call put_dec
    PRINT ")"
    FAIL "no answer to INIT-SIPI-SIPI"
    call lock_release
    jmp .up
.broadcast:
    ; An IPI to APIC id 0xFF goes to EVERY CPU (xAPIC physical mode):
    ; an INIT to it would reset this CPU too. So never start "CPU 255".
    call lock_acquire
    PRINT "boot-probe: cpu "
    lea eax, [r15d + 1]
    call put_dec
    PRINT " online (apic id 255)"
    FAIL "not started: an INIT to 255, the broadcast id, would reset every CPU"
    call lock_release
.up:
    inc r15
    jmp .next_ap

.summary:
    call lock_acquire
    PRINT "boot-probe: smp: "
    mov eax, [rel cpus_online]
    inc eax                             ; and this CPU
    mov ebx, eax
    call put_dec
    PRINT " of "
    call expected_cpus
    jc .unknown
    call put_dec
    PRINT " cpus online"
    cmp rax, rbx
    jne .short
    OK
    jmp .out
.unknown:
    PRINT "? cpus online"
    SKIPPED "neither probe.cpus nor an MP table says how many"
    jmp .out
.short:
    FAIL "not every vCPU came online"
.out:
    jmp lock_release

; -----------------------------------------------------------------------------
; The AP trampoline (copied to TRAMPOLINE = 0x10000)
; -----------------------------------------------------------------------------
; Position-independent by construction: every address is TRAMPOLINE plus a
; label difference, computed by the assembler.
    bits 16
trampoline:
    ; Real mode, CS = 0x1000 (base 0x10000), IP = 0, after a STARTUP IPI.
    cli
    mov ax, cs
    mov ds, ax
    o32 lgdt [tr_gdtr - trampoline]     ; 32-bit base: our GDT is at 16 MiB+
    mov eax, cr0
    or al, CR0_PE
    mov cr0, eax                        ; protected mode (paging still off)
    jmp dword CODE32_SEL:(TRAMPOLINE + .pm32 - trampoline)
    bits 32
.pm32:
    mov ax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, [TRAMPOLINE + tr_cr4 - trampoline]
    mov cr4, eax                        ; PAE (the BSP's CR4)
    mov eax, [TRAMPOLINE + tr_cr3 - trampoline]
    mov cr3, eax                        ; the BSP's page tables
    mov ecx, MSR_EFER
    rdmsr
    or eax, EFER_LME
    wrmsr
    mov eax, [TRAMPOLINE + tr_cr0 - trampoline]
    mov cr0, eax                        ; PG: long mode is active
    jmp CODE64_SEL:(TRAMPOLINE + .lm64 - trampoline)
    bits 64
.lm64:
    mov eax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov ss, ax
    ; A stack per APIC id: ap_stacks + (id + 1) * 1 KiB.
    mov edi, LAPIC_ID
    mov eax, [rdi]
    shr eax, 24
    inc eax
    shl eax, AP_STACK_SHIFT
    mov rsp, ap_stacks
    add rsp, rax
    mov rax, ap_main
    jmp rax
    align 4
    dw 0
tr_gdtr:
    dw gdt_end - gdt - 1
    dd gdt
tr_cr0: dd 0
tr_cr3: dd 0
tr_cr4: dd 0
trampoline_end:

; -----------------------------------------------------------------------------
; An AP, in long mode
; -----------------------------------------------------------------------------
ap_main:
    call load_tables
    mov edi, LAPIC_ID
    mov r12d, [rdi]
    shr r12d, 24                        ; R12 = local APIC ID register
    mov eax, 1
    cpuid
    shr ebx, 24
    mov r13d, ebx                       ; R13 = CPUID.1:EBX[31:24]
    call cpuid_x2apic_id
    mov r14d, eax                       ; R14 = CPUID.0BH:EDX or -1
    call cpuid_ext_apic_id
    mov r15d, eax                       ; R15 = CPUID.8000_001EH:EAX or -1

    call lock_acquire
    PRINT "boot-probe: cpu "
    lea rax, [rel cpu_number]
    movzx eax, byte [rax + r12]
    call put_dec
    PRINT " online (apic id "
    mov eax, r12d
    call put_dec
    PRINT ")"
    cmp r13d, r12d
    jne .mismatch
    cmp r14d, -1
    je .no_b
    cmp r14d, r12d
    jne .mismatch
.no_b:
    cmp r15d, -1
    je .no_1e
    cmp r15d, r12d
    jne .mismatch
.no_1e:
    cmp r12d, [rel ap_target]
    jne .wrong_cpu
    OK
    jmp .online
.mismatch:
    call fail_begin
    PRINT "LAPIC ID register "
    mov eax, r12d
    call put_dec
    PRINT ", CPUID 1 "
    mov eax, r13d
    call put_dec
    PRINT ", CPUID 0xB "
    mov eax, r14d
    call put_dec
    PRINT ", CPUID 0x8000001E "
    mov eax, r15d
    call put_dec
    PRINT " (4294967295: not present)"
    call fail_end
    jmp .online
.wrong_cpu:
    call fail_begin
    PRINT "the BSP was starting apic id "
    mov eax, [rel ap_target]
    call put_dec
    call fail_end
.online:
    lock inc dword [rel cpus_online]
    call lock_release
.halt:
    cli
    hlt
    jmp .halt
