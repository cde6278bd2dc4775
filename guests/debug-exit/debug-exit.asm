; =============================================================================
; debug-exit.asm -- lesson 3: a guest that reports a result as an exit status
; =============================================================================
;
; What this guest does
; --------------------
; Counts the prime numbers below 100 (there are 25), prints the count, and
; then ends the VM by writing the count to the debug-exit port 0xF4. The VMM
; process exits with status (25 << 1) | 1 = 51.
;
; Why it exists
; -------------
; A test harness wants more than "the VM stopped": it wants a RESULT. The
; isa-debug-exit convention (QEMU's, adopted by skvm) turns one OUT
; instruction into a process exit status, so a guest can compute something
; and hand the answer straight to the shell: `skvm ...; echo $?` -> 51.
;
; This guest writes the value with a 32-bit `out dx, eax`. That exercises
; the VMM's handling of I/O exit SIZES: for KVM_EXIT_IO, kvm_run->io.size is
; 4 here, and the VMM must read all four data bytes (little endian) from
; the buffer at kvm_run + io.data_offset. A VMM that only looked at the
; first byte would still get 25 here, but one that ignored the size field
; entirely, or read it as 1 byte from the wrong place, shows up as a wrong
; status. (The cpl3 guest uses an 8-bit OUT to the same port.)
;
; Why the loop is tiny
; --------------------
; On the host this book was written on, KVM runs CPL 0 code by emulating it
; one instruction at a time (about 1.5 million instructions per second).
; Trial division up to sqrt(n) for n < 100 is about 2,000 instructions:
; instant even when emulated.
;
; Expected serial output (skvm and QEMU alike):
;     debug-exit: 25 primes below 100
;     debug-exit: writing 25 to port 0xF4 with a 32-bit OUT, expect exit status 51
; Exit status: 51.
; =============================================================================

%define GUEST_NAME "debug-exit"
%include "boot32.inc"

LIMIT               equ 100

    section .text
    bits 32

kmain32:
    ; ---- count primes n in [2, LIMIT) by trial division ----
    xor ebx, ebx                ; EBX = number of primes found
    mov ecx, 2                  ; ECX = n, the candidate
.next_n:
    mov esi, 2                  ; ESI = d, the trial divisor
.try_d:
    mov eax, esi
    mul esi                     ; EDX:EAX = d * d
    cmp eax, ecx
    ja .prime                   ; d * d > n: no divisor found, n is prime
    mov eax, ecx
    xor edx, edx
    div esi                     ; EDX = n mod d
    test edx, edx
    jz .composite               ; d divides n
    inc esi
    jmp .try_d
.prime:
    inc ebx
.composite:
    inc ecx
    cmp ecx, LIMIT
    jb .next_n

    ; ---- report ----
    PRINT "debug-exit: "
    mov eax, ebx
    call serial_putdec32
    PRINT " primes below 100", 10
    PRINT "debug-exit: writing "
    call serial_putdec32        ; EAX is preserved: still the count
    PRINT " to port 0xF4 with a 32-bit OUT, expect exit status "
    lea eax, [ebx * 2 + 1]      ; (v << 1) | 1, as the VMM will compute it
    call serial_putdec32
    PRINT 10

    ; ---- the exit itself: a 4-byte OUT ----
    mov eax, ebx                ; v = 25
    mov dx, DEBUG_EXIT_PORT
    out dx, eax                 ; the VM ends here (status 51)

    ; Only reached if nothing listens on port 0xF4.
    PRINT "debug-exit: still running: port 0xF4 did not end the VM", 10
.hang:
    cli
    hlt
    jmp .hang
