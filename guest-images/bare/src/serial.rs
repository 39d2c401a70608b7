//! COM1, a PC16550D UART at 0x3f8, driven by polling (PC16550D datasheet, "Registers"), and the
//! output helpers every other part prints with. All keep the registers they do not return.

core::arch::global_asm!(
    r#"
    .set COM1, 0x3f8                   /* registers at COM1 + n */
    .set COM1_LSR, COM1 + 5            /* Line Status Register */
    .set LSR_THRE, 0x20                /* transmitter holding register (or FIFO) empty */
    .set LSR_TEMT, 0x40                /* ... and the shift register too: all sent */
    .set UART_DRAIN_BUDGET, 1000000    /* LSR reads; 16 bytes at 115200 baud take 1.4 ms */

    .section .text, "ax"
    .code32
    .global uart_init, serial_drain, putc, puts, put_hex, put_hex32, put_dec, s_eol

/* uart_init: 115200 8N1, FIFOs on, interrupts off. Clobbers EAX, EDX. */
uart_init:
    mov dx, COM1 + 1
    xor al, al
    out dx, al                         /* IER = 0: no UART interrupts */
    mov dx, COM1 + 3
    mov al, 0x80
    out dx, al                         /* LCR: DLAB = 1, registers 0 and 1 are the divisor */
    mov dx, COM1
    mov al, 1
    out dx, al                         /* DLL = 1: 115200 baud */
    mov dx, COM1 + 1
    xor al, al
    out dx, al                         /* DLM = 0 */
    mov dx, COM1 + 3
    mov al, 0x03
    out dx, al                         /* LCR: 8 data bits, no parity, 1 stop bit, DLAB = 0 */
    mov dx, COM1 + 2
    mov al, 0xc7
    out dx, al                         /* FCR: enable and clear both FIFOs, 14-byte trigger */
    mov dx, COM1 + 4
    mov al, 0x0b
    out dx, al                         /* MCR: DTR, RTS, OUT2 */
    ret

/* serial_drain: waits until the FIFO and the shift register are both empty (LSR bit 6,
   TEMT), so that stopping the machine loses no output; bounded in case no UART answers. */
serial_drain:
    push eax
    push ecx
    push edx
    mov ecx, UART_DRAIN_BUDGET
    mov dx, COM1_LSR
1:
    in al, dx
    test al, LSR_TEMT
    jnz 2f
    dec ecx
    jnz 1b
2:
    pop edx
    pop ecx
    pop eax
    ret

/* putc: writes AL once the transmitter holding register is empty (LSR bit 5, THRE). */
putc:
    push edx
    push eax
    mov dx, COM1_LSR
1:
    in al, dx
    test al, LSR_THRE
    jz 1b
    pop eax
    mov dx, COM1
    out dx, al
    pop edx
    ret

/* puts: writes the NUL-terminated string at ESI. */
puts:
    push esi
    push eax
1:
    mov al, [esi]
    test al, al
    jz 2f
    call putc
    inc esi
    jmp 1b
2:
    pop eax
    pop esi
    ret

/* put_hex: writes the low ECX hex digits of EAX (lowercase, no prefix). */
put_hex:
    pushad
    mov edx, eax
1:
    dec ecx
    js 2f
    mov eax, edx
    push ecx
    shl ecx, 2
    shr eax, cl
    pop ecx
    and eax, 0xf
    mov al, [hex_digits + eax]
    call putc
    jmp 1b
2:
    popad
    ret

/* put_hex32: writes "0x" and EAX as eight hex digits. */
put_hex32:
    push esi
    push ecx
    mov esi, offset s_0x
    call puts
    mov ecx, 8
    call put_hex
    pop ecx
    pop esi
    ret

/* put_dec: writes EAX in decimal. */
put_dec:
    pushad
    mov ecx, 10
    xor ebx, ebx                       /* digits pushed */
1:
    xor edx, edx
    div ecx
    push edx
    inc ebx
    test eax, eax
    jnz 1b
2:
    pop eax
    add al, '0'
    call putc
    dec ebx
    jnz 2b
    popad
    ret

hex_digits: .ascii "0123456789abcdef"
s_0x:       .asciz "0x"
s_eol:      .asciz "\n"
    .code64
"#
);
