; =============================================================================
; echo.asm -- lesson: serial INPUT, the other half of a console
; =============================================================================
;
; What this guest does
; --------------------
; Prints "echo: ready", then waits for bytes on COM1 and sends every byte it
; receives straight back, counting them. When the byte 'q' arrives it stops
; (the 'q' is neither echoed nor counted), prints how many bytes it echoed,
; and ends the VM through the debug-exit port with v = that count:
;
;     $ printf 'hello q' | skvm run --kernel guests/build/echo.elf
;     echo: ready
;     hello
;     echo: got 6 bytes                       (exit status (6 << 1) | 1 = 13)
;
; (The line "hello " has a trailing space: it is the sixth byte.)
;
; Why it exists
; -------------
; Every other guest only TALKS. This one LISTENS, so it tests the input path
; of the VMM's console: the host reads its stdin, puts the bytes into the
; emulated UART's receive FIFO, and the guest finds them there. That path
; has the interesting bugs -- bytes dropped when the FIFO is full, bytes
; delivered twice, a console that never notices stdin is ready -- and a
; byte-exact echo plus a count catches all of them.
;
; How a 16550 receives (National Semiconductor PC16550D datasheet,
; "Line Status Register" and "Receiver Buffer Register"):
;   LSR (base + 5) bit 0, DR "Data Ready": 1 when at least one received
;       byte is waiting in the receive buffer (or FIFO).
;   RBR (base + 0, read, with LCR.DLAB = 0): reading it returns the oldest
;       received byte and removes it; DR drops to 0 once the buffer is empty.
; So the driver is: poll LSR until DR = 1, then read RBR. Each poll is an
; IN, i.e. a VM exit to the VMM (a userspace round trip), so an idle echo
; guest keeps the VMM busy answering LSR reads. That is the price of polling
; and the reason real drivers use the UART's interrupt (IRQ 4 for COM1)
; instead; this guest keeps to polling because it is the smallest thing
; that works, and leaves interrupts to exit-bench.
;
; PAUSE in the wait loop: PAUSE ("spin-loop hint", Intel SDM Vol. 2B,
; instruction reference) tells the CPU this is a busy-wait loop. On real
; hardware it saves power and avoids a memory-order mis-speculation when
; the loop exits; under a hypervisor it can also trigger "pause-loop
; exiting", which lets the host run something else. On the PVM host (see
; guests/README.md) this CPL 0 loop is emulated instruction by instruction
; anyway, so each iteration is slow; the PAUSE is there to make the loop
; a well-behaved spin on every host.
;
; The exit status is 8 bits wide in a Unix process, so the status is
; ((N << 1) | 1) mod 256: N is exact up to 127. The serial line always
; shows the full N.
;
; Expected serial output (skvm and QEMU alike), for the input "hello q":
;     echo: ready
;     hello 
;     echo: got 6 bytes
; Exit status: 13. Without a 'q' in the input the guest waits forever
; (end skvm with Ctrl-A x, or a signal).
; =============================================================================

%define GUEST_NAME "echo"
%include "boot32.inc"

COM1_RBR            equ COM1_BASE + 0   ; read: receiver buffer register
LSR_DR              equ 1 << 0          ; LSR bit 0: data ready
QUIT_BYTE           equ 'q'

    section .text
    bits 32

kmain32:
    PRINT "echo: ready", 10
    xor ebx, ebx                ; EBX = bytes echoed so far

.wait:
    mov dx, COM1_LSR
    in al, dx                   ; VM exit: has a byte arrived?
    test al, LSR_DR
    jnz .receive
    pause                       ; spin-loop hint (see the header)
    jmp .wait

.receive:
    mov dx, COM1_RBR
    in al, dx                   ; VM exit: take the byte out of the FIFO
    cmp al, QUIT_BYTE
    je .quit
    call serial_putc            ; echo it (waits for THRE, then writes THR)
    inc ebx
    jmp .wait

.quit:
    PRINT 10, "echo: got "      ; a fresh line: the echoed text has no \n
    mov eax, ebx
    call serial_putdec32
    PRINT " bytes", 10
    mov eax, ebx                ; v = N: a 32-bit OUT, like debug-exit
    mov dx, DEBUG_EXIT_PORT
    out dx, eax                 ; exit status (N << 1) | 1 (mod 256)
.hang:
    hlt                         ; only reached without a debug-exit device
    jmp .hang
