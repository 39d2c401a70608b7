//! Where an instruction the core decoded lies, and how to tell cheaply that a later exit at the
//! same RIP is the same instruction: the length cache for CPUs that give no next RIP (SVM
//! without NRIP save, APM Vol. 2 §15.7.1, such as QEMU TCG).
//!
//! The same RIP is the same instruction when three things still hold:
//! - the same CR3 (the walk starts at its PML4);
//! - every paging-structure entry the walk to RIP read still has its value (SDM Vol. 3A
//!   §4.5: the translation is a function of CR3 and those entries; the accessed and dirty
//!   bits, which the CPU sets itself, do not change it). A guest that points RIP's page at
//!   other memory (INVLPG after editing a PTE, a new PDE, a remapped table) changes one;
//! - the instruction's bytes at the host address they had (self-modifying code).
//!
//! The paging mode (CR0.PG, CR4.PAE, EFER.LMA) is not compared here: the core drops its sites
//! on every write to CR0, CR4 or EFER. Nor is the code segment's mode: an instruction that exits
//! starts at RIP, and none of the instructions whose length the core looks up here (no memory
//! operand) has a length that depends on the mode, except through a REX prefix, which only
//! exists in 64-bit mode (elsewhere 0x40-0x4f is an instruction of its own, which does not exit).
//!
//! [`CodeSite::still_valid`] is on the SVM exit fast path, so it is written as straight-line,
//! branch-free loads and compares: four entries and one instruction word, whatever the page
//! size.

use super::memory::GuestRam;

/// Bits of a paging-structure entry that are not part of the translation's identity: A (5) and
/// D (6), set by the CPU as it walks.
const IGNORED: u64 = (1 << 5) | (1 << 6);
const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const ADDR: u64 = 0x000f_ffff_ffff_f000;
const PAGE: u64 = 4096;

/// What an unused walk slot points at: a constant 0, which always matches.
static NO_ENTRY: u64 = 0;

/// An instruction's place, as the core decoded it (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct CodeSite {
    pub rip: u64,
    pub cr3: u64,
    /// The guest-physical address of the instruction's first byte.
    pub gpa: u64,
    pub len: u8,
    /// Host addresses of the entries the walk read (PML4E first), and their values without the
    /// [`IGNORED`] bits; unused slots point at [`NO_ENTRY`] and hold 0.
    walk: [(u64, u64); 4],
    /// An 8-byte window of host memory in the instruction's page that holds the instruction,
    /// its bytes there, and which of them are the instruction's.
    window: u64,
    bytes: u64,
    mask: u64,
}

/// A walk of the guest's 4-level page tables to one linear address (SDM Vol. 3A §4.5): the
/// guest-physical address it reaches and the entries it read.
#[derive(Clone, Copy, Debug)]
pub struct Walk {
    pub gpa: u64,
    entries: [(u64, u64); 4],
}

impl Walk {
    /// Walks to `la` under `cr3` (or takes `la` as it is without `paging`); `None` when an
    /// entry is not present or a table lies outside RAM.
    pub fn new(ram: &GuestRam, la: u64, cr3: u64, paging: bool) -> Option<Self> {
        let mut entries = [(&raw const NO_ENTRY as u64, 0); 4];
        if !paging {
            return Some(Self { gpa: la, entries });
        }
        let mut table = cr3 & ADDR;
        for (i, level) in (1..=4u32).rev().enumerate() {
            let at = table + ((la >> (12 + 9 * (level - 1))) & 0x1ff) * 8;
            let entry = ram.slice(at, 8).ok()?;
            let host = entry.as_ptr() as u64;
            let e = u64::from_le_bytes(entry.try_into().ok()?);
            if e & PRESENT == 0 {
                return None;
            }
            entries[i] = (host, e & !IGNORED);
            if level == 1 || (level <= 3 && e & PAGE_SIZE_BIT != 0) {
                let mask = (1u64 << (12 + 9 * (level - 1))) - 1;
                return Some(Self { gpa: (e & ADDR & !mask) | (la & mask), entries });
            }
            table = e & ADDR;
        }
        None
    }
}

impl CodeSite {
    /// The site of the `len`-byte instruction at `rip`, translated through `cr3`'s 4-level
    /// tables when `paging`; `None` when it cannot be cached: a table or the instruction
    /// outside RAM, the instruction across a page boundary, or longer than 8 bytes (one word to
    /// compare on the fast path; the instructions that exit rarely are).
    pub fn capture(ram: &GuestRam, rip: u64, cr3: u64, paging: bool, len: usize) -> Option<Self> {
        Self::from_walk(ram, rip, cr3, &Walk::new(ram, rip, cr3, paging)?, len)
    }

    /// [`Self::capture`] with the walk to `rip` already done.
    pub fn from_walk(ram: &GuestRam, rip: u64, cr3: u64, w: &Walk, len: usize) -> Option<Self> {
        if len == 0 || len > 8 || (rip & (PAGE - 1)) as usize + len > PAGE as usize {
            return None;
        }
        let gpa = w.gpa;
        // The window: from the instruction's first byte, or the page's last 8 bytes when it
        // lies near the page's end; either way inside the page.
        let start = gpa.min((gpa | (PAGE - 1)) - 7);
        let raw = ram.slice(start, 8).ok()?;
        let window = raw.as_ptr() as u64;
        let shift = 8 * (gpa - start);
        let mask = (u64::MAX >> (64 - 8 * len as u64)) << shift;
        let bytes = u64::from_le_bytes(raw.try_into().ok()?) & mask;
        Some(Self { rip, cr3, gpa, len: len as u8, walk: w.entries, window, bytes, mask })
    }

    /// True when an exit at `rip` under `cr3` is this instruction (module comment).
    ///
    /// # Safety
    /// The host addresses `capture` recorded must still be readable: the partition's RAM,
    /// from which the site was captured, must still be mapped (it lives as long as the
    /// partition and its vCPU, which hold the site).
    #[inline(always)]
    pub unsafe fn still_valid(&self, rip: u64, cr3: u64) -> bool {
        if self.rip != rip || self.cr3 != cr3 {
            return false;
        }
        let mut walk = 0;
        for &(host, value) in &self.walk {
            // SAFETY: the caller's promise; `host` is an 8-aligned entry in RAM or NO_ENTRY.
            walk |= unsafe { (host as *const u64).read_volatile() } ^ value;
        }
        // SAFETY: the caller's promise; the window lies inside one page of RAM.
        let now = unsafe { (self.window as *const u64).read_unaligned() };
        let diff = (walk & !IGNORED) | ((now ^ self.bytes) & self.mask);
        diff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const CPUID2: [u8; 2] = [0x0f, 0xa2];
    const CPUID3: [u8; 3] = [0x48, 0x0f, 0xa2];

    /// 64 KiB of RAM: PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000, whose entry 5
    /// maps linear 0x5000 to `page`; PD entry 1 maps 2 MiB at linear 0x20_0000 to 0.
    fn tables(buf: &mut [u8], page: u64) -> GuestRam {
        // SAFETY: the buffer outlives the GuestRam in each test and nothing else touches it.
        let mut r = unsafe { GuestRam::new(buf.as_mut_ptr(), buf.len() as u64) };
        r.write_u64(0x1000, 0x2003).unwrap();
        r.write_u64(0x2000, 0x3003).unwrap();
        r.write_u64(0x3000, 0x4003).unwrap();
        r.write_u64(0x3008, 0x83).unwrap();
        r.write_u64(0x4000 + 5 * 8, page | 3).unwrap();
        r
    }

    fn valid(s: &CodeSite, rip: u64, cr3: u64) -> bool {
        // SAFETY: the test's RAM buffer is alive for the whole test.
        unsafe { s.still_valid(rip, cr3) }
    }

    #[test]
    fn a_remapped_page_is_another_instruction() {
        let mut buf = vec![0u8; 0x10000];
        let mut r = tables(&mut buf, 0x8000);
        // Page A (0x8000) holds a 3-byte CPUID at offset 0x10, page B (0x9000) a 2-byte one.
        r.write(0x8010, &CPUID3).unwrap();
        r.write(0x9010, &CPUID2).unwrap();
        let s = CodeSite::capture(&r, 0x5010, 0x1000, true, 3).unwrap();
        assert_eq!(s.gpa, 0x8010);
        assert!(valid(&s, 0x5010, 0x1000));
        assert!(!valid(&s, 0x5011, 0x1000), "another RIP");
        assert!(!valid(&s, 0x5010, 0x2000), "another CR3");
        // The guest points the PTE at page B (and would INVLPG): same RIP, same CR3, and the
        // bytes at A are unchanged, but it is not the same instruction.
        r.write_u64(0x4000 + 5 * 8, 0x9003).unwrap();
        assert!(!valid(&s, 0x5010, 0x1000), "stale after the remap");
        // Back to A, with the accessed and dirty bits set by the CPU: the same again.
        r.write_u64(0x4000 + 5 * 8, 0x8063).unwrap();
        assert!(valid(&s, 0x5010, 0x1000));
    }

    #[test]
    fn every_level_of_the_walk_counts() {
        let mut buf = vec![0u8; 0x10000];
        let mut r = tables(&mut buf, 0x8000);
        r.write(0x8010, &CPUID2).unwrap();
        let s = CodeSite::capture(&r, 0x5010, 0x1000, true, 2).unwrap();
        for (at, other) in [(0x1000, 0xa003), (0x2000, 0xb003), (0x3000, 0xc003)] {
            let old = r.read_u64(at).unwrap();
            r.write_u64(at, other).unwrap();
            assert!(!valid(&s, 0x5010, 0x1000), "entry at {at:#x} changed");
            r.write_u64(at, old | 0x20).unwrap();
            assert!(valid(&s, 0x5010, 0x1000), "entry at {at:#x} restored");
        }
        // A large page: three entries, the fourth slot unused.
        r.write(0x1234, &CPUID3).unwrap();
        let big = CodeSite::capture(&r, 0x20_1234, 0x1000, true, 3).unwrap();
        assert_eq!(big.gpa, 0x1234);
        assert!(valid(&big, 0x20_1234, 0x1000));
        r.write_u64(0x3008, 0x20_0083).unwrap();
        assert!(!valid(&big, 0x20_1234, 0x1000), "the PDE now maps other memory");
    }

    #[test]
    fn changed_bytes_are_another_instruction_and_neighbours_do_not_matter() {
        let mut buf = vec![0u8; 0x10000];
        let mut r = tables(&mut buf, 0x8000);
        r.write(0x8010, &CPUID3).unwrap();
        let s = CodeSite::capture(&r, 0x5010, 0x1000, true, 3).unwrap();
        r.write(0x800f, &[0x90]).unwrap();
        r.write(0x8013, &[0xcc; 13]).unwrap();
        assert!(CodeSite::capture(&r, 0x5010, 0x1000, true, 9).is_none(), "longer than 8");
        assert!(valid(&s, 0x5010, 0x1000), "bytes outside the instruction");
        r.write(0x8010, &[0x66]).unwrap();
        assert!(!valid(&s, 0x5010, 0x1000), "its first byte changed");
        // Near the end of a page: the window is the page's last 8 bytes.
        r.write(0x8ffd, &CPUID3).unwrap();
        let end = CodeSite::capture(&r, 0x5ffd, 0x1000, true, 3).unwrap();
        assert!(valid(&end, 0x5ffd, 0x1000));
        r.write(0x8fff, &[0]).unwrap();
        assert!(!valid(&end, 0x5ffd, 0x1000), "its last byte changed");
    }

    #[test]
    fn what_cannot_be_cached() {
        let mut buf = vec![0u8; 0x10000];
        let r = tables(&mut buf, 0x8000);
        assert!(CodeSite::capture(&r, 0x5ffe, 0x1000, true, 3).is_none(), "across a page");
        assert!(CodeSite::capture(&r, 0x6000, 0x1000, true, 2).is_none(), "not present");
        assert!(CodeSite::capture(&r, 0x5010, 0xf000_0000, true, 2).is_none(), "CR3 not RAM");
        assert!(CodeSite::capture(&r, 0x5010, 0x1000, true, 0).is_none());
        // Without paging the linear address is the physical one.
        let flat = CodeSite::capture(&r, 0x8010, 0x1000, false, 2).unwrap();
        assert_eq!(flat.gpa, 0x8010);
        assert!(valid(&flat, 0x8010, 0x1000));
    }
}
