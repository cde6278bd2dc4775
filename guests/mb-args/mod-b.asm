; =============================================================================
; mod-b.asm -- a 5000-byte binary boot module for mb-args (not code)
; =============================================================================
;
; `nasm -f bin` turns this into build/mod-b.bin: 5000 bytes that take every
; value from 0 to 255 (a linear congruential sequence, byte i =
; (i * 37 + 11) mod 256, which visits all 256 values since 37 is odd).
; Binary on purpose: NUL bytes and bytes above 0x7F must reach the guest
; unchanged, and 5000 is not a multiple of the page size, so mod_end is
; not page aligned even though mod_start must be. mb-args prints its size
; (5000) and the sum of its bytes, 637476 (check it with
; python3 -c "print(sum(open('guests/build/mod-b.bin','rb').read()))").
; =============================================================================

%assign i 0
%rep 5000
    db (i * 37 + 11) & 0xFF
%assign i i + 1
%endrep
