//! Adding 2 MiB mappings to the page tables the hypervisor built (CR3, 4-level, identity map of
//! RAM only): for the sysinfo MMIO page, or for tests that touch memory outside RAM.
//!
//! New tables come from a small pool in `.bss`, which lies in RAM and is identity-mapped, so a
//! table's address is its own GPA.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::instr;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// 2 MiB.
pub const PAGE_2M: u64 = 2 << 20;

/// How a new mapping is cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// Write-back: RAM.
    WriteBack,
    /// Uncached (PCD|PWT): device registers.
    Uncached,
}

/// Why [`map_2m`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The virtual or physical address is not 2 MiB-aligned.
    Unaligned,
    /// The virtual address is not canonical.
    NonCanonical,
    /// A 1 GiB page already covers the address.
    HugePageInTheWay,
    /// The table pool is used up.
    OutOfTables,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unaligned => "address not 2 MiB-aligned",
            Self::NonCanonical => "address not canonical",
            Self::HugePageInTheWay => "a 1 GiB page covers the address",
            Self::OutOfTables => "page-table pool used up",
        })
    }
}

const POOL_TABLES: usize = 8;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; 512]; POOL_TABLES]>);

// SAFETY: one vCPU; each table is handed out once (NEXT_TABLE) and then owned by the tables.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([[0; 512]; POOL_TABLES]));
static NEXT_TABLE: AtomicUsize = AtomicUsize::new(0);

fn new_table() -> Result<u64, MapError> {
    let i = NEXT_TABLE.fetch_add(1, Ordering::SeqCst);
    if i >= POOL_TABLES {
        return Err(MapError::OutOfTables);
    }
    // SAFETY: table `i` was never handed out before (NEXT_TABLE only grows); it lies in .bss,
    // so it is zeroed, in RAM and identity-mapped.
    let table = unsafe { &raw mut (*POOL.0.get())[i] };
    Ok(table as u64)
}

/// Maps the 2 MiB page at virtual `va` to guest-physical `pa` (writable, supervisor),
/// creating intermediate tables as needed, and flushes its TLB entry.
///
/// # Safety
/// Replaces whatever mapped `va` before: nothing live (this code, its stack, data in use)
/// may lie in `va..va + 2 MiB` unless `pa` is the same memory. Accessing `pa` must be
/// something the caller is prepared for (a device, or a fault that ends the partition).
pub unsafe fn map_2m(va: u64, pa: u64, caching: Caching) -> Result<(), MapError> {
    if !va.is_multiple_of(PAGE_2M) || !pa.is_multiple_of(PAGE_2M) {
        return Err(MapError::Unaligned);
    }
    if ((va as i64) << 16 >> 16) as u64 != va {
        return Err(MapError::NonCanonical);
    }
    let mut table = instr::read_cr3() & ADDR_MASK;
    for level in [39u32, 30] {
        let index = ((va >> level) & 511) as usize;
        // SAFETY: `table` is a page-table page: CR3's PML4, or a table an entry points at. All
        // lie in RAM, which is identity-mapped, and only this function edits them.
        let entry = unsafe { &mut *(table as *mut u64).add(index) };
        if *entry & PRESENT == 0 {
            *entry = new_table()? | PRESENT | WRITABLE;
        } else if *entry & HUGE != 0 {
            return Err(MapError::HugePageInTheWay);
        }
        table = *entry & ADDR_MASK;
    }
    let flags = PRESENT
        | WRITABLE
        | HUGE
        | match caching {
            Caching::WriteBack => 0,
            Caching::Uncached => CACHE_DISABLE | WRITE_THROUGH,
        };
    let index = ((va >> 21) & 511) as usize;
    // SAFETY: as above, `table` is a page directory in identity-mapped RAM; the caller allows
    // replacing the mapping of `va`.
    unsafe { (table as *mut u64).add(index).write_volatile(pa | flags) };
    instr::invlpg(va);
    Ok(())
}
