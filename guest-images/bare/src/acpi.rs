//! The firmware's ACPI tables, found as an OS finds them on a BIOS machine (ACPI 6.5 §5.2.5.1
//! "Finding the RSDP on IA-PC Systems"): the RSDP ("RSD PTR ", its first 20 bytes summing to 0)
//! on a 16-byte boundary in the EBDA's first KiB (its segment at 0x40E) or in 0xE0000-0xFFFFF;
//! from it the XSDT (revision 2 or later, §5.2.8) or the RSDT (§5.2.7), and through their
//! entries the FADT ("FACP", §5.2.9) with its DSDT (X_DSDT at offset 140, else DSDT at 40) and
//! the MADT ("APIC", §5.2.12) with its enabled processors (Processor Local APIC, type 0, and
//! Processor Local x2APIC, type 9: flags bit 0). Every table's bytes sum to 0 (§5.2.6).
//!
//! Last, that the BIOS area is read-only as after POST (a write to 0xFFFF0 is dropped).
//!
//! One line per check, `bare: PASS acpi SIG at 0x...` or `bare: FAIL acpi ...`. Tables above
//! 4 GiB are out of reach of this 32-bit kernel without paging: they are passed over.

core::arch::global_asm!(
    r#"
    .set EBDA_SEGMENT, 0x40e

    .section .text, "ax"
    .code32
    .global acpi_check

/* acpi_check: the RSDP, the root table, the FADT and its DSDT, the MADT. Clobbers EAX-EDX,
   ESI, EDI, EBP. */
acpi_check:
    movzx esi, word ptr [EBDA_SEGMENT]
    shl esi, 4
    test esi, esi
    jz 1f
    lea ecx, [esi + 1024]
    call rsdp_scan
    test eax, eax
    jnz 2f
1:
    mov esi, 0xe0000
    mov ecx, 0x100000
    call rsdp_scan
    test eax, eax
    jnz 2f
    mov esi, offset s_no_rsdp
    jmp puts
2:
    mov ebp, eax
    mov esi, offset s_rsdp
    call puts
    call put_hex32
    mov esi, offset s_revision
    call puts
    movzx eax, byte ptr [ebp + 15]
    call put_dec
    mov esi, offset s_eol
    call puts

    /* The XSDT where the RSDP has one (revision 2+) below 4 GiB, else the RSDT. */
    cmp byte ptr [ebp + 15], 2
    jb 3f
    mov eax, [ebp + 24]
    test eax, eax
    jz 3f
    cmp dword ptr [ebp + 28], 0
    jne 3f
    mov dword ptr [entry_size], 8
    mov edx, offset sig_xsdt
    jmp 4f
3:
    mov eax, [ebp + 16]
    mov dword ptr [entry_size], 4
    mov edx, offset sig_rsdt
4:
    mov edi, eax
    call table_ok
    call report_line
    jnz 9f

    mov dword ptr [found], 0
    mov ecx, [edi + 4]
    sub ecx, 36
    lea ebx, [edi + 36]                /* the entries */
5:
    cmp ecx, [entry_size]
    jb 8f
    mov edi, [ebx]
    cmp dword ptr [entry_size], 8
    jne 6f
    cmp dword ptr [ebx + 4], 0
    jne 7f                             /* above 4 GiB: out of reach */
6:
    call visit
7:
    add ebx, [entry_size]
    sub ecx, [entry_size]
    jmp 5b
8:
    test dword ptr [found], 1
    jnz 10f
    mov esi, offset s_no_fadt
    call puts
10:
    test dword ptr [found], 2
    jnz 9f
    mov esi, offset s_no_madt
    call puts
9:
    /* The BIOS area is ROM after POST: a write there is dropped. The reset vector's first byte
       (0xFFFF0) is written inverted and read back. */
    mov al, [0xffff0]
    mov ah, al
    not al
    mov [0xffff0], al
    mov al, [0xffff0]
    cmp al, ah
    mov esi, offset s_rom_pass
    je 11f
    mov [0xffff0], ah                  /* put it back */
    mov esi, offset s_rom_fail
11:
    jmp puts

/* visit: EDI = a table the root lists. Checks the FADT with its DSDT and the MADT with its
   processors; other tables are passed over. Keeps EBX, ECX. */
visit:
    push ebx
    push ecx
    cmp dword ptr [edi], 0x50434146    /* "FACP" */
    je 1f
    cmp dword ptr [edi], 0x43495041    /* "APIC" */
    je 4f
    jmp 9f
1:
    or dword ptr [found], 1
    mov edx, offset sig_facp
    call table_ok
    call report_line
    jnz 9f
    mov eax, [edi + 40]                /* DSDT */
    cmp dword ptr [edi + 4], 148
    jb 2f
    cmp dword ptr [edi + 144], 0       /* X_DSDT above 4 GiB: use DSDT */
    jne 2f
    cmp dword ptr [edi + 140], 0
    je 2f
    mov eax, [edi + 140]               /* X_DSDT */
2:
    mov edi, eax
    mov edx, offset sig_dsdt
    call table_ok
    call report_line
    jmp 9f
4:
    or dword ptr [found], 2
    mov edx, offset sig_apic
    call table_ok
    call report
    jnz 8f
    xor eax, eax                       /* enabled processors */
    mov ecx, [edi + 4]
    add ecx, edi                       /* the table's end */
    lea esi, [edi + 44]                /* the first structure */
5:
    lea edx, [esi + 2]
    cmp edx, ecx
    ja 7f
    movzx edx, byte ptr [esi + 1]      /* its length */
    cmp edx, 2
    jb 7f                              /* malformed: stop */
    cmp byte ptr [esi], 0
    jne 6f
    test byte ptr [esi + 4], 1         /* Processor Local APIC: flags bit 0, enabled */
    jz 6f
    inc eax
6:
    cmp byte ptr [esi], 9
    jne 61f
    test byte ptr [esi + 8], 1         /* Processor Local x2APIC */
    jz 61f
    inc eax
61:
    add esi, edx
    jmp 5b
7:
    mov esi, offset s_cpus
    call puts
    call put_dec
    mov esi, offset s_cpus_end
    call puts
    jmp 9f
8:
    mov esi, offset s_eol
    call puts
9:
    pop ecx
    pop ebx
    ret

/* rsdp_scan: ESI = start, ECX = end (16-byte aligned). Returns in EAX the first RSDP on a
   16-byte boundary whose first 20 bytes sum to 0, or 0. Clobbers EDX, ESI. */
rsdp_scan:
1:
    cmp esi, ecx
    jae 4f
    cmp dword ptr [esi], 0x20445352    /* "RSD " */
    jne 3f
    cmp dword ptr [esi + 4], 0x20525450 /* "PTR " */
    jne 3f
    xor eax, eax
    xor edx, edx
2:
    add al, [esi + edx]
    inc edx
    cmp edx, 20
    jb 2b
    test al, al
    jnz 3f
    mov eax, esi
    ret
3:
    add esi, 16
    jmp 1b
4:
    xor eax, eax
    ret

/* table_ok: EDI = a table, EDX = its expected signature (4 bytes). ZF set when the signature
   matches, the length is 36 bytes to 1 MiB and the bytes sum to 0. Keeps every register. */
table_ok:
    push ecx
    push esi
    push eax
    mov eax, [edi]
    cmp eax, [edx]
    jne 9f
    mov ecx, [edi + 4]
    cmp ecx, 36
    jb 8f
    cmp ecx, 0x100000
    ja 8f
    mov esi, edi
    xor eax, eax
1:
    add al, [esi]
    inc esi
    dec ecx
    jnz 1b
    test al, al
    jmp 9f
8:
    test esp, esp                      /* ZF clear */
9:
    pop eax
    pop esi
    pop ecx
    ret

/* report_line: report, then the end of the line. Keeps every register and ZF. */
report_line:
    call report
    pushfd
    push esi
    mov esi, offset s_eol
    call puts
    pop esi
    popfd
    ret

/* report: after table_ok (ZF), EDX = the signature, EDI = the table: writes
   "bare: PASS acpi SIG at 0x..." or "bare: FAIL acpi SIG at 0x..." (no end of line). Keeps
   every register and ZF. */
report:
    pushfd
    pushad
    mov esi, offset s_pass
    jz 1f
    mov esi, offset s_fail
1:
    call puts
    mov ecx, 4
    mov esi, edx
2:
    mov al, [esi]
    call putc
    inc esi
    loop 2b
    mov esi, offset s_at
    call puts
    mov eax, edi
    call put_hex32
    popad
    popfd
    ret

sig_rsdt: .ascii "RSDT"
sig_xsdt: .ascii "XSDT"
sig_facp: .ascii "FACP"
sig_dsdt: .ascii "DSDT"
sig_apic: .ascii "APIC"
s_pass:     .asciz "bare: PASS acpi "
s_fail:     .asciz "bare: FAIL acpi "
s_at:       .asciz " at "
s_rsdp:     .asciz "bare: PASS acpi RSDP at "
s_revision: .asciz ", revision "
s_no_rsdp:  .asciz "bare: FAIL acpi RSDP: not in the EBDA or 0xE0000-0xFFFFF\n"
s_no_fadt:  .asciz "bare: FAIL acpi FACP: not listed\n"
s_no_madt:  .asciz "bare: FAIL acpi APIC: not listed\n"
s_rom_pass: .asciz "bare: PASS bios-area-read-only (a write to 0xffff0 is dropped)\n"
s_rom_fail: .asciz "bare: FAIL bios-area-read-only (a write to 0xffff0 changed it)\n"
s_cpus:     .asciz ", "
s_cpus_end: .asciz " processor(s) enabled\n"

    .section .bss, "aw", @nobits
    .balign 4
entry_size: .skip 4
found:      .skip 4
    .code64
"#
);
