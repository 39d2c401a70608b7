//! `bare`: a 32-bit multiboot 1 kernel written for the bare PC. It knows nothing of any
//! hypervisor (no VMCALL, no hypercalls); it drives the standard PC devices by the book, so the
//! same image runs on QEMU (`-kernel`) and, unchanged, as the management partition with every
//! device passed through (COM1 a virtual 16550, the 8259As and port 0xf4 emulated).
//!
//! In order, every line on COM1 and starting with `bare: `:
//! 1. checks the Multiboot magic (Multiboot Specification 0.6.96, §3.2 "Machine state") and
//!    prints `mem_upper` from the information structure (§3.3);
//! 2. loads its own GDT, stack and IDT ([`tables`]);
//! 3. initialises both 8259As and opens only IRQ2 (cascade) and IRQ14 ([`pic`]);
//! 4. reads sector 0 of the primary master by ATA PIO, waiting for IRQ14 ([`ata`]);
//! 5. scans PCI bus 0 with configuration mechanism #1 ([`pci`]);
//! 6. finds the firmware's ACPI tables from the RSDP: the root table, the FADT and its DSDT,
//!    the MADT and its processors, a PASS or FAIL line each ([`acpi`]);
//! 7. prints `bare: done` and exits with status 0.
//!
//! Exit statuses (written to QEMU's isa-debug-exit at port 0xf4; QEMU then exits with
//! `(status << 1) | 1`): 0 done, 1 bad multiboot magic, 2 CPU exception, 3 no IRQ 14,
//! 4 ATA error or timeout, 5 an interrupt that should not have come (masked IRQ, stray vector).
//! Where port 0xf4 does nothing it then writes `Shutdown` to Bochs' port 0x8900, then halts.
//!
//! On the bare (emulated) machine, without the hypervisor (QEMU exits 1 for status 0):
//! ```text
//! cargo build -p bare --target x86_64-unknown-none --release
//! qemu-system-x86_64 -nographic -no-reboot -m 128 -kernel target/x86_64-unknown-none/release/bare \
//!     -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
//!     -drive file=target/xtask/run/svm-bare/test-disk.img,format=raw,if=ide,index=0
//! ```
//! As the management partition: `cargo xtask run --scenario bare` (`scenarios/bare.toml`).
//!
//! The parts are assembly in one file each and call each other by `.global` symbols.
//! Routines say which registers they clobber; the rest they keep.
#![no_std]
#![no_main]

mod acpi;
mod ata;
mod pci;
mod pic;
mod serial;
mod tables;

core::arch::global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002          /* memory info | address fields valid (a.out kludge) */
    .set MB_BOOT_MAGIC, 0x2BADB002     /* what the loader puts in EAX */

    .set DEBUG_EXIT, 0xf4              /* QEMU isa-debug-exit */
    .set BOCHS_SHUTDOWN, 0x8900

/* Multiboot header (Multiboot Specification §3.1.1; §3.1.3 for the address fields). */
    .section .multiboot_header, "a"
    .balign 4
mb_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long mb_header                    /* header_addr */
    .long __load_start                 /* load_addr */
    .long __load_end                   /* load_end_addr */
    .long __bss_end                    /* bss_end_addr: the loader zeroes up to here */
    .long bare_start                   /* entry_addr */

    .section .text, "ax"
    .code32
    .global bare_start, exit
bare_start:
    /* §3.2: 32-bit protected mode, paging off, flat CS and DS, interrupts off; ESP and the
       GDTR are undefined, so take our own stack before the first call. */
    cli
    cld
    mov esp, offset stack_top
    mov ebp, ebx                       /* the multiboot information structure */
    mov edi, eax                       /* the boot magic */
    call uart_init

/* 1. Multiboot */
    cmp edi, MB_BOOT_MAGIC
    je 1f
    mov esi, offset s_fail_magic
    call puts
    mov eax, 1
    jmp exit
1:
    test dword ptr [ebp], 1            /* flags bit 0: mem_lower and mem_upper are valid */
    jz 2f
    mov esi, offset s_mem_upper
    call puts
    mov eax, [ebp + 8]                 /* mem_upper, in KiB */
    call put_dec
    mov esi, offset s_kib
    call puts
    jmp 3f
2:
    mov esi, offset s_no_mem
    call puts
3:

/* 2. GDT, segments, IDT */
    call gdt_init
    call idt_init

/* 3. The 8259As */
    call pic_init

/* 4. ATA PIO read of sector 0, interrupt-driven */
    call ata_read_sector0
    call ata_report

/* 5. PCI */
    call pci_scan

/* 6. ACPI */
    call acpi_check

/* 7. Done */
    mov esi, offset s_done
    call puts
    xor eax, eax
    jmp exit

/* exit: EAX = status. Lets COM1 send what it still holds, then QEMU's isa-debug-exit (a
   32-bit write to port 0xf4) ends QEMU with (status << 1) | 1; failing that, the Bochs
   shutdown port; failing that, stop here. */
exit:
    call serial_drain
    out DEBUG_EXIT, eax
    mov esi, offset s_shutdown
    mov dx, BOCHS_SHUTDOWN
1:
    mov al, [esi]
    test al, al
    jz 2f
    out dx, al
    inc esi
    jmp 1b
2:
    cli
    hlt
    jmp 2b

s_fail_magic: .asciz "bare: FAIL multiboot magic\n"
s_mem_upper:  .asciz "bare: multiboot ok, mem_upper "
s_kib:        .asciz " KiB\n"
s_no_mem:     .asciz "bare: multiboot ok, no memory information (flags bit 0 clear)\n"
s_done:       .asciz "bare: done\n"
s_shutdown:   .asciz "Shutdown"

    .section .bss, "aw", @nobits
    .balign 16
    .skip 16384
stack_top:
    .code64
"#
);

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
