//! The hypervisor moves out of the memory kernels load in: early in boot (before the console,
//! the heap or any static is in use) it copies its whole image, `.bss` and the boot stack
//! included, to the highest free 2 MiB-aligned RAM below 4 GiB and switches to page tables
//! that map that copy at the same virtual addresses (the top 2 GiB, `link.ld`). The physical
//! pages the loader put it in (16 MiB) are then free: the management partition gets them.
//! This is Xen's design (its `__start_xen` relocates itself to the top of RAM below 4 GiB);
//! `docs/design.md` says why.
//!
//! Paging structures: SDM Vol. 3A §4.5 (4-level paging, 2 MiB pages: PS in the PDE).

use core::cell::UnsafeCell;
use hypervisor::bootinfo::{BootInfo, PhysRange};
use hypervisor::mm::addr::{PAGE_SIZE_1G, PAGE_SIZE_2M, align_up};

/// Where the image is linked: the image's physical load address plus this (`link.ld`).
pub const KERNEL_VBASE: u64 = 0xffff_ffff_8000_0000;
/// The boot page tables map the low 4 GiB; the copy must lie there.
const BELOW_4G: u64 = 4 << 30;
/// Present | writable.
const TABLE: u64 = 0x3;
/// Present | writable | 2 MiB page (PS).
const LARGE: u64 = 0x83;

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// The page tables the copy runs on: the low 4 GiB identity-mapped with 2 MiB pages (the
/// hypervisor reaches physical memory there until it installs its own tables, which keep the
/// high half of these) and the image at [`KERNEL_VBASE`] + 16 MiB.
#[repr(C, align(4096))]
struct Tables {
    pml4: [u64; 512],
    pdpt_low: [u64; 512],
    pd_low: [[u64; 512]; 4],
    pdpt_high: [u64; 512],
    pd_high: [u64; 512],
}

struct TablesCell(UnsafeCell<Tables>);
// SAFETY: written once on the boot CPU before any other CPU runs; only the MMU reads it after.
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    pml4: [0; 512],
    pdpt_low: [0; 512],
    pd_low: [[0; 512]; 4],
    pdpt_high: [0; 512],
    pd_high: [0; 512],
}));

/// The image's current virtual range.
fn image() -> (u64, u64) {
    // Linker symbols: only their addresses are used.
    (core::ptr::addr_of!(__kernel_start) as u64, core::ptr::addr_of!(__kernel_end) as u64)
}

/// Where the loader put the image.
pub fn loaded_at() -> PhysRange {
    let (start, end) = image();
    PhysRange::new(start - KERNEL_VBASE, end - KERNEL_VBASE)
}

/// Copies the image to the highest free RAM below 4 GiB (avoiding `info.reserved`, which must
/// hold the image, the boot modules, and whatever else must survive) and runs on from there.
/// Returns the physical range it now occupies (2 MiB-aligned, all of it reserved), or `None`
/// when no higher place fits (it then stays where it was loaded).
///
/// Runs on the boot CPU with interrupts off, before any other CPU: the copy is one
/// instruction that writes nothing but the copy, and the switch follows it at once.
pub fn relocate(info: &BootInfo) -> Option<PhysRange> {
    let (start, end) = image();
    let from = start - KERNEL_VBASE;
    let len = align_up(end - start, PAGE_SIZE_2M);
    let to = hypervisor::mm::place::highest_free(
        info.usable.as_slice(),
        info.reserved.as_slice(),
        len,
        PAGE_SIZE_2M,
        hypervisor::mm::frames::LOW_MEMORY_END,
        BELOW_4G,
    )
    .filter(|&to| to > from)?;
    let first = ((start - KERNEL_VBASE) % PAGE_SIZE_1G / PAGE_SIZE_2M) as usize;
    let pages = (len / PAGE_SIZE_2M) as usize;
    if first + pages > 512 {
        return None; // an image that crosses its GiB: not this linker script's
    }
    // A link address's physical address in the copy.
    let phys = |v: u64| v - start + to;
    let t = TABLES.0.get();
    // SAFETY: the tables are ours alone (boot CPU, interrupts off) and not yet in use by the
    // MMU; the writes land in the current image and are copied with it below.
    let root = unsafe {
        let t = &mut *t;
        for (k, pd) in t.pd_low.iter_mut().enumerate() {
            for (i, e) in pd.iter_mut().enumerate() {
                *e = ((k as u64 * 512 + i as u64) * PAGE_SIZE_2M) | LARGE;
            }
        }
        for k in 0..4 {
            t.pdpt_low[k] = phys(core::ptr::addr_of!(t.pd_low[k]) as u64) | TABLE;
        }
        t.pml4[0] = phys(core::ptr::addr_of!(t.pdpt_low) as u64) | TABLE;
        // The image's link addresses: PML4 entry 511, PDPT entry 510 (KERNEL_VBASE), then
        // 2 MiB pages from its offset in that GiB.
        t.pml4[511] = phys(core::ptr::addr_of!(t.pdpt_high) as u64) | TABLE;
        t.pdpt_high[510] = phys(core::ptr::addr_of!(t.pd_high) as u64) | TABLE;
        for i in 0..pages {
            t.pd_high[first + i] = (to + i as u64 * PAGE_SIZE_2M) | LARGE;
        }
        phys(core::ptr::addr_of!(t.pml4) as u64)
    };
    // SAFETY: source and destination are identity-mapped below 4 GiB by the boot tables and do
    // not overlap (the destination avoids the reserved image). `rep movsb` copies the image as
    // it is at this instant, the stack this function runs on included, and nothing writes
    // memory between the copy and the CR3 load, so the copy is exactly the state the code
    // continues in: the same virtual addresses, now backed by `to` (SDM Vol. 3A §4.10.4.1:
    // the CR3 load flushes the non-global translations). DF is clear (the ABI's rule).
    unsafe {
        core::arch::asm!(
            "rep movsb",
            "mov cr3, {root}",
            root = in(reg) root,
            inout("rsi") from => _,
            inout("rdi") to => _,
            inout("rcx") end - start => _,
            options(nostack, preserves_flags),
        );
    }
    Some(PhysRange::new(to, to + len))
}
