//! ATA PIO on the primary channel: READ SECTORS of sector 0 from the master, interrupt-driven
//! (ATA/ATAPI-6: "Device selection protocol", "PIO data-in command protocol", "READ SECTORS",
//! and the "Status" and "Device Control" registers), and the IRQ14 handler.

core::arch::global_asm!(
    r#"
    /* Command block registers at 0x1f0-0x1f7, control block register at 0x3f6. */
    .set ATA_DATA, 0x1f0
    .set ATA_COUNT, 0x1f2
    .set ATA_LBA0, 0x1f3
    .set ATA_LBA1, 0x1f4
    .set ATA_LBA2, 0x1f5
    .set ATA_DEVICE, 0x1f6
    .set ATA_STATUS, 0x1f7             /* read: Status (clears INTRQ); write: Command */
    .set ATA_ALTSTATUS, 0x3f6          /* read: Alternate Status (leaves INTRQ); write: Device Control */
    .set ATA_BSY, 0x80
    .set ATA_DF, 0x20
    .set ATA_DRQ, 0x08
    .set ATA_ERR, 0x01
    .set ATA_READ_SECTORS, 0x20

    /* Bounds on the waits, so a missing device or interrupt fails instead of hanging. */
    .set ATA_POLL_BUDGET, 4000000      /* Status reads: about 1 us each on real hardware */
    .set IRQ_WAIT_BUDGET, 20000000     /* PAUSE iterations: 0.1-1 s on hardware, ~4 s on QEMU TCG */

    .section .text, "ax"
    .code32
    .global irq14, ata_read_sector0, ata_report

/* irq14: the primary channel's interrupt. Reading the Status register acknowledges the device
   (it deasserts INTRQ); then the EOIs to both 8259As. */
irq14:
    push eax
    push edx
    mov dx, ATA_STATUS
    in al, dx
    inc dword ptr [irq14_count]
    call pic_eoi_slave
    pop edx
    pop eax
    iretd

/* ata_wait_idle: polls Status until BSY and DRQ are clear. Clobbers EAX, ECX, EDX.
   Fails (status 4) on a floating bus (0xff: no device) or when the budget runs out. */
ata_wait_idle:
    mov ecx, ATA_POLL_BUDGET
    mov dx, ATA_STATUS
1:
    in al, dx
    cmp al, 0xff
    je ata_fail_absent
    test al, ATA_BSY | ATA_DRQ
    jz 2f
    dec ecx
    jnz 1b
    jmp ata_fail_timeout
2:
    ret

/* ata_delay_400ns: four reads of Alternate Status, the customary wait after a write to the
   Device register before the status is valid ("Device selection protocol"). Clobbers EAX, EDX. */
ata_delay_400ns:
    mov dx, ATA_ALTSTATUS
    in al, dx
    in al, dx
    in al, dx
    in al, dx
    ret

/* ata_read_sector0: READ SECTORS of LBA 0, count 1, by the PIO data-in protocol with
   interrupts: the host issues the command; the device sets BSY, fetches the sector, sets DRQ
   and asserts INTRQ; the host takes the interrupt, reads Status, then the 256 words of the
   Data register. Returns with interrupts on. Clobbers EAX, ECX, EDX, EDI. */
ata_read_sector0:
    /* Device selection protocol: idle, select, wait, idle again. The Status reads in
       ata_wait_idle also clear any interrupt the device still had pending. */
    call ata_wait_idle
    mov dx, ATA_DEVICE
    mov al, 0xe0                       /* obsolete bits 7 and 5 set, LBA = 1, DEV = 0, LBA 27:24 = 0 */
    out dx, al
    call ata_delay_400ns
    call ata_wait_idle

    mov dx, ATA_ALTSTATUS
    xor al, al                         /* Device Control: nIEN = 0 (interrupts on), SRST = 0 */
    out dx, al

    mov dx, ATA_COUNT
    mov al, 1
    out dx, al                         /* one sector */
    xor al, al
    mov dx, ATA_LBA0
    out dx, al                         /* LBA 7:0 */
    mov dx, ATA_LBA1
    out dx, al                         /* LBA 15:8 */
    mov dx, ATA_LBA2
    out dx, al                         /* LBA 23:16 */
    mov dx, ATA_STATUS
    mov al, ATA_READ_SECTORS
    out dx, al                         /* Command */

    /* Wait for IRQ14 with interrupts on (and leave them on: IRQ14 is the only line open,
       and its handler copes with a late one). Not HLT: if the interrupt were lost nothing
       else would wake us (every other IRQ is masked), so poll the handler's counter, bounded. */
    mov ecx, IRQ_WAIT_BUDGET
    sti
1:
    cmp dword ptr [irq14_count], 0
    jne 2f
    pause
    dec ecx
    jnz 1b
    mov esi, offset s_fail_no_irq
    call puts
    mov eax, 3
    jmp exit
2:
    /* The handler read Status; now wait on Alternate Status for BSY = 0 and DRQ = 1. */
    mov ecx, ATA_POLL_BUDGET
    mov dx, ATA_ALTSTATUS
3:
    in al, dx
    test al, ATA_BSY
    jnz 4f
    test al, ATA_ERR | ATA_DF
    jnz ata_fail_error
    test al, ATA_DRQ
    jnz 5f
4:
    dec ecx
    jnz 3b
    jmp ata_fail_timeout
5:
    mov edi, offset sector
    mov ecx, 256
    mov dx, ATA_DATA
    rep insw                           /* 256 words from the Data register */
    ret

ata_fail_absent:
    mov esi, offset s_fail_ata_absent
    jmp 1f
ata_fail_timeout:
    mov esi, offset s_fail_ata_timeout
    jmp 1f
ata_fail_error:
    mov esi, offset s_fail_ata_error
1:
    call puts
    mov eax, 4
    jmp exit

/* ata_report: the IRQ count, the first 17 bytes of the sector as text (non-printable bytes
   as '.'), and the u16 at offset 510 (0xaa55 on a boot sector). Clobbers EAX, EBX, ECX, ESI. */
ata_report:
    mov esi, offset s_irq_received
    call puts
    mov eax, [irq14_count]
    call put_dec
    mov esi, offset s_irq_times
    call puts

    mov esi, offset s_sector_starts
    call puts
    xor ebx, ebx
1:
    mov al, [sector + ebx]
    cmp al, 0x20
    jb 2f
    cmp al, 0x7e
    jbe 3f
2:
    mov al, '.'
3:
    call putc
    inc ebx
    cmp ebx, 17
    jb 1b
    mov esi, offset s_signature
    call puts
    movzx eax, word ptr [sector + 510]
    mov ecx, 4
    call put_hex
    mov esi, offset s_eol
    call puts
    ret

s_fail_no_irq:      .asciz "bare: FAIL no IRQ 14\n"
s_fail_ata_absent:  .asciz "bare: FAIL ATA: no device on the primary channel (status 0xff)\n"
s_fail_ata_timeout: .asciz "bare: FAIL ATA: timeout waiting on BSY/DRQ\n"
s_fail_ata_error:   .asciz "bare: FAIL ATA: READ SECTORS ended with ERR or DF\n"
s_irq_received:     .asciz "bare: irq 14 received "
s_irq_times:        .asciz " time(s), vector 0x2e\n"
s_sector_starts:    .asciz "bare: disk: sector 0 starts \""
s_signature:        .asciz "\", signature 0x"

    .section .bss, "aw", @nobits
    .balign 4
irq14_count:
    .long 0
sector:
    .skip 512
    .code64
"#
);
