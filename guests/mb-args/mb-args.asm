; =============================================================================
; mb-args.asm -- lesson: the command line and the boot modules of Multiboot
; =============================================================================
;
; What this guest does
; --------------------
; Reads the two things a Multiboot loader passes ON BEHALF OF THE USER --
; the command line and the boot modules -- and prints them in a form that
; is the same under every loader that follows the convention:
;
;   - the command line, split into words like a C program's argv: word 0 is
;     the kernel's file, printed as its basename (QEMU and skvm put the path
;     exactly as the user typed it there, and the folder a test runs from
;     must not change the output); then everything after that word,
;     verbatim in quotes (QEMU builds the line with "%s %s" from the path
;     and -append, so this is a space and the append text, even when the
;     append text is empty); then the words "arg[1] = ...", "arg[2] = ...";
;   - the module count and, for each module, its string (the first word,
;     the module's file, again reduced to its basename; the rest as given),
;     its size in bytes and the 32-bit sum of its bytes;
;   - checks on where the loader put things, printed as "yes"/"no", never as
;     addresses (those are the loader's business).
;
; The convention
; --------------
; Multiboot Specification 0.6.96, section 3.3 "Boot information format":
;   flags bit 2: `cmdline` (offset 16) is the physical address of the
;                command line, a NUL-terminated string. GRUB and QEMU make
;                it "<kernel file> <arguments>", so it reads like argv.
;   flags bit 3: `mods_count` (offset 20) modules, described by a list of
;                16-byte entries at `mods_addr` (offset 24):
;                    +0  mod_start  physical address of the first byte
;                    +4  mod_end    physical address just past the last byte
;                    +8  string     physical address of a NUL-terminated
;                                   string chosen by the user (QEMU: the
;                                   whole "FILE args" text of its -initrd
;                                   item; GRUB: the `module` line)
;                    +12 reserved   0
;                Modules are in the order given; the kernel may use the
;                memory they occupy once it is done with them.
;   flags bit 0: mem_lower (offset 4, KiB below 1 MiB, at most 640) and
;                mem_upper (offset 8, KiB from 1 MiB to the first hole).
; And the kernel's side (section 3.1.2): header flags bit 0 asks for page-
; aligned modules (common/multiboot.inc sets it for every guest here).
;
; The checks (each failure prints "mb-args: FAIL: ..."):
;   - EAX magic (boot32.inc); flags bit 2 (a command line) is set;
;   - flags bit 0: mem_lower >= 600 (QEMU says 639, skvm 639; printed
;     nowhere, since a firmware's reserved areas may differ);
;   - per module: mod_start is page aligned; mod_end > mod_start; the module
;     lies inside upper memory, [1 MiB, 1 MiB + mem_upper KiB); the entry's
;     reserved field is 0; it does not overlap the kernel (1 MiB to the end
;     of our .bss) or another module;
;   - the information structure (88 bytes) and the module list (16 bytes
;     per module) overlap neither the kernel nor any module.
; With flags bit 3 clear the guest reports 0 modules (QEMU always sets
; bit 3, with mods_count 0 when there are none; a loader may also clear it).
; Module sums are computed byte by byte; modules over 16 MiB are not summed
; (and fail), because every CPL 0 instruction is emulated on PVM hosts.
;
; Expected serial output with --append "alpha beta" and the modules
; "guests/build/mod-a.txt one two" and "guests/build/mod-b.bin" (both built
; by the Makefile), under QEMU 7.2 and skvm alike:
;     mb-args: argc = 3
;     mb-args: arg[0] basename = mb-args.elf
;     mb-args: text after arg[0] = " alpha beta"
;     mb-args: arg[1] = alpha
;     mb-args: arg[2] = beta
;     mb-args: 2 modules
;     mb-args: module 0: "mod-a.txt one two"
;     mb-args: module 0: 30 bytes, byte sum 2619
;     mb-args: module 0: page aligned: yes
;     mb-args: module 0: mod_end > mod_start: yes
;     mb-args: module 0: inside upper memory: yes
;     mb-args: module 0: reserved field 0: yes
;     mb-args: module 0: clear of the kernel and the other modules: yes
;     mb-args: module 1: "mod-b.bin"
;     mb-args: module 1: 5000 bytes, byte sum 637476
;     (the same five check lines for module 1)
;     mb-args: info structure and module list clear of the kernel and the modules: yes
;     mb-args: all 13 checks passed
; Exit status 1 if every check passed, 3 otherwise (common/check.inc).
; =============================================================================

%define GUEST_NAME "mb-args"
%include "boot32.inc"
%include "check.inc"

KERNEL_START        equ 0x100000        ; common/kernel.ld
HIGH_MEMORY         equ 0x100000        ; mem_upper counts from 1 MiB
MAX_MODULES         equ 64              ; print at most this many
MAX_ARGS            equ 64
MAX_SUM_BYTES       equ 16 << 20

    section .text
    bits 32

kmain32:
    mov [mbi], ebx
    mov ebp, [ebx + MBI_FLAGS]

    ; ---- the command line, as argv ----
    test ebp, MBI_FLAG_CMDLINE
    jnz .have_cmdline
    FAIL "no command line (info flags bit 2 clear)"
    jmp .memory
.have_cmdline:
    call check_pass
    mov esi, [ebx + MBI_CMDLINE]
    call count_words
    PRINT "mb-args: argc = "
    call serial_putdec32
    PRINT 10
    xor edx, edx                ; EDX = argument index
.arg:
    call skip_blanks
    cmp byte [esi], 0
    je .memory
    cmp edx, MAX_ARGS
    jae .memory
    test edx, edx
    jnz .arg_n
    PRINT "mb-args: arg[0] basename = "
    call put_basename_word      ; ESI -> past the word
    PRINT 10
    PRINT 'mb-args: text after arg[0] = "'
    call serial_puts            ; the rest, verbatim: " " + the append text
    PRINT '"'
    jmp .arg_end
.arg_n:
    PRINT "mb-args: arg["
    mov eax, edx
    call serial_putdec32
    PRINT "] = "
    call put_word
.arg_end:
    PRINT 10
    inc edx
    jmp .arg

    ; ---- mem_lower / mem_upper: the limit for the modules ----
.memory:
    mov dword [upper_end], 0    ; 0: unknown
    test ebp, MBI_FLAG_MEM
    jnz .have_mem
    FAIL "no mem_lower/mem_upper (info flags bit 0 clear)"
    jmp .modules
.have_mem:
    cmp dword [ebx + MBI_MEM_LOWER], 600
    jae .lower_ok
    FAIL "mem_lower is below 600 KiB"
    jmp .upper
.lower_ok:
    call check_pass
.upper:
    mov eax, [ebx + MBI_MEM_UPPER]
    shl eax, 10
    add eax, HIGH_MEMORY
    mov [upper_end], eax

    ; ---- the modules ----
.modules:
    xor ecx, ecx                ; ECX = mods_count (0 without flags bit 3)
    xor edi, edi                ; EDI = mods_addr
    test ebp, MBI_FLAG_MODS
    jz .count
    mov ecx, [ebx + MBI_MODS_COUNT]
    mov edi, [ebx + MBI_MODS_ADDR]
.count:
    mov [mods_count], ecx
    mov [mods_addr], edi
    PRINT "mb-args: "
    mov eax, ecx
    call serial_putdec32
    PRINT " module"
    cmp ecx, 1
    je .singular
    PRINT "s"
.singular:
    PRINT 10
    cmp ecx, MAX_MODULES
    jbe .count_ok
    FAIL "more than 64 modules: only the first 64 are looked at"
    mov dword [mods_count], MAX_MODULES
.count_ok:
    xor edx, edx                ; EDX = module index
.module:
    cmp edx, [mods_count]
    jae .info
    call module_report
    inc edx
    jmp .module

    ; ---- the information structure and the module list ----
.info:
    PRINT "mb-args: info structure and module list clear of the kernel and the modules: "
    mov eax, [mbi]
    lea ecx, [eax + MBI_SIZE]
    call clear_of_kernel_and_modules
    jc .info_no
    mov eax, [mods_addr]
    mov ecx, [mods_count]
    shl ecx, 4                  ; 16 bytes per entry
    add ecx, eax
    call clear_of_kernel_and_modules
    jc .info_no
    PRINT "yes", 10
    call check_pass
    jmp checks_finish
.info_no:
    PRINT "no", 10
    FAIL "the information structure or the module list overlaps the kernel or a module"
    jmp checks_finish

; -----------------------------------------------------------------------------
; module_report: print and check module EDX. Preserves all registers.
; -----------------------------------------------------------------------------
module_report:
    pushad
    mov ebx, edx
    shl ebx, 4
    add ebx, [mods_addr]        ; EBX = this module's entry

    ; its string
    PRINT "mb-args: module "
    mov eax, edx
    call serial_putdec32
    PRINT ": "
    mov esi, [ebx + MOD_STRING]
    test esi, esi
    jnz .string
    PRINT "(no string)", 10
    jmp .size
.string:
    PRINT '"'
    call skip_blanks
    call put_basename_word      ; the file, without its folder...
    call serial_puts            ; ...then the rest exactly as given
    PRINT '"', 10

    ; its size and byte sum
.size:
    PRINT "mb-args: module "
    mov eax, edx
    call serial_putdec32
    PRINT ": "
    mov esi, [ebx + MOD_START]
    mov ecx, [ebx + MOD_END]
    mov eax, ecx
    sub eax, esi                ; size = mod_end - mod_start
    call serial_putdec32
    PRINT " bytes, byte sum "
    cmp ecx, esi
    jb .unsummed
    cmp eax, MAX_SUM_BYTES
    ja .unsummed
    xor eax, eax                ; EAX = sum, EDI = current byte
.sum:
    cmp esi, ecx
    jae .summed
    movzx edi, byte [esi]
    add eax, edi
    inc esi
    jmp .sum
.summed:
    call serial_putdec32
    PRINT 10
    jmp .aligned
.unsummed:
    PRINT "not computed", 10
    FAIL "the module is over 16 MiB or ends before it starts"

    ; page aligned?
.aligned:
    mov esi, [ebx + MOD_START]
    mov ecx, [ebx + MOD_END]
    call module_prefix
    PRINT "page aligned: "
    test esi, 0xFFF
    jnz .aligned_no
    PRINT "yes", 10
    call check_pass
    jmp .order
.aligned_no:
    PRINT "no", 10
    FAIL "mod_start must be page aligned (header flags bit 0)"

    ; mod_end > mod_start?
.order:
    call module_prefix
    PRINT "mod_end > mod_start: "
    cmp ecx, esi
    jbe .order_no
    PRINT "yes", 10
    call check_pass
    jmp .inside
.order_no:
    PRINT "no", 10
    FAIL "mod_end must be above mod_start"

    ; inside upper memory?
.inside:
    call module_prefix
    PRINT "inside upper memory: "
    cmp esi, HIGH_MEMORY
    jb .inside_no
    cmp ecx, esi
    jb .inside_no
    mov eax, [upper_end]
    test eax, eax
    jz .inside_no               ; mem_upper unknown
    cmp ecx, eax
    ja .inside_no
    PRINT "yes", 10
    call check_pass
    jmp .reserved
.inside_no:
    PRINT "no", 10
    FAIL "the module must lie in [1 MiB, 1 MiB + mem_upper KiB)"

    ; the reserved field is 0?
.reserved:
    call module_prefix
    PRINT "reserved field 0: "
    cmp dword [ebx + MOD_RESERVED], 0
    jne .reserved_no
    PRINT "yes", 10
    call check_pass
    jmp .clear
.reserved_no:
    PRINT "no", 10
    FAIL "the loader must set the entry's reserved field to 0"

    ; clear of the kernel and the other modules?
.clear:
    call module_prefix
    PRINT "clear of the kernel and the other modules: "
    mov eax, esi
    mov ebp, edx                ; skip ourselves
    call clear_of_kernel_and_modules_but
    jc .clear_no
    PRINT "yes", 10
    call check_pass
    popad
    ret
.clear_no:
    PRINT "no", 10
    FAIL "the module overlaps the kernel or another module"
    popad
    ret

; module_prefix: print "mb-args: module EDX: ".
module_prefix:
    PRINT "mb-args: module "
    push eax
    mov eax, edx
    call serial_putdec32
    pop eax
    PRINT ": "
    ret

; -----------------------------------------------------------------------------
; Overlap tests. A range is [start, end): EAX = start, ECX = end.
; -----------------------------------------------------------------------------
; overlaps: CF = 1 if [EAX, ECX) and [ESI, EDI) share a byte. Empty ranges
; share nothing. Preserves all registers.
overlaps:
    cmp eax, ecx
    jae .no                     ; first range empty
    cmp esi, edi
    jae .no                     ; second range empty
    cmp eax, edi
    jae .no                     ; first starts after the second ends
    cmp esi, ecx
    jae .no                     ; second starts after the first ends
    stc
    ret
.no:
    clc
    ret

; clear_of_kernel_and_modules: CF = 1 if [EAX, ECX) overlaps the kernel or
; any module. clear_of_kernel_and_modules_but: the same, skipping module EBP.
; Preserve all registers.
clear_of_kernel_and_modules:
    push ebp
    mov ebp, -1
    call clear_of_kernel_and_modules_but
    pop ebp
    ret
clear_of_kernel_and_modules_but:
    pushad
    mov esi, KERNEL_START
    mov edi, kernel_end
    call overlaps
    jc .out
    xor edx, edx
.next:
    cmp edx, [mods_count]
    jae .none
    cmp edx, ebp
    je .skip
    mov ebx, edx
    shl ebx, 4
    add ebx, [mods_addr]
    mov esi, [ebx + MOD_START]
    mov edi, [ebx + MOD_END]
    call overlaps
    jc .out
.skip:
    inc edx
    jmp .next
.none:
    clc
.out:
    popad                       ; POPAD leaves EFLAGS (and CF) alone
    ret

; -----------------------------------------------------------------------------
; Words. A blank is any byte from 1 to 0x20; a word ends at a blank or NUL.
; -----------------------------------------------------------------------------
; skip_blanks: advance ESI past blanks.
skip_blanks:
    cmp byte [esi], 0
    je .done
    cmp byte [esi], 0x20
    ja .done
    inc esi
    jmp skip_blanks
.done:
    ret

; count_words: EAX = the number of words in the string at ESI. Preserves ESI.
count_words:
    push esi
    xor eax, eax
.word:
    call skip_blanks
    cmp byte [esi], 0
    je .done
    inc eax
.in_word:
    inc esi
    cmp byte [esi], 0x20
    ja .in_word                 ; (NUL and blanks are both <= 0x20)
    jmp .word
.done:
    pop esi
    ret

; put_word: print the word at ESI; ESI -> the byte after it.
put_word:
    push eax
.byte:
    mov al, [esi]
    cmp al, 0x20
    jbe .done
    call serial_putc
    inc esi
    jmp .byte
.done:
    pop eax
    ret

; put_basename_word: print the word at ESI from the byte after its last
; '/' (the whole word if it has none); ESI -> the byte after the word.
put_basename_word:
    push eax
    push edi
    mov edi, esi                ; EDI = where the basename starts
.scan:
    mov al, [esi]
    cmp al, 0x20
    jbe .print
    inc esi
    cmp al, '/'
    jne .scan
    mov edi, esi                ; just past a '/'
    jmp .scan
.print:
    mov esi, edi
    call put_word
    pop edi
    pop eax
    ret

    section .bss
    alignb 4
mbi:        resd 1
upper_end:  resd 1              ; 1 MiB + mem_upper KiB, or 0
mods_count: resd 1
mods_addr:  resd 1
kernel_end:                     ; the last label of the image: the end of .bss
