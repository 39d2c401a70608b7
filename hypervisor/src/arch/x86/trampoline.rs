//! The real-mode trampoline an application processor starts in after its start-up IPI, and
//! the pages below 1 MiB it runs from (picked by `mm::lowmem`).
//!
//! Layout of the borrowed pages at `base` (4 KiB aligned, below 1 MiB):
//! - `base + 0x000`: the code below (real mode at CS = base >> 4, IP = 0);
//! - `base + DATA`: what the boot CPU fills in: a temporary GDT and its pointer, the two far
//!   pointers, the temporary and final CR3, the AP's stack, argument and entry point;
//! - `base + 0x1000..0x4000`: temporary page tables (PML4, PDPT, PD) identity-mapping the first
//!   2 MiB with one large page: in 32-bit protected mode CR3 holds 32 bits only, and the
//!   hypervisor's own tables may lie above 4 GiB.
//!
//! The path is the SDM's (vol. 3A §10.9.1 real to protected mode, §10.8.5 initializing
//! IA-32e mode): protected mode with paging off, then CR4.PAE, CR3, EFER.LME (and NXE, which
//! the hypervisor's tables need), CR0.PG, a far jump to a 64-bit code segment; then the
//! hypervisor's CR3 (the code page is identity-mapped in both), its stack, and a call to the
//! Rust entry with the argument in RDI.

use core::sync::atomic::{Ordering, fence};

/// Offset of the data block in the first page.
const DATA: usize = 0xe00;
// Offsets inside the data block.
const D_GDT: usize = 0x00; // 4 descriptors: null, code32 (0x08), data (0x10), code64 (0x18)
const D_GDTR: usize = 0x26; // limit u16, then base u32 at 0x28
const D_FAR32: usize = 0x2c; // offset u32, selector u16
const D_FAR64: usize = 0x34; // offset u32, selector u16
const D_TEMP_CR3: usize = 0x40;
const D_FINAL_CR3: usize = 0x48;
const D_STACK: usize = 0x50;
const D_ARG: usize = 0x58;
const D_ENTRY: usize = 0x60;
const DATA_END: usize = 0x68;

const SEL_CODE32: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const SEL_CODE64: u16 = 0x18;

core::arch::global_asm!(
    ".pushsection .text.microhv_trampoline, \"ax\"",
    ".global microhv_trampoline_start",
    "microhv_trampoline_start:",
    ".code16",
    "cli",
    "cld",
    "movw %cs, %ax",
    "movw %ax, %ds",
    // EBX = the linear base of the pages, for the 32- and 64-bit parts.
    "movzwl %ax, %ebx",
    "shll $4, %ebx",
    "lgdtl {gdtr}",
    "movl %cr0, %eax",
    "orl $1, %eax",
    "movl %eax, %cr0",
    "ljmpl *{far32}",
    ".code32",
    ".global microhv_trampoline_32",
    "microhv_trampoline_32:",
    "movw ${data_sel}, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movl %cr4, %eax",
    "orl $0x20, %eax",          // CR4.PAE
    "movl %eax, %cr4",
    "movl {temp_cr3}(%ebx), %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx",   // IA32_EFER
    "rdmsr",
    "orl $0x900, %eax",         // LME | NXE
    "wrmsr",
    "movl %cr0, %eax",
    "orl $0x80000000, %eax",    // CR0.PG
    "movl %eax, %cr0",
    "ljmpl *{far64}(%ebx)",
    ".code64",
    ".global microhv_trampoline_64",
    "microhv_trampoline_64:",
    // The upper halves of the registers are undefined after the switch (SDM vol. 3A §10.8.5).
    "movl %ebx, %ebx",
    "movq {final_cr3}(%rbx), %rax",
    "movq %rax, %cr3",
    "movq {stack}(%rbx), %rsp",
    "movq {arg}(%rbx), %rdi",
    "movq {entry}(%rbx), %rax",
    "xorl %ebp, %ebp",
    "callq *%rax",
    "ud2",
    ".global microhv_trampoline_end",
    "microhv_trampoline_end:",
    ".popsection",
    gdtr = const DATA + D_GDTR,
    far32 = const DATA + D_FAR32,
    far64 = const DATA + D_FAR64,
    temp_cr3 = const DATA + D_TEMP_CR3,
    final_cr3 = const DATA + D_FINAL_CR3,
    stack = const DATA + D_STACK,
    arg = const DATA + D_ARG,
    entry = const DATA + D_ENTRY,
    data_sel = const SEL_DATA,
    options(att_syntax),
);

unsafe extern "C" {
    static microhv_trampoline_start: u8;
    static microhv_trampoline_32: u8;
    static microhv_trampoline_64: u8;
    static microhv_trampoline_end: u8;
}

/// The Rust function an application processor calls, on its own stack, with the argument.
pub type ApEntry = extern "C" fn(arg: u64) -> !;

/// The trampoline, installed in borrowed low pages.
#[derive(Debug)]
pub struct Trampoline {
    base: u64,
}

impl Trampoline {
    /// Copies the code to `base`, fills in the fixed data (GDT, far pointers, CR3s, entry) and
    /// builds the temporary page tables.
    ///
    /// # Safety
    /// `base..base + 4 pages` is identity-mapped RAM below 1 MiB (4 KiB aligned) that nothing
    /// else uses until [`Trampoline::release`].
    pub unsafe fn install(base: u64, final_cr3: u64, entry: ApEntry) -> Self {
        let start = &raw const microhv_trampoline_start as u64;
        let at = |sym: *const u8| sym as u64 - start;
        let code_len = at(&raw const microhv_trampoline_end) as usize;
        assert!(code_len <= DATA, "the trampoline's code overlaps its data");
        assert!(base.is_multiple_of(0x1000) && base + 0x4000 <= 0x10_0000);
        let t = Self { base };
        // SAFETY: the caller hands over the pages; the code is `code_len` readable bytes.
        unsafe {
            core::ptr::write_bytes(base as *mut u8, 0, 0x4000);
            core::ptr::copy_nonoverlapping(start as *const u8, base as *mut u8, code_len);
        }
        // Flat 4 GiB code and data for the 32-bit part; a long-mode code segment (L = 1).
        let gdt: [u64; 4] =
            [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0x0020_9a00_0000_0000];
        for (i, d) in gdt.iter().enumerate() {
            t.put(D_GDT + i * 8, *d);
        }
        t.put16(D_GDTR, (gdt.len() * 8 - 1) as u16);
        t.put32(D_GDTR + 2, (base + (DATA + D_GDT) as u64) as u32);
        t.put32(D_FAR32, (base + at(&raw const microhv_trampoline_32)) as u32);
        t.put16(D_FAR32 + 4, SEL_CODE32);
        t.put32(D_FAR64, (base + at(&raw const microhv_trampoline_64)) as u32);
        t.put16(D_FAR64 + 4, SEL_CODE64);
        // PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0 (present, writable, large).
        let (pml4, pdpt, pd) = (base + 0x1000, base + 0x2000, base + 0x3000);
        t.put_phys(pml4, pdpt | 3);
        t.put_phys(pdpt, pd | 3);
        t.put_phys(pd, 0x83);
        t.put(D_TEMP_CR3, pml4);
        t.put(D_FINAL_CR3, final_cr3);
        t.put(D_ENTRY, entry as usize as u64);
        const { assert!(DATA + DATA_END <= 0x1000) };
        t
    }

    /// The start-up IPI's vector: the page number.
    pub fn sipi_page(&self) -> u8 {
        (self.base >> 12) as u8
    }

    /// The stack top and argument of the next processor to start.
    pub fn set_next(&self, stack_top: u64, arg: u64) {
        self.put(D_STACK, stack_top);
        self.put(D_ARG, arg);
        // The start-up IPI that follows must find both written.
        fence(Ordering::SeqCst);
    }

    /// Clears the pages and gives them back (every started processor has left them).
    pub fn release(self) {
        // SAFETY: the pages were handed over in `install` and no processor runs from them.
        unsafe { core::ptr::write_bytes(self.base as *mut u8, 0, 0x4000) };
    }

    fn put_phys(&self, addr: u64, v: u64) {
        // SAFETY: `addr` is inside the pages handed over in `install`, 8-byte aligned.
        unsafe { core::ptr::write_volatile(addr as *mut u64, v) };
    }

    fn put(&self, off: usize, v: u64) {
        // SAFETY: inside the first page handed over in `install` (checked `DATA_END`).
        unsafe { core::ptr::write_unaligned((self.base as usize + DATA + off) as *mut u64, v) };
    }

    fn put32(&self, off: usize, v: u32) {
        // SAFETY: as `put`.
        unsafe { core::ptr::write_unaligned((self.base as usize + DATA + off) as *mut u32, v) };
    }

    fn put16(&self, off: usize, v: u16) {
        // SAFETY: as `put`.
        unsafe { core::ptr::write_unaligned((self.base as usize + DATA + off) as *mut u16, v) };
    }
}
