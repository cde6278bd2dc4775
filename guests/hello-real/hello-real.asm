; =============================================================================
; hello-real.asm -- lesson 1: the smallest guest that says something
; =============================================================================
;
; What this guest does
; --------------------
; Prints "Hello from real mode!" on the serial port, then asks the keyboard
; controller to reset the machine, which skvm treats as "the guest is done"
; (exit status 0). Nothing else: nineteen instructions.
;
; The machine it expects (skvm's flat-binary convention)
; -------------------------------------------------------
; skvm copies this file, byte for byte, to guest physical address 0x1000
; and starts the virtual CPU in 16-bit REAL MODE -- the mode every x86 CPU
; has started in since the 8086 -- with
;     CS:IP = 0000:1000    DS = ES = SS = 0    SP = 0x1000
; In real mode an address is segment * 16 + offset, with no paging and no
; protection. Since every segment register is 0, "offset" and "physical
; address" are the same number here, which keeps this first lesson simple.
; (The stack grows down from 0x1000, just below our code; we never use it.)
;
; Why this is interesting for a hypervisor
; ----------------------------------------
; To run even this, a VMM must: create a VM and a vCPU (KVM_CREATE_VM,
; KVM_CREATE_VCPU), give the VM memory (KVM_SET_USER_MEMORY_REGION), copy
; the program into it, set the segment registers (KVM_SET_SREGS) and the
; instruction pointer (KVM_SET_REGS), and then loop on KVM_RUN. Each IN and
; OUT below makes KVM_RUN return with exit_reason KVM_EXIT_IO; the VMM
; emulates the serial port (or the reset) and resumes the guest.
;
; Build:  nasm -f bin -o hello-real.bin hello-real.asm
; ("-f bin" = no file format at all: the output is exactly the machine code
; and data below, which is what skvm loads.)
;
; Expected serial output:   Hello from real mode!\n      Exit status: 0
; =============================================================================

    org 0x1000          ; tell the assembler where the code will sit, so that
                        ; the address of `message` below comes out right
    bits 16             ; real mode: 16-bit instruction encoding

start:
    cld                 ; clear the Direction Flag, so LODSB moves forward
    mov si, message     ; SI = address of the first character (DS = 0)

next_char:
    lodsb               ; AL = byte at DS:SI, then SI = SI + 1
    test al, al         ; the string ends with a 0 byte...
    jz reset            ; ...so at 0 we are done
    mov ah, al          ; keep the character: the IN below overwrites AL
    mov dx, 0x3FD       ; COM1's Line Status Register (base 0x3F8 + 5)
wait_ready:
    in al, dx           ; read the status (a VM exit, emulated by skvm)
    test al, 0x20       ; bit 5, THRE: "transmit holding register empty"
    jz wait_ready       ; not empty yet: poll again
    mov al, ah          ; the character again
    mov dx, 0x3F8       ; COM1's Transmit Holding Register
    out dx, al          ; send it (a VM exit: skvm prints the byte)
    jmp next_char

reset:
    mov al, 0xFE        ; i8042 command 0xFE: pulse the CPU reset line
    out 0x64, al        ; to the keyboard controller's command port
halt:
    cli                 ; in case the reset did not happen: no interrupts...
    hlt                 ; ...and stop the CPU here
    jmp halt            ; (an NMI could still wake HLT: stop again)

message:
    db "Hello from real mode!", 10, 0   ; 10 = "\n" (line feed), 0 = the end
