//! The descriptor tables: a flat GDT (code 0x08, data 0x10) and a 256-gate IDT of 32-bit
//! interrupt gates (Intel SDM Vol. 3A, "Segment Descriptors"; "Interrupt and Exception
//! Handling": "IDT Descriptors", and "Exception and Interrupt Reference" for which vectors push
//! an error code). Exceptions and interrupts that should not come print a FAIL line and exit.

core::arch::global_asm!(
    r#"
    .set CODE_SEL, 0x08
    .set DATA_SEL, 0x10
    .set IRQ_BASE, 0x20                /* where pic_init puts IRQ0 (ICW2) */

    .section .text, "ax"
    .code32
    .global gdt_init, idt_init

/* gdt_init: loads the GDT below and reloads every segment register from it (the loader's GDT
   may be anywhere, Multiboot Specification §3.2). Clobbers EAX. */
gdt_init:
    lgdt [gdt_ptr]
    mov eax, offset reload_cs          /* a far return reloads CS: it pops EIP, then CS */
    push CODE_SEL
    push eax
    retf
reload_cs:
    mov ax, DATA_SEL
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax                         /* the same stack: the new SS is flat too */
    ret

/* idt_init: every gate to `stray`, then vectors 0-47 to their stubs (exceptions 0-31 and the
   PIC's IRQs 0x20-0x2f), then the three IRQ handlers that do work: IRQ7 and IRQ15 (where
   spurious interrupts land) and IRQ14 (the disk). Clobbers EAX, ECX, EDX. */
idt_init:
    xor ecx, ecx
1:
    mov eax, offset stray
    call set_gate
    inc ecx
    cmp ecx, 256
    jb 1b

    xor ecx, ecx
2:
    mov eax, [stub_table + ecx * 4]
    call set_gate
    inc ecx
    cmp ecx, 48
    jb 2b

    mov ecx, IRQ_BASE + 7
    mov eax, offset irq7
    call set_gate
    mov ecx, IRQ_BASE + 14
    mov eax, offset irq14
    call set_gate
    mov ecx, IRQ_BASE + 15
    mov eax, offset irq15
    call set_gate

    lidt [idt_ptr]
    ret

/* set_gate: IDT[ECX] = a 32-bit interrupt gate (type 0xE, DPL 0, present: IF is cleared on
   entry) to the handler at EAX in the code segment. Clobbers EAX and EDX. */
set_gate:
    lea edx, [idt + ecx * 8]
    mov word ptr [edx], ax             /* offset 15:0 */
    mov word ptr [edx + 2], CODE_SEL   /* segment selector */
    mov byte ptr [edx + 4], 0
    mov byte ptr [edx + 5], 0x8e       /* P = 1, DPL = 0, 32-bit interrupt gate */
    shr eax, 16
    mov word ptr [edx + 6], ax         /* offset 31:16 */
    ret

/* The first 48 vectors get a stub each that makes one frame shape for `vector_common`:
   [ESP] vector, [ESP + 4] error code (0 where the CPU pushes none), then EIP, CS, EFLAGS.
   The CPU pushes an error code for #DF (8), #TS (10), #NP (11), #SS (12), #GP (13), #PF (14),
   #AC (17), #CP (21), #VC (29) and #SX (30). */
.macro stub_noerr v
stub_\v:
    push 0
    push \v
    jmp vector_common
.endm
.macro stub_err v
stub_\v:
    push \v
    jmp vector_common
.endm

.irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    stub_noerr \v
.endr
.irp v, 8,10,11,12,13,14,17,21,29,30
    stub_err \v
.endr
.irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    stub_noerr \v
.endr

    .balign 4
stub_table:
.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .long stub_\v
.endr
.irp v, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47
    .long stub_\v
.endr

/* vector_common: an exception (0-31) or an IRQ that is masked and so cannot come (0x20-0x2f);
   either is fatal. The stack is the stub's frame above. */
vector_common:
    mov eax, [esp]
    cmp eax, 32
    jae 1f
    mov esi, offset s_fail_exc
    call puts
    mov ecx, 2
    call put_hex                       /* vector */
    mov esi, offset s_at_eip
    call puts
    mov eax, [esp + 8]
    call put_hex32                     /* EIP */
    mov esi, offset s_error_code
    call puts
    mov eax, [esp + 4]
    call put_hex32                     /* error code */
    mov esi, offset s_eol
    call puts
    mov eax, 2
    jmp exit
1:
    mov esi, offset s_fail_irq
    call puts
    sub eax, IRQ_BASE
    call put_dec                       /* IRQ number */
    mov esi, offset s_vector
    call puts
    add eax, IRQ_BASE
    mov ecx, 2
    call put_hex
    mov esi, offset s_paren_eol
    call puts
    mov eax, 5
    jmp exit

/* stray: any vector above 0x2f; nothing here raises one. */
stray:
    mov esi, offset s_fail_stray
    call puts
    mov eax, 5
    jmp exit

    .balign 8
gdt:
    .quad 0                            /* null */
    .quad 0x00cf9a000000ffff           /* 0x08: code, base 0, limit 4 GiB, 32-bit, DPL 0 */
    .quad 0x00cf92000000ffff           /* 0x10: data, base 0, limit 4 GiB, writable, DPL 0 */
gdt_end:
    .balign 4
    .word 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .word 0
idt_ptr:
    .word 256 * 8 - 1
    .long idt

s_fail_exc:   .asciz "bare: FAIL exception 0x"
s_at_eip:     .asciz " at EIP "
s_error_code: .asciz ", error code "
s_fail_irq:   .asciz "bare: FAIL unexpected IRQ "
s_vector:     .asciz " (vector 0x"
s_paren_eol:  .asciz ")\n"
s_fail_stray: .asciz "bare: FAIL stray vector (above 0x2f)\n"

    .section .bss, "aw", @nobits
    .balign 8
idt:
    .skip 256 * 8
    .code64
"#
);
