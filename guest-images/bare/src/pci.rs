//! PCI bus 0 by configuration mechanism #1: a dword address written to 0xcf8, the dword read
//! from 0xcfc (PCI Local Bus Specification 3.0, §3.2.2.3.2 "Software Generation of
//! Configuration Transactions"; the header layout in chapter 6, "Configuration Space").

core::arch::global_asm!(
    r#"
    .set PCI_ADDRESS, 0xcf8
    .set PCI_DATA, 0xcfc

    .section .text, "ax"
    .code32
    .global pci_scan

/* pci_read: EAX = configuration address (bit 31 enable, bus 23:16, device 15:11,
   function 10:8, register 7:2); returns the dword in EAX. Clobbers EDX. */
pci_read:
    mov dx, PCI_ADDRESS
    out dx, eax
    mov dx, PCI_DATA
    in eax, dx
    ret

/* pci_scan: bus 0, every device's function 0, and functions 1-7 where function 0's header
   type (register 0x0c, bits 23:16) has bit 7, multi-function, set. One line per function
   that answers (vendor ID not 0xffff), then the count. Clobbers EAX-EDX, ESI, EDI, EBP. */
pci_scan:
    xor ebx, ebx                       /* device << 3 | function */
    xor edi, edi                       /* functions found */
1:
    mov eax, ebx
    shl eax, 8
    or eax, 0x80000000                 /* register 0x00: device ID 31:16, vendor ID 15:0 */
    call pci_read
    cmp ax, 0xffff
    je 3f                              /* nothing answers at this address */
    mov ebp, eax
    inc edi

    mov esi, offset s_pci
    call puts
    mov eax, ebx
    shr eax, 3
    mov ecx, 2
    call put_hex                       /* device */
    mov al, '.'
    call putc
    mov eax, ebx
    and eax, 7
    mov ecx, 1
    call put_hex                       /* function */
    mov al, ' '
    call putc
    mov eax, ebp
    mov ecx, 4
    call put_hex                       /* vendor ID */
    mov al, ':'
    call putc
    mov eax, ebp
    shr eax, 16
    call put_hex                       /* device ID */
    mov esi, offset s_class
    call puts
    mov eax, ebx
    shl eax, 8
    or eax, 0x80000008                 /* register 0x08: class 31:24, subclass 23:16 */
    call pci_read
    mov ebp, eax
    shr eax, 24
    mov ecx, 2
    call put_hex                       /* class */
    mov al, '.'
    call putc
    mov eax, ebp
    shr eax, 16
    call put_hex                       /* subclass */
    mov esi, offset s_eol
    call puts

    test ebx, 7
    jnz 4f                             /* functions 1-7: go on to the next function */
    mov eax, ebx
    shl eax, 8
    or eax, 0x8000000c                 /* register 0x0c: header type 23:16 */
    call pci_read
    test eax, 0x00800000
    jnz 4f                             /* multi-function: scan functions 1-7 too */
    jmp 5f
3:
    test ebx, 7
    jz 5f                              /* no function 0: no device */
4:
    inc ebx                            /* next function */
    jmp 6f
5:
    or ebx, 7                          /* next device */
    inc ebx
6:
    cmp ebx, 256
    jb 1b

    mov esi, offset s_pci_count
    call puts
    mov eax, edi
    call put_dec
    mov esi, offset s_functions
    call puts
    ret

s_pci:       .asciz "bare: pci 00:"
s_class:     .asciz " class "
s_pci_count: .asciz "bare: pci: "
s_functions: .asciz " functions\n"
    .code64
"#
);
