//! Remaps of its own pages: a 2 MiB window at virtual `0x4000_0000` whose 4 KiB pages the
//! guest points at pages of its own RAM, again and again, with INVLPG, a CR3 reload or a
//! switch to a copy of its page tables in between, and then reads them (data) or calls them
//! (code). After a flush the architecture allows one answer only (SDM Vol. 3, 4.10.4): the new
//! page's contents, or #PF for an unmapped one. Anything else is an integrity failure.
//!
//! The code pages reproduce how a kernel reloads a module: the same virtual address, first on
//! a page holding a CPUID of one length, then (after INVLPG) on a page holding a CPUID of
//! another, each followed by `mov eax, MARK; ret`. A hypervisor that computes instruction
//! lengths itself (SVM without NRIP save) and caches them by address must not resume the guest
//! at the old length (issue 13, finding 3): the returned EAX would not be the page's mark.

use core::arch::asm;
use core::cell::UnsafeCell;

use guest_rt::instr;

use crate::Ctx;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
const PAGE: usize = 4096;

/// The window's virtual address: PDPT entry 1 (RAM, at most 1 GiB, lies in entry 0).
const WINDOW: u64 = 0x4000_0000;
/// Window slots used for data and the one for code.
const DATA_SLOTS: u64 = 8;
const CODE_SLOT: u64 = 9;
const DATA_PAGES: usize = 6;
const CODE_PAGES: usize = 4;

/// A page of data whose first word says which page it is.
const fn mark(page: usize) -> u64 {
    0xc4a0_5000_0000_0000 | page as u64
}

#[repr(C, align(4096))]
struct Pages<const N: usize>(UnsafeCell<[[u8; PAGE]; N]>);

// SAFETY: one vCPU; the pages are used only by this module, one operation at a time.
unsafe impl<const N: usize> Sync for Pages<N> {}

impl<const N: usize> Pages<N> {
    fn addr(&self, i: usize) -> u64 {
        self.0.get() as u64 + (i * PAGE) as u64
    }
}

/// The window's page directory and page table.
static TABLES: Pages<2> = Pages(UnsafeCell::new([[0; PAGE]; 2]));
static DATA: Pages<DATA_PAGES> = Pages(UnsafeCell::new([[0; PAGE]; DATA_PAGES]));
static CODE: Pages<CODE_PAGES> = Pages(UnsafeCell::new([[0; PAGE]; CODE_PAGES]));
/// A copy of the PML4, for CR3 switches.
static PML4_COPY: Pages<1> = Pages(UnsafeCell::new([[0; PAGE]; 1]));

/// A page-table entry of the window (slot 0..512).
fn pte(slot: u64) -> *mut u64 {
    (TABLES.addr(1) as *mut u64).wrapping_add(slot as usize)
}

pub fn init() -> Result<(), &'static str> {
    let pml4 = instr::read_cr3() & ADDR;
    // SAFETY: CR3 names the guest's page tables, in identity-mapped RAM (guest contract); the
    // window's PDPT entry is unused (RAM lies in entry 0) and the tables are this module's.
    unsafe {
        let pdpt = (pml4 as *const u64).read_volatile() & ADDR;
        let entry = (pdpt as *mut u64).add(1);
        if entry.read_volatile() & PRESENT != 0 {
            return Err("PDPT entry 1 (virtual 1 GiB) is already in use");
        }
        (TABLES.addr(0) as *mut u64).write_volatile(TABLES.addr(1) | PRESENT | WRITABLE);
        entry.write_volatile(TABLES.addr(0) | PRESENT | WRITABLE);
        for page in 0..DATA_PAGES {
            (DATA.addr(page) as *mut u64).write_volatile(mark(page));
        }
        core::ptr::copy_nonoverlapping(pml4 as *const u8, PML4_COPY.addr(0) as *mut u8, PAGE);
    }
    reload_cr3();
    Ok(())
}

/// Writes CR3 with its own value: flushes the TLB's non-global entries.
fn reload_cr3() {
    // SAFETY: the same page tables as before.
    unsafe { instr::write_cr3(instr::read_cr3()) };
}

/// How a remap is made visible.
#[derive(Clone, Copy)]
enum Flush {
    Invlpg,
    Cr3,
    /// CR3 switched to the copy of the PML4 (same lower tables) for the access, then back.
    Copy,
    /// None: the old translation may still be used (both answers are right).
    None,
}

pub fn data(ctx: &mut Ctx) {
    let slot = ctx.rng.below(DATA_SLOTS);
    let page = ctx.rng.below(DATA_PAGES as u64) as usize;
    let unmap = ctx.rng.chance(1, 6);
    let flush = ctx.rng.pick(&[Flush::Invlpg, Flush::Invlpg, Flush::Cr3, Flush::Copy, Flush::None]);
    let va = WINDOW + slot * PAGE as u64;
    let entry = if unmap { 0 } else { DATA.addr(page) | PRESENT | WRITABLE };
    // SAFETY: the entry is the window's own; nothing else of the guest lives there.
    unsafe { pte(slot).write_volatile(entry) };
    let mut got = None;
    let cr3 = instr::read_cr3();
    let e = ctx.catch(|| {
        got = Some(read_through(va, flush));
    });
    if instr::read_cr3() != cr3 {
        // The #PF of an unmapped page skipped the switch back from the copy.
        // SAFETY: the guest's own tables, as before the operation.
        unsafe { instr::write_cr3(cr3) };
    }
    if matches!(flush, Flush::None) {
        return;
    }
    match (unmap, got, e) {
        (false, Some(v), None) if v == mark(page) => {}
        (true, None, Some(e)) if e.vector == guest_rt::exception::PF => {}
        (_, got, e) => {
            let want = if unmap { "#PF" } else { "the new page's mark" };
            ctx.fail(format_args!(
                "remap-data slot {slot} page {page}: read {got:x?}, exception {e:?}, want {want}"
            ));
        }
    }
}

/// Flushes as told and reads the first word at `va`.
fn read_through(va: u64, flush: Flush) -> u64 {
    let cr3 = instr::read_cr3();
    match flush {
        Flush::Invlpg => instr::invlpg(va),
        Flush::Cr3 => reload_cr3(),
        Flush::Copy => {
            // SAFETY: the copy maps exactly what the PML4 maps (same lower tables).
            unsafe { instr::write_cr3(PML4_COPY.addr(0) | (cr3 & 0xfff)) };
        }
        Flush::None => {}
    }
    // SAFETY: `va` is in the window: a page of DATA, or unmapped (#PF, caught by the caller).
    let v = unsafe { (va as *const u64).read_volatile() };
    if let Flush::Copy = flush {
        // SAFETY: the guest's own tables, as before.
        unsafe { instr::write_cr3(cr3) };
    }
    v
}

/// CPUID encodings of 2 to 5 bytes (legacy prefixes the CPU ignores for CPUID).
const CPUIDS: [&[u8]; 4] = [
    &[0x0f, 0xa2],
    &[0x2e, 0x0f, 0xa2],
    &[0x3e, 0x2e, 0x0f, 0xa2],
    &[0x26, 0x3e, 0x2e, 0x0f, 0xa2],
];

pub fn code(ctx: &mut Ctx) {
    let page = ctx.rng.below(CODE_PAGES as u64) as usize;
    // Every length on both backends: issue 13 finding 3 (a stale length under SVM without
    // NRIP save after a remap) is fixed by the code-site check of the page-table walk.
    let cpuid = CPUIDS[ctx.rng.below(CPUIDS.len() as u64) as usize];
    let offset = ctx.rng.pick(&[0usize, 0, 0x10, 0x7f0]);
    let mark = 0x600d_0000 | (ctx.rng.next() as u32 & 0xffff);
    let mut code = [0x90u8; 16];
    code[..cpuid.len()].copy_from_slice(cpuid);
    let n = cpuid.len();
    code[n] = 0xb8; // mov eax, imm32
    code[n + 1..n + 5].copy_from_slice(&mark.to_le_bytes());
    code[n + 5] = 0xc3; // ret
    // SAFETY: CODE is this module's; the page is not mapped at the window while it is written
    // (the entry is switched below), and the bytes are a complete function.
    unsafe {
        let dst = (CODE.addr(page) as *mut u8).add(offset);
        core::ptr::copy_nonoverlapping(code.as_ptr(), dst, code.len());
        pte(CODE_SLOT).write_volatile(CODE.addr(page) | PRESENT | WRITABLE);
    }
    let va = WINDOW + CODE_SLOT * PAGE as u64;
    instr::invlpg(va);
    let target = va + offset as u64;
    let mut eax = 0u32;
    let e = ctx.catch(|| {
        // SAFETY: `target` holds the function written above (CPUID; mov eax, MARK; ret): it
        // changes EAX, EBX (saved around the call), ECX and EDX, and uses 8 bytes of stack.
        unsafe {
            asm!("mov {s}, rbx", "call {f}", "mov rbx, {s}", f = in(reg) target, s = out(reg) _,
                inout("eax") 0u32 => eax, inout("ecx") 0u32 => _, out("edx") _);
        }
    });
    if e.is_some() || eax != mark {
        ctx.fail(format_args!(
            "remap-code page {page} offset {offset:#x} ({n}-byte CPUID): eax {eax:#x}, \
             exception {e:?}, want {mark:#x}"
        ));
    }
}
