; =============================================================================
; fwcfg.asm -- lesson: asking the VMM about the machine through fw_cfg
; =============================================================================
;
; What this guest does
; --------------------
; Reads the well-known items of QEMU's fw_cfg device through its I/O ports
; (selector 0x510, data 0x511: see common/fwcfg.inc and QEMU
; docs/specs/fw_cfg.rst) and prints one value per line:
;
;   key 0x0000 signature       4 bytes, must be "QEMU"
;   key 0x0001 id              only bit 0 (the traditional port interface)
;                              is printed: QEMU's pc machine also sets bit 1
;                              (DMA), which a VMM need not offer
;   key 0x0003 RAM size        u64, printed in MiB (and bytes if not whole MiB)
;   key 0x0005 CPUs at boot    u16
;   key 0x000F max CPUs        u16
;   key 0x0014 command line size   u32
;   key 0x0015 command line data   up to the first NUL (at most 256 bytes)
;   key 0x7FFF (no such item)  8 bytes, which must all read 0
;
; Why the command line items are interesting for a Multiboot kernel
; -----------------------------------------------------------------
; For a LINUX kernel, QEMU's -kernel puts the -append text into keys 0x14
; and 0x15 (hw/i386/x86.c, x86_load_linux), so firmware can hand it on. A
; MULTIBOOT kernel takes another path: x86_load_linux sees no "HdrS" in the
; file, hands it to load_multiboot (hw/i386/multiboot.c), and that function
; fills only the items its option ROM (multiboot.bin) needs: the kernel
; image, entry point and the prepared information structure. Keys 0x14 and
; 0x15 are never added, so they read as zeros: size 0, data "". The
; command line reaches a Multiboot kernel only through the Multiboot
; information structure (flags bit 2). A VMM imitating QEMU must do the same
; for Multiboot kernels, and this guest prints what it finds, so the two
; outputs compare.
;
; Five checks: the signature is "QEMU"; id bit 0 is set; the CPU count is
; at least 1 and at most the maximum; the command line data is as long as
; key 0x14 says (when 0x14 is 0, the first byte of 0x15 is 0); reads of a
; key that does not exist are 0. The RAM size is printed, not checked. The last line is the verdict
; (common/check.inc): exit status 1 if all passed, 3 otherwise.
;
; Expected serial output (QEMU 7.2: -m 128 -smp 2, any -append):
;     fwcfg: signature (key 0x00): "QEMU"
;     fwcfg: id (key 0x01) bit 0, traditional interface: 1
;     fwcfg: ram size (key 0x03): 128 MiB
;     fwcfg: cpus (key 0x05): 2
;     fwcfg: max cpus (key 0x0f): 2
;     fwcfg: command line size (key 0x14): 0
;     fwcfg: command line data (key 0x15): ""
;     fwcfg: unknown key 0x7fff reads 8 zero bytes: yes
;     fwcfg: all 5 checks passed
; =============================================================================

%define GUEST_NAME "fwcfg"
%include "boot32.inc"
%include "check.inc"
%include "fwcfg.inc"

UNKNOWN_KEY         equ 0x7FFF
MAX_CMDLINE_PRINT   equ 256

    section .text
    bits 32

kmain32:
    ; ---- 0x00: signature ----
    PRINT "fwcfg: signature (key 0x00): ", '"'
    mov ax, FW_CFG_SIGNATURE
    call fw_cfg_select
    xor ebx, ebx                ; EBX = the 4 bytes, little-endian
    mov ecx, 4
.sig:
    call fw_cfg_read8
    shrd ebx, eax, 8
    cmp al, 0x20                ; print printable bytes as they are,
    jb .sig_dot
    cmp al, 0x7E
    ja .sig_dot
    call serial_putc
    jmp .sig_next
.sig_dot:
    push eax
    mov al, '.'                 ; ...anything else as a dot
    call serial_putc
    pop eax
.sig_next:
    dec ecx
    jnz .sig
    PRINT '"', 10
    cmp ebx, 'QEMU'             ; NASM stores 'QEMU' little-endian: bytes Q,E,M,U
    je .sig_ok
    FAIL 'the signature must be "QEMU"'
    jmp .id
.sig_ok:
    call check_pass

    ; ---- 0x01: id ----
.id:
    PRINT "fwcfg: id (key 0x01) bit 0, traditional interface: "
    mov ax, FW_CFG_ID
    mov ecx, 4
    call fw_cfg_read_key
    and eax, FW_CFG_ID_TRADITIONAL
    call serial_putdec32
    PRINT 10
    test eax, eax
    jnz .id_ok
    FAIL "the id must have bit 0 (traditional interface) set: we just used it"
    jmp .ram
.id_ok:
    call check_pass

    ; ---- 0x03: RAM size (u64) ----
.ram:
    PRINT "fwcfg: ram size (key 0x03): "
    mov ax, FW_CFG_RAM_SIZE
    mov ecx, 4
    call fw_cfg_read_key
    mov esi, eax                ; ESI = low half
    call fw_cfg_read_le         ; (ECX still 4) EAX = high half
    mov edi, eax                ; EDI = high half
    mov eax, esi
    shrd eax, edi, 20           ; EDI:ESI >> 20 = MiB (fits 32 bits below 4 PiB)
    call serial_putdec32
    PRINT " MiB"
    test esi, 0xFFFFF
    jz .ram_whole
    PRINT " and "
    mov eax, esi
    and eax, 0xFFFFF
    call serial_putdec32
    PRINT " bytes"
.ram_whole:
    PRINT 10

    ; ---- 0x05 and 0x0f: CPUs ----
    PRINT "fwcfg: cpus (key 0x05): "
    mov ax, FW_CFG_NB_CPUS
    mov ecx, 2
    call fw_cfg_read_key
    mov esi, eax                ; ESI = CPUs at boot
    call serial_putdec32
    PRINT 10
    PRINT "fwcfg: max cpus (key 0x0f): "
    mov ax, FW_CFG_MAX_CPUS
    mov ecx, 2
    call fw_cfg_read_key
    mov edi, eax                ; EDI = max CPUs
    call serial_putdec32
    PRINT 10
    test esi, esi
    jz .cpus_bad
    cmp esi, edi
    ja .cpus_bad
    call check_pass
    jmp .cmdline
.cpus_bad:
    FAIL "need 1 <= cpus (key 0x05) <= max cpus (key 0x0f)"

    ; ---- 0x14 and 0x15: command line ----
.cmdline:
    PRINT "fwcfg: command line size (key 0x14): "
    mov ax, FW_CFG_CMDLINE_SIZE
    mov ecx, 4
    call fw_cfg_read_key
    mov esi, eax                ; ESI = the size the VMM claims
    call serial_putdec32
    PRINT 10
    PRINT "fwcfg: command line data (key 0x15): ", '"'
    mov ax, FW_CFG_CMDLINE_DATA
    call fw_cfg_select
    xor edi, edi                ; EDI = bytes before the NUL
.cmd_byte:
    cmp edi, MAX_CMDLINE_PRINT
    jae .cmd_end
    call fw_cfg_read8
    test al, al
    jz .cmd_end
    call serial_putc
    inc edi
    jmp .cmd_byte
.cmd_end:
    PRINT '"', 10
    ; Linux's convention: the size counts the NUL. A size of 0 means no
    ; item at all, and then the data must be empty too.
    test esi, esi
    jnz .cmd_sized
    test edi, edi
    jz .cmd_ok
    FAIL "key 0x14 says 0 bytes, but key 0x15 has data"
    jmp .unknown
.cmd_sized:
    cmp esi, MAX_CMDLINE_PRINT + 1
    ja .cmd_ok                  ; too long to have read it all: trust it
    lea eax, [edi + 1]
    cmp eax, esi
    je .cmd_ok
    FAIL "key 0x14 must be the length of key 0x15 plus its NUL"
    jmp .unknown
.cmd_ok:
    call check_pass

    ; ---- an item that does not exist ----
.unknown:
    PRINT "fwcfg: unknown key 0x7fff reads 8 zero bytes: "
    mov ax, UNKNOWN_KEY
    mov ecx, 4
    call fw_cfg_read_key
    mov esi, eax
    call fw_cfg_read_le
    or esi, eax
    jnz .unknown_bad
    PRINT "yes", 10
    call check_pass
    jmp .done
.unknown_bad:
    PRINT "no", 10
    FAIL "reads of a key that does not exist must return 0"

.done:
    jmp checks_finish
