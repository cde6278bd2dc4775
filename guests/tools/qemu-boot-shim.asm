; =============================================================================
; tools/qemu-boot-shim.asm -- run skvm's flat real-mode binary under QEMU
; =============================================================================
;
; What this file does, and why
; ----------------------------
; skvm runs a flat binary by copying it to physical 0x1000 and starting the
; CPU in real mode at 0000:1000 with DS = ES = SS = 0 and SP = 0x1000.
; QEMU has no such option, but it does have a PC BIOS (SeaBIOS), and a PC
; BIOS boots a disk by loading its first 512-byte sector, the boot sector,
; to 0000:7C00 and jumping there in real mode, with the boot drive number
; in DL. (The last two bytes of the sector must be 0x55 0xAA, the "boot
; signature", or the BIOS refuses it.)
;
; So `make run-hello-real` builds a disk image:
;     sector 0         this shim
;     sectors 1..8     build/hello-real.bin (padded)
; and this shim uses the BIOS disk service (INT 13h, AH = 02h "read
; sectors", CHS addressing: cylinder 0, head 0, sectors 2..9 -- CHS sector
; numbers start at 1) to copy those 4 KiB to 0000:1000, recreates skvm's
; register state and jumps to it. From then on hello-real runs exactly as it
; would under skvm.
;
; This is a test tool, not a guest: skvm never runs it.
; =============================================================================

    org 0x7C00
    bits 16

PAYLOAD_ADDR    equ 0x1000
PAYLOAD_SECTORS equ 8                   ; 4 KiB: plenty for hello-real.bin

start:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7C00                      ; a stack for the BIOS call

    mov ah, 0x02                        ; INT 13h function 02h: read sectors
    mov al, PAYLOAD_SECTORS             ; how many
    mov ch, 0                           ; cylinder 0
    mov cl, 2                           ; first sector to read (1-based)
    mov dh, 0                           ; head 0
                                        ; DL = boot drive, as the BIOS left it
    mov bx, PAYLOAD_ADDR                ; ES:BX = destination
    int 0x13
    jc disk_error

    ; skvm's starting state for a flat binary.
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, PAYLOAD_ADDR
    xor bx, bx
    xor cx, cx
    xor dx, dx
    xor si, si
    xor di, di
    xor bp, bp
    jmp 0x0000:PAYLOAD_ADDR

disk_error:
    mov si, error_message
.next:
    lodsb
    test al, al
    jz .halt
    mov ah, al
    mov dx, 0x3FD
.wait:
    in al, dx
    test al, 0x20
    jz .wait
    mov al, ah
    mov dx, 0x3F8
    out dx, al
    jmp .next
.halt:
    hlt
    jmp .halt

error_message:
    db "qemu-boot-shim: INT 13h disk read failed", 10, 0

    times 510 - ($ - $$) db 0
    dw 0xAA55                           ; boot signature: bytes 55 AA
