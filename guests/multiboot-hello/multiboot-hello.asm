; =============================================================================
; multiboot-hello.asm -- lesson 2: a Multiboot kernel reads what it was given
; =============================================================================
;
; What this guest does
; --------------------
; It is a 32-bit protected-mode kernel in ELF32 format, started by a
; Multiboot v1 loader (skvm, QEMU -kernel, or GRUB). It checks the boot
; magic, then prints -- one item per line -- everything a VMM's Multiboot
; loader is supposed to hand it:
;     the kernel command line          (info flags bit 2)
;     mem_lower / mem_upper in KiB     (info flags bit 0)
;     the boot loader's name           (info flags bit 9)
;     every BIOS-style memory map entry (info flags bit 6)
; and finally resets the machine through the i8042 (exit status 0).
;
; Why it exists
; -------------
; It is the test for the VMM's Multiboot loader: skvm must build the
; Multiboot information structure (spec 0.6.96, section 3.3 "Boot
; information format") in guest memory and pass its address in EBX. Every
; byte the guest prints comes from that structure, so a test that compares
; the serial output with the expected text checks the whole structure.
;
; Being strict about `flags`
; --------------------------
; The first field of the information structure is a bit mask saying which
; other fields are valid. A loader may leave an absent field uninitialised,
; so reading it would print garbage (or, for a pointer, fault or hang). We
; test each bit and print "absent" instead. The memory map walk is also
; bounded (at most MAX_MMAP_ENTRIES lines) so a corrupt mmap_length cannot
; make the guest print forever.
;
; Walking the memory map (spec 3.3, "mmap_addr"/"mmap_length")
; ------------------------------------------------------------
; The map is a sequence of variable-sized entries starting at mmap_addr and
; occupying mmap_length bytes. Each entry is
;     u32 size; u64 base_addr; u64 length; u32 type;
; where `size` is the size of the entry NOT counting the size field itself
; (normally 20). So the next entry is at entry + size + 4. 64-bit fields are
; printed as 16 hex digits (via EDX:EAX pairs: this is 32-bit code), type
; in decimal (1 = usable RAM, 2 = reserved, 3 = ACPI reclaimable, ...).
;
; Expected serial output under skvm with 128 MiB and --append "hello world"
; (the command line is the kernel path as given to skvm, a space, and the
; appended text):
;     multiboot-hello: magic 0x2BADB002 OK
;     cmdline: "<kernel path> hello world"
;     mem_lower: 639 KiB
;     mem_upper: 130048 KiB
;     boot loader: "skvm"
;     memory map:
;       base=0x0000000000000000 length=0x000000000009FC00 type=1
;       base=0x000000000009FC00 length=0x0000000000060400 type=2
;       base=0x0000000000100000 length=0x0000000007F00000 type=1
;     multiboot-hello: done, resetting via i8042
; Exit status: 0 (or 3 if the magic is wrong).
; =============================================================================

%define GUEST_NAME "multiboot-hello"
%include "boot32.inc"

MAX_MMAP_ENTRIES    equ 64

    section .text
    bits 32

; Entered from boot32.inc with EBX = address of the Multiboot information.
; EBX stays untouched below (every serial routine preserves registers).
kmain32:
    PRINT "multiboot-hello: magic 0x2BADB002 OK", 10
    mov ebp, [ebx + MBI_FLAGS]  ; EBP = which fields are valid

    ; ---- command line (flags bit 2) ----
    test ebp, MBI_FLAG_CMDLINE
    jz .no_cmdline
    PRINT 'cmdline: "'
    mov esi, [ebx + MBI_CMDLINE]
    call serial_puts
    PRINT '"', 10
    jmp .mem
.no_cmdline:
    PRINT "cmdline: absent (flags bit 2 clear)", 10

    ; ---- mem_lower / mem_upper (flags bit 0) ----
.mem:
    test ebp, MBI_FLAG_MEM
    jz .no_mem
    PRINT "mem_lower: "
    mov eax, [ebx + MBI_MEM_LOWER]
    call serial_putdec32
    PRINT " KiB", 10
    PRINT "mem_upper: "
    mov eax, [ebx + MBI_MEM_UPPER]
    call serial_putdec32
    PRINT " KiB", 10
    jmp .loader
.no_mem:
    PRINT "mem_lower/mem_upper: absent (flags bit 0 clear)", 10

    ; ---- boot loader name (flags bit 9) ----
.loader:
    test ebp, MBI_FLAG_LOADER
    jz .no_loader
    PRINT 'boot loader: "'
    mov esi, [ebx + MBI_LOADER_NAME]
    call serial_puts
    PRINT '"', 10
    jmp .mmap
.no_loader:
    PRINT "boot loader: absent (flags bit 9 clear)", 10

    ; ---- memory map (flags bit 6) ----
.mmap:
    test ebp, MBI_FLAG_MMAP
    jz .no_mmap
    PRINT "memory map:", 10
    mov esi, [ebx + MBI_MMAP_ADDR]      ; ESI = current entry
    mov edi, esi
    add edi, [ebx + MBI_MMAP_LENGTH]    ; EDI = end of the map
    mov ecx, MAX_MMAP_ENTRIES           ; ECX = entries we may still print
.entry:
    cmp esi, edi
    jae .done                           ; walked the whole map
    test ecx, ecx
    jz .too_many
    PRINT "  base=0x"
    mov eax, [esi + MMAP_BASE_LO]
    mov edx, [esi + MMAP_BASE_HI]
    call serial_puthex64
    PRINT " length=0x"
    mov eax, [esi + MMAP_LEN_LO]
    mov edx, [esi + MMAP_LEN_HI]
    call serial_puthex64
    PRINT " type="
    mov eax, [esi + MMAP_TYPE]
    call serial_putdec32
    PRINT 10
    mov eax, [esi + MMAP_SIZE]          ; size of this entry minus 4
    lea esi, [esi + eax + 4]            ; step to the next entry
    dec ecx
    jmp .entry
.too_many:
    PRINT "  (more than 64 entries: stopping)", 10
    jmp .done
.no_mmap:
    PRINT "memory map: absent (flags bit 6 clear)", 10

.done:
    PRINT "multiboot-hello: done, resetting via i8042", 10
    I8042_RESET
