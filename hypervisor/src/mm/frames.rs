//! The physical frame allocator: free ranges of host RAM, built from the firmware memory map
//! minus everything reserved (the kernel image, boot modules, the low megabyte).
//!
//! Ranges are kept sorted and merged, so contiguous allocations (a partition's RAM, 2 MiB-aligned
//! for large EPT pages) are cheap to find and freeing gives memory back whole.

use super::addr::{HostPhys, PAGE_SIZE, align_down, align_up};
use alloc::vec::Vec;
use core::ops::Range;

/// The host's frame allocator, once boot built it.
pub static FRAMES: spin::Mutex<Option<FrameAllocator>> = spin::Mutex::new(None);

/// RAM below this address is never handed out (real-mode structures, firmware leftovers).
pub const LOW_MEMORY_END: u64 = 1 << 20;

/// Free host-physical memory.
#[derive(Debug, Default)]
pub struct FrameAllocator {
    free: Vec<Range<u64>>,
}

impl FrameAllocator {
    /// Builds the free list: `usable` minus `reserved`, page-aligned inward, nothing below 1 MiB.
    pub fn new(usable: &[Range<u64>], reserved: &[Range<u64>]) -> Self {
        let mut a = Self::default();
        for r in usable {
            let start = align_up(r.start.max(LOW_MEMORY_END), PAGE_SIZE);
            let end = align_down(r.end, PAGE_SIZE);
            if start < end {
                a.insert(start..end);
            }
        }
        for r in reserved {
            a.remove(align_down(r.start, PAGE_SIZE)..align_up(r.end, PAGE_SIZE));
        }
        a
    }

    fn insert(&mut self, r: Range<u64>) {
        let mut i = self.free.partition_point(|f| f.start < r.start);
        self.free.insert(i, r);
        if i > 0 && self.free[i - 1].end >= self.free[i].start {
            self.free[i - 1].end = self.free[i - 1].end.max(self.free[i].end);
            self.free.remove(i);
            i -= 1;
        }
        while i + 1 < self.free.len() && self.free[i].end >= self.free[i + 1].start {
            self.free[i].end = self.free[i].end.max(self.free[i + 1].end);
            self.free.remove(i + 1);
        }
    }

    fn remove(&mut self, cut: Range<u64>) {
        remove_range(&mut self.free, cut);
    }

    /// Allocates `pages` contiguous 4 KiB frames aligned to `align` bytes (a power of two, at
    /// least 4 KiB), from the top of memory down: the hypervisor's own memory and the guests'
    /// gather at the top, and low memory, where kernels made for the bare machine load, stays
    /// free for the management partition. The memory is not zeroed.
    pub fn alloc(&mut self, pages: u64, align: u64) -> Option<HostPhys> {
        self.alloc_below(pages, align, u64::MAX)
    }

    /// As [`Self::alloc`], with the frames' end at or below `limit`: at boot, before the
    /// hypervisor's own tables map all RAM, only what the boot tables reach (4 GiB on the
    /// multiboot path) can be written.
    pub fn alloc_below(&mut self, pages: u64, align: u64, limit: u64) -> Option<HostPhys> {
        let align = align.max(PAGE_SIZE);
        let len = pages.checked_mul(PAGE_SIZE)?;
        let found = self.free.iter().rev().find_map(|r| {
            let start = align_down(r.end.min(limit).checked_sub(len)?, align);
            (start >= r.start).then_some(start)
        })?;
        self.remove(found..found + len);
        Some(HostPhys(found))
    }

    /// Takes free memory from the bottom up, at most `limit` bytes, leaving at least `keep`
    /// bytes free: the management partition's RAM. Returns the ranges taken, in order.
    pub fn take_lowest(&mut self, limit: u64, keep: u64) -> Vec<Range<u64>> {
        let mut budget = limit.min(self.free_bytes().saturating_sub(keep));
        let mut taken = Vec::new();
        for r in &self.free {
            if budget == 0 {
                break;
            }
            let len = (r.end - r.start).min(budget);
            taken.push(r.start..r.start + len);
            budget -= len;
        }
        for t in &taken {
            self.remove(t.clone());
        }
        taken
    }

    /// Takes exactly `[addr, addr + pages × 4 KiB)` when all of it is free.
    pub fn alloc_at(&mut self, addr: HostPhys, pages: u64) -> Option<HostPhys> {
        let len = pages.checked_mul(PAGE_SIZE)?;
        let end = addr.0.checked_add(len)?;
        if !addr.0.is_multiple_of(PAGE_SIZE)
            || !self.free.iter().any(|r| r.start <= addr.0 && end <= r.end)
        {
            return None;
        }
        self.remove(addr.0..end);
        Some(addr)
    }

    /// Takes `r` (page-expanded) out of the free list, whatever of it is there.
    pub fn reserve(&mut self, r: Range<u64>) {
        self.remove(align_down(r.start, PAGE_SIZE)..align_up(r.end, PAGE_SIZE));
    }

    /// Returns `pages` frames at `addr` to the free list.
    pub fn free(&mut self, addr: HostPhys, pages: u64) {
        if pages > 0 {
            self.insert(addr.0..addr.0 + pages * PAGE_SIZE);
        }
    }

    /// Free bytes in total.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }

    /// The free ranges, sorted.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.free
    }
}

/// Takes `cut` out of the sorted, disjoint ranges `free`: a range it covers goes, one it
/// overlaps shrinks, one it falls inside splits in two; the order stays.
pub fn remove_range(free: &mut Vec<Range<u64>>, cut: Range<u64>) {
    let mut out = Vec::with_capacity(free.len() + 1);
    for r in free.drain(..) {
        if r.end <= cut.start || r.start >= cut.end {
            out.push(r);
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start);
        }
        if r.end > cut.end {
            out.push(cut.end..r.end);
        }
    }
    *free = out;
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range memory maps are the point
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn excludes_low_memory_and_reserved_ranges() {
        let a = FrameAllocator::new(&[0..64 * MIB], &[MIB..3 * MIB + 100, 10 * MIB..11 * MIB]);
        assert_eq!(a.ranges(), &[3 * MIB + 4096..10 * MIB, 11 * MIB..64 * MIB]);
    }

    #[test]
    fn never_hands_out_reserved_memory() {
        let reserved = [2 * MIB..4 * MIB];
        let mut a = FrameAllocator::new(&[0..8 * MIB], &reserved);
        while let Some(p) = a.alloc(1, PAGE_SIZE) {
            assert!(p.0 >= MIB && !(2 * MIB..4 * MIB).contains(&p.0), "{p:?}");
        }
        assert_eq!(a.free_bytes(), 0);
    }

    #[test]
    fn aligned_allocation_and_free_merge() {
        let mut a = FrameAllocator::new(&[MIB..16 * MIB], &[]);
        let p = a.alloc(512, 2 * MIB).unwrap();
        assert_eq!(p.0 % (2 * MIB), 0);
        let q = a.alloc(1, PAGE_SIZE).unwrap();
        a.free(p, 512);
        a.free(q, 1);
        assert_eq!(a.ranges(), &[MIB..16 * MIB]);
    }

    #[test]
    fn allocation_at_a_fixed_address() {
        let mut a = FrameAllocator::new(&[MIB..64 * MIB], &[]);
        assert_eq!(a.alloc_at(HostPhys(8 * MIB), 256), Some(HostPhys(8 * MIB)));
        assert_eq!(a.alloc_at(HostPhys(8 * MIB + 4096), 1), None, "taken");
        assert_eq!(a.alloc_at(HostPhys(63 * MIB), 512), None, "runs past the end");
        assert_eq!(a.alloc_at(HostPhys(3), 1), None, "unaligned");
        assert_eq!(a.free_bytes(), 63 * MIB - MIB);
    }

    #[test]
    fn allocates_from_the_top() {
        let mut a = FrameAllocator::new(&[0..8 * MIB, 16 * MIB..32 * MIB], &[]);
        assert_eq!(a.alloc(1, PAGE_SIZE), Some(HostPhys(32 * MIB - 4096)));
        assert_eq!(a.alloc(512, 2 * MIB), Some(HostPhys(28 * MIB)), "aligned below the page");
        assert_eq!(a.alloc(6 * 256, PAGE_SIZE), Some(HostPhys(22 * MIB)));
        assert_eq!(a.alloc(6 * 256, 2 * MIB), Some(HostPhys(16 * MIB)));
        assert_eq!(a.alloc(6 * 256, 2 * MIB), Some(HostPhys(2 * MIB)), "only the low range fits");
        assert_eq!(a.alloc(7 * 256, PAGE_SIZE), None);
    }

    #[test]
    fn takes_the_lowest_memory_and_keeps_a_reserve() {
        let mut a = FrameAllocator::new(&[0..8 * MIB, 16 * MIB..32 * MIB], &[]);
        let taken = a.take_lowest(u64::MAX, 10 * MIB);
        assert_eq!(taken, [MIB..8 * MIB, 16 * MIB..22 * MIB]);
        assert_eq!(a.ranges(), &[22 * MIB..32 * MIB]);
        let mut b = FrameAllocator::new(&[0..8 * MIB, 16 * MIB..32 * MIB], &[]);
        assert_eq!(b.take_lowest(3 * MIB, 0), [MIB..4 * MIB], "a limit");
        assert_eq!(b.take_lowest(u64::MAX, 64 * MIB), [], "the reserve comes first");
    }

    #[test]
    fn allocates_below_a_limit() {
        let mut a = FrameAllocator::new(&[MIB..8 * MIB, 16 * MIB..32 * MIB], &[]);
        assert_eq!(a.alloc_below(1, PAGE_SIZE, 20 * MIB), Some(HostPhys(20 * MIB - 4096)));
        assert_eq!(a.alloc_below(1, PAGE_SIZE, 12 * MIB), Some(HostPhys(8 * MIB - 4096)));
        assert_eq!(a.alloc_below(512, 2 * MIB, 17 * MIB), Some(HostPhys(4 * MIB)), "aligned");
        assert_eq!(a.alloc_below(1, PAGE_SIZE, MIB), None);
        assert_eq!(a.alloc(1, PAGE_SIZE), Some(HostPhys(32 * MIB - 4096)), "no limit");
    }

    #[test]
    fn too_large_fails_cleanly() {
        let mut a = FrameAllocator::new(&[MIB..2 * MIB], &[]);
        assert!(a.alloc(257, PAGE_SIZE).is_none());
        assert!(a.alloc(u64::MAX, PAGE_SIZE).is_none());
        assert_eq!(a.free_bytes(), MIB);
    }
}
