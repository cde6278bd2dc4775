; startup.asm: the start-up benchmark's guest.
;
; The smallest useful guest: print a marker on COM1, then either end the VM
; through the debug-exit port (status (0 << 1) | 1 = 1) or, built with
; -DWAIT, halt with interrupts off so the VMM stays up while its memory is
; measured. The same source is built two ways, so skvm and QEMU run the
; same instructions:
;   -DFLAT: a flat binary for `skvm run --flat`, loaded at 0x1000, entered
;           at 0000:1000 in real mode;
;   -DROM:  a 64 KiB BIOS image for `qemu-system-x86_64 -M microvm -bios`.
;           A PC starts at F000:FFF0 (the last 16 bytes of the ROM); the jump
;           there leads to the code at F000:0000.
; scripts/bench-startup.py times both from process start to the marker and
; to exit.

bits 16
%ifdef ROM
        org 0
%else
        org 0x1000
%endif

start:
        cli
%ifdef ROM
        mov ax, cs              ; strings are addressed through DS = CS (0xF000)
        mov ds, ax
%else
        xor ax, ax
        mov ds, ax
%endif
        mov si, marker
.next:  lodsb
        test al, al
        jz .done
        mov ah, al
        mov dx, 0x3FD           ; LSR: wait for THRE (bit 5)
.wait:  in al, dx
        test al, 0x20
        jz .wait
        mov al, ah
        mov dx, 0x3F8           ; THR
        out dx, al
        jmp .next
.done:
%ifdef WAIT
.halt:  hlt                     ; interrupts are off: the vCPU sleeps in KVM for good
        jmp .halt
%else
        xor al, al
        out 0xF4, al            ; debug-exit: status (0 << 1) | 1
        jmp $
%endif

marker: db "skvm-startup-marker", 10, 0

%ifdef ROM
        times 0xFFF0 - ($ - $$) db 0
reset:  jmp 0xF000:start        ; the reset vector, F000:FFF0
        times 0x10000 - ($ - $$) db 0
%endif
