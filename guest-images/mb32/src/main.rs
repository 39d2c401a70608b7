//! `mb32`: a 32-bit multiboot 1 kernel, written as such a kernel is written for GRUB (a header
//! with the a.out-kludge addresses, a 32-bit entry, port I/O to COM1), to show that the
//! hypervisor runs one unchanged as a partition (`format = "multiboot"`).
//!
//! At entry it checks what the Multiboot Specification §3.2 promises: EAX = 0x2BADB002, EBX
//! the information structure with memory sizes, command line, memory map and loader name
//! (§3.3), protected mode with paging off; each boot module's string, length and byte sum (a
//! 32-bit sum of its bytes), and that each lies on a page and clear of the kernel. It prints a PASS or FAIL line for each, echoes the
//! command line and loader name, and stops with the hypervisor's Shutdown hypercall (VMCALL
//! on Intel, VMMCALL on AMD, chosen by the CPUID vendor), status 0 when all passed.
#![no_std]
#![no_main]

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002          /* memory info | address fields valid */

    .section .multiboot_header, "a"
    .balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header
    .long __load_start
    .long __load_end
    .long __bss_end
    .long mb32_start

    .section .text, "ax"
    .code32
    .global mb32_start
mb32_start:
    cli
    mov esp, offset stack_top
    mov ebp, ebx                       /* the information structure */
    xor edi, edi                       /* failures */

    mov esi, offset s_banner
    call puts

    cmp eax, 0x2BADB002
    mov esi, offset s_magic
    call check

    mov eax, cr0                       /* protected mode, paging off */
    and eax, 0x80000001
    cmp eax, 1
    mov esi, offset s_mode
    call check

    mov eax, [ebp]                     /* flags: mem (0), cmdline (2), mmap (6), name (9) */
    and eax, 0x245
    cmp eax, 0x245
    mov esi, offset s_flags
    call check

    cmp dword ptr [ebp + 8], 1024      /* mem_upper: at least 1 MiB above 1 MiB */
    setae al
    cmp al, 1
    mov esi, offset s_mem
    call check

    mov eax, [ebp + 44]                /* mmap_length: whole 24-byte entries, at least one */
    xor edx, edx
    mov ecx, 24
    div ecx
    test edx, edx
    setz dl
    test eax, eax
    setnz al
    and al, dl
    cmp al, 1
    mov esi, offset s_mmap
    call check

    /* Modules (flag 3, §3.3): each one's string, length and byte sum; each must start on a
       page (header flag 0 is not asked for, but this loader always aligns) and lie clear of
       the kernel. */
    mov ecx, [ebp + 20]                /* mods_count */
    mov ebx, [ebp + 24]                /* mods_addr */
    test dword ptr [ebp], 8
    jnz 4f
    xor ecx, ecx
4:
    mov esi, offset s_modules
    call puts
    mov eax, ecx
    call put_dec
    mov esi, offset s_eol
    call puts
5:
    test ecx, ecx
    jz 9f
    mov esi, offset s_module
    call puts
    mov esi, [ebx + 8]
    call puts
    mov esi, offset s_module_len
    call puts
    mov eax, [ebx + 4]
    sub eax, [ebx]
    call put_dec
    mov esi, offset s_module_sum
    call puts
    push ecx
    mov esi, [ebx]
    mov ecx, [ebx + 4]
    xor eax, eax
6:
    cmp esi, ecx
    jae 7f
    movzx edx, byte ptr [esi]
    add eax, edx
    inc esi
    jmp 6b
7:
    pop ecx
    call put_hex
    mov esi, offset s_eol
    call puts
    test dword ptr [ebx], 0xfff
    mov esi, offset s_mod_aligned
    call check
    mov eax, [ebx + 4]
    cmp eax, offset __load_start       /* ends below the kernel */
    jbe 8f
    mov eax, [ebx]
    cmp eax, offset __bss_end          /* or starts above it */
    jae 8f
    test esp, esp                      /* ZF clear: fail */
    jmp 10f
8:
    xor eax, eax                       /* ZF set: pass */
10:
    mov esi, offset s_mod_clear
    call check
    add ebx, 16
    dec ecx
    jmp 5b
9:

    mov esi, offset s_cmdline
    call puts
    mov esi, [ebp + 16]
    call puts
    mov esi, offset s_loader
    call puts
    mov esi, [ebp + 64]
    call puts
    mov esi, offset s_quote_eol
    call puts

    test edi, edi
    jnz 1f
    mov esi, offset s_done
    call puts
1:
    /* Shutdown hypercall (number 3), status in EDI. */
    xor eax, eax
    cpuid
    mov eax, 3
    cmp ebx, 0x756e6547                /* "Genu" */
    jne 2f
    vmcall
    jmp 3f
2:
    vmmcall
3:
    hlt
    jmp 3b

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

/* putc: writes AL to COM1, waiting for THRE. Keeps every register. */
putc:
    push edx
    push eax
    mov dx, 0x3fd
1:
    in al, dx
    test al, 0x20
    jz 1b
    pop eax
    mov dx, 0x3f8
    out dx, al
    pop edx
    ret

/* put_dec: writes EAX in decimal. Keeps every register. */
put_dec:
    pushad
    mov ecx, 10
    xor ebx, ebx
1:
    xor edx, edx
    div ecx
    add dl, '0'
    push edx
    inc ebx
    test eax, eax
    jnz 1b
2:
    pop eax
    call putc
    dec ebx
    jnz 2b
    popad
    ret

/* put_hex: writes EAX as 0x and 8 hex digits. Keeps every register. */
put_hex:
    pushad
    mov ebx, eax
    mov al, '0'
    call putc
    mov al, 'x'
    call putc
    mov ecx, 8
1:
    rol ebx, 4
    mov eax, ebx
    and eax, 0xf
    cmp al, 10
    jb 2f
    add al, 'a' - '0' - 10
2:
    add al, '0'
    call putc
    loop 1b
    popad
    ret

/* puts: writes the NUL-terminated string at ESI to COM1, waiting for THRE. */
puts:
    push eax
    push edx
1:
    mov al, [esi]
    test al, al
    jz 3f
    mov dx, 0x3fd
2:
    mov ah, al
    in al, dx
    test al, 0x20
    mov al, ah
    jz 2b
    mov dx, 0x3f8
    out dx, al
    inc esi
    jmp 1b
3:
    pop edx
    pop eax
    ret

s_banner:  .asciz "mb32: 32-bit multiboot kernel running\n"
s_magic:   .asciz "multiboot-magic"
s_mode:    .asciz "protected-mode-no-paging"
s_flags:   .asciz "info-flags"
s_mem:     .asciz "mem-upper"
s_mmap:    .asciz "memory-map"
s_pass:    .asciz "PASS "
s_fail:    .asciz "FAIL "
s_eol:     .asciz "\n"
s_quote_eol: .asciz "\"\n"
s_cmdline: .asciz "mb32: cmdline \""
s_loader:  .asciz "\", loader \""
s_done:    .asciz "mb32: all checks passed\n"
s_modules: .asciz "mb32: modules "
s_module:  .asciz "mb32: module \""
s_module_len: .asciz "\" "
s_module_sum: .asciz " bytes, sum "
s_mod_aligned: .asciz "module-page-aligned"
s_mod_clear: .asciz "module-clear-of-kernel"

    .section .bss, "aw", @nobits
    .balign 16
    .skip 4096
stack_top:
    .code64
"#
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
