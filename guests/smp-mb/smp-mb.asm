; =============================================================================
; smp-mb.asm -- lesson: starting the other CPUs of a Multiboot machine
; =============================================================================
;
; What this guest does
; --------------------
; A Multiboot loader starts ONE CPU, the bootstrap processor (BSP). The
; others, the application processors (APs), wait in their local APICs until
; the kernel wakes them. This guest
;
;   1. asks fw_cfg how many CPUs the machine has (key 0x05, FW_CFG_NB_CPUS:
;      common/fwcfg.inc; QEMU and skvm both provide it, and a Multiboot
;      kernel has no MP table or ACPI to read it from otherwise),
;   2. prints "cpu 0 online" for itself, after checking that its APIC id
;      (CPUID leaf 1 EBX[31:24], and the local APIC's ID register) is 0,
;   3. starts every AP, one at a time in APIC id order 1, 2, ..., N-1 (the
;      ids QEMU and KVM give N vCPUs), with INIT-SIPI-SIPI, and waits
;      (bounded) for it: the AP prints "cpu <its APIC id> online" itself,
;      so the output is deterministic,
;   4. prints "N cpus online" and the verdict (common/check.inc).
;
; INIT-SIPI-SIPI (Intel MultiProcessor Specification 1.4, appendix B.4
; "Application Processor Startup"; Intel SDM Vol. 3A, section 9.4
; "Multiple-Processor (MP) Initialization")
; ----------------------------------------------------------------------------
; The BSP writes its xAPIC's Interrupt Command Register, memory-mapped at
; 0xFEE0_0300 (low half) and 0xFEE0_0310 (high half: destination APIC id in
; bits 31:24; SDM Vol. 3A, 11.6.1 "Interrupt Command Register"). Writing
; the low half sends the IPI:
;     INIT      0x4500          delivery mode 101b, level assert
;     (wait)
;     STARTUP   0x4600 | VV     delivery mode 110b, vector VV; sent twice
; A STARTUP IPI with vector VV starts the AP in REAL MODE at CS:IP =
; VV00:0000, physical address VV000 -- so the AP's first instructions must
; be 16-bit code in a page below 1 MiB, the "trampoline". Ours loads our
; GDT (boot32.inc's), sets CR0.PE and far-jumps to 32-bit code in the
; kernel, which can then print like the BSP. The SDM's 10 ms and 200 us
; waits only matter to real hardware (KVM delivers IPIs at once), so the
; waits here are short loops. The second STARTUP is ignored by an AP that
; already runs (the MP spec sends two because real hardware could miss one).
; The BSP polls the ICR's delivery status bit (12) before and after each
; write, bounded.
;
; Where the trampoline goes
; -------------------------
; Any free 4 KiB page below 640 KiB will do, but "free" is the catch: a
; Multiboot loader puts its information structure, command line, memory
; map and loader name somewhere in low memory (QEMU around 0x9000, skvm
; from 0x1000). So the guest checks them: it tries 0x8000, then 0x10000,
; 0x20000, ... 0x90000, and takes the first page that overlaps none of the
; structures the info flags say are valid (bits 2, 3, 6, 9). Which page it
; took is not printed (it may legitimately differ between loaders); that
; one was found is a check.
;
; Each AP gets its own 256-byte stack, indexed by its APIC id, and reports
; through memory: its CPUID leaf 1 APIC id and its local APIC ID register,
; then increments `ap_online`. The BSP compares them with the id it
; started, so a wrong CPU answering is a FAIL. An AP that does not answer
; within AP_WAIT_POLLS polls (a few seconds on a PVM host, where CPL 0 code
; is emulated) is a FAIL, and the BSP goes on with the next one.
;
; Expected serial output with 4 CPUs (QEMU -smp 4, skvm --cpus 4):
;     smp-mb: fw_cfg reports 4 cpus
;     smp-mb: cpu 0 online
;     smp-mb: cpu 1 online
;     smp-mb: cpu 2 online
;     smp-mb: cpu 3 online
;     smp-mb: 4 cpus online
;     smp-mb: all 7 checks passed
; (1 CPU: 3 checks, no trampoline needed; 2 CPUs: 5.) Exit status 1, or 3
; on a failure.
; =============================================================================

%define GUEST_NAME "smp-mb"
%include "boot32.inc"
%include "check.inc"
%include "fwcfg.inc"

; the xAPIC (SDM Vol. 3A, table 11-1 "Local APIC Register Address Map")
LAPIC               equ 0xFEE00000
LAPIC_ID            equ LAPIC + 0x020       ; bits 31:24: this CPU's APIC id
LAPIC_SVR           equ LAPIC + 0x0F0       ; spurious vector; bit 8 = enable
LAPIC_ICR_LOW       equ LAPIC + 0x300
LAPIC_ICR_HIGH      equ LAPIC + 0x310
ICR_BUSY            equ 1 << 12             ; delivery status: send pending
ICR_INIT            equ 0x4500
ICR_STARTUP         equ 0x4600

MAX_CPUS            equ 255                 ; xAPIC ids 0-254 (255 = broadcast)
AP_STACK_SIZE       equ 256
DELAY_LOOPS         equ 3000
ICR_POLLS           equ 100000
AP_WAIT_POLLS       equ 2000000

FIRST_CANDIDATE     equ 0x8000              ; trampoline pages tried, in order:
CANDIDATE_STEP      equ 0x10000             ; 0x8000, 0x10000, 0x20000, ...
LAST_CANDIDATE      equ 0x90000             ; (below the EBDA at 0x9FC00)
MAX_AVOID           equ 5                   ; info, cmdline, mods, mmap, name

    section .text
    bits 32

kmain32:
    call collect_avoid_ranges   ; (EBX = the information structure)

    ; ---- how many CPUs ----
    PRINT "smp-mb: fw_cfg reports "
    mov ax, FW_CFG_NB_CPUS
    mov ecx, 2
    call fw_cfg_read_key
    call serial_putdec32
    PRINT " cpus", 10
    mov [cpu_count], eax
    test eax, eax
    jz .count_bad
    cmp eax, MAX_CPUS
    ja .count_bad
    call check_pass
    jmp .bsp
.count_bad:
    FAIL "fw_cfg key 0x05 must be 1 to 255 (xAPIC ids 0-254): starting none"
    mov dword [cpu_count], 1

    ; ---- the BSP itself ----
.bsp:
    mov eax, 1
    cpuid
    shr ebx, 24                 ; EBX = CPUID.1:EBX[31:24]
    mov eax, [LAPIC_ID]
    shr eax, 24                 ; EAX = local APIC ID register
    PRINT "smp-mb: cpu "
    call serial_putdec32
    PRINT " online", 10
    mov dword [cpus_online], 1
    or eax, ebx
    jz .bsp_ok
    FAIL "the BSP's APIC id (CPUID leaf 1 and the local APIC ID register) must be 0"
    jmp .trampoline
.bsp_ok:
    call check_pass

    ; ---- the trampoline page ----
.trampoline:
    cmp dword [cpu_count], 1
    je .summary                 ; nothing to start
    mov eax, FIRST_CANDIDATE
.candidate:
    call page_is_clear
    jnc .found
    cmp eax, FIRST_CANDIDATE
    jne .step
    mov eax, CANDIDATE_STEP     ; 0x8000 -> 0x10000
    jmp .candidate
.step:
    add eax, CANDIDATE_STEP
    cmp eax, LAST_CANDIDATE
    jbe .candidate
    FAIL "no page below 0x91000 is clear of the multiboot information: starting no APs"
    jmp .summary
.found:
    call check_pass
    mov [tramp_page], eax
    mov edi, eax
    mov esi, trampoline
    mov ecx, trampoline_end - trampoline
    rep movsb                   ; one emulated instruction on PVM

    ; Software-enable our local APIC (SVR bit 8, spurious vector 0xFF), as
    ; the SDM's BSP sequence does before sending IPIs.
    mov dword [LAPIC_SVR], 0x1FF

    mov ebp, 1                  ; EBP = the APIC id to start
.next_ap:
    cmp ebp, [cpu_count]
    jae .summary
    call start_ap
    inc ebp
    jmp .next_ap

.summary:
    PRINT "smp-mb: "
    mov eax, [cpus_online]
    call serial_putdec32
    PRINT " cpus online", 10
    cmp eax, [cpu_count]
    je .all
    FAIL "not every cpu fw_cfg reports came online"
    jmp checks_finish
.all:
    call check_pass
    jmp checks_finish

; -----------------------------------------------------------------------------
; start_ap: INIT-SIPI-SIPI to APIC id EBP, then wait for it. Preserves all.
; -----------------------------------------------------------------------------
start_ap:
    pushad
    mov dword [ap_online], 0
    mov dword [ap_cpuid_id], -1
    mov dword [ap_lapic_id], -1
    mov edi, ebp
    mov esi, ICR_INIT
    call send_ipi
    call delay
    mov esi, [tramp_page]
    shr esi, 12                 ; the vector is the page number
    or esi, ICR_STARTUP
    call send_ipi
    call delay
    call send_ipi               ; the second STARTUP
    mov ecx, AP_WAIT_POLLS
.wait:
    cmp dword [ap_online], 0
    jne .answered
    pause
    dec ecx
    jnz .wait
    PRINT GUEST_NAME, ": FAIL: apic id "
    mov eax, ebp
    call serial_putdec32
    PRINT " did not answer INIT-SIPI-SIPI", 10
    call check_fail
    popad
    ret
.answered:
    inc dword [cpus_online]
    cmp [ap_cpuid_id], ebp
    jne .wrong
    cmp [ap_lapic_id], ebp
    jne .wrong
    call check_pass
    popad
    ret
.wrong:
    PRINT GUEST_NAME, ": FAIL: started apic id "
    mov eax, ebp
    call serial_putdec32
    PRINT ", but the cpu that answered has CPUID id "
    mov eax, [ap_cpuid_id]
    call serial_putdec32
    PRINT " and local APIC id "
    mov eax, [ap_lapic_id]
    call serial_putdec32
    PRINT 10
    call check_fail
    popad
    ret

; send_ipi: EDI = destination APIC id, ESI = ICR low. Preserves all.
send_ipi:
    push eax
    call wait_icr_idle
    mov eax, edi
    shl eax, 24
    mov [LAPIC_ICR_HIGH], eax   ; destination first...
    mov [LAPIC_ICR_LOW], esi    ; ...writing the low half sends it
    call wait_icr_idle
    pop eax
    ret

wait_icr_idle:
    push ecx
    mov ecx, ICR_POLLS
.poll:
    test dword [LAPIC_ICR_LOW], ICR_BUSY
    jz .idle
    pause
    dec ecx
    jnz .poll
.idle:
    pop ecx
    ret

delay:
    push ecx
    mov ecx, DELAY_LOOPS
.loop:
    dec ecx
    jnz .loop
    pop ecx
    ret

; -----------------------------------------------------------------------------
; Finding a page clear of the Multiboot information
; -----------------------------------------------------------------------------
; collect_avoid_ranges: EBX = the information structure. Records [start, end)
; of the structure and of every area its flags say is valid. Preserves all.
collect_avoid_ranges:
    pushad
    mov edi, avoid_ranges
    mov ebp, [ebx + MBI_FLAGS]
    mov eax, ebx
    lea ecx, [ebx + MBI_SIZE]
    call .add
    test ebp, MBI_FLAG_CMDLINE
    jz .no_cmdline
    mov esi, [ebx + MBI_CMDLINE]
    mov eax, esi
    call strlen                 ; ECX = length
    lea ecx, [eax + ecx + 1]    ; with the NUL
    call .add
.no_cmdline:
    test ebp, MBI_FLAG_MODS
    jz .no_mods
    mov eax, [ebx + MBI_MODS_ADDR]
    mov ecx, [ebx + MBI_MODS_COUNT]
    shl ecx, 4
    add ecx, eax
    call .add
.no_mods:
    test ebp, MBI_FLAG_MMAP
    jz .no_mmap
    mov eax, [ebx + MBI_MMAP_ADDR]
    mov ecx, [ebx + MBI_MMAP_LENGTH]
    add ecx, eax
    call .add
.no_mmap:
    test ebp, MBI_FLAG_LOADER
    jz .no_loader
    mov esi, [ebx + MBI_LOADER_NAME]
    mov eax, esi
    call strlen
    lea ecx, [eax + ecx + 1]
    call .add
.no_loader:
    sub edi, avoid_ranges
    shr edi, 3
    mov [avoid_count], edi
    popad
    ret
.add:
    mov [edi], eax
    mov [edi + 4], ecx
    add edi, 8
    ret

; strlen: ECX = length of the NUL-terminated string at ESI. Preserves the rest.
strlen:
    xor ecx, ecx
.next:
    cmp byte [esi + ecx], 0
    je .done
    inc ecx
    jmp .next
.done:
    ret

; page_is_clear: CF = 0 if the page at EAX overlaps no recorded range, 1 if
; it does. Preserves all registers.
page_is_clear:
    pushad
    lea edx, [eax + 4096]       ; [EAX, EDX) is the page
    mov esi, avoid_ranges
    mov ecx, [avoid_count]
.range:
    test ecx, ecx
    jz .clear
    cmp eax, [esi + 4]
    jae .next                   ; page starts at or after the range's end
    cmp [esi], edx
    jae .next                   ; range starts at or after the page's end
    stc
    popad
    ret
.next:
    add esi, 8
    dec ecx
    jmp .range
.clear:
    clc
    popad
    ret

; -----------------------------------------------------------------------------
; The AP trampoline, copied to the chosen page (CS = page >> 4, IP = 0)
; -----------------------------------------------------------------------------
; Position-independent: data is reached through DS = CS with offsets from
; `trampoline`, and the far jump goes to an absolute address in the kernel.
    bits 16
trampoline:
    cli
    mov ax, cs
    mov ds, ax
    o32 lgdt [tr_gdtr - trampoline]     ; o32: the GDT's base is above 1 MiB
    mov eax, cr0
    or al, 1                            ; CR0.PE
    mov cr0, eax
    jmp dword CODE32_SEL:ap_entry32     ; 66 EA: a 32-bit offset
    align 4
    dw 0
tr_gdtr:
    dw boot_gdt_end - boot_gdt - 1
    dd boot_gdt
trampoline_end:

    bits 32
ap_entry32:
    mov ax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov eax, 1
    cpuid
    shr ebx, 24                 ; EBX = this CPU's APIC id (CPUID)
    lea esp, [ebx + 1]
    shl esp, 8                  ; (id + 1) * AP_STACK_SIZE
    add esp, ap_stacks
    mov eax, [LAPIC_ID]
    shr eax, 24
    mov [ap_lapic_id], eax
    mov [ap_cpuid_id], ebx
    PRINT "smp-mb: cpu "
    mov eax, ebx
    call serial_putdec32
    PRINT " online", 10
    lock inc dword [ap_online]  ; the BSP may go on
.halt:
    cli
    hlt
    jmp .halt

%if AP_STACK_SIZE != 256
  %error "ap_entry32 computes stacks with a shift by 8"
%endif

    section .bss
    alignb 4
cpu_count:      resd 1
cpus_online:    resd 1
tramp_page:     resd 1
ap_online:      resd 1
ap_cpuid_id:    resd 1
ap_lapic_id:    resd 1
avoid_count:    resd 1
avoid_ranges:   resd 2 * MAX_AVOID
    alignb 16
ap_stacks:      resb AP_STACK_SIZE * (MAX_CPUS + 1)
