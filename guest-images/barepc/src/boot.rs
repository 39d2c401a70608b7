//! The multiboot entry: from 32-bit protected mode with paging off (Multiboot Specification
//! 0.6.96 §3.2) to 64-bit mode (Intel SDM Vol. 3A §10.8.5 "Initializing IA-32e Mode"): page
//! tables that identity-map the first 4 GiB with 2 MiB pages, CR4.PAE, EFER.LME (and SCE for
//! the SYSCALL check), CR0.PG, then a far return into the 64-bit code segment of our GDT.
//!
//! Every page is user-accessible (U/S = 1): the SYSCALL check runs ring-3 code from this image.
//! The top gigabyte (the local APIC, the I/O APIC) is mapped uncached (PCD | PWT).
//!
//! GDT (SDM Vol. 3A §5.8.8 for the SYSCALL/SYSRET layout: SYSRET to 64-bit mode loads CS from
//! STAR[63:48] + 16 and SS from STAR[63:48] + 8):
//! 0x08 kernel code (64-bit), 0x10 kernel data, 0x18 user code (32-bit, unused), 0x20 user
//! data, 0x28 user code (64-bit), 0x30 the TSS (16 bytes, filled in by [`crate::cpu::load_tss`]).

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003          /* modules page-aligned | memory information */

    .section .multiboot_header, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .section .text.entry, "ax"
    .code32
    .global barepc_start
barepc_start:
    cli
    cld
    mov esp, offset boot_stack_top
    mov [boot_magic], eax
    mov [boot_info], ebx

    /* Page directories: 2048 entries of 2 MiB each, 0-4 GiB. */
    xor ecx, ecx
1:
    mov eax, ecx
    shl eax, 21
    or eax, 0x87                       /* present, writable, user, 2 MiB page */
    cmp ecx, 1536
    jb 2f
    or eax, 0x18                       /* 3-4 GiB: PWT | PCD (device registers) */
2:
    mov [boot_pd + ecx * 8], eax
    mov dword ptr [boot_pd + ecx * 8 + 4], 0
    inc ecx
    cmp ecx, 2048
    jb 1b
    /* The PDPT's four entries, then the PML4's first. */
    xor ecx, ecx
3:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 0x07
    mov [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 3b
    mov eax, offset boot_pdpt
    or eax, 0x07
    mov [boot_pml4], eax

    mov eax, cr4
    or eax, 0x20                       /* PAE */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080                /* IA32_EFER */
    rdmsr
    or eax, 0x101                      /* LME | SCE */
    wrmsr
    mov eax, cr0
    or eax, 0x80010001                 /* PG | WP | PE */
    mov cr0, eax
    lgdt [gdt_ptr]
    push 0x08
    mov eax, offset long_entry
    push eax
    retf

    .code64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, [rip + boot_magic]
    mov esi, [rip + boot_info]
    call barepc_main
4:
    cli
    hlt
    jmp 4b

    .section .data, "aw"
    .balign 8
    .global gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff           /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff           /* 0x10 kernel data */
    .quad 0x00cffa000000ffff           /* 0x18 user code, 32-bit */
    .quad 0x00cff2000000ffff           /* 0x20 user data */
    .quad 0x00affa000000ffff           /* 0x28 user code, 64-bit */
    .quad 0, 0                         /* 0x30 TSS */
gdt_end:
    .balign 4
    .word 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
boot_magic: .long 0
boot_info:  .long 0

    .section .bss, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4 * 4096
    .balign 16
    .skip 65536
    .global boot_stack_top
boot_stack_top:
"#
);
