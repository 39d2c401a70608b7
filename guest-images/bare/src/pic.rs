//! The two 8259A programmable interrupt controllers of the PC/AT, master at 0x20 and slave at
//! 0xa0 on the master's IR2 (Intel 8259A datasheet: "Initialization Command Words",
//! "Operation Command Words", "Interrupt Sequence").

core::arch::global_asm!(
    r#"
    /* Each chip has a command port (ICW1, OCW2, OCW3) and a data port (ICW2-4, OCW1). */
    .set PIC1_CMD, 0x20
    .set PIC1_DATA, 0x21
    .set PIC2_CMD, 0xa0
    .set PIC2_DATA, 0xa1
    .set PIC_EOI, 0x20                 /* OCW2: non-specific EOI */
    .set PIC_READ_ISR, 0x0b            /* OCW3: read the In-Service Register on the next read */
    .set PIC_VECTOR_BASE, 0x20         /* IRQ0-7 at 0x20-0x27, IRQ8-15 at 0x28-0x2f */

    .section .text, "ax"
    .code32
    .global pic_init, pic_eoi_slave, irq7, irq15

/* pic_init: the standard PC/AT set-up of the pair. After ICW1 each chip takes ICW2, ICW3
   (cascade) and, as ICW1 asked for it, ICW4 on its data port. Clobbers EAX. */
pic_init:
    mov al, 0x11                       /* ICW1: edge triggered, cascade, ICW4 needed */
    out PIC1_CMD, al
    out PIC2_CMD, al
    mov al, PIC_VECTOR_BASE            /* ICW2: vector base (bits 7:3) */
    out PIC1_DATA, al
    mov al, PIC_VECTOR_BASE + 8
    out PIC2_DATA, al
    mov al, 0x04                       /* ICW3 master: a slave on IR2 (a bit mask) */
    out PIC1_DATA, al
    mov al, 0x02                       /* ICW3 slave: its cascade identity is 2 */
    out PIC2_DATA, al
    mov al, 0x01                       /* ICW4: 8086 mode, normal EOI, not buffered */
    out PIC1_DATA, al
    out PIC2_DATA, al
    /* OCW1 (Interrupt Mask Register, a set bit masks the line): the master lets through
       only IR2, the slave; the slave only its IR6, IRQ14 (the primary ATA channel). */
    mov al, 0xfb
    out PIC1_DATA, al
    mov al, 0xbf
    out PIC2_DATA, al
    ret

/* pic_eoi_slave: ends a (real) interrupt from the slave, IRQ8-15: non-specific EOIs (OCW2) to
   the slave, which raised it, then to the master, whose IR2 it came through. Keeps all. */
pic_eoi_slave:
    push eax
    mov al, PIC_EOI
    out PIC2_CMD, al
    out PIC1_CMD, al
    pop eax
    ret

/* irq7: IR7 is where the master reports a spurious interrupt, a request that went away
   before the CPU's INTA ("Interrupt Sequence": "the 8259A will issue an interrupt level
   7"). A spurious IRQ7 sets no ISR bit and must not be EOId; a real one (masked here, so not
   expected) is EOId like any other. */
irq7:
    push eax
    mov al, PIC_READ_ISR               /* OCW3: the next read of the command port is ISR */
    out PIC1_CMD, al
    in al, PIC1_CMD
    test al, 0x80
    jz 1f                              /* spurious: no EOI */
    mov al, PIC_EOI
    out PIC1_CMD, al
1:
    pop eax
    iretd

/* irq15: the same for the slave's IR7. A spurious IRQ15 still came through the master's IR2,
   which is in service there, so the master gets its EOI and the slave none. */
irq15:
    push eax
    mov al, PIC_READ_ISR
    out PIC2_CMD, al
    in al, PIC2_CMD
    test al, 0x80
    jz 1f                              /* spurious: EOI the master only */
    mov al, PIC_EOI
    out PIC2_CMD, al
1:
    mov al, PIC_EOI
    out PIC1_CMD, al
    pop eax
    iretd
    .code64
"#
);
