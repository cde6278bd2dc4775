; =============================================================================
; unhandled-io.asm -- lesson: what happens when no device answers
; =============================================================================
;
; What this guest does
; --------------------
; Talks to addresses where skvm has NO device, and prints what comes back:
;   - reads port 0x2F8 (COM2's base: a PC has a second UART there, skvm
;     does not) 1, 2 and 4 bytes wide: IN AL / IN AX / IN EAX;
;   - writes 0 to it 1, 2 and 4 bytes wide, then reads one byte again;
;   - reads 4 bytes at physical address 0xC000_1000, writes 0 there, and
;     reads it again. That address is in the "PCI hole" between the end of
;     RAM below 4 GiB and 4 GiB (see docs/memory-map.md): no RAM, no device.
;     Paging is off in the 32-bit protected mode Multiboot gives us, so a
;     plain MOV reaches that physical address.
; Every read should return ALL ONES. The guest ends with v = 0 (exit
; status 1) if all six reads did, v = 1 (exit status 3) if any did not.
;
; Why all ones
; ------------
; On a PC an ISA or PCI read that no device claims is not an error: nobody
; drives the data lines, pull-up resistors hold them high, and the CPU
; reads 0xFF bytes (on PCI the host bridge completes the "master abort" the
; same way: all ones). Software relies on it: probing for a UART or a PCI
; function means reading a register and checking for 0xFF / 0xFFFF ("no
; device"). Writes nobody claims simply vanish.
;
; A VMM has to reproduce that. Under KVM each of these accesses leaves the
; guest (KVM_EXIT_IO for the ports, KVM_EXIT_MMIO for the address, because
; no memory slot covers it) and skvm finds no device on its bus for it. It
; then fills the read data with ones -- exactly as wide as the access, so
; `in al` gets 0xFF and `in eax` gets 0xFFFFFFFF -- drops writes, and logs
; the first access to each unclaimed port or address once on stderr, so a
; guest poking at missing hardware is visible without flooding the log.
; Returning 0 instead would make probing code think a device exists; never
; completing the access would hang the guest.
;
; Expected serial output (skvm):
;     unhandled-io: in 0x2f8 (1 byte) = 0xFF
;     unhandled-io: in 0x2f8 (2 bytes) = 0xFFFF
;     unhandled-io: in 0x2f8 (4 bytes) = 0xFFFFFFFF
;     unhandled-io: out 0x2f8 (1, 2 and 4 bytes) of 0: done
;     unhandled-io: in 0x2f8 (1 byte) after the writes = 0xFF
;     unhandled-io: read [0xc0001000] (4 bytes) = 0xFFFFFFFF
;     unhandled-io: write [0xc0001000] (4 bytes) of 0: done
;     unhandled-io: read [0xc0001000] (4 bytes) after the write = 0xFFFFFFFF
;     unhandled-io: all 6 reads returned all ones, exiting with v = 0
; Exit status: 1. A read that is not all ones gets " (expected all ones)"
; appended to its line, and the last line becomes
;     unhandled-io: N of 6 reads were not all ones, exiting with v = 1
; with exit status 3. QEMU's answers for the MMIO address differ: see
; guests/README.md.
; =============================================================================

%define GUEST_NAME "unhandled-io"
%include "boot32.inc"

UNCLAIMED_PORT      equ 0x2F8           ; COM2, which skvm does not emulate
UNCLAIMED_MMIO      equ 0xC0001000      ; in the PCI hole, [3 GiB, 4 GiB)
READS               equ 6               ; how many reads are checked

    section .text
    bits 32

; CHECK digits: EAX holds a value just read with an access `digits` hex
; digits wide; print it as "0x" + that many digits, check it is all ones
; (the low digits*4 bits), count a failure in EBX if not, end the line.
%macro CHECK 1
    mov ecx, %1
    PRINT "0x"
    call put_hex
    call all_ones
    je %%ok
    PRINT " (expected all ones)"
    inc ebx
%%ok:
    PRINT 10
%endmacro

kmain32:
    xor ebx, ebx                ; EBX = reads that were not all ones
    mov dx, UNCLAIMED_PORT

    ; ---- ports: IN of each width ----
    xor eax, eax                ; clear EAX so only the IN's bytes show
    in al, dx                   ; KVM_EXIT_IO, size 1
    PRINT "unhandled-io: in 0x2f8 (1 byte) = "
    CHECK 2
    xor eax, eax
    in ax, dx                   ; size 2 (0x66 operand-size prefix)
    PRINT "unhandled-io: in 0x2f8 (2 bytes) = "
    CHECK 4
    xor eax, eax
    in eax, dx                  ; size 4
    PRINT "unhandled-io: in 0x2f8 (4 bytes) = "
    CHECK 8

    ; ---- ports: OUT of each width, then read back ----
    xor eax, eax
    out dx, al                  ; three writes nobody claims: dropped
    out dx, ax
    out dx, eax
    PRINT "unhandled-io: out 0x2f8 (1, 2 and 4 bytes) of 0: done", 10
    in al, dx                   ; still all ones: nothing stored the zeros
    PRINT "unhandled-io: in 0x2f8 (1 byte) after the writes = "
    CHECK 2

    ; ---- MMIO: the same, with memory instructions ----
    mov esi, UNCLAIMED_MMIO
    mov eax, [esi]              ; KVM_EXIT_MMIO, len 4, read
    PRINT "unhandled-io: read [0xc0001000] (4 bytes) = "
    CHECK 8
    mov dword [esi], 0          ; KVM_EXIT_MMIO, len 4, write: dropped
    PRINT "unhandled-io: write [0xc0001000] (4 bytes) of 0: done", 10
    mov eax, [esi]
    PRINT "unhandled-io: read [0xc0001000] (4 bytes) after the write = "
    CHECK 8

    ; ---- verdict ----
    test ebx, ebx
    jnz .fail
    PRINT "unhandled-io: all 6 reads returned all ones, exiting with v = 0", 10
    mov al, 0
    out DEBUG_EXIT_PORT, al     ; exit status 1
    jmp .hang
.fail:
    PRINT "unhandled-io: "
    mov eax, ebx
    call serial_putdec32
    PRINT " of 6 reads were not all ones, exiting with v = 1", 10
    mov al, 1
    out DEBUG_EXIT_PORT, al     ; exit status 3
.hang:
    hlt
    jmp .hang

; put_hex: print the low ECX hex digits of EAX (1 <= ECX <= 8), most
; significant first. Preserves all registers.
put_hex:
    pushad
    mov edx, eax
    mov ebx, ecx
    neg ecx
    add ecx, 8                  ; ECX = 8 - digits: the digits we skip
    shl ecx, 2                  ; ... times 4 bits
    rol edx, cl                 ; drop them off the top (ROL by 0 is fine)
.digit:
    rol edx, 4                  ; next digit to the bottom nibble
    mov al, dl
    and al, 0x0F
    add al, '0'
    cmp al, '9'
    jbe .emit
    add al, 'A' - '9' - 1
.emit:
    call serial_putc
    dec ebx
    jnz .digit
    popad
    ret

; all_ones: ZF = 1 if the low ECX*4 bits of EAX are all ones (1 <= ECX <= 8).
; Preserves all registers (but EFLAGS, which carries the answer).
all_ones:
    push eax
    push ecx
    shl ecx, 2                  ; bits = digits * 4 (4..32)
    cmp ecx, 32
    je .compare                 ; 32 bits: compare EAX as it is
    push edx
    mov edx, 1
    shl edx, cl
    dec edx                     ; EDX = mask of the low ECX bits
    and eax, edx                ; keep only the bits the access produced
    cmp eax, edx                ; all ones <=> equal to the mask
    pop edx
    jmp .done
.compare:
    cmp eax, 0xFFFFFFFF
.done:
    pop ecx
    pop eax
    ret
