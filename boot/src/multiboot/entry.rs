//! The multiboot1 header and the 32-bit entry: identity-map the first 4 GiB with 2 MiB pages,
//! map the first GiB a second time at `KERNEL_VBASE` (the top 2 GiB, where the image is
//! linked: `link.ld`), enter long mode (SDM Vol. 3A §10.8.5), jump to the linked address and
//! call [`super::multiboot_main`] with the loader's magic (EAX) and information pointer (EBX).
//!
//! The 32-bit code runs where the loader put the image (16 MiB), before paging: every address
//! it uses is a link address minus `KERNEL_VBASE`.

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    /* page-align modules | memory info | address fields valid (a.out kludge) */
    .set MB_FLAGS, 0x00010003
    .set KBASE, 0xffffffff80000000

    .section .multiboot_header, "a"
    .balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header - KBASE
    .long __kernel_start - KBASE
    .long __load_end - KBASE
    .long __bss_end - KBASE
    .long _start32 - KBASE

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:   .skip 4 * 4096
boot_stack: .skip 64 * 1024
boot_stack_top:

    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00209A0000000000    /* 0x08: 64-bit code, present, DPL0 */
    .quad 0x0000920000000000    /* 0x10: data, present, writable */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt - KBASE

    .section .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov esp, offset boot_stack_top - KBASE
    mov edi, eax
    mov esi, ebx

    /* PD entries: 2048 × 2 MiB, present | writable | large */
    xor ecx, ecx
1:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov edx, ecx
    shr edx, 11
    mov dword ptr [boot_pd - KBASE + ecx * 8], eax
    mov dword ptr [boot_pd - KBASE + ecx * 8 + 4], edx
    inc ecx
    cmp ecx, 2048
    jne 1b

    /* PDPT entries 0..3 -> the four PDs */
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd - KBASE
    or eax, 3
    mov dword ptr [boot_pdpt - KBASE + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jne 2b

    mov eax, offset boot_pdpt - KBASE
    or eax, 3
    mov dword ptr [boot_pml4 - KBASE], eax
    /* PML4[511] -> the high PDPT, whose entry 510 (KBASE) -> the first GiB's PD */
    mov eax, offset boot_pdpt_high - KBASE
    or eax, 3
    mov dword ptr [boot_pml4 - KBASE + 511 * 8], eax
    mov eax, offset boot_pd - KBASE
    or eax, 3
    mov dword ptr [boot_pdpt_high - KBASE + 510 * 8], eax

    /* CR4.PAE, CR3, EFER.LME, CR0.PG|PE */
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, offset boot_pml4 - KBASE
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax

    lgdt [boot_gdt_ptr - KBASE]
    /* far jump to 0x08:long_mode (EA ptr16:32), still at the load address */
    .byte 0xEA
    .long long_mode - KBASE
    .word 0x08

    .code64
long_mode:
    /* to the linked address in the top 2 GiB */
    movabs rax, offset long_mode_high
    jmp rax
long_mode_high:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, edi
    mov esi, esi
    call {main}
    ud2
"#,
    main = sym super::multiboot_main,
);
