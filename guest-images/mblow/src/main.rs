//! `mblow`: a multiboot 1 kernel with a segment below 1 MiB, as PC kernels have (a real-mode
//! trampoline at 0x8000), and its body at 16 MiB (where Debian's kernels load), run as the
//! management partition: its RAM is the host's, identity-mapped, so both addresses must be
//! RAM the hypervisor left to it, and its boot structures must lie elsewhere.
//!
//! The file is an ELF32 executable whose headers are written below (Multiboot §3.1.3: without
//! the address fields, flag 16, the loader reads the ELF program headers and loads each
//! `PT_LOAD` segment at its physical address). At entry it checks, with a PASS or FAIL line
//! each: the boot magic (§3.2); that it runs at 16 MiB; that the low segment's bytes are at
//! 0x8000; that its `.bss` is zero; that the information structure, its memory map and command
//! line, and the stack it was given lie outside both segments; that the memory map lists both
//! segments as available RAM (§3.3, type 1). It then stops with the Shutdown hypercall (VMCALL
//! on Intel, VMMCALL on AMD), status = the number of failures.
#![no_std]
#![no_main]

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00000003          /* page-align modules | memory info */

    .section .elf_header, "a"
ehdr:
    .byte 0x7f, 'E', 'L', 'F', 1, 1, 1, 0   /* ELFCLASS32, LSB, version 1, SysV */
    .byte 0, 0, 0, 0, 0, 0, 0, 0
    .short 2                           /* ET_EXEC */
    .short 3                           /* EM_386 */
    .long 1                            /* EV_CURRENT */
    .long mblow_start                  /* e_entry */
    .long phdrs - ehdr                 /* e_phoff */
    .long 0                            /* e_shoff */
    .long 0                            /* e_flags */
    .short 52                          /* e_ehsize */
    .short 32                          /* e_phentsize */
    .short 2                           /* e_phnum */
    .short 40                          /* e_shentsize */
    .short 0                           /* e_shnum */
    .short 0                           /* e_shstrndx */
phdrs:
    /* PT_LOAD, offset, vaddr, paddr, filesz, memsz, flags (RWX), align */
    .long 1, __low_off, __low_addr, __low_addr, __low_size, __low_size, 7, 0x1000
    .long 1, __hi_off, __hi_addr, __hi_addr, __hi_filesz, __hi_memsz, 7, 0x1000

    .section .multiboot_header, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    /* The low segment: 16-bit code as a real-mode trampoline has (it is not run: the checks
       are about where it loads), and a signature. Linked in the kernel's last page (link.ld),
       loaded at 0x8000 too. */
    .section .low, "ax"
    .code16
low_start:
    cli
    xor ax, ax
    mov ds, ax
    hlt
    .org 16                            /* the checks read the signature here */
low_sig:
    .ascii "MBLOW low 0x8000"
    .code32

    .section .text, "ax"
    .global mblow_start
mblow_start:
    cli
    mov [entry_esp], esp
    mov [entry_eax], eax
    mov esp, offset stack_top
    mov ebp, ebx                       /* the information structure */
    xor edi, edi                       /* failures */

    mov esi, offset s_banner
    call puts

    cmp dword ptr [entry_eax], 0x2BADB002
    mov esi, offset s_magic
    call check

    call 1f
1:  pop eax
    cmp eax, 0x1000000                 /* running at 16 MiB or above */
    setae al
    cmp al, 1
    mov esi, offset s_high
    call check

    mov esi, offset __low_addr         /* the low segment holds what the file holds */
    add esi, 16                        /* low_sig's offset in it */
    mov edx, offset expect_sig
    mov ecx, 16
    call memeq
    mov esi, offset s_low
    call check

    mov esi, offset bss_probe          /* .bss (memsz beyond filesz) is zero */
    mov ecx, 64
2:  cmp dword ptr [esi], 0
    jne 3f
    add esi, 4
    loop 2b
3:  cmp ecx, 0
    mov esi, offset s_bss
    call check

    mov esi, offset s_info_at
    call puts
    mov eax, ebp
    call puthex
    mov esi, offset s_stack_at
    call puts
    mov eax, [entry_esp]
    call puthex
    mov esi, offset s_eol
    call puts

    mov eax, ebp                       /* the structure, its map, its command line, the stack */
    call outside
    jne 4f
    mov eax, [ebp + 48]
    call outside
    jne 4f
    mov eax, [ebp + 16]
    call outside
    jne 4f
    mov eax, [entry_esp]
    sub eax, 4
    call outside
4:  mov esi, offset s_outside
    call check

    mov eax, [ebp]                     /* the memory map lists both segments as RAM */
    test eax, 1 << 6
    jz 5f
    mov ebx, offset __low_addr
    mov ecx, offset __low_end
    call covered
    jne 5f
    mov ebx, offset __hi_addr
    mov ecx, offset __bss_end
    call covered
    jmp 6f
5:  test esp, esp                      /* ZF clear: fail */
6:  mov esi, offset s_mmap
    call check

    test edi, edi
    jnz 7f
    mov esi, offset s_done
    call puts
7:
    /* Shutdown hypercall (number 3), status in EDI. */
    xor eax, eax
    cpuid
    mov eax, 3
    cmp ebx, 0x756e6547                /* "Genu" */
    jne 8f
    vmcall
    jmp 9f
8:
    vmmcall
9:
    hlt
    jmp 9b

/* outside: ZF set when EAX lies in neither segment. */
outside:
    cmp eax, offset __low_addr
    jb 1f
    cmp eax, offset __low_end
    jb 2f
1:  cmp eax, offset __hi_addr
    jb 3f
    cmp eax, offset __bss_end
    jb 2f
3:  cmp eax, eax
    ret
2:  test esp, esp
    ret

/* covered: ZF set when a type-1 entry of the memory map holds [EBX, ECX). */
covered:
    push esi
    push edx
    mov esi, [ebp + 48]
    mov edx, esi
    add edx, [ebp + 44]
1:  cmp esi, edx
    jae 4f
    cmp dword ptr [esi + 20], 1
    jne 2f
    cmp dword ptr [esi + 8], 0         /* base_addr below 4 GiB */
    jne 2f
    mov eax, [esi + 4]
    cmp eax, ebx
    ja 2f
    cmp dword ptr [esi + 16], 0        /* 4 GiB or longer: it reaches */
    jne 3f
    add eax, [esi + 12]
    jc 3f
    cmp eax, ecx
    jae 3f
2:  add esi, [esi]
    add esi, 4
    jmp 1b
3:  pop edx
    pop esi
    cmp eax, eax
    ret
4:  pop edx
    pop esi
    test esp, esp
    ret

/* memeq: ZF set when the ECX bytes at ESI and EDX are equal. */
memeq:
1:  mov al, [esi]
    cmp al, [edx]
    jne 2f
    inc esi
    inc edx
    loop 1b
    cmp eax, eax
2:  ret

/* check: ZF set = pass. Prints "PASS name" or "FAIL name" for the name at ESI. */
check:
    push esi
    jne 1f
    mov esi, offset s_pass
    jmp 2f
1:
    inc edi
    mov esi, offset s_fail
2:
    call puts
    pop esi
    call puts
    mov esi, offset s_eol
    jmp puts

/* puthex: writes EAX as 0x followed by 8 hex digits. */
puthex:
    push ecx
    push edx
    mov edx, eax
    mov esi, offset s_0x
    call puts
    mov ecx, 8
1:  rol edx, 4
    mov eax, edx
    and eax, 0xf
    mov al, [hexdigits + eax]
    call putc
    loop 1b
    pop edx
    pop ecx
    ret

/* puts: writes the NUL-terminated string at ESI to COM1. */
puts:
    push eax
1:  mov al, [esi]
    test al, al
    jz 2f
    call putc
    inc esi
    jmp 1b
2:  pop eax
    ret

/* putc: writes AL to COM1, waiting for THRE. */
putc:
    push edx
    push eax
    mov dx, 0x3fd
1:  in al, dx
    test al, 0x20
    jz 1b
    pop eax
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret

    .section .rodata, "a"
expect_sig: .ascii "MBLOW low 0x8000"
hexdigits:  .ascii "0123456789abcdef"
s_banner:   .asciz "mblow: multiboot kernel at 16 MiB with a segment at 0x8000\n"
s_magic:    .asciz "multiboot-magic"
s_high:     .asciz "runs-at-16mib"
s_low:      .asciz "low-segment-loaded"
s_bss:      .asciz "bss-zero"
s_outside:  .asciz "boot-structures-outside-image"
s_mmap:     .asciz "memory-map-lists-image"
s_info_at:  .asciz "mblow: information structure at "
s_stack_at: .asciz ", stack at "
s_0x:       .asciz "0x"
s_pass:     .asciz "PASS "
s_fail:     .asciz "FAIL "
s_eol:      .asciz "\n"
s_done:     .asciz "mblow: all checks passed\n"

    .section .data, "aw"
    .balign 4
entry_esp: .long 0
entry_eax: .long 0

    .section .bss, "aw", @nobits
    .balign 16
bss_probe: .skip 256
    .skip 4096
stack_top:
    .code64
"#
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
