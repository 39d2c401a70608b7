//! Where a loader puts the boot structures it writes for a kernel (the multiboot information
//! structure, a first stack, a GDT): in pages of the partition's RAM the kernel's image does
//! not occupy, found after the image is known, as a PC boot loader does. So a kernel may load
//! anywhere in its RAM, below 1 MiB too (a real-mode trampoline at 0x8000), and its boot
//! structures are never under one of its segments.
//!
//! Page 0 is never handed out (the real-mode interrupt table and BIOS data area are there on a
//! PC; the hypervisor never touches the host's page 0).

use crate::mm::addr::{PAGE_SIZE, align_down, align_up};
use alloc::vec::Vec;
use core::ops::Range;

/// The free pages of a partition's RAM, lowest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootPlacer {
    free: Vec<Range<u64>>,
}

impl BootPlacer {
    /// The pages of `ram` (guest-physical `(start, len)` blocks) that overlap nothing in
    /// `taken` (the image's segments, and anything else already placed), page 0 excluded.
    pub fn new(ram: &[(u64, u64)], taken: &[Range<u64>]) -> Self {
        let mut free: Vec<Range<u64>> = ram
            .iter()
            .map(|&(s, l)| {
                align_up(s.max(PAGE_SIZE), PAGE_SIZE)..align_down(s.saturating_add(l), PAGE_SIZE)
            })
            .filter(|r| r.start < r.end)
            .collect();
        free.sort_unstable_by_key(|r| r.start);
        let mut p = Self { free };
        for t in taken {
            p.cut(
                align_down(t.start, PAGE_SIZE)
                    ..align_up(t.end.min(u64::MAX - PAGE_SIZE), PAGE_SIZE),
            );
        }
        p
    }

    fn cut(&mut self, cut: Range<u64>) {
        crate::mm::frames::remove_range(&mut self.free, cut);
    }

    /// Takes the lowest `len` bytes (whole pages) of free RAM that end at or below `limit`
    /// (4 GiB for what 32-bit pointers name); `None` when nothing fits.
    pub fn take(&mut self, len: u64, limit: u64) -> Option<u64> {
        let len = len.max(1).checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
        let at = self
            .free
            .iter()
            .find(|r| r.end.min(limit).checked_sub(r.start).is_some_and(|room| room >= len))?
            .start;
        self.cut(at..at + len);
        Some(at)
    }

    /// The free ranges left.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.free
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range lists are the point
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn skips_the_image_and_page_zero() {
        // Management-like RAM: conventional memory, then from 1 MiB.
        let ram = [(0, 0x9f000), (MIB, 64 * MIB)];
        // A real-mode segment at 0x8000 (one page and a bit), the kernel at 16 MiB.
        let taken = [0x8000..0x9100, 16 * MIB..17 * MIB];
        let mut p = BootPlacer::new(&ram, &taken);
        assert_eq!(
            p.ranges(),
            &[0x1000..0x8000, 0xa000..0x9f000, MIB..16 * MIB, 17 * MIB..65 * MIB]
        );
        assert_eq!(p.take(0x1000, 1 << 32), Some(0x1000));
        assert_eq!(p.take(0x7000, 1 << 32), Some(0xa000), "0x2000..0x8000 is too small");
        assert_eq!(p.take(1, 1 << 32), Some(0x2000), "one byte takes a page");
        assert_eq!(p.take(0x9_0000, 1 << 32), Some(MIB), "conventional memory is too small");
    }

    #[test]
    fn an_image_over_all_low_memory() {
        let ram = [(0, 0x9f000), (MIB, 15 * MIB)];
        let taken = [0..0x9f000, MIB..16 * MIB];
        let mut p = BootPlacer::new(&ram, &taken);
        assert_eq!(p.take(4096, 1 << 32), None);
        let mut q = BootPlacer::new(&[(0, 32 * MIB)], &[0..16 * MIB]);
        assert_eq!(q.take(4096, 1 << 32), Some(16 * MIB));
        assert_eq!(q.take(4096, 16 * MIB), None, "the limit");
        assert_eq!(q.take(16 * MIB, 1 << 32), None, "one page is gone");
        assert_eq!(q.take(u64::MAX, u64::MAX), None, "no overflow");
    }

    #[test]
    fn unaligned_segments_take_their_whole_pages() {
        let mut p = BootPlacer::new(&[(0, 0x10000)], &[0x1800..0x2001, u64::MAX - 5..u64::MAX]);
        assert_eq!(p.ranges(), &[0x3000..0x10000]);
        assert_eq!(p.take(0x2000, u64::MAX), Some(0x3000));
    }
}
